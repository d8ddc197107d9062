//! The spatial self-attention of diffusers' UNet blocks (`Attention` with `group_norm`,
//! `residual_connection=True`, run by `AttnProcessor2_0`): GroupNorm → tokens → multi-head
//! scaled dot-product attention (Vaswani et al., 2017) → `to_out.0` → + input →
//! ÷ `rescale_output_factor`. Heads are addressed inside [B, L, H·d] by strided GEMMs.
//!
//! [`sdpa`] is the one multi-head attention entry point of every network (UNet blocks,
//! transformer blocks, CLIP): it picks the kernel and never materialises a score matrix larger
//! than one storage binding (memory-efficient attention for 4096-token latents).

use super::layers::{GroupNorm, Linear, Loader};
use super::Graph;
use crate::error::Result;
use crate::ops;
use crate::ops::attention::AttentionKernel;
use crate::tensor::Tensor;

/// The path [`sdpa`] takes when the [B·H, Lq, Lk] scores do not fit one storage binding (and
/// the head dim fits the fused kernel): the GEMM path chunked over queries. Measured on lavapipe
/// at SD 1.5's 64×64 latents (B = 2, H = 8, L = 4096, D = 40, f32): 58 s chunked GEMM vs 216 s
/// fused (3.7× slower) on a loaded 2-core container (benches/README.md).
pub const LARGE_PATH: AttentionKernel = AttentionKernel::Gemm;

/// Multi-head scaled-dot-product attention, softmax(q kᵀ / √D) v, for q [B, Lq, H·D] and k, v
/// [B, Lk, H·D] (`causal`: query i sees keys j ≤ i); returns the new activation `name`
/// [B, Lq, H·D]. The kernel: the GEMM path with the whole score matrix when [B·H, Lq, Lk] fits
/// one storage binding (or the per-adapter winner when tuning is on); otherwise
/// [`LARGE_PATH`] — the GEMM path over chunks of queries whose scores fit, or the fused
/// online-softmax kernel — so the full score matrix never exists.
pub fn sdpa(
    g: &mut Graph<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
    name: &str,
) -> Result<Tensor> {
    sdpa_with(g, q, k, v, heads, causal, name, None)
}

/// [`sdpa`] with a forced kernel (`None`: [`sdpa`]'s choice). A forced GEMM path still chunks
/// its queries when the scores do not fit one binding.
#[allow(clippy::too_many_arguments)]
pub fn sdpa_with(
    g: &mut Graph<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
    name: &str,
    kernel: Option<AttentionKernel>,
) -> Result<Tensor> {
    let s = ops::attention::check(q, k, v, q, heads)?;
    let (b, lq, lk, d) = (s.batch, s.lq, s.lk, s.dim);
    let out = g.alloc(name, q.shape())?;
    g.flops += 4 * (b * heads * lq * lk * d) as u64; // both attention products
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let gpu = g.gpu();
    let limit = gpu.max_binding().min(gpu.info().max_buffer_size);
    let row_bytes = Tensor::bytes_for(&[b * heads, 1, lk], g.dtype);
    let fits = Tensor::bytes_for(&[b * heads, lq, lk], g.dtype) <= limit;
    let fused_ok = d <= ops::attention::DMAX;
    let kernel = match kernel {
        Some(k) => k,
        None if !fits => {
            if fused_ok {
                LARGE_PATH
            } else {
                AttentionKernel::Gemm
            }
        }
        None if causal => AttentionKernel::Gemm,
        None => ops::attention::select_kernel(gpu, q, k, v, &out, heads, scale)?,
    };
    if kernel == AttentionKernel::Fused {
        ops::attention::attention_fused_masked(&mut g.rec, q, k, v, &out, heads, scale, causal)?;
        return Ok(out);
    }
    // Query rows per chunk: all of them when they fit, else the most whose scores fit.
    let chunk = if fits {
        lq
    } else {
        ((limit / row_bytes.max(1)) as usize).clamp(1, lq)
    };
    let scores = g.alloc(&format!("{name}.scores"), &[b * heads, chunk, lk])?;
    let probs = g.alloc(&format!("{name}.probs"), &[b * heads, chunk, lk])?;
    ops::attention::attention_gemm_masked(
        &mut g.rec, q, k, v, &out, &scores, &probs, heads, scale, causal,
    )?;
    Ok(out)
}

pub struct AttentionBlock {
    group_norm: Option<GroupNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
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
            rescale_output_factor,
            kernel: None,
        })
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (b, c, l) = (s[0], s[1], s[2] * s[3]);
        let h = self.heads;
        let normed = match &self.group_norm {
            Some(n) => Some(n.forward(g, x, false, "attn.norm")?),
            None => None,
        };
        let tokens = g.alloc("attn.tokens", &[b, l, c])?;
        ops::transpose::transpose(&mut g.rec, normed.as_ref().unwrap_or(x), &tokens, b, c, l)?;
        let q = self.to_q.forward(g, &tokens, "attn.q")?;
        let k = self.to_k.forward(g, &tokens, "attn.k")?;
        let v = self.to_v.forward(g, &tokens, "attn.v")?;
        let heads_out = sdpa_with(g, &q, &k, &v, h, false, "attn.heads", self.kernel)?;
        let out_tokens = self.to_out.forward(g, &heads_out, "attn.out_tokens")?;
        let out = g.alloc("attn.out", &s)?;
        ops::transpose::transpose(&mut g.rec, &out_tokens, &out, b, l, c)?;
        let y = super::layers::add(g, &out, x, "attn.residual")?;
        super::layers::scale_inplace(g, &y, self.rescale_output_factor)?;
        Ok(y)
    }
}
