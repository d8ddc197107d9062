//! Host-side quality metrics (f64): feature statistics and the Fréchet distance (Heusel et al.,
//! "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
//! NeurIPS 2017), PSNR, and SSIM (Wang et al., "Image Quality Assessment: From Error
//! Visibility to Structural Similarity", IEEE TIP 2004).

use crate::error::{Error, Result};

/// Mean and (unbiased, n − 1) covariance of `n` feature rows of dimension `d`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub dim: usize,
    pub count: usize,
    pub mean: Vec<f64>,
    /// Row-major d × d.
    pub cov: Vec<f64>,
}

impl FeatureStats {
    /// Statistics of `rows` (row-major, `dim` values per row; at least two rows).
    pub fn from_rows(rows: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || rows.len() % dim != 0 || rows.len() / dim < 2 {
            return Err(Error::Argument {
                op: "FeatureStats",
                arg: "rows",
                reason: format!(
                    "{} values do not form at least two rows of {dim} features",
                    rows.len()
                ),
            });
        }
        if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
            return Err(Error::Argument {
                op: "FeatureStats",
                arg: "rows",
                reason: format!("non-finite feature at flat index {i}"),
            });
        }
        let n = rows.len() / dim;
        let mut mean = vec![0.0; dim];
        for r in rows.chunks(dim) {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; dim * dim];
        let mut c = vec![0.0; dim];
        for r in rows.chunks(dim) {
            for j in 0..dim {
                c[j] = r[j] as f64 - mean[j];
            }
            for i in 0..dim {
                let ci = c[i];
                for j in i..dim {
                    cov[i * dim + j] += ci * c[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / (n - 1) as f64;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(FeatureStats {
            dim,
            count: n,
            mean,
            cov,
        })
    }
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: (eigenvalues,
/// row-major eigenvectors as columns). `a` is row-major n × n.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Symmetric PSD square root (negative eigenvalues from rounding clamp to 0).
fn sqrt_psd(a: &[f64], n: usize) -> Vec<f64> {
    let (w, v) = symmetric_eigen(a, n);
    let mut out = vec![0.0; n * n];
    for k in 0..n {
        let s = w[k].max(0.0).sqrt();
        for i in 0..n {
            let vik = v[i * n + k] * s;
            for j in 0..n {
                out[i * n + j] += vik * v[j * n + k];
            }
        }
    }
    out
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

/// Fréchet distance between Gaussians: |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2},
/// with tr (Σ₁Σ₂)^{1/2} = tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2} (a symmetric PSD matrix).
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim != b.dim {
        return Err(Error::Argument {
            op: "frechet_distance",
            arg: "features",
            reason: format!("feature dimensions differ: {} vs {}", a.dim, b.dim),
        });
    }
    let n = a.dim;
    let d2: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let tr = |m: &[f64]| (0..n).map(|i| m[i * n + i]).sum::<f64>();
    let s1 = sqrt_psd(&a.cov, n);
    let m = matmul(&matmul(&s1, &b.cov, n), &s1, n);
    // Symmetrise against rounding before the eigen-solve.
    let mut sym = m.clone();
    for i in 0..n {
        for j in 0..n {
            sym[i * n + j] = 0.5 * (m[i * n + j] + m[j * n + i]);
        }
    }
    let (w, _) = symmetric_eigen(&sym, n);
    let tr_sqrt: f64 = w.iter().map(|x| x.max(0.0).sqrt()).sum();
    Ok((d2 + tr(&a.cov) + tr(&b.cov) - 2.0 * tr_sqrt).max(0.0))
}

fn to_unit(x: f32) -> f64 {
    ((x as f64 + 1.0) * 0.5).clamp(0.0, 1.0)
}

/// PSNR in dB of one image pair in model scale [−1, 1], measured on [0, 1] after clamping
/// (peak 1). Identical images give +∞.
pub fn psnr(x: &[f32], reference: &[f32]) -> f64 {
    let mse = x
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (to_unit(a) - to_unit(b)).powi(2))
        .sum::<f64>()
        / x.len().max(1) as f64;
    -10.0 * mse.log10()
}

/// SSIM of one single-channel H×W pair in model scale [−1, 1], measured on [0, 1] after
/// clamping: the 11×11 Gaussian window (σ = 1.5) of Wang et al., K₁ = 0.01, K₂ = 0.03, L = 1,
/// averaged over the "valid" window positions (as the authors' MATLAB code).
pub fn ssim(x: &[f32], reference: &[f32], h: usize, w: usize) -> Result<f64> {
    const K: usize = 11;
    if h < K || w < K || x.len() != h * w || reference.len() != h * w {
        return Err(Error::Argument {
            op: "ssim",
            arg: "image",
            reason: format!(
                "expected two {h}×{w} images of at least {K}×{K} (got {} and {} values)",
                x.len(),
                reference.len()
            ),
        });
    }
    let g: Vec<f64> = (0..K)
        .map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let (mut total, mut count) = (0.0, 0usize);
    for i in 0..=h - K {
        for j in 0..=w - K {
            let (mut ma, mut mb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for di in 0..K {
                for dj in 0..K {
                    let wt = g[di] * g[dj] / (gs * gs);
                    let a = to_unit(x[(i + di) * w + j + dj]);
                    let b = to_unit(reference[(i + di) * w + j + dj]);
                    ma += wt * a;
                    mb += wt * b;
                    saa += wt * a * a;
                    sbb += wt * b * b;
                    sab += wt * a * b;
                }
            }
            let (va, vb, cab) = (saa - ma * ma, sbb - mb * mb, sab - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cab + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    Ok(total / count as f64)
}
