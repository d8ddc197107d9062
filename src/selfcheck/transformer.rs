//! Kernel checks of the transformer ops against [`crate::reference::transformer`]: LayerNorm,
//! GEGLU, and attention (cross-attention shapes, causal mask, the GEMM path whole or chunked
//! over queries, the fused online-softmax kernel).
//!
//! Tolerances: LayerNorm 2e-5 (+ the f16 output rounding); GEGLU 2e-6 abs/rel as the other
//! element-wise ops; attention f32 1e-6 + 2e-7·(D + Lk) abs and 1e-5 rel; f16 adds the output
//! rounding and, on the GEMM path, the f16 storage of the scores and probabilities
//! (2⁻¹⁰ relative each: 2⁻⁹·(1 + max|score|) abs).

use super::{check, out_rtol, upload, widen, Check, TestRng};
use crate::error::Result;
use crate::ops;
use crate::reference::transformer as rt;
use crate::{DType, Gpu, Tensor};

/// LayerNorm of x with `shape` over its last dim; random weight/bias when asked; inputs in
/// offset ± 1 (a large common offset checks the two-pass statistics).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    gpu: &Gpu,
    shape: &[usize],
    weight: bool,
    bias: bool,
    eps: f32,
    offset: f64,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let n: usize = shape.iter().product();
    let cols = *shape.last().unwrap_or(&1);
    let xv = rng.values(n, offset - 1.0, offset + 1.0, dt);
    let wv = rng.values(cols, -2.0, 2.0, dt);
    let bv = rng.values(cols, -1.0, 1.0, dt);
    let x = upload(gpu, "x", shape, &xv, dt)?;
    let w = upload(gpu, "weight", &[cols], &wv, dt)?;
    let b = upload(gpu, "bias", &[cols], &bv, dt)?;
    let y = Tensor::empty(gpu, "y", shape, dt)?;
    gpu.run(|rec| {
        ops::layer_norm::layer_norm(rec, &x, weight.then_some(&w), bias.then_some(&b), &y, eps)
    })?;
    let (wd, bd) = (widen(&wv), widen(&bv));
    let want = rt::layer_norm(
        &widen(&xv),
        cols,
        weight.then_some(&wd[..]),
        bias.then_some(&bd[..]),
        eps as f64,
    );
    Ok(check(
        format!("layer_norm {shape:?} w={weight} b={bias} offset {offset} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-5,
        out_rtol(dt, 2e-5),
    ))
}

/// GEGLU of x [rows, 2F] in [−4, 4].
pub fn geglu(gpu: &Gpu, rows: usize, f: usize, dt: DType, seed: u64) -> Result<Check> {
    let mut rng = TestRng(seed);
    let xv = rng.values(rows * 2 * f, -4.0, 4.0, dt);
    let x = upload(gpu, "x", &[rows, 2 * f], &xv, dt)?;
    let y = Tensor::empty(gpu, "y", &[rows, f], dt)?;
    gpu.run(|rec| ops::elementwise::geglu(rec, &x, &y))?;
    let want = rt::geglu(&widen(&xv), f);
    Ok(check(
        format!("geglu [{rows}, {}] {dt:?}", 2 * f),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-6,
        out_rtol(dt, 2e-6),
    ))
}

/// Which attention kernel a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnPath {
    /// GEMM → softmax → GEMM with score scratch for `chunk` query rows at a time.
    Gemm { chunk: usize },
    /// The fused online-softmax kernel.
    Fused,
}

/// Attention with q [B, Lq, H·D], k and v [B, Lk, H·D] in [−1, 1] (`dims` = [B, Lq, Lk, H, D]),
/// scale D^-½, optionally causal, on the given path.
pub fn attention(
    gpu: &Gpu,
    dims: [usize; 5],
    causal: bool,
    path: AttnPath,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let [b, lq, lk, h, d] = dims;
    let inner = h * d;
    let mut rng = TestRng(seed);
    let qv = rng.values(b * lq * inner, -1.0, 1.0, dt);
    let kv = rng.values(b * lk * inner, -1.0, 1.0, dt);
    let vv = rng.values(b * lk * inner, -1.0, 1.0, dt);
    let q = upload(gpu, "q", &[b, lq, inner], &qv, dt)?;
    let k = upload(gpu, "k", &[b, lk, inner], &kv, dt)?;
    let v = upload(gpu, "v", &[b, lk, inner], &vv, dt)?;
    let out = Tensor::empty(gpu, "out", &[b, lq, inner], dt)?;
    let scale = 1.0 / (d as f64).sqrt();
    match path {
        AttnPath::Fused => gpu.run(|rec| {
            ops::attention::attention_fused_masked(rec, &q, &k, &v, &out, h, scale as f32, causal)
        })?,
        AttnPath::Gemm { chunk } => {
            let scores = Tensor::empty(gpu, "scores", &[b * h, chunk, lk], dt)?;
            let probs = Tensor::empty(gpu, "probs", &[b * h, chunk, lk], dt)?;
            gpu.run(|rec| {
                ops::attention::attention_gemm_masked(
                    rec,
                    &q,
                    &k,
                    &v,
                    &out,
                    &scores,
                    &probs,
                    h,
                    scale as f32,
                    causal,
                )
            })?
        }
    }
    let (qd, kd, vd) = (widen(&qv), widen(&kv), widen(&vv));
    let want = rt::attention(&qd, &kd, &vd, b, lq, lk, h, d, scale, causal);
    let mut atol = 1e-6 + 2e-7 * (d + lk) as f64;
    if dt == DType::F16 && path != AttnPath::Fused {
        // |score| ≤ scale·Σ|q||k| ≤ scale·D for inputs in [−1, 1].
        atol += (1.0 + scale * d as f64) / 512.0;
    }
    Ok(check(
        format!("attention [B{b} Lq{lq} Lk{lk} H{h} D{d}] causal={causal} {path:?} {dt:?}"),
        &out.to_vec_f32(gpu)?,
        &want,
        atol,
        out_rtol(dt, 1e-5),
    ))
}
