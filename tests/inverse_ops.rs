//! Degradation operators of the inverse-problem methods (`ops::degrade`): the adjoint identity
//! ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ on random tensors (GPU, f32, to 1e-5 relative), A(A† y) = y where A† is
//! exact, shapes and masks against hand-computed cases, and every map on the GPU against the f64
//! host semantics.

mod common;

use common::gpu;
use diffuse::ops::degrade::{Degrader, Mode, Operator, NAMES};
use diffuse::{DType, Gpu, Tensor};

/// A deterministic pseudo-random vector in [−1, 1).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn all_ops() -> Vec<Operator> {
    NAMES
        .iter()
        .map(|n| Operator::parse(n, 7).unwrap())
        .collect()
}

fn run(gpu: &Gpu, d: &Degrader, mode: Mode, x: &[f32], xs: &[usize], ys: &[usize]) -> Vec<f32> {
    let xt = Tensor::from_f32(gpu, "x", xs, x, DType::F32).unwrap();
    let yt = Tensor::zeros(gpu, "y", ys, DType::F32).unwrap();
    gpu.run(|rec| d.record(rec, mode, &xt, &yt)).unwrap();
    yt.to_vec_f32(gpu).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

#[test]
fn adjoint_identity_on_the_gpu() {
    let gpu = gpu();
    for op in all_ops() {
        for (k, img) in [[2usize, 3, 16, 12], [1, 1, 28, 28], [3, 2, 8, 32]]
            .into_iter()
            .enumerate()
        {
            let ms = op.measurement_shape(&img, "x").unwrap();
            let d = Degrader::new(gpu, op, img[2], img[3]).unwrap();
            let x = random(img.iter().product(), 10 + k as u64);
            let y = random(ms.iter().product(), 20 + k as u64);
            let ax = run(gpu, &d, Mode::Forward, &x, &img, &ms);
            let aty = run(gpu, &d, Mode::Adjoint, &y, &ms, &img);
            let (l, r) = (dot(&ax, &y), dot(&x, &aty));
            let rel = (l - r).abs() / l.abs().max(r.abs());
            assert!(
                rel <= 1e-5,
                "{} {img:?}: <Ax,y> = {l}, <x,A^T y> = {r}, rel {rel:.2e}",
                op.name()
            );
        }
    }
}

#[test]
fn gpu_matches_f64_host_semantics() {
    let gpu = gpu();
    for op in all_ops() {
        let img = [2usize, 3, 12, 20];
        let ms = op.measurement_shape(&img, "x").unwrap();
        let d = Degrader::new(gpu, op, img[2], img[3]).unwrap();
        let modes: &[Mode] = if op.has_pinv() {
            &[Mode::Forward, Mode::Adjoint, Mode::Pinv]
        } else {
            &[Mode::Forward, Mode::Adjoint]
        };
        for &mode in modes {
            let (xs, ys) = if mode == Mode::Forward {
                (&img[..], &ms[..])
            } else {
                (&ms[..], &img[..])
            };
            let x = random(xs.iter().product(), 3);
            let got = run(gpu, &d, mode, &x, xs, ys);
            let x64: Vec<f64> = x.iter().map(|v| *v as f64).collect();
            let want = op.apply_host(mode, &x64, &img).unwrap();
            assert_eq!(got.len(), want.len());
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
            // mri4x sums H·W f32 twiddle products per output.
            let tol = if op.name() == "mri4x" { 2e-5 } else { 2e-6 };
            assert!(
                err <= tol * scale,
                "{} {mode:?}: max err {err:.3e} (scale {scale:.3e})",
                op.name()
            );
        }
    }
}

#[test]
fn pseudo_inverse_is_a_right_inverse() {
    let gpu = gpu();
    for op in all_ops().into_iter().filter(|o| o.pinv_is_exact()) {
        let img = [2usize, 2, 16, 24];
        let ms = op.measurement_shape(&img, "x").unwrap();
        let d = Degrader::new(gpu, op, img[2], img[3]).unwrap();
        // A measurement in A's range: A of a random image.
        let y = run(
            gpu,
            &d,
            Mode::Forward,
            &random(img.iter().product(), 5),
            &img,
            &ms,
        );
        let apy = run(gpu, &d, Mode::Pinv, &y, &ms, &img);
        let back = run(gpu, &d, Mode::Forward, &apy, &img, &ms);
        // Average pooling of a constant block and masking are exact in f32 up to one rounding.
        for (a, b) in back.iter().zip(&y) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{}: {a} vs {b}",
                op.name()
            );
        }
    }
}

#[test]
fn hand_computed_cases() {
    // sr2 of a 4×4 ramp: 2×2 block means.
    let x: Vec<f64> = (0..16).map(|v| v as f64).collect();
    let sr2 = Operator::parse("sr2", 0).unwrap();
    let y = sr2.apply_host(Mode::Forward, &x, &[1, 1, 4, 4]).unwrap();
    assert_eq!(y, vec![2.5, 4.5, 10.5, 12.5]);
    let up = sr2
        .apply_host(Mode::Pinv, &[1.0, 2.0, 3.0, 4.0], &[1, 1, 4, 4])
        .unwrap();
    assert_eq!(&up[..8], &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
    let at = sr2
        .apply_host(Mode::Adjoint, &[4.0, 0.0, 0.0, 0.0], &[1, 1, 4, 4])
        .unwrap();
    assert_eq!(&at[..6], &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    // Shapes; sizes the operator cannot take name the tensor.
    let sr4 = Operator::parse("sr4", 0).unwrap();
    assert_eq!(
        sr4.measurement_shape(&[2, 1, 28, 32], "x").unwrap(),
        vec![2, 1, 7, 8]
    );
    let e = sr4
        .measurement_shape(&[1, 1, 30, 32], "clean")
        .unwrap_err()
        .to_string();
    assert!(e.contains("clean") && e.contains("divisible by 4"), "{e}");
    let e = Operator::parse("sr3", 0).unwrap_err().to_string();
    assert!(e.contains("operator") && e.contains("sr3"), "{e}");
    // inpaint-box on 8×8 loses rows and columns 2..6.
    let m = Operator::InpaintBox.mask(8, 8).unwrap();
    for i in 0..8 {
        for j in 0..8 {
            let lost = (2..6).contains(&i) && (2..6).contains(&j);
            assert_eq!(m[i * 8 + j], if lost { 0.0 } else { 1.0 }, "({i}, {j})");
        }
    }
    // inpaint-random keeps about 30 % (binomial: 4096 pixels, ±4σ ≈ ±0.028), differs by seed,
    // and is a pure function of the seed.
    let a = Operator::InpaintRandom { seed: 1 }.mask(64, 64).unwrap();
    let b = Operator::InpaintRandom { seed: 2 }.mask(64, 64).unwrap();
    let kept = a.iter().sum::<f32>() as f64 / 4096.0;
    assert!((kept - 0.3).abs() < 0.03, "kept {kept}");
    assert_ne!(a, b);
    assert_eq!(a, Operator::InpaintRandom { seed: 1 }.mask(64, 64).unwrap());
    // Blur taps: normalised, symmetric; the Gaussian's ratio of the end and centre taps is
    // exp(−25/50); a constant image's interior is unchanged, its corner sees the zero padding.
    let k = Operator::BlurGauss.taps().unwrap();
    assert_eq!(k.len(), 11);
    assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    assert!((k[0] / k[5] - (-0.5f64).exp()).abs() < 1e-15);
    let kb = Operator::BlurBox.taps().unwrap();
    assert_eq!(kb, vec![1.0 / 9.0; 9]);
    let ones = vec![1.0; 20 * 20];
    let y = Operator::BlurBox
        .apply_host(Mode::Forward, &ones, &[1, 1, 20, 20])
        .unwrap();
    assert!((y[10 * 20 + 10] - 1.0).abs() < 1e-12);
    assert!((y[0] - 25.0 / 81.0).abs() < 1e-12, "corner {}", y[0]);
    // No closed-form A† for the blurs.
    let e = Operator::BlurGauss
        .apply_host(Mode::Pinv, &ones, &[1, 1, 20, 20])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blur-gauss") && e.contains("pseudo-inverse"),
        "{e}"
    );
}

#[test]
fn bad_shapes_name_the_tensor() {
    let gpu = gpu();
    let d = Degrader::new(gpu, Operator::Sr(4), 16, 16).unwrap();
    let x = Tensor::zeros(gpu, "x", &[1, 1, 16, 16], DType::F32).unwrap();
    let y = Tensor::zeros(gpu, "measurement", &[1, 1, 8, 8], DType::F32).unwrap();
    let e = gpu
        .run(|rec| d.record(rec, Mode::Forward, &x, &y))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("measurement") && e.contains("[1, 1, 4, 4]"),
        "{e}"
    );
    let e = Degrader::new(gpu, Operator::Sr(4), 18, 16)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("divisible by 4"), "{e}");
}

/// An independent f64 2-D DFT: rows then columns, complex arithmetic, the centred frequency
/// index u − ⌊H/2⌋, unitary scaling.
fn dft2(x: &[f64], h: usize, w: usize) -> Vec<(f64, f64)> {
    let tau = std::f64::consts::TAU;
    // Along W: R[a, v] = Σ_b x[a, b] e^{−iτ(v − W/2)b/W}
    let mut r = vec![(0.0, 0.0); h * w];
    for a in 0..h {
        for v in 0..w {
            let f = v as f64 - (w / 2) as f64;
            for b in 0..w {
                let th = -tau * f * b as f64 / w as f64;
                r[a * w + v].0 += x[a * w + b] * th.cos();
                r[a * w + v].1 += x[a * w + b] * th.sin();
            }
        }
    }
    let mut y = vec![(0.0, 0.0); h * w];
    let s = 1.0 / ((h * w) as f64).sqrt();
    for u in 0..h {
        let f = u as f64 - (h / 2) as f64;
        for v in 0..w {
            let (mut re, mut im) = (0.0, 0.0);
            for a in 0..h {
                let th = -tau * f * a as f64 / h as f64;
                let (c, sn) = (th.cos(), th.sin());
                let (pr, pi) = r[a * w + v];
                re += pr * c - pi * sn;
                im += pr * sn + pi * c;
            }
            y[u * w + v] = (s * re, s * im);
        }
    }
    y
}

#[test]
fn mri4x_is_a_masked_unitary_dft() {
    let gpu = gpu();
    for (k, (h, w)) in [(28usize, 28usize), (12, 20), (64, 64)]
        .into_iter()
        .enumerate()
    {
        let op = Operator::parse("mri4x", 3 + k as u64).unwrap();
        let m = op.kspace_mask(h).unwrap();
        // 25 % of the rows, the ⌈8 %⌉ centred on H/2 among them.
        let kept = m.iter().filter(|v| **v == 1.0).count();
        assert_eq!(kept, (0.25 * h as f64).round() as usize, "{h}");
        let c = (0.08 * h as f64).ceil() as usize;
        let c0 = h / 2 - c / 2;
        for (u, v) in m.iter().enumerate().skip(c0).take(c) {
            assert_eq!(*v, 1.0, "centre row {u} of {h}");
        }
        let img = [1usize, 1, h, w];
        let ms = op.measurement_shape(&img, "x").unwrap();
        assert_eq!(ms, vec![1, 1, h, w, 2]);
        let x = random(h * w, 40 + k as u64);
        let d = Degrader::new(gpu, op, h, w).unwrap();
        let y = run(gpu, &d, Mode::Forward, &x, &img, &ms);
        let x64: Vec<f64> = x.iter().map(|v| *v as f64).collect();
        let want = dft2(&x64, h, w);
        let mut err = 0f64;
        for u in 0..h {
            for v in 0..w {
                let (wr, wi) = if m[u] == 1.0 {
                    want[u * w + v]
                } else {
                    (0.0, 0.0)
                };
                let o = (u * w + v) * 2;
                err = err
                    .max((y[o] as f64 - wr).abs())
                    .max((y[o + 1] as f64 - wi).abs());
            }
        }
        let scale = x.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
        assert!(err <= 1e-5 * scale, "{h}×{w}: DFT max err {err:.3e}");
        // Unitary: Aᵀ A restricted to all rows would be I; with the mask, Parseval on the kept
        // rows: ‖A x‖² = Σ_kept |F x|².
        let e_gpu: f64 = y.iter().map(|v| (*v as f64).powi(2)).sum();
        let e_ref: f64 = (0..h * w)
            .filter(|e| m[e / w] == 1.0)
            .map(|e| want[e].0.powi(2) + want[e].1.powi(2))
            .sum();
        assert!((e_gpu - e_ref).abs() <= 1e-5 * e_ref, "{e_gpu} vs {e_ref}");
    }
    // A constant image has only the DC coefficient (centred at (H/2, W/2)), √(HW)·c.
    let op = Operator::parse("mri4x", 0).unwrap();
    let y = op
        .apply_host(Mode::Forward, &vec![0.5; 8 * 6], &[1, 1, 8, 6])
        .unwrap();
    for (e, v) in y.iter().enumerate() {
        let want = if e == (4 * 6 + 3) * 2 {
            0.5 * 48f64.sqrt()
        } else {
            0.0
        };
        assert!((v - want).abs() < 1e-12, "element {e}: {v}");
    }
    // A complex measurement of the wrong shape names the tensor.
    let d = Degrader::new(gpu, op, 8, 6).unwrap();
    let x = Tensor::zeros(gpu, "x", &[1, 1, 8, 6], DType::F32).unwrap();
    let y = Tensor::zeros(gpu, "measurement", &[1, 1, 8, 6], DType::F32).unwrap();
    let e = gpu
        .run(|rec| d.record(rec, Mode::Forward, &x, &y))
        .unwrap_err()
        .to_string();
    assert!(e.contains("measurement"), "{e}");
}
