//! f64 references of the transformer ops: LayerNorm, GEGLU and multi-head scaled-dot-product
//! attention with an optional causal mask.

use super::erf;

/// LayerNorm over rows of `cols` (population variance); weight and bias optional.
pub fn layer_norm(
    x: &[f64],
    cols: usize,
    weight: Option<&[f64]>,
    bias: Option<&[f64]>,
    eps: f64,
) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, v) in row.iter().enumerate() {
            let mut o = (v - mean) * inv;
            if let Some(w) = weight {
                o *= w[i];
            }
            if let Some(b) = bias {
                o += b[i];
            }
            y.push(o);
        }
    }
    y
}

/// y [rows, F] = x[:, :F] · gelu(x[:, F:]) for x [rows, 2F] (exact GELU).
pub fn geglu(x: &[f64], f: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len() / 2);
    for row in x.chunks(2 * f) {
        for i in 0..f {
            let g = row[f + i];
            y.push(row[i] * 0.5 * g * (1.0 + erf(g / std::f64::consts::SQRT_2)));
        }
    }
    y
}

/// out [B, Lq, H·D] = softmax(scale · q kᵀ) v per batch and head, for q [B, Lq, H·D] and
/// k, v [B, Lk, H·D]; `causal`: query i sees keys j ≤ i only.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    b: usize,
    lq: usize,
    lk: usize,
    heads: usize,
    d: usize,
    scale: f64,
    causal: bool,
) -> Vec<f64> {
    let inner = heads * d;
    let mut out = vec![0.0; b * lq * inner];
    for bi in 0..b {
        for h in 0..heads {
            for i in 0..lq {
                let nk = if causal { (i + 1).min(lk) } else { lk };
                let qo = (bi * lq + i) * inner + h * d;
                let s: Vec<f64> = (0..nk)
                    .map(|j| {
                        let ko = (bi * lk + j) * inner + h * d;
                        scale * (0..d).map(|e| q[qo + e] * k[ko + e]).sum::<f64>()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for e in 0..d {
                    out[qo + e] = (0..nk)
                        .map(|j| w[j] * v[(bi * lk + j) * inner + h * d + e])
                        .sum::<f64>()
                        / z;
                }
            }
        }
    }
    out
}
