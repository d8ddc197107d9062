//! The data-dependent coefficient kernels (`ops::coef`, `shaders/coef.wgsl`) against f64 CPU
//! sums and the host evaluation of scalar programs: inner products per (sample, channel) and
//! per sample (compensated per invocation, pairwise across the workgroup), f32 and f16
//! operands, the scalar VM on every opcode, and the register-scaled update.

mod common;

use diffuse::ops::coef::{self, Over, Sx};
use diffuse::{DType, Tensor};

/// Deterministic values in [−1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn read(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32(common::gpu()).unwrap()
}

/// ⟨a, b⟩ per group of `len` in f64, and Σ|a·b| (the scale of a sum's rounding error).
fn dots(a: &[f32], b: &[f32], len: usize) -> Vec<(f64, f64)> {
    a.chunks(len)
        .zip(b.chunks(len))
        .map(|(x, y)| {
            let p = x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64);
            (p.clone().sum(), p.map(f64::abs).sum())
        })
        .collect()
}

#[test]
fn inner_products_match_f64_sums_per_channel_and_per_sample() {
    let gpu = common::gpu();
    // H×W from 3×3 (one 16-wide workgroup) to 48×48 (256 invocations, 9 elements each).
    for (shape, dt) in [
        ([2usize, 3, 3, 3], DType::F32),
        ([3, 4, 16, 16], DType::F32),
        ([2, 3, 48, 48], DType::F32),
        ([2, 4, 16, 16], DType::F16),
    ] {
        let [n, c, h, w] = shape;
        let numel = n * c * h * w;
        let a = values(numel, 1);
        // b nearly cancels a on odd channels: the sums are small against Σ|a·b|.
        let mut b = values(numel, 2);
        for (i, v) in b.iter_mut().enumerate() {
            if (i / (h * w)) % 2 == 1 {
                *v = a[i] * if i % 2 == 0 { 1.0 } else { -1.0 } + 1e-3 * *v;
            }
        }
        let ta = Tensor::from_f32(gpu, "a", &shape, &a, dt).unwrap();
        let tb = Tensor::from_f32(gpu, "b", &shape, &b, dt).unwrap();
        // What the kernel sees (f16 operands are rounded on upload).
        let (a, b) = (read(&ta), read(&tb));
        let regs = Tensor::zeros(gpu, "regs", &[3, n, c], DType::F32).unwrap();
        let mut rec = gpu.recorder();
        coef::dot(&mut rec, &ta, &tb, &regs, 1, Over::Channel).unwrap();
        coef::dot(&mut rec, &ta, &tb, &regs, 2, Over::Sample).unwrap();
        rec.finish().unwrap().submit(gpu);
        let got = read(&regs);
        let m = n * c;
        assert!(got[..m].iter().all(|&v| v == 0.0), "register 0 untouched");
        let per_channel = dots(&a, &b, h * w);
        let per_sample = dots(&a, &b, c * h * w);
        let mut worst = 0f64;
        for j in 0..m {
            for (g, (want, scale)) in [
                (got[m + j], per_channel[j]),
                (got[2 * m + j], per_sample[j / c]),
            ] {
                // f32 products and a compensated/pairwise sum: a few ulps of Σ|a·b|.
                let err = (g as f64 - want).abs() / scale;
                worst = worst.max(err);
                assert!(
                    err < 4.0 * f32::EPSILON as f64,
                    "{shape:?} {dt:?} entry {j}: got {g}, want {want} (Σ|ab| {scale})"
                );
            }
        }
        eprintln!("{shape:?} {dt:?}: worst |error| / Σ|a·b| = {worst:.2e}");
    }
}

#[test]
fn scalar_programs_match_the_host_evaluation_on_every_opcode() {
    let gpu = common::gpu();
    let (n, c) = (3, 5);
    let m = n * c;
    let r0: Vec<f32> = values(m, 3).iter().map(|v| 3.0 * v).collect();
    let r1: Vec<f32> = values(m, 4).iter().map(|v| 0.5 + v.abs()).collect();
    let regs = Tensor::from_f32(
        gpu,
        "regs",
        &[4, n, c],
        &[r0.clone(), r1.clone(), vec![0.0; 2 * m]].concat(),
        DType::F32,
    )
    .unwrap();
    use Sx::*;
    // clamp(r0/r1, −2, 2)·sigmoid(|r0| − 0.5) + sqrt(r1) − (−r0)·0.25, then a min with 10.
    let code = vec![
        Reg(0),
        Reg(1),
        Div,
        Const(-2.0),
        Max,
        Const(2.0),
        Min,
        Reg(0),
        Abs,
        Const(0.5),
        Sub,
        Sigmoid,
        Mul,
        Reg(1),
        Sqrt,
        Add,
        Reg(0),
        Neg,
        Const(0.25),
        Mul,
        Sub,
        Const(10.0),
        Min,
    ];
    let mut rec = gpu.recorder();
    coef::scalar(&mut rec, &regs, 2, &code).unwrap();
    // Register 3 = register 2 · register 0: a program reading what the previous one wrote.
    coef::scalar(&mut rec, &regs, 3, &[Reg(2), Reg(0), Mul]).unwrap();
    rec.finish().unwrap().submit(gpu);
    let got = read(&regs);
    for j in 0..m {
        let want = coef::eval(&code, |k| [r0[j], r1[j]][k] as f64);
        let g = got[2 * m + j] as f64;
        assert!(
            (g - want).abs() <= 1e-6 * want.abs().max(1.0),
            "entry {j}: {g} vs {want}"
        );
        let want3 = want * r0[j] as f64;
        let g3 = got[3 * m + j] as f64;
        assert!(
            (g3 - want3).abs() <= 1e-6 * want3.abs().max(1.0),
            "entry {j}: {g3} vs {want3}"
        );
    }
}

#[test]
fn register_scaled_update_reads_each_channels_entry() {
    let gpu = common::gpu();
    let shape = [2usize, 3, 4, 5];
    let numel: usize = shape.iter().product();
    let (hw, m) = (20, 6);
    let ins: Vec<Vec<f32>> = (0..6).map(|k| values(numel, 10 + k)).collect();
    let x0 = values(numel, 20);
    let r: Vec<f32> = values(2 * m, 30);
    let regs = Tensor::from_f32(gpu, "regs", &[2, 2, 3], &r, DType::F32).unwrap();
    let x = Tensor::from_f32(gpu, "x", &shape, &x0, DType::F32).unwrap();
    let dts = [DType::F32, DType::F16];
    let tins: Vec<Tensor> = ins
        .iter()
        .enumerate()
        .map(|(k, v)| Tensor::from_f32(gpu, &format!("in{k}"), &shape, v, dts[k % 2]).unwrap())
        .collect();
    let ins: Vec<Vec<f32>> = tins.iter().map(read).collect();
    // Six inputs (two dispatches), registers 0 and 1 and none, and a register-scaled keep.
    let regs_of = [Some(0), None, Some(1), Some(0), None, Some(1)];
    let cs = [0.5f32, -1.25, 2.0, 0.75, 0.1, -0.3];
    let terms: Vec<coef::Term<'_>> = (0..6).map(|k| (&tins[k], cs[k], regs_of[k])).collect();
    let mut rec = gpu.recorder();
    coef::update(&mut rec, &x, &regs, Some((1.5, Some(1))), &terms).unwrap();
    rec.finish().unwrap().submit(gpu);
    let got = read(&x);
    let reg = |k: Option<usize>, e: usize| k.map_or(1.0, |k| r[k * m + e / hw] as f64);
    for e in 0..numel {
        let mut want = 1.5 * reg(Some(1), e) * x0[e] as f64;
        for k in 0..6 {
            want += cs[k] as f64 * reg(regs_of[k], e) * ins[k][e] as f64;
        }
        assert!(
            (got[e] as f64 - want).abs() < 1e-5,
            "element {e}: {} vs {want}",
            got[e]
        );
    }
}

#[test]
fn malformed_scalar_programs_and_registers_are_errors() {
    let gpu = common::gpu();
    let regs = Tensor::zeros(gpu, "regs", &[2, 1, 3], DType::F32).unwrap();
    let x = Tensor::zeros(gpu, "x", &[1, 3, 2, 2], DType::F32).unwrap();
    let mut rec = gpu.recorder();
    for (code, what) in [
        (vec![Sx::Add], "pops an empty stack"),
        (vec![Sx::Const(1.0), Sx::Const(2.0)], "leaves 2 values"),
        (vec![Sx::Reg(2)], "reads register 2"),
        (vec![Sx::Const(1.0); 9], "deeper than 8"),
    ] {
        let e = coef::scalar(&mut rec, &regs, 0, &code)
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{e}");
    }
    let e = coef::dot(&mut rec, &x, &x, &regs, 2, Over::Channel)
        .unwrap_err()
        .to_string();
    assert!(e.contains("register 2"), "{e}");
    let wrong = Tensor::zeros(gpu, "wrong", &[2, 3, 1], DType::F32).unwrap();
    let e = coef::dot(&mut rec, &x, &x, &wrong, 0, Over::Sample)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong"), "{e}");
}
