//! The engine's plumbing: backend assertion, tensors beyond one binding, allocation-free replay,
//! and errors that name the tensors instead of panicking.

mod common;

use common::{assert_checks, gpu, gpu_packed, gpu_small_bindings};
use diffuse::gpu::F16Mode;
use diffuse::ops::elementwise::{self, Binary, Unary};
use diffuse::ops::{
    self,
    conv2d::{Conv2dArgs, Conv2dDesc},
    rng::Philox,
};
use diffuse::selfcheck as sc;
use diffuse::{DType, Error, Tensor};

#[test]
fn runs_on_the_requested_backend_with_real_limits() {
    let info = gpu().info();
    println!("{info}");
    if let Some(b) = common::requested_backend() {
        assert_eq!(info.backend, b);
    }
    // wgpu's default limits cap buffers at 256 MiB; we request the adapter's own.
    assert!(info.max_buffer_size > 256 << 20 || info.max_storage_binding <= 256 << 20);
    assert_eq!(gpu_packed().info().f16, F16Mode::Packed);
}

#[test]
fn tensors_larger_than_one_binding_are_split() {
    let g = gpu_small_bindings();
    assert_eq!(g.max_binding(), 4096);
    let mut checks = Vec::new();
    for dt in [DType::F32, DType::F16] {
        checks.push(sc::unary(g, Unary::Silu, 10_000, dt, false, 1).unwrap());
        checks.push(sc::unary(g, Unary::Gelu, 10_000, dt, true, 2).unwrap());
        checks.push(sc::binary(g, Binary::Mul, &[3, 7, 31, 29], &[7, 1, 1], dt, 3).unwrap());
        checks.push(sc::axpby(g, 12_345, 0.5, 2.0, dt, 4).unwrap());
        checks.push(sc::rng_normal(g, 9_999, Philox { seed: 5, stream: 0 }, 3, dt).unwrap());
    }
    assert_checks(&checks);
    // Ops that cannot split say so, naming the tensor.
    let a = Tensor::zeros(g, "big_a", &[64, 64], DType::F32).unwrap();
    let b = Tensor::zeros(g, "b", &[64, 8], DType::F32).unwrap();
    let c = Tensor::empty(g, "c", &[64, 8], DType::F32).unwrap();
    let e = g
        .run(|rec| ops::gemm::matmul(rec, &a, &b, None, &c, false, 1.0))
        .unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { .. }) && e.to_string().contains("big_a"),
        "{e}"
    );
}

#[test]
fn replay_allocates_nothing_and_compiles_nothing() {
    let g = &common::private_gpu();
    let x = Tensor::from_f32(g, "x", &[4, 8, 16, 16], &vec![0.5; 4 * 8 * 256], DType::F32).unwrap();
    let w = Tensor::from_f32(g, "w", &[8, 8, 3, 3], &vec![0.01; 8 * 72], DType::F32).unwrap();
    let gamma = Tensor::from_f32(g, "gamma", &[8], &[1.0; 8], DType::F32).unwrap();
    let beta = Tensor::zeros(g, "beta", &[8], DType::F32).unwrap();
    let h = Tensor::empty(g, "h", &[4, 8, 16, 16], DType::F32).unwrap();
    let y = Tensor::empty(g, "y", &[4, 8, 16, 16], DType::F32).unwrap();
    let noise = Tensor::empty(g, "noise", &[4, 8, 16, 16], DType::F32).unwrap();
    let mut rec = g.recorder();
    ops::group_norm::group_norm(&mut rec, &x, &gamma, &beta, &h, 4, 1e-5, true).unwrap();
    ops::conv2d::conv2d(
        &mut rec,
        &Conv2dDesc::new(
            &h,
            &w,
            None,
            &y,
            Conv2dArgs {
                stride: 1,
                padding: 1,
                extra_end: 0,
            },
        ),
    )
    .unwrap();
    let rng_at = rec.len();
    ops::rng::fill(
        &mut rec,
        ops::rng::Distribution::Normal,
        Philox { seed: 1, stream: 0 },
        0,
        &noise,
    )
    .unwrap();
    elementwise::axpby(&mut rec, 0.1, &noise, 0.9, &y).unwrap();
    let recording = rec.finish().unwrap();
    recording.submit(g);
    g.wait().unwrap();
    let (pool0, kernels0) = (g.pool().stats(), g.kernels().len());
    for step in 0..20u32 {
        // Only a parameter changes per step (here: the RNG offset).
        let mut p = [0u32; 8];
        p[0] = noise.numel() as u32;
        p[1] = step * noise.numel() as u32;
        p[4] = 1;
        recording
            .set_params(g, rng_at, bytemuck::cast_slice(&p))
            .unwrap();
        recording.submit(g);
    }
    g.wait().unwrap();
    let pool1 = g.pool().stats();
    assert_eq!(pool1.created, pool0.created, "replay created buffers");
    assert_eq!(g.kernels().len(), kernels0, "replay compiled kernels");
    let out = y.to_vec_f32(g).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn freed_tensors_are_reused_by_the_pool() {
    let g = &common::private_gpu();
    let run_step = || {
        let t = Tensor::empty(g, "tmp", &[3, 5, 7, 11], DType::F16).unwrap();
        let u = Tensor::empty(g, "tmp2", &[3, 5, 7, 11], DType::F16).unwrap();
        g.run(|rec| ops::elementwise::unary(rec, Unary::Silu, &t, &u))
            .unwrap();
    };
    run_step();
    g.wait().unwrap();
    let before = g.pool().stats().created;
    for _ in 0..10 {
        run_step();
    }
    g.wait().unwrap();
    assert_eq!(
        g.pool().stats().created,
        before,
        "steady-state steps allocated"
    );
}

fn msg(e: &Error) -> String {
    e.to_string()
}

#[test]
fn bad_arguments_return_errors_naming_the_tensors() {
    let g = gpu();
    let t = |name: &str, shape: &[usize], dt: DType| Tensor::zeros(g, name, shape, dt).unwrap();
    // Zero-size and impossible sizes.
    let e = Tensor::empty(g, "latents", &[2, 0, 4], DType::F32).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }) && msg(&e).contains("latents"));
    let e = Tensor::empty(g, "huge", &[1 << 20, 1 << 20, 1 << 10], DType::F32).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }) && msg(&e).contains("huge"));
    // Host data of the wrong length.
    let e = Tensor::from_f32(g, "upload", &[2, 3], &[1.0; 5], DType::F32).unwrap_err();
    assert!(
        matches!(
            e,
            Error::HostLength {
                got: 5,
                want: 6,
                ..
            }
        ),
        "{e}"
    );
    // GEMM inner dimensions.
    let (a, b, c) = (
        t("q", &[4, 8], DType::F32),
        t("k", &[7, 4], DType::F32),
        t("s", &[4, 4], DType::F32),
    );
    let e = g
        .run(|rec| ops::gemm::matmul(rec, &a, &b, None, &c, false, 1.0))
        .unwrap_err();
    assert!(msg(&e).contains("`k`"), "gemm error should name k");
    // Mismatched dtypes.
    let (x, y) = (t("x32", &[8], DType::F32), t("y16", &[8], DType::F16));
    let e = g
        .run(|rec| elementwise::unary(rec, Unary::Silu, &x, &y))
        .unwrap_err();
    assert!(
        matches!(e, Error::DTypeMismatch { .. }) && msg(&e).contains("y16"),
        "dtype"
    );
    // conv2d: channels, output shape, kernel larger than input.
    let x = t("sample", &[1, 3, 8, 8], DType::F32);
    let w = t("conv_in.weight", &[16, 4, 3, 3], DType::F32);
    let y = t("h", &[1, 16, 8, 8], DType::F32);
    let e = g
        .run(|rec| {
            ops::conv2d::conv2d(
                rec,
                &Conv2dDesc::new(
                    &x,
                    &w,
                    None,
                    &y,
                    Conv2dArgs {
                        stride: 1,
                        padding: 1,
                        extra_end: 0,
                    },
                ),
            )
        })
        .unwrap_err();
    assert!(msg(&e).contains("conv_in.weight"), "conv channels");
    let w = t("conv.weight", &[16, 3, 3, 3], DType::F32);
    let bad_y = t("out", &[1, 16, 4, 4], DType::F32);
    let e = g
        .run(|rec| {
            ops::conv2d::conv2d(
                rec,
                &Conv2dDesc::new(
                    &x,
                    &w,
                    None,
                    &bad_y,
                    Conv2dArgs {
                        stride: 1,
                        padding: 1,
                        extra_end: 0,
                    },
                ),
            )
        })
        .unwrap_err();
    assert!(msg(&e).contains("out") && msg(&e).contains("[1, 16, 8, 8]"));
    let tiny = t("tiny", &[1, 3, 2, 2], DType::F32);
    let e = g
        .run(|rec| {
            ops::conv2d::conv2d(
                rec,
                &Conv2dDesc::new(
                    &tiny,
                    &w,
                    None,
                    &y,
                    Conv2dArgs {
                        stride: 1,
                        padding: 0,
                        extra_end: 0,
                    },
                ),
            )
        })
        .unwrap_err();
    assert!(msg(&e).contains("tiny"));
    // GroupNorm groups that do not divide the channels.
    let x = t("hidden", &[1, 6, 2, 2], DType::F32);
    let (ga, be) = (
        t("norm.weight", &[6], DType::F32),
        t("norm.bias", &[6], DType::F32),
    );
    let y = t("normed", &[1, 6, 2, 2], DType::F32);
    let e = g
        .run(|rec| ops::group_norm::group_norm(rec, &x, &ga, &be, &y, 4, 1e-5, false))
        .unwrap_err();
    assert!(msg(&e).contains("num_groups") && msg(&e).contains("hidden"));
    // Broadcasting that does not fit.
    let (a, b, o) = (
        t("a", &[2, 3, 4], DType::F32),
        t("bias", &[5], DType::F32),
        t("o", &[2, 3, 4], DType::F32),
    );
    let e = g
        .run(|rec| elementwise::binary(rec, Binary::Add, &a, &b, &o))
        .unwrap_err();
    assert!(msg(&e).contains("bias"));
    // Writing into an input.
    let e = g
        .run(|rec| elementwise::binary(rec, Binary::Add, &a, &a, &a))
        .unwrap_err();
    assert!(msg(&e).contains("shares storage"));
    // Timesteps must be f32.
    let (ts, emb) = (
        t("timesteps", &[2], DType::F16),
        t("emb", &[2, 8], DType::F16),
    );
    let e = g
        .run(|rec| ops::embedding::timestep_embedding(rec, &ts, &emb, Default::default()))
        .unwrap_err();
    assert!(matches!(e, Error::UnsupportedDType { .. }) && msg(&e).contains("timesteps"));
}

#[test]
fn no_adapter_error_says_what_to_install() {
    let e = diffuse::Gpu::new(&diffuse::GpuOptions {
        adapter_filter: Some("no such adapter xyz".into()),
        ..Default::default()
    })
    .err()
    .expect("filter matches nothing");
    let m = e.to_string();
    assert!(
        m.contains("mesa-vulkan-drivers") && m.contains("no such adapter xyz"),
        "{m}"
    );
}

#[test]
fn profile_times_every_dispatch_in_order() {
    use diffuse::ops::elementwise::{binary, unary, Binary, Unary};
    let gpu = common::gpu();
    if !gpu.info().timestamps {
        // The error path: a clear message, no panic.
        let r = gpu.recorder().finish().unwrap();
        assert!(r
            .profile(gpu)
            .unwrap_err()
            .to_string()
            .contains("timestamp"));
        return;
    }
    let x = diffuse::Tensor::from_f32(gpu, "x", &[64, 64], &vec![0.5; 4096], diffuse::DType::F32)
        .unwrap();
    let y = diffuse::Tensor::empty(gpu, "y", &[64, 64], diffuse::DType::F32).unwrap();
    let z = diffuse::Tensor::empty(gpu, "z", &[64, 64], diffuse::DType::F32).unwrap();
    let mut rec = gpu.recorder();
    unary(&mut rec, Unary::Silu, &x, &y).unwrap();
    binary(&mut rec, Binary::Add, &x, &y, &z).unwrap();
    diffuse::ops::gemm::matmul(&mut rec, &x, &y, None, &z, false, 1.0).unwrap();
    let r = rec.finish().unwrap();
    let times = r.profile(gpu).unwrap();
    let fams: Vec<&str> = times.iter().map(|t| t.family).collect();
    assert_eq!(fams, ["elementwise", "elementwise", "gemm"]);
    assert!(times.iter().all(|t| t.seconds >= 0.0 && t.workgroups > 0));
    assert!(times.iter().map(|t| t.seconds).sum::<f64>() > 0.0);
    // The profiled run computed the same result as a plain submission would.
    let want = 64.0 * 0.5 * (0.5 / (1.0 + (-0.5f32).exp()));
    let got = z.to_vec_f32(gpu).unwrap();
    assert!(
        got.iter().all(|v| (v - want).abs() < 1e-4),
        "{} vs {want}",
        got[0]
    );
}

/// `a ← alpha·x` as one planned activation of `rec`.
fn scaled(rec: &mut diffuse::Recorder<'_>, x: &Tensor, alpha: f32, name: &str) -> Tensor {
    let y = Tensor::activation(rec, name, x.shape(), DType::F32).unwrap();
    let op = Unary::Affine { alpha, beta: 0.0 };
    elementwise::unary(rec, op, x, &y).unwrap();
    y
}

#[test]
fn the_planner_keeps_an_activation_alive_until_its_last_reader() {
    let g = gpu();
    let n = 4096;
    let x = Tensor::from_f32(g, "x", &[n], &vec![1.0; n], DType::F32).unwrap();
    let mut rec = g.recorder();
    // `a` is read by the sum right after it, and read again at the end: a release after its
    // first reader (the old hand-written pattern) would hand its buffer to `c`, and the final
    // sum would see c's 5 instead of a's 2.
    let a = scaled(&mut rec, &x, 2.0, "a");
    let b = scaled(&mut rec, &x, 3.0, "b");
    let ab = Tensor::activation(&mut rec, "ab", &[n], DType::F32).unwrap();
    elementwise::binary(&mut rec, Binary::Add, &a, &b, &ab).unwrap();
    let c = scaled(&mut rec, &x, 5.0, "c");
    let abc = Tensor::activation(&mut rec, "abc", &[n], DType::F32).unwrap();
    elementwise::binary(&mut rec, Binary::Add, &ab, &c, &abc).unwrap();
    let out = Tensor::activation(&mut rec, "out", &[n], DType::F32).unwrap();
    elementwise::binary(&mut rec, Binary::Add, &abc, &a, &out).unwrap();
    rec.output(&out.allocation()).unwrap();
    let recording = rec.finish().unwrap();
    recording.submit(g);
    let got = out.to_vec_f32(g).unwrap();
    assert!(got.iter().all(|&v| v == 12.0), "{:?}", &got[..4]);
    // Six activations of 16 KiB; a, b, ab, c, abc, out: at most four live at once
    // (a, ab, c, abc at the second sum; a, abc, out at the last).
    assert!(recording.activation_bytes() <= 4 * 16384);
    // Intermediate activations are private to their recording: the host cannot read them and
    // other recordings cannot bind them (their buffers are shared).
    let e = a.to_vec_f32(g).unwrap_err().to_string();
    assert!(e.contains("`a` is an intermediate activation"), "{e}");
    let y = Tensor::empty(g, "y", &[n], DType::F32).unwrap();
    let e = g
        .run(|rec| elementwise::unary(rec, Unary::Silu, &b, &y))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("intermediate activation of another recording"),
        "{e}"
    );
}

#[test]
fn a_chain_of_activations_reuses_two_buffers() {
    // A private context: other tests allocating in parallel must not move its pool counter.
    let g = &common::private_gpu();
    let n = 1 << 16;
    let x = Tensor::from_f32(g, "x", &[n], &vec![1.0; n], DType::F32).unwrap();
    let mut rec = g.recorder();
    let mut h = scaled(&mut rec, &x, 2.0, "h0");
    for i in 1..8 {
        h = scaled(&mut rec, &h, 2.0, &format!("h{i}"));
    }
    rec.output(&h.allocation()).unwrap();
    let recording = rec.finish().unwrap();
    recording.submit(g);
    assert!(h.to_vec_f32(g).unwrap().iter().all(|&v| v == 256.0));
    assert_eq!(recording.activation_bytes(), 2 * 4 * n as u64);
    // Replaying reuses the plan: the output stays correct and nothing is allocated.
    let before = g.pool().stats().created;
    recording.submit(g);
    assert!(h.to_vec_f32(g).unwrap().iter().all(|&v| v == 256.0));
    assert_eq!(g.pool().stats().created, before);
}
