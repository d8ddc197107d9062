//! FlowChef (`solvers::flowchef`) against the official `sample_ode_generative`
//! (`tools/gen_flowchef_golden.py`: imported and run unmodified with the repository's own
//! operators) on the random-weight `unet_ddpm_like` UNet read as a flow model, the official
//! initial draw supplied: full runs to ≤ 1e-4·max|x|; and the method is refused by name on an
//! ε-prediction model.

mod common;

use diffuse::load::{read_json, Weights};
use diffuse::models::unet::UNetDenoiser;
use diffuse::models::Prediction;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::ops::degrade::{Degrader, Operator};
use diffuse::schedule::config::TrainingSchedule;
use diffuse::schedule::BetaSchedule;
use diffuse::solvers::executor::Executor;
use diffuse::solvers::flowchef;
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

fn train(prediction: Prediction) -> TrainingSchedule {
    TrainingSchedule {
        num_train_timesteps: 1000,
        beta_schedule: BetaSchedule::Linear {
            start: 1e-4,
            end: 0.02,
        },
        prediction,
        steps_offset: 0,
    }
}

#[test]
fn full_runs_match_the_official_code_on_a_unet() {
    let gpu = common::gpu();
    let unet = UNet2DModel::from_dir(gpu, &dir().join("unet_ddpm_like"), DType::F32).unwrap();
    let index = read_json(&dir().join("inverse/flowchef_cases.json")).unwrap();
    let cases = index["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let op = Operator::parse(c["operator"].as_str().unwrap(), 0).unwrap();
        let steps = c["steps"].as_u64().unwrap() as usize;
        let size = c["size"].as_u64().unwrap() as usize;
        let shape = [1, 3, size, size];
        let ms = op.measurement_shape(&shape, "x").unwrap();
        let program = flowchef::program(
            &train(Prediction::Flow),
            steps,
            flowchef::GRADIENT_SCALE,
            ms[1..].iter().product(),
        )
        .unwrap();
        assert_eq!(program.nfe, steps);
        let mut model = UNetDenoiser {
            forward: unet.prepare(gpu, 1, size, size).unwrap(),
            prediction: Prediction::Flow,
            labels: None,
        };
        let cond = Tensor::from_f32(gpu, "aty", &shape, &tensor(name, "aty"), DType::F32).unwrap();
        let d = Degrader::new(gpu, op, size, size).unwrap();
        let exec =
            Executor::with_operator(gpu, &model, &program, 0, true, Some(&cond), Some(&d)).unwrap();
        exec.set_noise(gpu, &tensor(name, "z")).unwrap();
        let x = exec
            .run(gpu, &mut model, |_, _| {})
            .unwrap()
            .to_vec_f32(gpu)
            .unwrap();
        let want = tensor(name, "expected");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = x
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
        let rel = err / scale;
        println!("{name:<26} {steps} steps  max|x| {scale:8.3}  error {rel:.2e}·max|x|");
        if rel > 1e-4 {
            failures.push(format!("{name}: {rel:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn refused_by_name_on_a_non_flow_model() {
    let e = flowchef::program(&train(Prediction::Epsilon), 10, 100.0, 49)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("method") && e.contains("rectified-flow"), "{e}");
}
