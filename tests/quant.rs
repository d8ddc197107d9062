//! W8A32 kernels (int8 weights, four per u32, per-output-channel scales) against the f64 CPU
//! reference of the same quantized arithmetic: y = s[c] · Σ q[c, k] · x[k] + b[c] with the q and
//! s that `load::quant` produces (round half to even, clamp to ±127, MSE-chosen clipping). The
//! GPU accumulates Σ q·x in f32 and scales once; the tolerance is f32 accumulation error.

mod common;

use common::gpu;
use diffuse::gpu::tuning::runnable;
use diffuse::load::quant::quantize_weight;
use diffuse::ops::conv2d::{self, Conv2dArgs, Conv2dDesc, ConvKernel, ConvShape};
use diffuse::ops::gemm::{self, GemmDesc, GemmKernel};
use diffuse::reference::{self, compare};
use diffuse::selfcheck::TestRng;
use diffuse::{DType, Tensor};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Dequantized weights in f64: s[c] · q (the reference's operand).
fn dequant(q: &[i8], s: &[f32]) -> Vec<f64> {
    let per = q.len() / s.len();
    q.iter()
        .enumerate()
        .map(|(i, &v)| s[i / per] as f64 * v as f64)
        .collect()
}

#[test]
fn conv2d_int8_weights_match_the_reference() {
    let gpu = gpu();
    let mut rng = TestRng(16);
    // (n, cin, h, w, cout, k, stride, padding): odd channel counts, 1×1, stride 2, Cout = 1.
    let cases = [
        (1, 1, 7, 9, 1, 3, 1, 1),
        (2, 3, 8, 8, 5, 3, 1, 1),
        (1, 7, 6, 5, 13, 3, 2, 1),
        (2, 6, 5, 7, 9, 1, 1, 0),
        (1, 16, 9, 9, 32, 3, 1, 1),
    ];
    for dt in [DType::F32, DType::F16] {
        for &(n, cin, h, w, cout, k, stride, padding) in &cases {
            let args = Conv2dArgs {
                stride,
                padding,
                extra_end: 0,
            };
            let xs = rng.values(n * cin * h * w, -1.0, 1.0, dt);
            let wf = rng.values(cout * cin * k * k, -0.5, 0.5, DType::F32);
            let bias = rng.values(cout, -0.2, 0.2, dt);
            let (q, s) = quantize_weight(&wf, cout);
            let (want, ys) = reference::conv2d(
                &f64s(&xs),
                [n, cin, h, w],
                &dequant(&q, &s),
                [cout, cin, k, k],
                Some(&f64s(&bias)),
                args,
            );
            let x = Tensor::from_f32(gpu, "x", &[n, cin, h, w], &xs, dt).unwrap();
            let psh = diffuse::ops::conv_pack::packed_shape(&[cout, cin, k, k]);
            let wq =
                Tensor::from_i8(gpu, "wq", &psh, &conv2d::pack_q8(&q, [cout, cin, k, k])).unwrap();
            let st = Tensor::from_f32(gpu, "scale", &[cout], &s, DType::F32).unwrap();
            let b = Tensor::from_f32(gpu, "bias", &[cout], &bias, dt).unwrap();
            let shape = ConvShape {
                dt,
                kh: k,
                kw: k,
                stride,
                packed: true,
                q8: true,
            };
            let variants = runnable::<ConvKernel>(gpu.info(), &shape);
            assert!(!variants.contains(&ConvKernel::Tile64));
            assert!(variants.len() >= 2);
            for v in variants {
                let y = Tensor::empty(gpu, "y", &ys, dt).unwrap();
                let d = Conv2dDesc::new(&x, &wq, Some(&b), &y, args).with_scale(Some(&st));
                gpu.run(|r| conv2d::conv2d_variant(r, &d, Some(v))).unwrap();
                let got = y.to_vec_f32(gpu).unwrap();
                let (atol, rtol) = match dt {
                    DType::F32 => (1e-5 * (cin * k * k) as f64, 1e-5),
                    _ => (2e-3, 2e-3),
                };
                let c = compare(&got, &want, atol, rtol);
                assert!(
                    c.ok,
                    "{dt:?} {v} n{n} cin{cin} {h}x{w} cout{cout} k{k} s{stride}: {c:?}"
                );
            }
        }
    }
}

#[test]
fn linear_int8_weights_match_the_reference() {
    let gpu = gpu();
    let mut rng = TestRng(17);
    // (rows, fin, fout): K % 4 != 0 (scalar loads) and == 0 (vec4 loads), M ≥ 8 (reg8x4).
    for &(m, fin, fout) in &[
        (1, 7, 3),
        (5, 32, 13),
        (9, 64, 64),
        (16, 130, 9),
        (3, 128, 256),
    ] {
        let xs = rng.values(m * fin, -1.0, 1.0, DType::F32);
        let wf = rng.values(fout * fin, -0.3, 0.3, DType::F32);
        let bias = rng.values(fout, -0.2, 0.2, DType::F32);
        let (q, s) = quantize_weight(&wf, fout);
        let d = GemmDesc::single(m, fout, fin, true);
        let mut want = vec![0.0; m * fout];
        reference::gemm(
            &d,
            &f64s(&xs),
            &dequant(&q, &s),
            Some(&f64s(&bias)),
            &mut want,
        );
        let x = Tensor::from_f32(gpu, "x", &[m, fin], &xs, DType::F32).unwrap();
        let wq = Tensor::from_i8(gpu, "wq", &[fout, fin], &q).unwrap();
        let st = Tensor::from_f32(gpu, "scale", &[fout], &s, DType::F32).unwrap();
        let b = Tensor::from_f32(gpu, "bias", &[fout], &bias, DType::F32).unwrap();
        for v in [GemmKernel::Reg4x4, GemmKernel::Reg8x4] {
            let y = Tensor::empty(gpu, "y", &[m, fout], DType::F32).unwrap();
            gpu.run(|r| gemm::gemm_q8(r, &d, &x, &wq, &st, Some(&b), &y, Some(v)))
                .unwrap();
            let c = compare(&y.to_vec_f32(gpu).unwrap(), &want, 1e-5 * fin as f64, 1e-5);
            assert!(c.ok, "{v} {m}x{fin}->{fout}: {c:?}");
        }
        // The nn.Linear entry point (default variant).
        let y = Tensor::empty(gpu, "y", &[m, fout], DType::F32).unwrap();
        gpu.run(|r| gemm::linear_q8(r, &x, &wq, &st, Some(&b), &y))
            .unwrap();
        let c = compare(&y.to_vec_f32(gpu).unwrap(), &want, 1e-5 * fin as f64, 1e-5);
        assert!(c.ok, "linear_q8 {m}x{fin}->{fout}: {c:?}");
    }
}

#[test]
fn int8_weight_errors_name_the_tensor() {
    let gpu = gpu();
    let x = Tensor::zeros(gpu, "x", &[2, 8], DType::F32).unwrap();
    let wq = Tensor::from_i8(gpu, "wq", &[4, 8], &[1; 32]).unwrap();
    let bad = Tensor::zeros(gpu, "bad_scale", &[3], DType::F32).unwrap();
    let y = Tensor::empty(gpu, "y", &[2, 4], DType::F32).unwrap();
    let e = gpu
        .run(|r| gemm::linear_q8(r, &x, &wq, &bad, None, &y))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad_scale"), "{e}");
    // Int8 weights through the float entry point: no scales.
    let e = gpu
        .run(|r| gemm::linear(r, &x, &wq, None, &y))
        .unwrap_err()
        .to_string();
    assert!(e.contains("wq") && e.contains("scale"), "{e}");
    // The shared-memory tile does not read int8.
    let s = Tensor::zeros(gpu, "s", &[4], DType::F32).unwrap();
    let d = GemmDesc::single(2, 4, 8, true);
    let e = gpu
        .run(|r| gemm::gemm_q8(r, &d, &x, &wq, &s, None, &y, Some(GemmKernel::Tile64)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tile64"), "{e}");
    // Conv: scales of the wrong length for the packed weights.
    let xc = Tensor::zeros(gpu, "xc", &[1, 2, 4, 4], DType::F32).unwrap();
    let wc = Tensor::from_i8(gpu, "wc", &[2, 2, 9, 4], &[0; 144]).unwrap();
    let sc = Tensor::zeros(gpu, "sc", &[3], DType::F32).unwrap();
    let yc = Tensor::empty(gpu, "yc", &[1, 8, 4, 4], DType::F32).unwrap();
    let args = Conv2dArgs {
        stride: 1,
        padding: 1,
        extra_end: 0,
    };
    let d = Conv2dDesc::new(&xc, &wc, None, &yc, args).with_scale(Some(&sc));
    let e = gpu.run(|r| conv2d::conv2d(r, &d)).unwrap_err().to_string();
    assert!(e.contains("wc") && e.contains("sc"), "{e}");
    // And an int8 upload cannot take f32 values.
    assert!(wc.write_f32(gpu, &[0.0; 144]).is_err());
}
