//! The spatial self-attention of diffusers' UNet blocks (`Attention` with `group_norm`,
//! `residual_connection=True`, run by `AttnProcessor2_0`): GroupNorm → tokens → multi-head
//! scaled dot-product attention (Vaswani et al., 2017) → `to_out.0` → + input →
//! ÷ `rescale_output_factor`. Heads are addressed inside [B, L, H·d] by strided GEMMs.

use super::layers::{GroupNorm, Linear, Loader};
use super::Graph;
use crate::error::Result;
use crate::ops;
use crate::ops::gemm::GemmDesc;
use crate::tensor::Tensor;

pub struct AttentionBlock {
    group_norm: Option<GroupNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
    rescale_output_factor: f64,
}

impl AttentionBlock {
    /// `groups` is `None` when the block has no group norm (diffusers' mid block with
    /// `scale_shift` and no `attn_norm_num_groups`).
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        channels: usize,
        dim_head: usize,
        groups: Option<usize>,
        eps: f64,
        rescale_output_factor: f64,
    ) -> Result<Self> {
        let heads = channels / dim_head.max(1);
        let inner = heads * dim_head;
        Ok(AttentionBlock {
            group_norm: groups
                .map(|g| l.group_norm(&format!("{prefix}.group_norm"), channels, g, eps))
                .transpose()?,
            to_q: l.linear(&format!("{prefix}.to_q"), channels, inner)?,
            to_k: l.linear(&format!("{prefix}.to_k"), channels, inner)?,
            to_v: l.linear(&format!("{prefix}.to_v"), channels, inner)?,
            to_out: l.linear(&format!("{prefix}.to_out.0"), inner, channels)?,
            heads,
            dim_head,
            rescale_output_factor,
        })
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (b, c, l) = (s[0], s[1], s[2] * s[3]);
        let (h, d) = (self.heads, self.dim_head);
        let inner = h * d;
        let normed = match &self.group_norm {
            Some(n) => Some(n.forward(g, x, false, "attn.norm")?),
            None => None,
        };
        let tokens = g.alloc("attn.tokens", &[b, l, c])?;
        ops::transpose::transpose(&mut g.rec, normed.as_ref().unwrap_or(x), &tokens, b, c, l)?;
        if let Some(n) = normed {
            g.release(n);
        }
        let q = self.to_q.forward(g, &tokens, "attn.q")?;
        let k = self.to_k.forward(g, &tokens, "attn.k")?;
        let v = self.to_v.forward(g, &tokens, "attn.v")?;
        g.release(tokens);
        // scores[b, h] = q_bh · k_bhᵀ · d^-½, with q_bh rows at stride H·d inside [B, L, H·d].
        let scores = g.alloc("attn.scores", &[b * h, l, l])?;
        let qk = GemmDesc {
            m: l,
            n: l,
            k: d,
            batch: b * h,
            batch_inner: h,
            lda: inner,
            ldb: inner,
            ldc: l,
            a_strides: [l * inner, d],
            b_strides: [l * inner, d],
            c_strides: [h * l * l, l * l],
            trans_b: true,
            alpha: (1.0 / (d as f64).sqrt()) as f32,
        };
        ops::gemm::gemm(&mut g.rec, &qk, &q, &k, None, &scores)?;
        g.flops += 4 * (b * h * l * l * d) as u64; // both attention GEMMs
        g.release(q);
        g.release(k);
        let probs = g.alloc("attn.probs", &[b * h, l, l])?;
        ops::softmax::softmax(&mut g.rec, &scores, &probs, 1.0)?;
        g.release(scores);
        let heads_out = g.alloc("attn.heads", &[b, l, inner])?;
        let pv = GemmDesc {
            m: l,
            n: d,
            k: l,
            batch: b * h,
            batch_inner: h,
            lda: l,
            ldb: inner,
            ldc: inner,
            a_strides: [h * l * l, l * l],
            b_strides: [l * inner, d],
            c_strides: [l * inner, d],
            trans_b: false,
            alpha: 1.0,
        };
        ops::gemm::gemm(&mut g.rec, &pv, &probs, &v, None, &heads_out)?;
        g.release(probs);
        g.release(v);
        let out_tokens = self.to_out.forward(g, &heads_out, "attn.out_tokens")?;
        g.release(heads_out);
        let out = g.alloc("attn.out", &s)?;
        ops::transpose::transpose(&mut g.rec, &out_tokens, &out, b, l, c)?;
        g.release(out_tokens);
        let y = super::layers::add(g, &out, x, "attn.residual")?;
        g.release(out);
        super::layers::scale_inplace(g, &y, self.rescale_output_factor)?;
        Ok(y)
    }
}
