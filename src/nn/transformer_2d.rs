//! diffusers' `Transformer2DModel` with continuous input (`models/transformers/transformer_2d.py`)
//! and its `BasicTransformerBlock` (`models/attention.py`), the spatial transformer of Latent
//! Diffusion (Rombach et al., 2022): GroupNorm(eps 1e-6) → `proj_in` (1×1 conv, or linear with
//! `use_linear_projection`) → tokens → blocks of [LayerNorm → self-attention (`attn1`) → +;
//! LayerNorm → cross-attention to the text (`attn2`) → +; LayerNorm → GEGLU feed-forward
//! (Shazeer, 2020) → +] → `proj_out` → + input.

use super::layers::{Conv2d, GroupNorm, Linear, Loader};
use super::standin::{sdpa, LayerNorm, LayerNormLoader};
use super::Graph;
use crate::error::Result;
use crate::ops;
use crate::ops::conv2d::{Conv2dArgs, Epilogue};
use crate::tensor::Tensor;

/// diffusers' `Attention` as `BasicTransformerBlock` builds it: `to_q/k/v` without bias,
/// `to_out.0` with bias, no norm, no residual (the block adds it). Keys and values come from
/// the block's own tokens (self-attention) or from the text states (cross-attention).
pub struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl CrossAttention {
    /// `kv_dim` is the width of the key/value source (`query_dim` for self-attention,
    /// `cross_attention_dim` for cross-attention).
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        query_dim: usize,
        kv_dim: usize,
        heads: usize,
        dim_head: usize,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        Ok(CrossAttention {
            to_q: l.linear_no_bias(&format!("{prefix}.to_q"), query_dim, inner)?,
            to_k: l.linear_no_bias(&format!("{prefix}.to_k"), kv_dim, inner)?,
            to_v: l.linear_no_bias(&format!("{prefix}.to_v"), kv_dim, inner)?,
            to_out: l.linear(&format!("{prefix}.to_out.0"), inner, query_dim)?,
            heads,
        })
    }

    /// `x` [B, L, query_dim] attending to `context` [B, Lk, kv_dim] (itself when `None`);
    /// returns `to_out(attention)` [B, L, query_dim].
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: &Tensor,
        context: Option<&Tensor>,
        name: &str,
    ) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = self.to_q.forward(g, x, &format!("{name}.q"))?;
        let k = self.to_k.forward(g, ctx, &format!("{name}.k"))?;
        let v = self.to_v.forward(g, ctx, &format!("{name}.v"))?;
        let (b, lq, inner) = (q.shape()[0], q.shape()[1], q.shape()[2]);
        g.flops += 4 * (b * lq * k.shape()[1] * inner) as u64; // both attention products
        let o = sdpa(g, &q, &k, &v, self.heads, false, &format!("{name}.heads"))?;
        self.to_out.forward(g, &o, &format!("{name}.out"))
    }
}

/// `BasicTransformerBlock` (norm_type "layer_norm", activation "geglu", no ada-norm).
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    /// `ff.net.0.proj`: dim → 2·4·dim (hidden and gate halves).
    ff_proj: Linear,
    /// `ff.net.2`: 4·dim → dim.
    ff_out: Linear,
}

/// LayerNorm eps of `BasicTransformerBlock` (diffusers' `norm_eps` default).
const BLOCK_LN_EPS: f64 = 1e-5;

impl BasicTransformerBlock {
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_dim: usize,
    ) -> Result<Self> {
        let ff_inner = 4 * dim;
        Ok(BasicTransformerBlock {
            norm1: l.layer_norm(&format!("{prefix}.norm1"), dim, BLOCK_LN_EPS)?,
            attn1: CrossAttention::load(l, &format!("{prefix}.attn1"), dim, dim, heads, dim_head)?,
            norm2: l.layer_norm(&format!("{prefix}.norm2"), dim, BLOCK_LN_EPS)?,
            attn2: CrossAttention::load(
                l,
                &format!("{prefix}.attn2"),
                dim,
                cross_dim,
                heads,
                dim_head,
            )?,
            norm3: l.layer_norm(&format!("{prefix}.norm3"), dim, BLOCK_LN_EPS)?,
            ff_proj: l.linear(&format!("{prefix}.ff.net.0.proj"), dim, 2 * ff_inner)?,
            ff_out: l.linear(&format!("{prefix}.ff.net.2"), ff_inner, dim)?,
        })
    }

    /// `h` [B, L, dim], `context` [B, Lk, cross_dim] → [B, L, dim].
    pub fn forward(&self, g: &mut Graph<'_>, h: &Tensor, context: &Tensor) -> Result<Tensor> {
        let n = self.norm1.forward(g, h, "tb.norm1")?;
        let a = self.attn1.forward(g, &n, None, "tb.attn1")?;
        let h = super::layers::add(g, &a, h, "tb.h1")?;
        let n = self.norm2.forward(g, &h, "tb.norm2")?;
        let a = self.attn2.forward(g, &n, Some(context), "tb.attn2")?;
        let h = super::layers::add(g, &a, &h, "tb.h2")?;
        let n = self.norm3.forward(g, &h, "tb.norm3")?;
        let p = self.ff_proj.forward(g, &n, "tb.ff.proj")?;
        let mut s = p.shape().to_vec();
        if let Some(last) = s.last_mut() {
            *last /= 2;
        }
        let gated = g.alloc("tb.ff.geglu", &s)?;
        super::standin::geglu(g, &p, &gated)?;
        let f = self.ff_out.forward(g, &gated, "tb.ff.out")?;
        super::layers::add(g, &f, &h, "tb.h3")
    }
}

enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

/// GroupNorm eps of `Transformer2DModel`.
const GROUP_NORM_EPS: f64 = 1e-6;

/// `Transformer2DModel` over [B, C, H, W] with text states [B, Lk, cross_dim].
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
    inner: usize,
}

/// The shape of a `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub struct TransformerOptions {
    pub heads: usize,
    pub layers: usize,
    pub cross_attention_dim: usize,
    pub groups: usize,
    pub use_linear_projection: bool,
}

impl Transformer2DModel {
    /// diffusers' `Transformer2DModel(heads, channels // heads, in_channels=channels, …)`.
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        channels: usize,
        o: TransformerOptions,
    ) -> Result<Self> {
        let dim_head = channels / o.heads.max(1);
        let inner = o.heads * dim_head;
        let one = Conv2dArgs {
            stride: 1,
            padding: 0,
            extra_end: 0,
        };
        let (proj_in, proj_out) = if o.use_linear_projection {
            (
                Proj::Linear(l.linear(&format!("{prefix}.proj_in"), channels, inner)?),
                Proj::Linear(l.linear(&format!("{prefix}.proj_out"), inner, channels)?),
            )
        } else {
            (
                Proj::Conv(l.conv(&format!("{prefix}.proj_in"), channels, inner, 1, one)?),
                Proj::Conv(l.conv(&format!("{prefix}.proj_out"), inner, channels, 1, one)?),
            )
        };
        let blocks = (0..o.layers)
            .map(|i| {
                BasicTransformerBlock::load(
                    l,
                    &format!("{prefix}.transformer_blocks.{i}"),
                    inner,
                    o.heads,
                    dim_head,
                    o.cross_attention_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer2DModel {
            norm: l.group_norm(
                &format!("{prefix}.norm"),
                channels,
                o.groups,
                GROUP_NORM_EPS,
            )?,
            proj_in,
            blocks,
            proj_out,
            inner,
        })
    }

    /// `x` [B, C, H, W] (not consumed), `context` [B, Lk, cross_dim] → [B, C, H, W].
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (b, c, l) = (s[0], s[1], s[2] * s[3]);
        let inner = self.inner;
        let n = self.norm.forward(g, x, false, "t2d.norm")?;
        let mut h = match &self.proj_in {
            Proj::Conv(conv) => {
                let p = conv.forward(g, &n, "t2d.proj_in")?;
                let t = g.alloc("t2d.tokens", &[b, l, inner])?;
                ops::transpose::transpose(&mut g.rec, &p, &t, b, inner, l)?;
                t
            }
            Proj::Linear(lin) => {
                let t = g.alloc("t2d.tokens", &[b, l, c])?;
                ops::transpose::transpose(&mut g.rec, &n, &t, b, c, l)?;
                lin.forward(g, &t, "t2d.proj_in")?
            }
        };
        for blk in &self.blocks {
            h = blk.forward(g, &h, context)?;
        }
        match &self.proj_out {
            Proj::Conv(conv) => {
                let t = g.alloc("t2d.spatial", &[b, inner, s[2], s[3]])?;
                ops::transpose::transpose(&mut g.rec, &h, &t, b, l, inner)?;
                let epi = Epilogue {
                    residual: Some(x),
                    ..Default::default()
                };
                conv.forward_fused(g, &t, "t2d.out", epi)
            }
            Proj::Linear(lin) => {
                let p = lin.forward(g, &h, "t2d.proj_out")?;
                let t = g.alloc("t2d.spatial", &s)?;
                ops::transpose::transpose(&mut g.rec, &p, &t, b, l, c)?;
                let y = g.alloc("t2d.out", &s)?;
                ops::elementwise::binary(&mut g.rec, ops::elementwise::Binary::Add, &t, x, &y)?;
                Ok(y)
            }
        }
    }
}
