//! The leaf layers of diffusers models — `nn.Conv2d`, `nn.Linear`, `nn.GroupNorm` — loaded by
//! checkpoint key and recorded into a [`Graph`]. Conv and linear weights stored as int8 with
//! per-channel scales (`load::quant`, W8A32) load into the int8 kernels.

use super::Graph;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::load::WeightSource;
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;
use crate::tensor::{DType, Tensor};

/// Loads layers by key prefix from one checkpoint into one dtype.
pub struct Loader<'a> {
    pub gpu: &'a Gpu,
    pub weights: &'a dyn WeightSource,
    pub dtype: DType,
    /// Bytes of every tensor uploaded so far (the model's weight memory on the GPU).
    pub bytes: std::cell::Cell<u64>,
}

impl<'a> Loader<'a> {
    /// A loader counting from zero bytes.
    pub fn new(gpu: &'a Gpu, weights: &'a dyn WeightSource, dtype: DType) -> Self {
        Loader {
            gpu,
            weights,
            dtype,
            bytes: std::cell::Cell::new(0),
        }
    }

    fn count(&self, t: Tensor) -> Tensor {
        self.bytes.set(self.bytes.get() + t.storage_bytes());
        t
    }

    /// The tensor `name` with the shape the config implies.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.count(self.weights.tensor(self.gpu, name, shape, self.dtype)?))
    }

    /// The int8 weight `name` of shape `shape` and its f32 scales, when stored quantized; `pack`
    /// rearranges the int8 values into the kernel's layout (`packed_shape`).
    fn int8(
        &self,
        name: &str,
        shape: &[usize],
        packed_shape: &[usize],
        pack: impl Fn(&[i8]) -> Vec<i8>,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let Some((q, s)) = self.weights.int8_weight(name, shape)? else {
            return Ok(None);
        };
        let t = Tensor::from_i8(self.gpu, name, packed_shape, &pack(&q))?;
        let sname = format!("{name}{}", crate::load::quant::SCALE_SUFFIX);
        let st = Tensor::from_f32(self.gpu, &sname, &[shape[0]], &s, DType::F32)?;
        Ok(Some((self.count(t), self.count(st))))
    }

    /// `nn.Conv2d(cin, cout, k, stride, padding)` at `prefix` (with bias).
    pub fn conv(
        &self,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        args: Conv2dArgs,
    ) -> Result<Conv2d> {
        let wname = format!("{prefix}.weight");
        let shape = [cout, cin, k, k];
        let psh = ops::conv_pack::packed_shape(&shape);
        if let Some((weight, scale)) =
            self.int8(&wname, &shape, &psh, |q| ops::conv2d::pack_q8(q, shape))?
        {
            return Ok(Conv2d {
                weight,
                packed: None,
                scale: Some(scale),
                bias: Some(self.tensor(&format!("{prefix}.bias"), &[cout])?),
                args,
                cout,
                k,
            });
        }
        let weight = self.tensor(&wname, &shape)?;
        // On CPU adapters the default conv kernels read the weights packed (vec4 weight loads;
        // ops::conv_pack): pack them once here.
        let cpu = self.gpu.info().device_type == wgpu::DeviceType::Cpu;
        let packed = if cpu {
            let shape = ops::conv_pack::packed_shape(weight.shape());
            let t = Tensor::empty(
                self.gpu,
                &format!("{prefix}.weight.packed"),
                &shape,
                self.dtype,
            )?;
            self.gpu
                .run(|rec| ops::conv_pack::pack_weights(rec, &weight, &t))?;
            Some(self.count(t))
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            packed,
            scale: None,
            bias: Some(self.tensor(&format!("{prefix}.bias"), &[cout])?),
            args,
            cout,
            k,
        })
    }

    /// `nn.Linear(fin, fout)` at `prefix` (with bias).
    pub fn linear(&self, prefix: &str, fin: usize, fout: usize) -> Result<Linear> {
        let wname = format!("{prefix}.weight");
        let (weight, scale) = match self.int8(&wname, &[fout, fin], &[fout, fin], <[i8]>::to_vec)? {
            Some((w, s)) => (w, Some(s)),
            None => (self.tensor(&wname, &[fout, fin])?, None),
        };
        Ok(Linear {
            weight,
            scale,
            bias: Some(self.tensor(&format!("{prefix}.bias"), &[fout])?),
            fout,
        })
    }

    /// `nn.GroupNorm(groups, channels, eps)` at `prefix`.
    pub fn group_norm(
        &self,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<GroupNorm> {
        Ok(GroupNorm {
            gamma: self.tensor(&format!("{prefix}.weight"), &[channels])?,
            beta: self.tensor(&format!("{prefix}.bias"), &[channels])?,
            groups,
            eps: eps as f32,
        })
    }
}

/// `nn.Conv2d`.
pub struct Conv2d {
    /// [Cout, Cin, k, k] in the model dtype, or int8 packed [⌈Cout/4⌉, Cin, k·k, 4] (W8A32,
    /// with `scale`; see `ops::conv2d::pack_q8`).
    pub weight: Tensor,
    /// The weights in the packed layout the CPU-adapter kernels read (None elsewhere).
    pub packed: Option<Tensor>,
    /// Per-output-channel f32 scales of int8 weights.
    pub scale: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub args: Conv2dArgs,
    pub cout: usize,
    /// Kernel size (square).
    pub k: usize,
}

impl Conv2d {
    /// y = conv(x); the output is a new activation named `name`.
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, name: &str) -> Result<Tensor> {
        self.forward_fused(g, x, name, ops::conv2d::Epilogue::default())
    }

    /// y = (conv(x) + epilogue adds) · scale in one dispatch (see [`ops::conv2d::Epilogue`]).
    pub fn forward_fused(
        &self,
        g: &mut Graph<'_>,
        x: &Tensor,
        name: &str,
        epi: ops::conv2d::Epilogue<'_>,
    ) -> Result<Tensor> {
        let s = x.shape();
        let k = self.k;
        let (ho, wo) = ops::conv2d::output_size(x, s[2], s[3], k, k, self.args)?;
        let y = g.alloc(name, &[s[0], self.cout, ho, wo])?;
        g.flops += 2 * (s[0] * self.cout * ho * wo * s[1] * k * k) as u64;
        let d = ops::conv2d::Conv2dDesc::new(x, &self.weight, self.bias.as_ref(), &y, self.args)
            .with_packed(self.packed.as_ref())
            .with_scale(self.scale.as_ref())
            .with_epilogue(epi);
        ops::conv2d::conv2d(&mut g.rec, &d)?;
        Ok(y)
    }
}

/// `nn.Linear`.
pub struct Linear {
    /// [out, in] in the model dtype, or int8 (W8A32, with `scale`).
    pub weight: Tensor,
    /// Per-output-feature f32 scales of int8 weights.
    pub scale: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub fout: usize,
}

impl Linear {
    /// y [.., fout] = x [.., fin] · Wᵀ + b.
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, name: &str) -> Result<Tensor> {
        let mut shape = x.shape().to_vec();
        if let Some(l) = shape.last_mut() {
            *l = self.fout;
        }
        let y = g.alloc(name, &shape)?;
        g.flops += 2 * (x.numel() * self.fout) as u64;
        match &self.scale {
            Some(s) => {
                ops::gemm::linear_q8(&mut g.rec, x, &self.weight, s, self.bias.as_ref(), &y)?
            }
            None => ops::gemm::linear(&mut g.rec, x, &self.weight, self.bias.as_ref(), &y)?,
        }
        Ok(y)
    }
}

/// `nn.GroupNorm` (optionally followed by SiLU, fused).
pub struct GroupNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, silu: bool, name: &str) -> Result<Tensor> {
        let y = g.alloc(name, x.shape())?;
        ops::group_norm::group_norm(
            &mut g.rec,
            x,
            &self.gamma,
            &self.beta,
            &y,
            self.groups,
            self.eps,
            silu,
        )?;
        Ok(y)
    }
}

/// out = a + b (b broadcast), as a new activation.
pub fn add(g: &mut Graph<'_>, a: &Tensor, b: &Tensor, name: &str) -> Result<Tensor> {
    let y = g.alloc(name, a.shape())?;
    ops::elementwise::binary(&mut g.rec, ops::elementwise::Binary::Add, a, b, &y)?;
    Ok(y)
}

/// x ← x / factor in place (skipped when factor is 1).
pub fn scale_inplace(g: &mut Graph<'_>, x: &Tensor, factor: f64) -> Result<()> {
    if factor != 1.0 {
        let op = ops::elementwise::Unary::Affine {
            alpha: (1.0 / factor) as f32,
            beta: 0.0,
        };
        ops::elementwise::unary_inplace(&mut g.rec, op, x)?;
    }
    Ok(())
}
