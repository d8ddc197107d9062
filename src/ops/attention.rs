//! Scaled-dot-product attention (Vaswani et al., 2017) over the token-major [B, L, H·D] layout
//! of diffusers' `Attention` and transformers' CLIP attention: q [B, Lq, H·D], k and v
//! [B, Lk, H·D] (Lq ≠ Lk for cross-attention), an optional causal mask (query i sees keys
//! j ≤ i, CLIP's text encoder). Two ways:
//! - [`attention_gemm`]: batched GEMM (q kᵀ) → row softmax → batched GEMM (· v) through a score
//!   matrix [B·H, C, Lk] for a chunk of C query rows, looped over the chunks when the whole
//!   [B·H, Lq, Lk] matrix does not fit (so 4096-token self-attention never materialises it);
//! - [`attention_fused`] (`shaders/attention.wgsl`): one pass with an online softmax (Milakov &
//!   Gimelshein, "Online normalizer calculation for softmax", 2018), one invocation per (batch,
//!   head, query), no score matrix, head dims up to [`DMAX`].
//!
//! `nn::attention::sdpa` picks between them; [`select_kernel`] keeps the tuning hook.

use super::gemm::GemmDesc;
use super::softmax::Causal;
use super::{grid_1d, nonempty, same_dtype, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::tuning::{parse_variant, select, time_recorded, Variant};
use crate::gpu::{params, GpuInfo, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Largest head dim the fused kernel takes (SD 1.x's 1280 channels over 8 heads).
pub const DMAX: usize = 160;

/// The accumulator lengths (in vec4s) the fused kernel is compiled for: a head dim D runs in
/// the smallest that holds ⌈D/4⌉, so its loops have constant trip counts.
pub const DV4: [usize; 8] = [2, 4, 8, 10, 16, 20, 32, 40];

params! {
    /// `#uniform Params` of `shaders/attention.wgsl`.
    struct Params {
        /// B
        batch: u32,
        /// Lq
        lq: u32,
        /// Lk
        lk: u32,
        /// H
        heads: u32,
        /// D
        dim: u32,
        /// α (D^-½ for standard attention)
        scale: f32,
        /// 1: query i sees keys j ≤ i only
        causal: u32,
        _p0: u32,
    }
}

/// The compiled accumulator length (vec4s) for head dim `d` (≤ [`DMAX`]).
fn dv4_for(d: usize) -> usize {
    let need = d.div_ceil(4);
    DV4.iter().copied().find(|&v| v >= need).unwrap_or(DMAX / 4)
}

fn key(dt: DType, dv4: usize) -> KernelKey {
    KernelKey::new::<Params>("attention", "main", dt, [WG_1D, 1, 1]).define("DV4", dv4)
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    DV4.iter().map(|&v| key(dt, v)).collect()
}

/// The attention path; its `Display` is the name the tuning cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// [`attention_gemm`]: GEMM → softmax → GEMM through a score matrix (the default): "gemm".
    Gemm,
    /// [`attention_fused`]: one online-softmax pass, head dimensions up to [`DMAX`]: "fused".
    Fused,
}

impl AttentionKernel {
    /// Both paths, the default first.
    pub const ALL: [AttentionKernel; 2] = [AttentionKernel::Gemm, AttentionKernel::Fused];
}

impl std::fmt::Display for AttentionKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttentionKernel::Gemm => "gemm",
            AttentionKernel::Fused => "fused",
        })
    }
}

impl std::str::FromStr for AttentionKernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_variant(s)
    }
}

impl Variant for AttentionKernel {
    const OP: &'static str = "attention";
    /// The head dimension.
    type Ctx = usize;
    fn all() -> Vec<Self> {
        Self::ALL.to_vec()
    }
    fn default_for(_: &GpuInfo, _: &usize) -> Self {
        AttentionKernel::Gemm
    }
    fn unsupported(self, _: &GpuInfo, &d: &usize) -> Option<String> {
        (self == AttentionKernel::Fused && d > DMAX)
            .then(|| format!("holds head dimensions up to {DMAX}, not {d}"))
    }
}

/// The dimensions of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    pub lq: usize,
    pub lk: usize,
    pub heads: usize,
    pub dim: usize,
}

/// The path for this attention: [`AttentionKernel::Gemm`] unless tuning is on and the fused
/// kernel measures faster on this adapter and shape. Invalid shapes take the GEMM path, whose
/// checks report them. (The tuning measurement of the GEMM path scores all queries at once.)
pub fn select_kernel(
    gpu: &crate::gpu::Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<AttentionKernel> {
    let Ok(s) = check(q, k, v, out, heads) else {
        return Ok(AttentionKernel::Gemm);
    };
    let (b, lq, lk, d) = (s.batch, s.lq, s.lk, s.dim);
    let tuning_key = || format!("{:?}|{b}x{lq}x{lk}x{heads}x{d}", q.dtype());
    // Scratch score matrices only when a measurement actually runs (not on a cache hit).
    select(gpu, None, &d, tuning_key, &mut |c| {
        time_recorded(gpu, &mut |r| match c {
            AttentionKernel::Fused => attention_fused(r, q, k, v, out, heads, scale),
            AttentionKernel::Gemm => {
                let scores = Tensor::empty(gpu, "attn.scores", &[b * heads, lq, lk], q.dtype())?;
                let probs = Tensor::empty(gpu, "attn.probs", &[b * heads, lq, lk], q.dtype())?;
                attention_gemm(r, q, k, v, out, &scores, &probs, heads, scale)
            }
        })
    })
}

/// out = softmax(scale · q kᵀ) v per (batch, head) through `scores` and `probs`
/// ([B·H, Lq, Lk] scratch): two batched GEMMs addressing the heads by stride, and the row softmax.
#[allow(clippy::too_many_arguments)]
pub fn attention_gemm(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    scores: &Tensor,
    probs: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<()> {
    attention_gemm_masked(rec, q, k, v, out, scores, probs, heads, scale, false)
}

/// [`attention_gemm`] with an optional causal mask, over chunks of query rows: `scores` and
/// `probs` are [B·H, C, Lk] scratch for C ≤ Lq query rows (C = Lq: one pass), and the queries
/// are taken C at a time (the last chunk may be shorter), so the whole [B·H, Lq, Lk] score
/// matrix never exists when C < Lq.
#[allow(clippy::too_many_arguments)]
pub fn attention_gemm_masked(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    scores: &Tensor,
    probs: &Tensor,
    heads: usize,
    scale: f32,
    causal: bool,
) -> Result<()> {
    const OP: &str = "attention";
    let s = check(q, k, v, out, heads)?;
    let (b, lq, lk, d) = (s.batch, s.lq, s.lk, s.dim);
    same_dtype(OP, q, scores)?;
    same_dtype(OP, q, probs)?;
    let chunk = match scores.shape() {
        [bh, c, n] if *bh == b * heads && *n == lk && *c >= 1 && *c <= lq => *c,
        _ => {
            return Err(shape_err(
                OP,
                scores,
                format!("expected [{}, C, {lk}] with 1 ≤ C ≤ {lq}", b * heads),
            ))
        }
    };
    if probs.shape() != scores.shape() {
        return Err(shape_err(
            OP,
            probs,
            format!("expected {:?} like `{}`", scores.shape(), scores.name()),
        ));
    }
    let inner = heads * d;
    let mut q0 = 0;
    while q0 < lq {
        let m = chunk.min(lq - q0);
        let qk = GemmDesc {
            m,
            n: lk,
            k: d,
            batch: b * heads,
            batch_inner: heads,
            lda: inner,
            ldb: inner,
            ldc: lk,
            a_strides: [lq * inner, d],
            b_strides: [lk * inner, d],
            c_strides: [heads * chunk * lk, chunk * lk],
            trans_b: true,
            alpha: scale,
        };
        super::gemm::gemm_offset(rec, &qk, q, q0 * inner, k, scores, 0)?;
        let mask = causal.then_some(Causal {
            rows: chunk,
            offset: q0,
        });
        super::softmax::softmax_masked(rec, scores, probs, 1.0, mask, None)?;
        let pv = GemmDesc {
            m,
            n: d,
            k: lk,
            batch: b * heads,
            batch_inner: heads,
            lda: lk,
            ldb: inner,
            ldc: inner,
            a_strides: [heads * chunk * lk, chunk * lk],
            b_strides: [lk * inner, d],
            c_strides: [lq * inner, d],
            trans_b: false,
            alpha: 1.0,
        };
        super::gemm::gemm_offset(rec, &pv, probs, 0, v, out, q0 * inner)?;
        q0 += m;
    }
    Ok(())
}

/// Checks q, out are [B, Lq, H·D] and k, v [B, Lk, H·D] of one dtype.
pub fn check(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, heads: usize) -> Result<AttnShape> {
    const OP: &str = "attention";
    nonempty(OP, q)?;
    nonempty(OP, k)?;
    let s = q.shape();
    if s.len() != 3 || heads == 0 || s[2] % heads != 0 {
        return Err(shape_err(
            OP,
            q,
            format!("expected [B, L, H·D] with {heads} heads"),
        ));
    }
    let ks = k.shape();
    if ks.len() != 3 || ks[0] != s[0] || ks[2] != s[2] {
        return Err(shape_err(
            OP,
            k,
            format!(
                "expected [{}, Lk, {}] (keys for `{}`)",
                s[0],
                s[2],
                q.name()
            ),
        ));
    }
    for t in [k, v, out] {
        same_dtype(OP, q, t)?;
    }
    if v.shape() != ks {
        return Err(shape_err(
            OP,
            v,
            format!("expected {:?} like `{}`", ks, k.name()),
        ));
    }
    if out.shape() != s {
        return Err(shape_err(
            OP,
            out,
            format!("expected {:?} like `{}`", s, q.name()),
        ));
    }
    Ok(AttnShape {
        batch: s[0],
        lq: s[1],
        lk: ks[1],
        heads,
        dim: s[2] / heads,
    })
}

/// out = softmax(scale · q kᵀ) v per (batch, head) in one fused pass (online softmax).
pub fn attention_fused(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<()> {
    attention_fused_masked(rec, q, k, v, out, heads, scale, false)
}

/// [`attention_fused`] with an optional causal mask (query i sees keys j ≤ i).
#[allow(clippy::too_many_arguments)]
pub fn attention_fused_masked(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
    scale: f32,
    causal: bool,
) -> Result<()> {
    const OP: &str = "attention";
    let s = check(q, k, v, out, heads)?;
    if s.dim > DMAX {
        return Err(shape_err(
            OP,
            q,
            format!(
                "has head dimension {}; the fused kernel holds at most {DMAX}",
                s.dim
            ),
        ));
    }
    let p = Params {
        batch: u32_param(OP, "batch", s.batch)?,
        lq: u32_param(OP, "query length", s.lq)?,
        lk: u32_param(OP, "key length", s.lk)?,
        heads: heads as u32,
        dim: s.dim as u32,
        scale,
        causal: causal as u32,
        _p0: 0,
    };
    let gpu = rec.gpu();
    let n = u32_param(OP, "queries", s.batch * heads * s.lq)?;
    let g = grid_1d(gpu, OP, (n as u64).div_ceil(WG_1D as u64))?;
    let binds = [
        ("q", q.binding(gpu, OP)?),
        ("k", k.binding(gpu, OP)?),
        ("v", v.binding(gpu, OP)?),
        ("out", out.binding(gpu, OP)?),
    ];
    rec.dispatch(&key(q.dtype(), dv4_for(s.dim)), &p, &binds, g)?;
    Ok(())
}
