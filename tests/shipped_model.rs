//! The shipped Fashion-MNIST model (assets/fmnist-ddpm) loads, produces finite outputs of the
//! right shape, and its samples look like Fashion-MNIST rather than noise: pixel values stay in
//! [−1, 1], neighbouring pixels are smooth, and there is a black background with an object.
//! Measured when the check was written (15 DPM-Solver++ steps, seed 1): trained weights 96.9 %
//! of pixels in range, mean |Δx| 0.154, 60 % background; the same config with random weights
//! 0.6 % in range, mean |Δx| 182 — so the check fails for untrained weights.

mod common;

use diffuse::models::unet::UNetDenoiser;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::pipeline::{sample, SampleOptions};
use diffuse::schedule::config::SchedulerConfig;
use diffuse::DType;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fmnist-ddpm")
}

#[test]
fn shipped_model_loads_and_samples_clothing_like_images() {
    let gpu = common::gpu();
    let model = UNet2DModel::from_dir(gpu, &dir(), DType::F32).unwrap();
    assert_eq!(model.config.sample_size, Some((28, 28)));
    let base = SchedulerConfig::from_file(&dir().join("scheduler_config.json")).unwrap();
    let cfg = SchedulerConfig::named("dpm-solver++", Some(&base)).unwrap();
    let batch = 16;
    let mut den = UNetDenoiser {
        forward: model.prepare(gpu, batch, 28, 28).unwrap(),
        prediction: cfg.train.prediction,
        labels: None,
    };
    let x = sample(
        gpu,
        &mut den,
        &cfg,
        &SampleOptions {
            steps: 15,
            seed: 1,
            noise: None,
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!(x.len(), batch * 28 * 28);
    assert!(x.iter().all(|v| v.is_finite()));
    let in_range = x.iter().filter(|v| v.abs() <= 1.05).count() as f64 / x.len() as f64;
    let mut tv = 0.0;
    for s in x.chunks(784) {
        for r in 0..28 {
            for c in 0..27 {
                tv += (s[r * 28 + c + 1] - s[r * 28 + c]).abs() as f64;
            }
        }
    }
    let mean_dx = tv / (batch * 28 * 27) as f64;
    println!("in range {in_range:.3}, mean |Δx| {mean_dx:.3}");
    assert!(
        in_range >= 0.9,
        "only {in_range:.3} of the pixels are in [−1, 1]"
    );
    assert!(
        mean_dx <= 0.5,
        "neighbouring pixels differ by {mean_dx:.3} on average: noise, not images"
    );
    let dark = x.iter().filter(|v| **v <= -0.9).count() as f64 / x.len() as f64;
    let per_sample_dark: Vec<f64> = x
        .chunks(784)
        .map(|s| s.iter().filter(|v| **v <= -0.9).count() as f64 / 784.0)
        .collect();
    println!("fraction of background pixels: {dark:.3}; per sample {per_sample_dark:.2?}");
    assert!(
        dark > 0.25,
        "samples lack the black background of Fashion-MNIST ({dark:.3})"
    );
    // Not all background either: there is an object in most samples.
    assert!(per_sample_dark.iter().filter(|f| **f < 0.95).count() >= batch * 3 / 4);
}

#[test]
fn shipped_class_conditional_model_samples_with_guidance() {
    use diffuse::models::guided::GuidedUNet;
    let gpu = common::gpu();
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fmnist-cond");
    let model = UNet2DModel::from_dir(gpu, &d, DType::F32).unwrap();
    assert_eq!(model.num_classes(), Some(11), "10 classes + the null label");
    let base = SchedulerConfig::from_file(&d.join("scheduler_config.json")).unwrap();
    let cfg = SchedulerConfig::named("dpm-solver++", Some(&base)).unwrap();
    let labels: Vec<i64> = (0..10).collect();
    let fwd = model.prepare(gpu, 20, 28, 28).unwrap();
    let mut den = GuidedUNet::new(gpu, fwd, cfg.train.prediction, &labels, 10, 3.0).unwrap();
    let x = sample(
        gpu,
        &mut den,
        &cfg,
        &SampleOptions {
            steps: 15,
            seed: 2,
            noise: None,
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!(x.len(), 10 * 784);
    assert!(x.iter().all(|v| v.is_finite()), "non-finite sample");
    // Guidance at w = 3 pushes pixels past [-1, 1] (the CLI clamps when it
    // writes the PNG), so bound magnitude and smoothness instead: random
    // weights give |x| ~ 600 and mean |dx| ~ 180.
    let max_abs = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut tv = 0.0;
    for s in x.chunks(784) {
        for r in 0..28 {
            for c in 0..27 {
                let a = s[r * 28 + c].clamp(-1.0, 1.0);
                let b = s[r * 28 + c + 1].clamp(-1.0, 1.0);
                tv += (b - a).abs() as f64;
            }
        }
    }
    let mean_dx = tv / (10 * 28 * 27) as f64;
    println!("guided samples: max |x| {max_abs:.3}, mean |Δx| {mean_dx:.3}");
    assert!(
        max_abs <= 5.0 && mean_dx <= 0.5,
        "max |x| {max_abs}, mean |Δx| {mean_dx}"
    );
    // Label faithfulness: the shipped Fashion-MNIST classifier (≈90 % test accuracy) reads
    // the requested class back from most guided samples.
    let c = diffuse::nn::classifier::FmnistClassifier::from_dir(
        gpu,
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fmnist-classifier"),
        DType::F32,
    )
    .unwrap();
    let fwd = c.prepare(gpu, 10).unwrap();
    let clamped: Vec<f32> = x.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    let (_, logits) = diffuse::eval::classify(gpu, &fwd, &clamped, 10).unwrap();
    let acc = diffuse::eval::accuracy(&logits, 10, &labels);
    println!("classifier accuracy on the 10 guided samples: {acc:.2}");
    assert!(
        acc >= 0.7,
        "only {acc} of the guided samples classify as their label"
    );
}

#[test]
fn shipped_mr_restoration_model_beats_its_degraded_input() {
    // assets/fmnist-sr4: 4× super-resolution by mean-reverting diffusion. The MR Sampler (SDE,
    // order 2, 10 NFE) on the first 8 held-out pairs must beat the degraded input clearly in
    // both PSNR and SSIM (measured on 16 pairs when written: 18.4 dB / 0.67 vs 15.5 dB / 0.37).
    use diffuse::pipeline::restore::{MrsFlags, RestoreOptions, Restorer};
    let gpu = common::gpu();
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fmnist-sr4");
    let set = diffuse::load::Weights::open(&d.join("testset.safetensors")).unwrap();
    let degraded = set.read_f32("degraded", None).unwrap();
    let clean = set.read_f32("clean", Some(&degraded.shape)).unwrap();
    assert_eq!(degraded.shape, vec![256, 1, 28, 28]);
    let o = RestoreOptions {
        sampler: "mrs".into(),
        solver: Some("sde".into()),
        order: Some(2),
        steps: 10,
        dtype: DType::F32,
        // The grid this bound was measured on (before the official defaults).
        mrs: MrsFlags {
            time_schedule: Some("linear-lambda".into()),
            interpolation: Some("consistent".into()),
            ..Default::default()
        },
    };
    let r = Restorer::load(gpu, &d, &o).unwrap();
    assert_eq!(r.nfe(), 10);
    let n = 8;
    let rep = diffuse::eval::evaluate_restoration(
        gpu,
        &r,
        &degraded.data[..n * 784],
        &clean.data[..n * 784],
        &[n, 1, 28, 28],
        n,
        0,
        |_, _| {},
    )
    .unwrap();
    println!(
        "MRS-SDE-2, 10 NFE, {n} pairs: PSNR {:.2} dB, SSIM {:.3} (degraded {:.2} dB, {:.3})",
        rep.psnr, rep.ssim, rep.psnr_input, rep.ssim_input
    );
    assert!(
        rep.psnr >= rep.psnr_input + 1.0,
        "PSNR {} vs input {}",
        rep.psnr,
        rep.psnr_input
    );
    assert!(
        rep.ssim >= rep.ssim_input + 0.15,
        "SSIM {} vs input {}",
        rep.ssim,
        rep.ssim_input
    );
}
