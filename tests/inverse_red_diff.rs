//! RED-diff (`solvers::red_diff`) on the GPU against the f64 program interpreter on an analytic
//! Gaussian mixture (ε-prediction, DDPM's linear schedule), with the degradation operator bound
//! to both; the Adam kernel against its f64 semantics; the official measurement counts.

mod common;

use common::gpu;
use diffuse::models::analytic::{AnalyticDenoiser, GaussianMixture, HostMixture};
use diffuse::models::Prediction;
use diffuse::ops::adam::{self, AdamStep};
use diffuse::ops::degrade::{Degrader, Mode, Operator};
use diffuse::schedule::config::TrainingSchedule;
use diffuse::schedule::BetaSchedule;
use diffuse::solvers::executor::Executor;
use diffuse::solvers::interpreter::{self, HostRun};
use diffuse::solvers::red_diff::{self, RedDiffOptions};
use diffuse::{DType, Tensor};

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
fn executor_matches_interpreter() {
    let gpu = gpu();
    let mix = GaussianMixture::named("mixture").unwrap();
    let batch = 3;
    let [c, h, w] = mix.shape;
    let shape = vec![batch, c, h, w];
    let clean: Vec<f64> = (0..batch).flat_map(|k| mix.means[k].clone()).collect();
    for name in ["sr2", "inpaint-box", "inpaint-random", "blur-box"] {
        let op = Operator::parse(name, 3).unwrap();
        let y = op.apply_host(Mode::Forward, &clean, &shape).unwrap();
        let aty = op.apply_host(Mode::Adjoint, &y, &shape).unwrap();
        let opts = RedDiffOptions {
            sigma_x0: if name == "blur-box" { 0.01 } else { 0.0 },
            ..Default::default()
        };
        let program = red_diff::program(&opts, &train(), 10, &op, &shape).unwrap();
        let mut host_model = HostMixture {
            mixture: mix.clone(),
            prediction: Prediction::Epsilon,
        };
        let host = interpreter::run_with_operator(
            &program,
            &mut host_model,
            &HostRun {
                shape: &shape,
                seed: 9,
                noise: None,
                cond: Some(&aty),
                step_noise: None,
            },
            op,
            |_, _| {},
        )
        .unwrap();
        let mut model =
            AnalyticDenoiser::new(gpu, mix.clone(), Prediction::Epsilon, batch, DType::F32)
                .unwrap();
        let cf: Vec<f32> = aty.iter().map(|v| *v as f32).collect();
        let cond = Tensor::from_f32(gpu, "aty", &shape, &cf, DType::F32).unwrap();
        let d = Degrader::new(gpu, op, h, w).unwrap();
        let ex = Executor::with_operator(gpu, &model, &program, 9, false, Some(&cond), Some(&d))
            .unwrap();
        // Twice: the program zeroes its Adam moments itself.
        for _ in 0..2 {
            let got = ex
                .run(gpu, &mut model, |_, _| {})
                .unwrap()
                .to_vec_f32(gpu)
                .unwrap();
            let scale = host.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&host)
                .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
            assert!(
                err <= 1e-4 * scale,
                "{name}: max err {err:.3e} of {scale:.3e}"
            );
        }
    }
}

#[test]
fn adam_kernel_matches_f64() {
    let gpu = gpu();
    let n = 1000;
    let val = |k: usize, s: f64| {
        (0..n)
            .map(|i| ((i * 7 + k) % 13) as f64 * s - 0.3)
            .collect::<Vec<f64>>()
    };
    let (mut p, g, mut m, mut v) = (val(1, 0.1), val(2, 0.05), val(3, 0.01), val(4, 0.001));
    for x in v.iter_mut() {
        *x = x.abs();
    }
    let up = |x: &[f64], name| {
        let f: Vec<f32> = x.iter().map(|a| *a as f32).collect();
        Tensor::from_f32(gpu, name, &[n], &f, DType::F32).unwrap()
    };
    let (pt, gt, mt, vt) = (up(&p, "p"), up(&g, "g"), up(&m, "m"), up(&v, "v"));
    let s = AdamStep {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        k: 3,
    };
    gpu.run(|rec| adam::step(rec, &pt, &gt, &mt, &vt, &s))
        .unwrap();
    s.eval(&mut p, &g, &mut m, &mut v);
    for (t, want) in [(&pt, &p), (&mt, &m), (&vt, &v)] {
        let got = t.to_vec_f32(gpu).unwrap();
        for (a, b) in got.iter().zip(want.iter()) {
            assert!(
                (*a as f64 - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{}: {a} vs {b}",
                t.name()
            );
        }
    }
    // torch's first step moves every coordinate by ≈ lr·sign(g).
    let mut p1 = vec![0.0; 2];
    let (mut m1, mut v1) = (vec![0.0; 2], vec![0.0; 2]);
    AdamStep { k: 1, ..s }.eval(&mut p1, &[2.0, -0.5], &mut m1, &mut v1);
    assert!(
        (p1[0] + 0.1).abs() < 1e-8 && (p1[1] - 0.1).abs() < 1e-8,
        "{p1:?}"
    );
}

#[test]
fn official_measurement_counts() {
    let img = [2usize, 3, 8, 8];
    let n = |o: &str| red_diff::measurement_numel(&Operator::parse(o, 0).unwrap(), &img).unwrap();
    assert_eq!(n("sr4"), 2 * 3 * 2 * 2);
    assert_eq!(n("inpaint-box"), 2 * 3 * (64 - 16));
    assert_eq!(n("blur-gauss"), 2 * 3 * 64);
}
