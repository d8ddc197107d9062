//! Full-loop parity with diffusers (`tools/gen_solver_golden.py`): each case runs diffusers'
//! `set_timesteps` / `scale_model_input` / `step` loop from a fixed x_T on a closed-form
//! Gaussian-mixture model or the `unet_ddpm_like` golden UNet; the engine's final sample must be
//! within 1e-4·max|x| of diffusers'.

mod common;

use diffuse::load::{read_json, Weights};
use diffuse::models::analytic::{AnalyticDenoiser, GaussianMixture};
use diffuse::models::unet::UNetDenoiser;
use diffuse::models::Denoiser;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::schedule::config::SchedulerConfig;
use diffuse::solvers::{self, executor::Executor};
use diffuse::DType;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn toy() -> GaussianMixture {
    let w = Weights::open(&dir().join("solvers/toy.safetensors")).unwrap();
    let means = w.read_f32("means", None).unwrap();
    let (k, d) = (means.shape[0], means.shape[1]);
    GaussianMixture {
        shape: [1, 8, 8],
        weights: w
            .read_f32("weights", None)
            .unwrap()
            .data
            .iter()
            .map(|&v| v as f64)
            .collect(),
        means: (0..k)
            .map(|i| {
                means.data[i * d..(i + 1) * d]
                    .iter()
                    .map(|&v| v as f64)
                    .collect()
            })
            .collect(),
        variances: w
            .read_f32("variances", None)
            .unwrap()
            .data
            .iter()
            .map(|&v| v as f64)
            .collect(),
    }
}

#[test]
fn final_samples_match_diffusers() {
    let gpu = common::gpu();
    let cases = read_json(&dir().join("solvers/cases.json")).unwrap();
    let unet = UNet2DModel::from_dir(gpu, &dir().join("unet_ddpm_like"), DType::F32).unwrap();
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = SchedulerConfig::from_json(&case["config"], name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let steps = case["steps"].as_u64().unwrap() as usize;
        let io = Weights::open(&dir().join(format!("solvers/{name}.safetensors"))).unwrap();
        let z = io.read_f32("z", None).unwrap();
        let want = io.read_f32("expected", None).unwrap();
        let program = solvers::build(&cfg, steps).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut model: Box<dyn Denoiser> = match case["model"].as_str().unwrap() {
            "toy" => Box::new(
                AnalyticDenoiser::new(gpu, toy(), cfg.prediction, z.shape[0], DType::F32).unwrap(),
            ),
            _ => Box::new(UNetDenoiser {
                forward: unet
                    .prepare(gpu, z.shape[0], z.shape[2], z.shape[3])
                    .unwrap(),
                prediction: cfg.prediction,
                labels: None,
            }),
        };
        let exec = Executor::new(gpu, model.as_ref(), &program, 0, true).unwrap();
        exec.set_noise(gpu, &z.data).unwrap();
        let got = exec
            .run(gpu, model.as_mut(), |_, _| {})
            .unwrap()
            .to_vec_f32(gpu)
            .unwrap();
        let xmax = want.data.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let (mut worst, mut at) = (0f64, 0);
        for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
            let d = (*g as f64 - *w as f64).abs();
            if d > worst || d.is_nan() {
                worst = if d.is_nan() { f64::INFINITY } else { d };
                at = i;
            }
        }
        let ok = worst <= 1e-4 * xmax;
        println!(
            "{name:<32} {:>3} NFE  max|Δ| {worst:.2e} at [{at}] (got {} want {})  max|x| {xmax:.3}  {}",
            program.nfe,
            got[at],
            want.data[at],
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            failures.push(name.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "cases off diffusers by more than 1e-4·max|x|: {failures:?}"
    );
}
