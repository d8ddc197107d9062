//! The leaf layers of diffusers models — `nn.Conv2d`, `nn.Linear`, `nn.GroupNorm` — loaded by
//! checkpoint key and recorded into a [`Graph`].

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
}

impl Loader<'_> {
    /// The tensor `name` with the shape the config implies.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.tensor(self.gpu, name, shape, self.dtype)
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
        let weight = self.tensor(&format!("{prefix}.weight"), &[cout, cin, k, k])?;
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
            Some(t)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            packed,
            bias: Some(self.tensor(&format!("{prefix}.bias"), &[cout])?),
            args,
            cout,
        })
    }

    /// `nn.Linear(fin, fout)` at `prefix` (with bias).
    pub fn linear(&self, prefix: &str, fin: usize, fout: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.tensor(&format!("{prefix}.weight"), &[fout, fin])?,
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
    pub weight: Tensor,
    /// The weights in the packed layout the CPU-adapter kernels read (None elsewhere).
    pub packed: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub args: Conv2dArgs,
    pub cout: usize,
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
        let k = self.weight.shape()[2];
        let (ho, wo) = ops::conv2d::output_size(x, s[2], s[3], k, k, self.args)?;
        let y = g.alloc(name, &[s[0], self.cout, ho, wo])?;
        g.flops += 2 * (s[0] * self.cout * ho * wo * s[1] * k * k) as u64;
        let d = ops::conv2d::Conv2dDesc::new(x, &self.weight, self.bias.as_ref(), &y, self.args)
            .with_packed(self.packed.as_ref())
            .with_epilogue(epi);
        ops::conv2d::conv2d(&mut g.rec, &d)?;
        Ok(y)
    }
}

/// `nn.Linear`.
pub struct Linear {
    pub weight: Tensor,
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
        ops::gemm::linear(&mut g.rec, x, &self.weight, self.bias.as_ref(), &y)?;
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
