//! The training-free methods on the shipped ε-model (`assets/fmnist-ddpm`): RED-diff and DDS
//! beat `pinv` in PSNR on 16 held-out Fashion-MNIST test images at 50 NFE on `sr4` and
//! `inpaint-box` (`eval::evaluate_inverse`, noiseless measurements), and the measurement
//! consistency ‖A(x̂) − y‖/‖y‖ is reported; FlowChef on `assets/fmnist-flow` beats it on `sr4`.

mod common;

use common::gpu;
use diffuse::eval::{evaluate_inverse, read_clean};
use diffuse::ops::degrade::Operator;
use diffuse::pipeline::inverse::{InverseModel, InverseOptions, Method};
use diffuse::DType;
use std::path::Path;

#[test]
fn red_diff_and_dds_beat_pinv_on_held_out_images() {
    let gpu = gpu();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (clean, shape) = read_clean(
        &root.join("assets/fmnist-sr4/testset.safetensors"),
        Some(16),
    )
    .unwrap();
    let model = InverseModel::load(gpu, &root.join("assets/fmnist-ddpm"), DType::F32).unwrap();
    for op in ["sr4", "inpaint-box"] {
        for method in [Method::RedDiff, Method::Dds] {
            let o = InverseOptions {
                operator: Operator::parse(op, 0).unwrap(),
                method,
                steps: Some(50),
                sigma_y: 0.0,
                seed: 0,
                dtype: DType::F32,
            };
            let rep = evaluate_inverse(gpu, &model, &o, &clean, &shape, 16, |_, _| {}).unwrap();
            let p = rep.pinv.unwrap();
            eprintln!(
                "{op} {method:?} 50 NFE, 16 images: PSNR {:.2} dB (pinv {:.2}), SSIM {:.4} (pinv {:.4}), ‖A(x̂) − y‖/‖y‖ {:.4} (pinv {:.4})",
                rep.method.psnr, p.psnr, rep.method.ssim, p.ssim, rep.method.consistency, p.consistency
            );
            assert!(
                rep.method.psnr > p.psnr,
                "{op} {method:?}: {:.2} dB does not beat pinv's {:.2} dB",
                rep.method.psnr,
                p.psnr
            );
            assert!(rep.method.consistency.is_finite());
        }
    }
}

#[test]
fn flowchef_beats_pinv_on_sr4_with_the_flow_model() {
    let gpu = gpu();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (clean, shape) = read_clean(
        &root.join("assets/fmnist-sr4/testset.safetensors"),
        Some(16),
    )
    .unwrap();
    let model = InverseModel::load(gpu, &root.join("assets/fmnist-flow"), DType::F32).unwrap();
    let o = InverseOptions {
        operator: Operator::parse("sr4", 0).unwrap(),
        method: Method::FlowChef,
        steps: Some(50),
        sigma_y: 0.0,
        seed: 0,
        dtype: DType::F32,
    };
    let rep = evaluate_inverse(gpu, &model, &o, &clean, &shape, 16, |_, _| {}).unwrap();
    let p = rep.pinv.unwrap();
    eprintln!(
        "sr4 FlowChef 50 NFE, 16 images: PSNR {:.2} dB (pinv {:.2}), SSIM {:.4} (pinv {:.4}), ‖A(x̂) − y‖/‖y‖ {:.4}",
        rep.method.psnr, p.psnr, rep.method.ssim, p.ssim, rep.method.consistency
    );
    assert!(
        rep.method.psnr > p.psnr,
        "FlowChef {:.2} dB does not beat pinv's {:.2} dB",
        rep.method.psnr,
        p.psnr
    );
}
