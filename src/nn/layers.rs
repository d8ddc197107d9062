//! The leaf layers of diffusers models — `nn.Conv2d`, `nn.Linear`, `nn.GroupNorm`,
//! `nn.LayerNorm` — loaded by checkpoint key and recorded into a [`Graph`]. Conv and linear
//! weights stored as int8 with
//! per-channel scales (`load::quant`, W8A32) load into the int8 kernels; with a calibrated
//! input scale (W8A8) into the kernels that also quantise the input (`ops::conv2d_a8`,
//! `ops::gemm_a8`).

use super::Graph;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::load::WeightSource;
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;
use crate::tensor::{DType, Tensor};

/// A kernel layout of int8 weights: its shape and the repacking from PyTorch layout.
type Layout<'a> = (&'a [usize], &'a dyn Fn(&[i8]) -> Vec<i8>);

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

    /// The int8 weight `name` of shape `shape`, its f32 scales and, for W8A8, the layer's input
    /// scale, when stored quantized. `w8a32` gives the W8A32 kernels' layout (shape, repack),
    /// `w8a8` the W8A8 kernels' layout.
    fn int8(
        &self,
        name: &str,
        shape: &[usize],
        w8a32: Layout<'_>,
        w8a8: Layout<'_>,
    ) -> Result<Option<(Tensor, Tensor, Option<f32>)>> {
        let Some((q, s)) = self.weights.int8_weight(name, shape)? else {
            return Ok(None);
        };
        let input_scale = self.weights.input_scale(name)?;
        let (psh, pack) = if input_scale.is_some() { w8a8 } else { w8a32 };
        let t = Tensor::from_i8(self.gpu, name, psh, &pack(&q))?;
        let sname = format!("{name}{}", crate::load::quant::SCALE_SUFFIX);
        let st = Tensor::from_f32(self.gpu, &sname, &[shape[0]], &s, DType::F32)?;
        Ok(Some((self.count(t), self.count(st), input_scale)))
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
        self.conv_with(prefix, cin, cout, k, args, true)
    }

    /// `nn.Conv2d(.., bias=False)` at `prefix`.
    pub fn conv_no_bias(
        &self,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        args: Conv2dArgs,
    ) -> Result<Conv2d> {
        self.conv_with(prefix, cin, cout, k, args, false)
    }

    fn conv_with(
        &self,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        args: Conv2dArgs,
        bias: bool,
    ) -> Result<Conv2d> {
        let load_bias = || -> Result<Option<Tensor>> {
            if bias {
                Ok(Some(self.tensor(&format!("{prefix}.bias"), &[cout])?))
            } else {
                Ok(None)
            }
        };
        let wname = format!("{prefix}.weight");
        let shape = [cout, cin, k, k];
        let psh = ops::conv_pack::packed_shape(&shape);
        let psh8 = ops::conv2d_a8::packed_shape(shape);
        if let Some((weight, scale, input_scale)) = self.int8(
            &wname,
            &shape,
            (&psh, &|q| ops::conv2d::pack_q8(q, shape)),
            (&psh8, &|q| ops::conv2d_a8::pack_a8(q, shape)),
        )? {
            return Ok(Conv2d {
                name: prefix.to_string(),
                weight,
                packed: None,
                scale: Some(scale),
                input_scale,
                bias: load_bias()?,
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
            name: prefix.to_string(),
            weight,
            packed,
            scale: None,
            input_scale: None,
            bias: load_bias()?,
            args,
            cout,
            k,
        })
    }

    /// `nn.Linear(fin, fout)` at `prefix` (with bias).
    pub fn linear(&self, prefix: &str, fin: usize, fout: usize) -> Result<Linear> {
        self.linear_with(prefix, fin, fout, true)
    }

    /// `nn.Linear(fin, fout, bias=False)` at `prefix`.
    pub fn linear_no_bias(&self, prefix: &str, fin: usize, fout: usize) -> Result<Linear> {
        self.linear_with(prefix, fin, fout, false)
    }

    fn linear_with(&self, prefix: &str, fin: usize, fout: usize, bias: bool) -> Result<Linear> {
        let wname = format!("{prefix}.weight");
        let f4 = fin.div_ceil(4) * 4;
        let (weight, scale, input_scale) = match self.int8(
            &wname,
            &[fout, fin],
            (&[fout, fin], &<[i8]>::to_vec),
            (&[fout, f4], &|q| ops::gemm_a8::pack_a8(q, fout, fin)),
        )? {
            Some((w, s, i)) => (w, Some(s), i),
            None => (self.tensor(&wname, &[fout, fin])?, None, None),
        };
        Ok(Linear {
            name: prefix.to_string(),
            weight,
            scale,
            input_scale,
            bias: if bias {
                Some(self.tensor(&format!("{prefix}.bias"), &[fout])?)
            } else {
                None
            },
            fout,
        })
    }

    /// `nn.LayerNorm(dim, eps)` at `prefix` (`prefix.weight`, `prefix.bias`).
    pub fn layer_norm(&self, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: Some(self.tensor(&format!("{prefix}.weight"), &[dim])?),
            bias: Some(self.tensor(&format!("{prefix}.bias"), &[dim])?),
            eps: eps as f32,
        })
    }

    /// `nn.LayerNorm(dim, eps, elementwise_affine=False)`: no weights to load.
    pub fn layer_norm_plain(&self, eps: f64) -> LayerNorm {
        LayerNorm {
            weight: None,
            bias: None,
            eps: eps as f32,
        }
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
    /// The checkpoint prefix (`down_blocks.0.resnets.0.conv1`): calibration names its input.
    pub name: String,
    /// [Cout, Cin, k, k] in the model dtype, or int8 packed [⌈Cout/4⌉, Cin, k·k, 4] (W8A32,
    /// with `scale`; see `ops::conv2d::pack_q8`), or int8 [Cout, k·k, ⌈Cin/4⌉·4] (W8A8, with
    /// `input_scale`; `ops::conv2d_a8::pack_a8`).
    pub weight: Tensor,
    /// The weights in the packed layout the CPU-adapter kernels read (None elsewhere).
    pub packed: Option<Tensor>,
    /// Per-output-channel f32 scales of int8 weights.
    pub scale: Option<Tensor>,
    /// The calibrated input scale (W8A8).
    pub input_scale: Option<f32>,
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
        g.observe_input(&self.name, x)?;
        if let (Some(is), Some(sc)) = (self.input_scale, &self.scale) {
            let d = ops::conv2d_a8::Conv2dA8Desc {
                x,
                weight: &self.weight,
                scale: sc,
                input_scale: is,
                bias: self.bias.as_ref(),
                y: &y,
                args: self.args,
                epilogue: epi,
            };
            ops::conv2d_a8::conv2d_a8(&mut g.rec, &d)?;
            return Ok(y);
        }
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
    /// The checkpoint prefix: calibration names its input.
    pub name: String,
    /// [out, in] in the model dtype, or int8 (W8A32, with `scale`), or int8 [out, ⌈in/4⌉·4]
    /// (W8A8, with `input_scale`).
    pub weight: Tensor,
    /// Per-output-feature f32 scales of int8 weights.
    pub scale: Option<Tensor>,
    /// The calibrated input scale (W8A8).
    pub input_scale: Option<f32>,
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
        g.observe_input(&self.name, x)?;
        match &self.scale {
            Some(s) if self.input_scale.is_some() => ops::gemm_a8::linear_a8(
                &mut g.rec,
                x,
                &self.weight,
                s,
                self.input_scale.unwrap_or(0.0),
                self.bias.as_ref(),
                &y,
            )?,
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

/// `nn.LayerNorm` over the last dimension (Ba et al., 2016), affine terms optional.
pub struct LayerNorm {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub eps: f32,
}

impl LayerNorm {
    /// y = LayerNorm(x) as a new activation `name`.
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, name: &str) -> Result<Tensor> {
        let y = g.alloc(name, x.shape())?;
        ops::layer_norm::layer_norm(
            &mut g.rec,
            x,
            self.weight.as_ref(),
            self.bias.as_ref(),
            &y,
            self.eps,
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
