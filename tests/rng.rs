//! The counter-based RNG: bit-exact against the CPU Philox4x32-10 (itself checked against
//! Random123's known answers), identical bits whatever the dispatch shape, and statistically
//! standard normal / uniform over 2²⁰ draws.

mod common;

use common::{assert_checks, gpu, gpu_packed, gpu_small_bindings};
use diffuse::ops::rng::{fill, fill_with_workgroup, Distribution, Philox};
use diffuse::reference::{erf, philox_words};
use diffuse::selfcheck as sc;
use diffuse::{DType, Gpu, Tensor};

fn draw(gpu: &Gpu, dist: Distribution, rng: Philox, offset: u64, n: usize, wg: u32) -> Vec<u32> {
    let y = Tensor::empty(gpu, "draw", &[n], DType::F32).unwrap();
    gpu.run(|rec| fill_with_workgroup(rec, dist, rng, offset, &y, wg))
        .unwrap();
    y.to_vec_u32(gpu).unwrap()
}

#[test]
fn raw_words_match_cpu_philox_including_the_32_bit_carry() {
    let g = gpu();
    let rng = Philox {
        seed: 0xDEAD_BEEF_0123_4567,
        stream: 7,
    };
    for offset in [0u64, 5, (1 << 32) - 6, 0x0000_0003_FFFF_FFF0] {
        let got = draw(g, Distribution::Bits, rng, offset, 1000, 256);
        for (i, &w) in got.iter().enumerate() {
            let e = offset + i as u64;
            let (words, lane) = philox_words(rng.seed, rng.stream, e);
            assert_eq!(w, words[lane], "element {e} (offset {offset}, index {i})");
        }
    }
}

#[test]
fn same_seed_and_offset_give_identical_bits_across_dispatch_shapes() {
    let rng = Philox {
        seed: 1234,
        stream: 0,
    };
    let n = 100_003;
    for dist in [Distribution::Normal, Distribution::Uniform] {
        let whole = draw(gpu(), dist, rng, 0, n, 256);
        // Other workgroup sizes.
        assert_eq!(whole, draw(gpu(), dist, rng, 0, n, 64), "{dist:?} wg 64");
        assert_eq!(whole, draw(gpu(), dist, rng, 0, n, 1), "{dist:?} wg 1");
        // Split into pieces drawn at their offsets (odd boundaries inside Philox blocks).
        let mut pieces = Vec::new();
        for (start, len) in [(0usize, 37usize), (37, 50_000), (50_037, n - 50_037)] {
            pieces.extend(draw(gpu(), dist, rng, start as u64, len, 128));
        }
        assert_eq!(whole, pieces, "{dist:?} pieces");
        // Chunked by the binding-size limit (1024 f32 per binding on this context).
        assert_eq!(
            whole,
            draw(gpu_small_bindings(), dist, rng, 0, n, 256),
            "{dist:?} chunked"
        );
        // A different seed or stream changes the draw.
        assert_ne!(
            whole,
            draw(
                gpu(),
                dist,
                Philox {
                    seed: 1235,
                    stream: 0
                },
                0,
                n,
                256
            )
        );
        assert_ne!(
            whole,
            draw(
                gpu(),
                dist,
                Philox {
                    seed: 1234,
                    stream: 1
                },
                0,
                n,
                256
            )
        );
    }
}

#[test]
fn normal_values_match_f64_box_muller_in_f32_and_f16() {
    let mut checks = Vec::new();
    for g in [gpu(), gpu_packed()] {
        for dt in [DType::F32, DType::F16] {
            checks.push(
                sc::rng_normal(
                    g,
                    10_001,
                    Philox {
                        seed: 99,
                        stream: 3,
                    },
                    17,
                    dt,
                )
                .unwrap(),
            );
        }
    }
    assert_checks(&checks);
}

fn sample(dist: Distribution, seed: u64, n: usize) -> Vec<f64> {
    let g = gpu();
    let y = Tensor::empty(g, "noise", &[n], DType::F32).unwrap();
    g.run(|rec| fill(rec, dist, Philox { seed, stream: 0 }, 0, &y))
        .unwrap();
    y.to_vec_f32(g)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Kolmogorov–Smirnov statistic of `v` against the CDF `cdf`.
fn ks(mut v: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

// Bounds for n = 2^20 draws. Mean: 5 standard errors (5/√n ≈ 0.0049). Variance: 5 standard
// errors of the sample variance of a normal (5·√(2/n) ≈ 0.0069). KS: the 0.1 % critical value
// 1.95/√n ≈ 0.0019. Lag-1 and cross-seed correlation: 5/√n. A correct generator fails each
// with probability < 1e-3; these are fixed seeds, so the test is deterministic.
const N: usize = 1 << 20;

#[test]
fn normal_draws_are_standard_normal() {
    let v = sample(Distribution::Normal, 2026, N);
    let n = N as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let d = ks(v.clone(), |x| {
        0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
    });
    let lag1 = v.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / (n - 1.0);
    let kurt = v.iter().map(|x| x.powi(4)).sum::<f64>() / n;
    println!("mean {mean:.2e} var {var:.5} KS {d:.2e} lag1 {lag1:.2e} E[x^4] {kurt:.4}");
    assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(), "variance {var}");
    assert!(d < 1.95 / n.sqrt(), "KS statistic {d}");
    assert!(lag1.abs() < 5.0 / n.sqrt(), "lag-1 correlation {lag1}");
    // E[x⁴] = 3, sd of the estimate √(96/n) ≈ 0.0096.
    assert!(
        (kurt - 3.0).abs() < 5.0 * (96.0 / n).sqrt(),
        "fourth moment {kurt}"
    );
    let other = sample(Distribution::Normal, 2027, N);
    let cross = v.iter().zip(&other).map(|(a, b)| a * b).sum::<f64>() / n;
    assert!(
        cross.abs() < 5.0 / n.sqrt(),
        "cross-seed correlation {cross}"
    );
}

#[test]
fn uniform_draws_are_uniform() {
    let v = sample(Distribution::Uniform, 7, N);
    assert!(
        v.iter().all(|&x| (0.0..1.0).contains(&x)),
        "value outside [0, 1)"
    );
    let n = N as f64;
    let mean = v.iter().sum::<f64>() / n;
    let d = ks(v, |x| x.clamp(0.0, 1.0));
    // Mean 1/2 with sd √(1/12n); KS as above.
    assert!(
        (mean - 0.5).abs() < 5.0 * (1.0 / (12.0 * n)).sqrt(),
        "mean {mean}"
    );
    assert!(d < 1.95 / n.sqrt(), "KS statistic {d}");
}
