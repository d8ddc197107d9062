//! DA-CLIP restoration against the official code (tools/gen_daclip_golden.py --parts sampler):
//! the converted tiny folder (tests/golden/daclip/tiny: official random-weight ConditionalUNet
//! and reduced DaCLIP, saved as the official checkpoints and converted by
//! tools/convert_daclip.py) restores the golden's 29×37 image in 10 MR Sampler steps (released
//! options: ODE, order 2, data form, linspace, λ_min −5) from the same x_T = μ + λ_s·z; the
//! official `MRSampler` on the official `ConditionalUNet` gave the expected final sample
//! (unclipped). f32 within 1e-3·max|x|, f16 within 1e-2·max|x|.

mod common;

use diffuse::load::Weights;
use diffuse::pipeline::daclip_restore::{Contexts, DaclipRestorer};
use diffuse::pipeline::restore::{MrsFlags, RestoreOptions};
use diffuse::DType;
use std::path::PathBuf;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/daclip")
}

fn options(dtype: DType) -> RestoreOptions {
    RestoreOptions {
        sampler: "mrs".into(),
        solver: None,
        order: None,
        steps: 10,
        dtype,
        mrs: MrsFlags::default(),
    }
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0f64, |m, x| m.max(x.abs() as f64))
}

/// The 10-step restoration with the official contexts; returns max|Δ|/max|x|.
fn ten_steps_with_official_contexts(dtype: DType) -> f64 {
    let gpu = common::gpu();
    let r = DaclipRestorer::load(gpu, &golden().join("tiny"), &options(dtype)).unwrap();
    assert_eq!(r.nfe(), 10);
    let io = Weights::open(&golden().join("sampler/io.safetensors")).unwrap();
    let ex = Weights::open(&golden().join("sampler/expected.safetensors")).unwrap();
    let mu = io.read_f32("mu", None).unwrap();
    let z = io.read_f32("z", None).unwrap();
    let ctx = Contexts {
        image: ex.read_f32("image_context", None).unwrap().data,
        degra: ex.read_f32("degra_context", None).unwrap().data,
    };
    let want = ex.read_f32("sample", None).unwrap();
    let got = r
        .restore(
            gpu,
            &mu.data,
            &mu.shape,
            &ctx,
            0,
            Some(&z.data),
            None,
            |_, _| {},
        )
        .unwrap();
    let scale = max_abs(&want.data);
    let err = got
        .iter()
        .zip(&want.data)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
    eprintln!(
        "{dtype:?}: 10-step MRS vs official: max|Δ| {err:.3e}, max|x| {scale:.4}, rel {:.3e}",
        err / scale
    );
    err / scale
}

#[test]
fn ten_step_mr_sampler_matches_the_official_run_f32() {
    let rel = ten_steps_with_official_contexts(DType::F32);
    assert!(rel <= 1e-3, "f32: {rel:.3e}");
}

#[test]
fn ten_step_mr_sampler_matches_the_official_run_f16() {
    let rel = ten_steps_with_official_contexts(DType::F16);
    assert!(rel <= 1e-2, "f16: {rel:.3e}");
}

/// The network's first evaluation (x_T = μ + λ_s·z at t = T, both official contexts) against the
/// official one; returns max|Δ|/max|ε|.
fn first_evaluation(dtype: DType) -> f64 {
    use diffuse::nn::conditional_unet::ConditionalUNet;
    let gpu = common::gpu();
    let unet = ConditionalUNet::from_dir(gpu, &golden().join("tiny/unet"), dtype).unwrap();
    let io = Weights::open(&golden().join("sampler/io.safetensors")).unwrap();
    let ex = Weights::open(&golden().join("sampler/expected.safetensors")).unwrap();
    let mu = io.read_f32("mu", None).unwrap();
    let z = io.read_f32("z", None).unwrap();
    let lambda_s = (50.0f64 / 255.0) as f32;
    let xt: Vec<f32> = mu
        .data
        .iter()
        .zip(&z.data)
        .map(|(m, z)| m + z * lambda_s)
        .collect();
    let s = &mu.shape;
    let fwd = unet.prepare(gpu, s[0], s[2], s[3], true, true).unwrap();
    let got = fwd
        .forward_host(
            gpu,
            &xt,
            &mu.data,
            &[100.0],
            Some(&ex.read_f32("degra_context", None).unwrap().data),
            Some(&ex.read_f32("image_context", None).unwrap().data),
        )
        .unwrap();
    let want = ex.read_f32("first_eps", None).unwrap().data;
    let scale = max_abs(&want);
    let err = got
        .iter()
        .zip(&want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
    eprintln!(
        "{dtype:?}: first ε vs official: max|Δ| {err:.3e}, max|ε| {scale:.4}, rel {:.3e}",
        err / scale
    );
    err / scale
}

#[test]
fn first_network_evaluation_matches_the_official_one() {
    let f32_rel = first_evaluation(DType::F32);
    assert!(f32_rel <= 1e-4, "f32: {f32_rel:.3e}");
    let f16_rel = first_evaluation(DType::F16);
    assert!(f16_rel <= 1e-2, "f16: {f16_rel:.3e}");
}

/// The engine's contexts of the golden PNG (the official clip_transform on the host, the
/// DA-CLIP towers on the GPU) against the official `encode_image(clip_transform(img),
/// control=True)`.
#[test]
fn contexts_of_the_png_match_the_official_ones() {
    let gpu = common::gpu();
    let r = DaclipRestorer::load(gpu, &golden().join("tiny"), &options(DType::F32)).unwrap();
    let io = Weights::open(&golden().join("sampler/io.safetensors")).unwrap();
    let ex = Weights::open(&golden().join("sampler/expected.safetensors")).unwrap();
    let mu = io.read_f32("mu", None).unwrap();
    let c = r.contexts(gpu, &mu.data, &mu.shape).unwrap();
    for (name, got) in [("image_context", &c.image), ("degra_context", &c.degra)] {
        let want = ex.read_f32(name, None).unwrap().data;
        let scale = max_abs(&want);
        let err = got
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
        eprintln!(
            "{name}: max|Δ| {err:.3e}, max {scale:.4}, rel {:.3e}",
            err / scale
        );
        assert!(err <= 1e-4 * scale, "{name}: rel {:.3e}", err / scale);
    }
}
