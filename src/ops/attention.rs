//! Scaled-dot-product attention over the token-major [B, L, H·D] layout, two ways:
//! - [`attention_gemm`]: batched GEMM (q kᵀ) → row softmax → batched GEMM (· v), through a
//!   [B·H, L, L] score matrix — the default;
//! - [`attention_fused`] (`shaders/attention.wgsl`): one pass with an online softmax (Milakov &
//!   Gimelshein, "Online normalizer calculation for softmax", 2018), one invocation per (batch,
//!   head, query), no score matrix. On lavapipe it measured 2.6× slower than the GEMM path for
//!   196 tokens (benches/README.md), so it is only chosen where per-adapter tuning
//!   (`DIFFUSE_TUNE`) measures it faster ([`select_kernel`]).

use super::gemm::GemmDesc;
use super::{grid_1d, nonempty, same_dtype, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::tuning::{parse_variant, select, time_recorded, Variant};
use crate::gpu::{params, GpuInfo, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Largest head dim the fused kernel takes.
pub const DMAX: usize = 128;

params! {
    /// `#uniform Params` of `shaders/attention.wgsl`.
    struct Params {
        /// B
        batch: u32,
        /// L
        len: u32,
        /// H
        heads: u32,
        /// D
        dim: u32,
        /// α = D^-½
        scale: f32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

fn key(dt: DType) -> KernelKey {
    KernelKey::new::<Params>("attention", "main", dt, [WG_1D, 1, 1]).define("DMAX", DMAX)
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![key(dt)]
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

/// The path for this attention: [`AttentionKernel::Gemm`] unless tuning is on and the fused
/// kernel measures faster on this adapter and shape. Invalid shapes take the GEMM path, whose
/// checks report them.
pub fn select_kernel(
    gpu: &crate::gpu::Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<AttentionKernel> {
    let s = q.shape();
    if s.len() != 3 || heads == 0 {
        return Ok(AttentionKernel::Gemm);
    }
    let (b, l, d) = (s[0], s[1], s[2] / heads);
    let tuning_key = || format!("{:?}|{b}x{l}x{heads}x{d}", q.dtype());
    // Scratch score matrices only when a measurement actually runs (not on a cache hit).
    select(gpu, None, &d, tuning_key, &mut |c| {
        time_recorded(gpu, &mut |r| match c {
            AttentionKernel::Fused => attention_fused(r, q, k, v, out, heads, scale),
            AttentionKernel::Gemm => {
                let scores = Tensor::empty(gpu, "attn.scores", &[b * heads, l, l], q.dtype())?;
                let probs = Tensor::empty(gpu, "attn.probs", &[b * heads, l, l], q.dtype())?;
                attention_gemm(r, q, k, v, out, &scores, &probs, heads, scale)
            }
        })
    })
}

/// out = softmax(scale · q kᵀ) v per (batch, head) through `scores` and `probs`
/// ([B·H, L, L] scratch): two batched GEMMs addressing the heads by stride, and the row softmax.
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
    let (b, l, d) = check(q, k, v, out, heads)?;
    let inner = heads * d;
    let qk = GemmDesc {
        m: l,
        n: l,
        k: d,
        batch: b * heads,
        batch_inner: heads,
        lda: inner,
        ldb: inner,
        ldc: l,
        a_strides: [l * inner, d],
        b_strides: [l * inner, d],
        c_strides: [heads * l * l, l * l],
        trans_b: true,
        alpha: scale,
    };
    super::gemm::gemm(rec, &qk, q, k, None, scores)?;
    super::softmax::softmax(rec, scores, probs, 1.0)?;
    let pv = GemmDesc {
        m: l,
        n: d,
        k: l,
        batch: b * heads,
        batch_inner: heads,
        lda: l,
        ldb: inner,
        ldc: inner,
        a_strides: [heads * l * l, l * l],
        b_strides: [l * inner, d],
        c_strides: [l * inner, d],
        trans_b: false,
        alpha: 1.0,
    };
    super::gemm::gemm(rec, &pv, probs, v, None, out)
}

/// Checks q, k, v, out are equal [B, L, H·D] tensors; returns (B, L, D).
fn check(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
) -> Result<(usize, usize, usize)> {
    const OP: &str = "attention";
    nonempty(OP, q)?;
    for t in [k, v, out] {
        same_dtype(OP, q, t)?;
        if t.shape() != q.shape() {
            return Err(shape_err(
                OP,
                t,
                format!("expected {:?} like `{}`", q.shape(), q.name()),
            ));
        }
    }
    let s = q.shape();
    if s.len() != 3 || heads == 0 || s[2] % heads != 0 {
        return Err(shape_err(
            OP,
            q,
            format!("expected [B, L, H·D] with {heads} heads"),
        ));
    }
    Ok((s[0], s[1], s[2] / heads))
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
    const OP: &str = "attention";
    let (b, l, d) = check(q, k, v, out, heads)?;
    if d > DMAX {
        return Err(shape_err(
            OP,
            q,
            format!("has head dimension {d}; the fused kernel holds at most {DMAX}"),
        ));
    }
    let p = Params {
        batch: u32_param(OP, "batch", b)?,
        len: u32_param(OP, "length", l)?,
        heads: heads as u32,
        dim: d as u32,
        scale,
        _p0: 0,
        _p1: 0,
        _p2: 0,
    };
    let gpu = rec.gpu();
    let n = u32_param(OP, "queries", b * heads * l)?;
    let g = grid_1d(gpu, OP, (n as u64).div_ceil(WG_1D as u64))?;
    let binds = [
        ("q", q.binding(gpu, OP)?),
        ("k", k.binding(gpu, OP)?),
        ("v", v.binding(gpu, OP)?),
        ("out", out.binding(gpu, OP)?),
    ];
    rec.dispatch(&key(q.dtype()), &p, &binds, g)?;
    Ok(())
}
