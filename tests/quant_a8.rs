//! W8A8 kernels (PTQ4DM: int8 weights and inputs quantised on load) against the host reference
//! of the same arithmetic (`reference::conv2d_a8`, `reference::linear_a8`): inputs quantised as
//! q = clamp(round_half_even(f32(x · f32(1/s_x))), −127, 127), exact integer sums, then
//! y = f32(acc) · f32(s_w · s_x) + b. With unit scales and no bias y is the integer sum itself,
//! so the `dot4` (i32) and `f32` (exact below 2^24) variants must match it exactly; with real
//! scales, bias and the fused epilogue the only freedom left is the f32 epilogue (a fused
//! multiply-add may round once instead of twice), so the tolerance is a few f32 ulps.

mod common;

use common::gpu;
use diffuse::gpu::tuning::runnable;
use diffuse::load::quant::quantize_weight;
use diffuse::ops::conv2d::{Conv2dArgs, Epilogue};
use diffuse::ops::conv2d_a8::{self, A8Kernel, Conv2dA8Desc};
use diffuse::ops::gemm_a8::{self, LinearA8Kernel};
use diffuse::reference::{self, compare};
use diffuse::selfcheck::TestRng;
use diffuse::{DType, Tensor};

/// Inputs that exercise the rounding rule: exact halves (ties to even), values past the clamp,
/// and ordinary values, at scale `s_x`.
fn inputs(rng: &mut TestRng, len: usize, s_x: f32) -> Vec<f32> {
    (0..len)
        .map(|i| match i % 5 {
            0 => ((rng.range(0, 60) as f32) - 30.0 + 0.5) * s_x,
            1 => (rng.range(0, 400) as f32 - 200.0) * s_x,
            _ => rng.values(1, -100.0, 100.0, DType::F32)[0] * s_x,
        })
        .collect()
}

fn int8s(rng: &mut TestRng, len: usize) -> Vec<i8> {
    (0..len)
        .map(|_| (rng.range(0, 254) as i32 - 127) as i8)
        .collect()
}

#[test]
fn conv2d_a8_matches_the_integer_reference() {
    let gpu = gpu();
    let variants = runnable::<A8Kernel>(gpu.info(), &());
    assert!(variants.contains(&A8Kernel::F32));
    assert_eq!(variants.contains(&A8Kernel::Dot4), gpu.info().dot4_i8);
    let mut rng = TestRng(81);
    // (n, cin, h, w, cout, k, stride, padding, extra_end): Cin not a multiple of 4, 1×1,
    // stride 2 with Downsample2D's extra padding, Cout not a multiple of 4.
    let cases = [
        (1, 1, 7, 9, 1, 3, 1, 1, 0),
        (2, 3, 8, 8, 5, 3, 1, 1, 0),
        (1, 7, 6, 5, 13, 3, 2, 1, 0),
        (2, 6, 5, 7, 9, 1, 1, 0, 0),
        (1, 16, 8, 8, 8, 3, 2, 0, 1),
        (1, 64, 9, 9, 12, 3, 1, 1, 0),
    ];
    for dt in [DType::F32, DType::F16] {
        for &(n, cin, h, w, cout, k, stride, padding, extra_end) in &cases {
            let args = Conv2dArgs {
                stride,
                padding,
                extra_end,
            };
            let ws = [cout, cin, k, k];
            // Unit scales give integer outputs past f16's range: f32 only.
            for unit in [dt == DType::F32, false] {
                let s_x = if unit { 1.0 } else { 0.0123 };
                let xs = inputs(&mut rng, n * cin * h * w, s_x);
                let x = Tensor::from_f32(gpu, "x", &[n, cin, h, w], &xs, dt).unwrap();
                // The reference quantises the values as stored (f16 rounds them first).
                let stored = x.to_vec_f32(gpu).unwrap();
                let (q, sw) = if unit {
                    (int8s(&mut rng, cout * cin * k * k), vec![1.0; cout])
                } else {
                    let wf = rng.values(cout * cin * k * k, -0.5, 0.5, DType::F32);
                    quantize_weight(&wf, cout)
                };
                let bias = (!unit).then(|| rng.values(cout, -0.2, 0.2, dt));
                let (acc, want, ys) = reference::conv2d_a8(
                    &stored,
                    [n, cin, h, w],
                    &q,
                    ws,
                    &sw,
                    s_x,
                    bias.as_deref(),
                    args,
                );
                let wq = Tensor::from_i8(
                    gpu,
                    "wq",
                    &conv2d_a8::packed_shape(ws),
                    &conv2d_a8::pack_a8(&q, ws),
                )
                .unwrap();
                let st = Tensor::from_f32(gpu, "scale", &[cout], &sw, DType::F32).unwrap();
                let b = bias
                    .as_ref()
                    .map(|b| Tensor::from_f32(gpu, "bias", &[cout], b, dt).unwrap());
                for &v in &variants {
                    let y = Tensor::empty(gpu, "y", &ys, dt).unwrap();
                    let d = Conv2dA8Desc {
                        x: &x,
                        weight: &wq,
                        scale: &st,
                        input_scale: s_x,
                        bias: b.as_ref(),
                        y: &y,
                        args,
                        epilogue: Epilogue::default(),
                    };
                    gpu.run(|r| conv2d_a8::conv2d_a8_variant(r, &d, Some(v)))
                        .unwrap();
                    let got = y.to_vec_f32(gpu).unwrap();
                    let label = format!("{dt:?} {v} {:?} unit {unit}", (n, cin, h, w, cout, k));
                    if unit {
                        // |acc| ≤ 64·9·127² < 2^24: exact in both variants.
                        for (i, (&g, &a)) in got.iter().zip(&acc).enumerate() {
                            assert_eq!(g as f64, a, "{label}: element {i}");
                        }
                    } else {
                        let c = compare(&got, &want, 1e-6, 2e-3);
                        assert!(c.ok, "{label}: {c:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn conv2d_a8_fused_epilogue_matches_the_reference() {
    let gpu = gpu();
    let mut rng = TestRng(82);
    let (n, cin, h, w, cout, k) = (2, 5, 6, 6, 6, 3);
    let args = Conv2dArgs {
        stride: 1,
        padding: 1,
        extra_end: 0,
    };
    let s_x = 0.02;
    let xs = inputs(&mut rng, n * cin * h * w, s_x);
    let wf = rng.values(cout * cin * k * k, -0.5, 0.5, DType::F32);
    let (q, sw) = quantize_weight(&wf, cout);
    let bias = rng.values(cout, -0.2, 0.2, DType::F32);
    let tnc = rng.values(n * cout, -1.0, 1.0, DType::F32);
    let res = rng.values(n * cout * h * w, -1.0, 1.0, DType::F32);
    let (_, base, ys) = reference::conv2d_a8(
        &xs,
        [n, cin, h, w],
        &q,
        [cout, cin, k, k],
        &sw,
        s_x,
        Some(&bias),
        args,
    );
    let scale = 0.625f32;
    let want: Vec<f64> = base
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (b, co) = (i / (cout * h * w), (i / (h * w)) % cout);
            ((v as f32 + tnc[b * cout + co] + res[i]) * scale) as f64
        })
        .collect();
    let x = Tensor::from_f32(gpu, "x", &[n, cin, h, w], &xs, DType::F32).unwrap();
    let ws = [cout, cin, k, k];
    let wq = Tensor::from_i8(
        gpu,
        "wq",
        &conv2d_a8::packed_shape(ws),
        &conv2d_a8::pack_a8(&q, ws),
    )
    .unwrap();
    let st = Tensor::from_f32(gpu, "scale", &[cout], &sw, DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, "bias", &[cout], &bias, DType::F32).unwrap();
    let t = Tensor::from_f32(gpu, "tnc", &[n, cout], &tnc, DType::F32).unwrap();
    let r = Tensor::from_f32(gpu, "res", &ys, &res, DType::F32).unwrap();
    for v in runnable::<A8Kernel>(gpu.info(), &()) {
        let y = Tensor::empty(gpu, "y", &ys, DType::F32).unwrap();
        let d = Conv2dA8Desc {
            x: &x,
            weight: &wq,
            scale: &st,
            input_scale: s_x,
            bias: Some(&b),
            y: &y,
            args,
            epilogue: Epilogue {
                add_nc: Some(&t),
                residual: Some(&r),
                scale,
            },
        };
        gpu.run(|rec| conv2d_a8::conv2d_a8_variant(rec, &d, Some(v)))
            .unwrap();
        let c = compare(&y.to_vec_f32(gpu).unwrap(), &want, 1e-6, 1e-5);
        assert!(c.ok, "{v}: {c:?}");
    }
}

#[test]
fn linear_a8_matches_the_integer_reference() {
    let gpu = gpu();
    let mut rng = TestRng(83);
    // (rows, fin, fout): fin not a multiple of 4, fout not a multiple of 4, one row.
    for &(rows, fin, fout) in &[(1, 1, 1), (3, 7, 5), (9, 32, 12), (17, 130, 33)] {
        for unit in [true, false] {
            let s_x = if unit { 1.0 } else { 0.031 };
            let xs = inputs(&mut rng, rows * fin, s_x);
            let (q, sw) = if unit {
                (int8s(&mut rng, fout * fin), vec![1.0; fout])
            } else {
                quantize_weight(&rng.values(fout * fin, -0.5, 0.5, DType::F32), fout)
            };
            let bias = (!unit).then(|| rng.values(fout, -0.2, 0.2, DType::F32));
            let (acc, want) = reference::linear_a8(&xs, fin, &q, &sw, s_x, bias.as_deref());
            let x = Tensor::from_f32(gpu, "x", &[rows, fin], &xs, DType::F32).unwrap();
            let wq = Tensor::from_i8(
                gpu,
                "wq",
                &[fout, fin.div_ceil(4) * 4],
                &gemm_a8::pack_a8(&q, fout, fin),
            )
            .unwrap();
            let st = Tensor::from_f32(gpu, "scale", &[fout], &sw, DType::F32).unwrap();
            let b = bias
                .as_ref()
                .map(|b| Tensor::from_f32(gpu, "bias", &[fout], b, DType::F32).unwrap());
            for v in runnable::<LinearA8Kernel>(gpu.info(), &()) {
                let y = Tensor::empty(gpu, "y", &[rows, fout], DType::F32).unwrap();
                gpu.run(|r| {
                    gemm_a8::linear_a8_variant(r, &x, &wq, &st, s_x, b.as_ref(), &y, Some(v))
                })
                .unwrap();
                let got = y.to_vec_f32(gpu).unwrap();
                let label = format!("{v} {:?} unit {unit}", (rows, fin, fout));
                if unit {
                    for (i, (&g, &a)) in got.iter().zip(&acc).enumerate() {
                        assert_eq!(g as f64, a, "{label}: element {i}");
                    }
                } else {
                    let c = compare(&got, &want, 1e-6, 1e-5);
                    assert!(c.ok, "{label}: {c:?}");
                }
            }
        }
    }
}

#[test]
fn a8_ops_refuse_bad_scales_and_shapes() {
    let gpu = gpu();
    let x = Tensor::from_f32(gpu, "x", &[1, 5, 4, 4], &[0.5; 80], DType::F32).unwrap();
    let ws = [3, 5, 3, 3];
    let wq = Tensor::from_i8(
        gpu,
        "wq",
        &conv2d_a8::packed_shape(ws),
        &conv2d_a8::pack_a8(&[1; 135], ws),
    )
    .unwrap();
    let st = Tensor::from_f32(gpu, "scale", &[3], &[1.0; 3], DType::F32).unwrap();
    let y = Tensor::empty(gpu, "y", &[1, 3, 4, 4], DType::F32).unwrap();
    let args = Conv2dArgs {
        stride: 1,
        padding: 1,
        extra_end: 0,
    };
    let d = Conv2dA8Desc {
        x: &x,
        weight: &wq,
        scale: &st,
        input_scale: f32::NAN,
        bias: None,
        y: &y,
        args,
        epilogue: Epilogue::default(),
    };
    let e = gpu
        .run(|r| conv2d_a8::conv2d_a8(r, &d))
        .unwrap_err()
        .to_string();
    assert!(e.contains("input_scale"), "{e}");
    // Weights packed for 8 input channels against a 5-channel input.
    let w8 = Tensor::from_i8(gpu, "w8", &[3, 9, 12], &[0; 324]).unwrap();
    let d = Conv2dA8Desc {
        weight: &w8,
        input_scale: 1.0,
        ..d
    };
    let e = gpu
        .run(|r| conv2d_a8::conv2d_a8(r, &d))
        .unwrap_err()
        .to_string();
    assert!(e.contains("w8"), "{e}");
}
