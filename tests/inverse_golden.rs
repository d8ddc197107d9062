//! DDS and RED-diff against the official code (`tools/gen_inverse_golden.py`: DDS's own
//! `utils.CG` with its sampling loop transcribed, RED-diff's own `REDDIFF.sample`) on the
//! random-weight `unet_ddpm_like` UNet, with the official runs' draws supplied: full runs to
//! ≤ 1e-4·max|x|.

mod common;

use diffuse::load::{read_json, Weights};
use diffuse::models::unet::UNetDenoiser;
use diffuse::models::Prediction;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::ops::degrade::{Degrader, Operator};
use diffuse::schedule::config::TrainingSchedule;
use diffuse::schedule::BetaSchedule;
use diffuse::solvers::dds::{self, DdsOptions};
use diffuse::solvers::executor::Executor;
use diffuse::solvers::red_diff::{self, RedDiffOptions};
use diffuse::{DType, Tensor};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn tensor(name: &str, t: &str) -> Vec<f32> {
    Weights::open(&dir().join(format!("inverse/{name}.safetensors")))
        .unwrap()
        .read_f32(t, None)
        .unwrap()
        .data
}

fn train() -> TrainingSchedule {
    TrainingSchedule {
        num_train_timesteps: 1000,
        beta_schedule: BetaSchedule::Linear {
            start: 1e-4,
            end: 0.02,
        },
        prediction: Prediction::Epsilon,
        steps_offset: 0,
    }
}

#[test]
fn full_runs_match_the_official_code_on_a_unet() {
    let gpu = common::gpu();
    let unet = UNet2DModel::from_dir(gpu, &dir().join("unet_ddpm_like"), DType::F32).unwrap();
    let index = read_json(&dir().join("inverse/cases.json")).unwrap();
    let cases = index["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let op = Operator::parse(c["operator"].as_str().unwrap(), 0).unwrap();
        let steps = c["steps"].as_u64().unwrap() as usize;
        let batch = c["batch"].as_u64().unwrap() as usize;
        let shape = [batch, 3, 16, 16];
        let dds = c["method"] == "dds";
        let program = if dds {
            let opts = DdsOptions {
                noisy: c["noisy"].as_bool().unwrap(),
                supplied_noise: true,
                ..Default::default()
            };
            dds::program(&opts, &train(), steps).unwrap()
        } else {
            let opts = RedDiffOptions {
                supplied_noise: true,
                ..Default::default()
            };
            red_diff::program(&opts, &train(), steps, &op, &shape).unwrap()
        };
        let mut model = UNetDenoiser {
            forward: unet.prepare(gpu, batch, 16, 16).unwrap(),
            prediction: Prediction::Epsilon,
            labels: None,
        };
        let cond = Tensor::from_f32(gpu, "aty", &shape, &tensor(name, "aty"), DType::F32).unwrap();
        let d = Degrader::new(gpu, op, 16, 16).unwrap();
        let exec =
            Executor::with_operator(gpu, &model, &program, 0, dds, Some(&cond), Some(&d)).unwrap();
        if dds {
            exec.set_noise(gpu, &tensor(name, "z")).unwrap();
        }
        exec.set_step_noise(gpu, &tensor(name, "step_noise"))
            .unwrap();
        let x = exec
            .run(gpu, &mut model, |_, _| {})
            .unwrap()
            .to_vec_f32(gpu)
            .unwrap();
        let want = tensor(name, "expected");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = x
            .iter()
            .zip(&want)
            .map(|(a, b)| {
                if (a - b).is_nan() {
                    f32::INFINITY
                } else {
                    (a - b).abs()
                }
            })
            .fold(0f32, f32::max);
        let rel = d / scale;
        println!("{name:<24} {steps} steps  max|x| {scale:8.3}  error {rel:.2e}·max|x|");
        if rel > 1e-4 {
            failures.push(format!("{name}: {rel:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
