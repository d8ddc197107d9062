//! TEMPORARY stand-ins for helper B's `nn::layers::LayerNorm` and `nn::attention::sdpa`
//! (branch wt-b), so the UNet can be built and tested before they land. Deleted at the merge.

use super::layers::Loader;
use super::Graph;
use crate::error::Result;
use crate::ops;
use crate::ops::gemm::GemmDesc;
use crate::tensor::Tensor;

pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

pub trait LayerNormLoader {
    fn layer_norm(&self, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm>;
}

impl LayerNormLoader for Loader<'_> {
    fn layer_norm(&self, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: self.tensor(&format!("{prefix}.weight"), &[dim])?,
            beta: self.tensor(&format!("{prefix}.bias"), &[dim])?,
            eps: eps as f32,
        })
    }
}

impl LayerNorm {
    /// LayerNorm over the last dim = GroupNorm with one group over [rows, D, 1, 1].
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, name: &str) -> Result<Tensor> {
        let d = *x.shape().last().unwrap();
        let rows = x.numel() / d;
        let y = g.alloc(name, x.shape())?;
        let x4 = x.reshape(&[rows, d, 1, 1])?;
        let y4 = y.reshape(&[rows, d, 1, 1])?;
        ops::group_norm::group_norm(
            &mut g.rec,
            &x4,
            &self.gamma,
            &self.beta,
            &y4,
            1,
            self.eps,
            false,
        )?;
        Ok(y)
    }
}

/// softmax(q kᵀ/√d) v per head, q [B, Lq, H·D], k/v [B, Lk, H·D].
pub fn sdpa(
    g: &mut Graph<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    _causal: bool,
    name: &str,
) -> Result<Tensor> {
    let (b, lq, inner) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let lk = k.shape()[1];
    let d = inner / heads;
    let scores = g.alloc(&format!("{name}.scores"), &[b * heads, lq, lk])?;
    let probs = g.alloc(&format!("{name}.probs"), &[b * heads, lq, lk])?;
    let out = g.alloc(name, &[b, lq, inner])?;
    let qk = GemmDesc {
        m: lq,
        n: lk,
        k: d,
        batch: b * heads,
        batch_inner: heads,
        lda: inner,
        ldb: inner,
        ldc: lk,
        a_strides: [lq * inner, d],
        b_strides: [lk * inner, d],
        c_strides: [heads * lq * lk, lq * lk],
        trans_b: true,
        alpha: (1.0 / (d as f64).sqrt()) as f32,
    };
    ops::gemm::gemm(&mut g.rec, &qk, q, k, None, &scores)?;
    ops::softmax::softmax(&mut g.rec, &scores, &probs, 1.0)?;
    let pv = GemmDesc {
        m: lq,
        n: d,
        k: lk,
        batch: b * heads,
        batch_inner: heads,
        lda: lk,
        ldb: inner,
        ldc: inner,
        a_strides: [heads * lq * lk, lq * lk],
        b_strides: [lk * inner, d],
        c_strides: [lq * inner, d],
        trans_b: false,
        alpha: 1.0,
    };
    ops::gemm::gemm(&mut g.rec, &pv, &probs, v, None, &out)?;
    Ok(out)
}

/// y [.., F] = x[.., :F] · gelu(x[.., F:]) for x [.., 2F].
pub fn geglu(g: &mut Graph<'_>, x: &Tensor, y: &Tensor) -> Result<()> {
    let f2 = *x.shape().last().unwrap();
    let rows = x.numel() / f2;
    let f = f2 / 2;
    let x4 = x.reshape(&[rows, f2, 1, 1])?;
    let gate = g.alloc("geglu.gate", &[rows, f, 1, 1])?;
    let hidden = g.alloc("geglu.hidden", &[rows, f, 1, 1])?;
    ops::concat::slice_channels(&mut g.rec, &x4, 0, &hidden)?;
    ops::concat::slice_channels(&mut g.rec, &x4, f, &gate)?;
    ops::elementwise::unary_inplace(&mut g.rec, ops::elementwise::Unary::Gelu, &gate)?;
    let y4 = y.reshape(&[rows, f, 1, 1])?;
    ops::elementwise::binary(
        &mut g.rec,
        ops::elementwise::Binary::Mul,
        &hidden,
        &gate,
        &y4,
    )?;
    Ok(())
}
