//! Host metrics against closed forms and an independent reference: the Fréchet distance (vs
//! the diagonal closed form and vs tr √(Σ₁Σ₂) by a Denman–Beavers iteration on the
//! non-symmetric product), the Jacobi eigen-solver, PSNR and SSIM.

mod common;

use common::{matmul, trace_sqrt_db};
use diffuse::metrics::{frechet_distance, psnr, ssim, symmetric_eigen, FeatureStats};

/// A deterministic pseudo-random stream (SplitMix64 → uniform in [−1, 1)).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn random_rows(rng: &mut Rng, n: usize, d: usize, shift: f64) -> Vec<f32> {
    // Correlated features: x = A·u + shift with a fixed random mixing matrix A.
    let a: Vec<f64> = (0..d * d).map(|_| rng.next()).collect();
    let mut rows = Vec::with_capacity(n * d);
    for _ in 0..n {
        let u: Vec<f64> = (0..d).map(|_| rng.next()).collect();
        for i in 0..d {
            let v: f64 = (0..d).map(|k| a[i * d + k] * u[k]).sum();
            rows.push((v + shift * (i as f64 + 1.0) / d as f64) as f32);
        }
    }
    rows
}

#[test]
fn jacobi_eigen_reconstructs_the_matrix() {
    let mut rng = Rng(7);
    let n = 24;
    let b: Vec<f64> = (0..n * n).map(|_| rng.next()).collect();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = b[i * n + j] + b[j * n + i];
        }
    }
    let (w, v) = symmetric_eigen(&a, n);
    let mut worst: f64 = 0.0;
    for i in 0..n {
        for j in 0..n {
            let r: f64 = (0..n).map(|k| v[i * n + k] * w[k] * v[j * n + k]).sum();
            worst = worst.max((r - a[i * n + j]).abs());
        }
    }
    assert!(worst < 1e-10, "V·diag(w)·Vᵀ differs from A by {worst:e}");
}

#[test]
fn frechet_distance_matches_the_diagonal_closed_form() {
    let d = 5;
    let (m1, m2): ([f64; 5], [f64; 5]) = ([0.1, -0.2, 0.3, 0.0, 1.0], [0.0, 0.5, 0.3, -1.0, 1.5]);
    let (v1, v2): ([f64; 5], [f64; 5]) = ([1.0, 2.0, 0.5, 0.1, 3.0], [0.25, 2.0, 4.0, 0.2, 1.0]);
    let stats = |m: &[f64], v: &[f64]| FeatureStats {
        dim: d,
        count: 0,
        mean: m.to_vec(),
        cov: (0..d * d)
            .map(|k| if k / d == k % d { v[k / d] } else { 0.0 })
            .collect(),
    };
    let want: f64 = (0..d)
        .map(|i| (m1[i] - m2[i]).powi(2) + (v1[i].sqrt() - v2[i].sqrt()).powi(2))
        .sum();
    let got = frechet_distance(&stats(&m1, &v1), &stats(&m2, &v2)).unwrap();
    assert!((got - want).abs() < 1e-10, "FD {got} vs closed form {want}");
    assert!(frechet_distance(&stats(&m1, &v1), &stats(&m1, &v1)).unwrap() < 1e-10);
}

#[test]
fn frechet_distance_matches_an_independent_reference_on_fixed_features() {
    let mut rng = Rng(11);
    let d = 12;
    let a = FeatureStats::from_rows(&random_rows(&mut rng, 400, d, 0.0), d).unwrap();
    let b = FeatureStats::from_rows(&random_rows(&mut rng, 300, d, 0.7), d).unwrap();
    // Covariance check against a two-pass computation.
    assert_eq!((a.count, b.count), (400, 300));
    let got = frechet_distance(&a, &b).unwrap();
    let diff: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let tr = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let want = diff + tr(&a.cov) + tr(&b.cov) - 2.0 * trace_sqrt_db(&matmul(&a.cov, &b.cov, d), d);
    assert!(
        (got - want).abs() < 1e-8 * want.max(1.0),
        "FD {got} vs Denman–Beavers reference {want}"
    );
    assert!(got > 0.1, "distinct distributions must be apart: {got}");
}

#[test]
fn feature_stats_refuse_bad_rows() {
    assert!(FeatureStats::from_rows(&[1.0, 2.0, 3.0], 2).is_err());
    assert!(
        FeatureStats::from_rows(&[1.0, 2.0], 2).is_err(),
        "one row has no covariance"
    );
    let e = FeatureStats::from_rows(&[1.0, f32::NAN, 3.0, 4.0], 2).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
}

#[test]
fn psnr_and_ssim_match_closed_forms() {
    // PSNR: a uniform error of 0.1 on [0, 1] (0.2 in model scale) is exactly 20 dB.
    let x = vec![0.0f32; 28 * 28];
    let y = vec![0.2f32; 28 * 28];
    assert!((psnr(&x, &y) - 20.0).abs() < 1e-5, "{}", psnr(&x, &y)); // 0.2f32 ≠ 0.2
                                                                     // SSIM of constant images a, b on [0, 1]: (2ab + C1)/(a² + b² + C1) (the C2 terms cancel).
    let a = 0.5f64;
    let c1 = 0.01f64.powi(2);
    let b = (0.2f32 as f64 + 1.0) * 0.5;
    let want = (2.0 * a * b + c1) / (a * a + b * b + c1);
    let got = ssim(&x, &y, 28, 28).unwrap();
    assert!((got - want).abs() < 1e-12, "SSIM {got} vs {want}");
    // Identity: 1; a sign flip of the structure scores negative.
    let mut rng = Rng(3);
    let img: Vec<f32> = (0..28 * 28).map(|_| rng.next() as f32 * 0.8).collect();
    let neg: Vec<f32> = img.iter().map(|v| -v).collect();
    assert!((ssim(&img, &img, 28, 28).unwrap() - 1.0).abs() < 1e-12);
    assert!(ssim(&img, &neg, 28, 28).unwrap() < 0.0);
    assert!(ssim(&img, &img, 8, 8).is_err(), "smaller than the window");
}
