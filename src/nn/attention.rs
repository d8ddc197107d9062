//! The spatial self-attention of diffusers' UNet blocks (`Attention` with `group_norm`,
//! `residual_connection=True`, run by `AttnProcessor2_0`): GroupNorm → tokens → multi-head
//! scaled dot-product attention (Vaswani et al., 2017) → `to_out.0` → + input →
//! ÷ `rescale_output_factor`. Heads are addressed inside [B, L, H·d] by strided GEMMs.

use super::layers::{GroupNorm, Linear, Loader};
use super::Graph;
use crate::error::Result;
use crate::ops;
use crate::ops::attention::AttentionKernel;
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
    /// The fused (online-softmax) kernel or the GEMM–softmax–GEMM path; `None` picks per
    /// adapter ([`ops::attention::select_kernel`]). Tests set it to cover both paths.
    pub kernel: Option<AttentionKernel>,
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
            kernel: None,
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
        let q = self.to_q.forward(g, &tokens, "attn.q")?;
        let k = self.to_k.forward(g, &tokens, "attn.k")?;
        let v = self.to_v.forward(g, &tokens, "attn.v")?;
        let heads_out = g.alloc("attn.heads", &[b, l, inner])?;
        g.flops += 4 * (b * h * l * l * d) as u64; // both attention products
        let scale = (1.0 / (d as f64).sqrt()) as f32;
        let kernel = match self.kernel {
            Some(k) => k,
            None => ops::attention::select_kernel(g.gpu(), &q, &k, &v, &heads_out, h, scale)?,
        };
        if kernel == AttentionKernel::Fused {
            ops::attention::attention_fused(&mut g.rec, &q, &k, &v, &heads_out, h, scale)?;
        } else {
            let scores = g.alloc("attn.scores", &[b * h, l, l])?;
            let probs = g.alloc("attn.probs", &[b * h, l, l])?;
            ops::attention::attention_gemm(
                &mut g.rec, &q, &k, &v, &heads_out, &scores, &probs, h, scale,
            )?;
        }
        let out_tokens = self.to_out.forward(g, &heads_out, "attn.out_tokens")?;
        let out = g.alloc("attn.out", &s)?;
        ops::transpose::transpose(&mut g.rec, &out_tokens, &out, b, l, c)?;
        let y = super::layers::add(g, &out, x, "attn.residual")?;
        super::layers::scale_inplace(g, &y, self.rescale_output_factor)?;
        Ok(y)
    }
}
