//! The MRS–DPM-Solver identity (MR issue): MR Sampler on (x, μ) — written from the paper's
//! update rules with μ — equals the solver library's DPM-Solver(++) on y = x − μ with α → m_t,
//! σ → σ̄_t, for orders 1–3 and data / noise prediction, on a closed-form model of y.

mod common;

use diffuse::models::analytic::{AnalyticDenoiser, GaussianMixture};
use diffuse::models::Prediction;
use diffuse::schedule::config::{DpmAlgorithm, SchedulerConfig, SchedulerKind, SolverType};
use diffuse::schedule::restoration::MeanReverting;
use diffuse::selfcheck::TestRng;
use diffuse::solvers::executor::Executor;
use diffuse::solvers::mr_sampler::{ode_program, MrPrediction};
use diffuse::solvers::program::{Buf, ModelTime};
use diffuse::solvers::{dpm_solver, program::Program};
use diffuse::{DType, Tensor};

fn run(program: &Program, mix: &GaussianMixture, z: &[f32], cond: Option<&Tensor>) -> Vec<f32> {
    let gpu = common::gpu();
    let mut model =
        AnalyticDenoiser::new(gpu, mix.clone(), Prediction::Epsilon, 4, DType::F32).unwrap();
    let exec = Executor::with_condition(gpu, &model, program, 0, true, cond).unwrap();
    exec.set_noise(gpu, z).unwrap();
    exec.run(gpu, &mut model, |_, _| {})
        .unwrap()
        .to_vec_f32(gpu)
        .unwrap()
}

#[test]
fn mr_sampler_equals_dpm_solver_on_x_minus_mu() {
    let gpu = common::gpu();
    let sched = MeanReverting::cosine(100, 0.005, 50.0, false);
    // y0 = x0 − μ ~ a two-mode mixture in 1×4×4.
    let mix = GaussianMixture {
        shape: [1, 4, 4],
        weights: vec![0.5, 0.5],
        means: vec![
            vec![0.2; 16],
            (0..16)
                .map(|i| if i % 2 == 0 { -0.3 } else { 0.1 })
                .collect(),
        ],
        variances: vec![0.01, 0.02],
    };
    let mu_v = TestRng(5).values(4 * 16, -0.8, 0.8, DType::F32);
    let mu = Tensor::from_f32(gpu, "mu", &[4, 1, 4, 4], &mu_v, DType::F32).unwrap();
    let z = TestRng(6).values(4 * 16, -2.0, 2.0, DType::F32);
    for steps in [10usize, 20] {
        let ts: Vec<f64> = diffuse::schedule::linspace(100.0, 0.0, steps + 1);
        let pts: Vec<ModelTime> = ts
            .iter()
            .map(|&t| ModelTime {
                t,
                alpha: sched.m(t),
                sigma: sched.sigma_bar(t),
            })
            .collect();
        for order in 1..=3 {
            for solve in [MrPrediction::Data, MrPrediction::Noise] {
                let mrs = ode_program(
                    &sched,
                    &ts,
                    order,
                    solve,
                    Prediction::Epsilon,
                    &[(Buf::X, 1.0), (Buf::Cond, -1.0)],
                )
                .unwrap();
                let x = run(&mrs, &mix, &z, Some(&mu));
                let mut cfg = SchedulerConfig::default_for(SchedulerKind::DpmSolverMultistep);
                cfg.solver_order = order;
                cfg.solver_type = SolverType::Heun;
                cfg.lower_order_final = false;
                cfg.algorithm = match solve {
                    MrPrediction::Data => DpmAlgorithm::DpmSolverPlusPlus,
                    MrPrediction::Noise => DpmAlgorithm::DpmSolver,
                };
                let mut dpm = dpm_solver::on_points(&cfg, &pts, &[(Buf::X, 1.0)]).unwrap();
                dpm.init_sigma = sched.max_sigma;
                let y = run(&dpm, &mix, &z, None);
                let worst = x
                    .iter()
                    .zip(&y)
                    .zip(&mu_v)
                    .map(|((a, b), m)| (a - (b + m)).abs())
                    .fold(0f32, f32::max);
                println!(
                    "steps {steps} order {order} {solve:?}: max|x_MRS − (y_DPM + μ)| = {worst:.2e}"
                );
                assert!(
                    worst < 2e-5,
                    "steps {steps} order {order} {solve:?}: {worst}"
                );
            }
        }
    }
    // A program that reads μ refuses to run without one.
    let mrs = ode_program(
        &sched,
        &[100.0, 0.0],
        1,
        MrPrediction::Data,
        Prediction::Epsilon,
        &[(Buf::X, 1.0)],
    )
    .unwrap();
    let model = AnalyticDenoiser::new(gpu, mix, Prediction::Epsilon, 4, DType::F32).unwrap();
    let e = Executor::new(gpu, &model, &mrs, 0, false)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("condition"), "{e}");
}
