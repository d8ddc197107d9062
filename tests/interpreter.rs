//! The GPU executor against the f64 host interpreter (`solvers::interpreter`): the same programs
//! on the same closed-form models give the same final samples to f32 rounding. Deterministic
//! programs, stochastic ones (identical Philox draws: x_T on stream 0 drawn by both, one stream
//! per drawing instruction), a Langevin corrector, dynamic thresholding on a conditioned
//! process, and a two-head model.

mod common;

use common::fixed::run_fixed;
use common::Backend;
use diffuse::models::analytic::GaussianMixture;
use diffuse::models::Prediction;
use diffuse::schedule::config::SchedulerConfig;
use diffuse::schedule::restoration::{rddm_schedule, MeanReverting};
use diffuse::selfcheck::TestRng;
use diffuse::solvers::mr_sampler::{dynamic_thresholding, ode_program, sde_program, MrPrediction};
use diffuse::solvers::program::{Buf, Op, Program};
use diffuse::solvers::residual_shift::rddm_program;
use diffuse::DType;

/// max |gpu − host| / max(1, max |host|).
fn rel_diff(gpu: &[f64], host: &[f64]) -> f64 {
    assert_eq!(gpu.len(), host.len());
    let scale = host.iter().fold(1f64, |m, v| m.max(v.abs()));
    let worst = gpu
        .iter()
        .zip(host)
        .map(|(a, b)| {
            if (a - b).is_nan() {
                f64::INFINITY
            } else {
                (a - b).abs()
            }
        })
        .fold(0.0, f64::max);
    worst / scale
}

fn has(p: &Program, f: impl Fn(&Op) -> bool) -> bool {
    p.steps.iter().flatten().any(f)
}

/// The named 8×8 four-mode mixture, 6 samples, x_T drawn from the seed on both sides.
#[test]
fn executor_matches_the_interpreter_on_scheduler_programs() {
    let mix = GaussianMixture::named("mixture").unwrap();
    let mut failures = Vec::new();
    // (scheduler, steps, tolerance): deterministic ODE solvers agree to f32 rounding of the
    // state; stochastic ones add f32 Box–Muller draws (the same Philox words) per step. On
    // lavapipe the worst is 8e-7 deterministic and 3e-6 stochastic; the tolerances leave room
    // for GPUs whose f32 log/sin/cos are less accurate.
    for (name, steps, tol) in [
        ("ddim", 20, 1e-5),
        ("euler", 20, 1e-5),
        ("heun", 10, 1e-5),
        ("dpm-solver++", 15, 1e-5),
        ("dpm-solver++-3m", 15, 1e-5),
        ("unipc", 12, 1e-5),
        ("flow-euler", 12, 1e-5),
        ("ddpm", 50, 1e-4),
        ("euler-ancestral", 30, 1e-4),
        ("sde-dpm-solver++", 20, 1e-4),
        ("edm-heun-churn", 15, 1e-4),
        ("score-sde-ve", 30, 1e-4),
        ("score-sde-vp", 50, 1e-4),
    ] {
        let cfg = SchedulerConfig::named(name, None).unwrap();
        let p = diffuse::solvers::build(&cfg, steps).unwrap();
        if name == "score-sde-ve" {
            assert!(has(&p, |o| matches!(o, Op::Langevin { .. })), "a corrector");
        }
        let stochastic = has(&p, |o| match o {
            Op::Lin { noise, .. } => *noise != 0.0,
            Op::Langevin { .. } => true,
            _ => false,
        });
        let run =
            |b, seed| common::run_analytic(b, &mix, cfg.train.prediction, 6, &p, seed, None, None);
        let (gpu, host) = (run(Backend::Gpu, 77), run(Backend::Host, 77));
        let d = rel_diff(&gpu, &host);
        // A different seed moves the sample far more than the backends differ.
        let other = rel_diff(&run(Backend::Host, 78), &host);
        println!(
            "{name:<18} {steps:>3} steps{}: max|gpu − host| / max|x| {d:.2e} (tolerance {tol:.0e}; seed 78 vs 77 {other:.2e})",
            if stochastic { " (stochastic)" } else { "" }
        );
        if d > tol || other < 100.0 * tol {
            failures.push(format!("{name}: {d:.2e} (other seed {other:.2e})"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// The MR Sampler (Buf::Cond) with dynamic thresholding, ODE and SDE, on a mixture whose x̂0
/// leaves [−1, 1] (so the threshold acts); x_T from the seed.
#[test]
fn executor_matches_the_interpreter_on_conditioned_thresholded_programs() {
    let sched = MeanReverting::cosine(100, 0.005, 50.0, false);
    let mix = GaussianMixture {
        shape: [1, 4, 8],
        weights: vec![0.5, 0.5],
        means: vec![
            (0..32)
                .map(|i| if i % 3 == 0 { 1.4 } else { -0.3 })
                .collect(),
            (0..32).map(|i| if i < 16 { -1.2 } else { 0.5 }).collect(),
        ],
        variances: vec![0.02, 0.05],
    };
    let batch = 5;
    let mu = TestRng(3).values(batch * 32, -0.6, 0.6, DType::F32);
    let yin = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
    let ts = sched.linear_lambda_times(12, -5.0);
    for (name, p, tol) in [
        (
            "MRS-ODE-2 data",
            ode_program(
                &sched,
                &ts,
                2,
                MrPrediction::Data,
                Prediction::Epsilon,
                &yin,
            ),
            2e-5,
        ),
        (
            "MRS-SDE-2 data",
            sde_program(
                &sched,
                &ts,
                2,
                MrPrediction::Data,
                Prediction::Epsilon,
                &yin,
            ),
            1e-4,
        ),
    ] {
        let plain = p.unwrap();
        let p = dynamic_thresholding(plain.clone(), MrPrediction::Data, 0.9, 1.3).unwrap();
        assert!(has(&p, |o| matches!(o, Op::Threshold { .. })));
        let run = |b, p: &Program| {
            common::run_analytic(b, &mix, Prediction::Epsilon, batch, p, 5, None, Some(&mu))
        };
        let (gpu, host) = (run(Backend::Gpu, &p), run(Backend::Host, &p));
        let d = rel_diff(&gpu, &host);
        let effect = rel_diff(&run(Backend::Host, &plain), &host);
        println!(
            "{name} + thresholding: max|gpu − host| / max|x| {d:.2e} (tolerance {tol:.0e}; without thresholding {effect:.2e})"
        );
        assert!(d <= tol, "{name}: {d:.2e}");
        assert!(effect > 100.0 * tol, "{name}: the threshold did not act");
    }
}

/// RDDM reads both heads of a two-head model (Buf::ModelAux) and μ; x_T from the seed.
#[test]
fn executor_matches_the_interpreter_on_a_two_head_program() {
    let (abar, bbar) = rddm_schedule(1000, 0.01);
    let p = rddm_program(&abar, &bbar, 8).unwrap();
    assert!(has(&p, |o| match o {
        Op::Lin { terms, .. } => terms.iter().any(|(b, _)| *b == Buf::ModelAux),
        _ => false,
    }));
    let shape = [3, 2, 4, 4];
    let res = TestRng(1).values(96, -0.5, 0.5, DType::F32);
    let eps = TestRng(2).values(96, -1.0, 1.0, DType::F32);
    let cond = TestRng(3).values(96, -1.0, 1.0, DType::F32);
    let run = |b| run_fixed(b, &shape, &res, Some(&eps), &p, 21, None, Some(&cond));
    let (gpu, host) = (run(Backend::Gpu), run(Backend::Host));
    let d = gpu
        .iter()
        .zip(&host)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("RDDM, 8 steps: max|gpu − host| {d:.2e}");
    assert!(d <= 2e-6, "{d}");
}

/// Data-dependent coefficients: inner products per (sample, channel) and per sample into
/// scalar registers, a scalar program on them, and updates reading them (`Op::Dot`,
/// `Op::Scalar`, `Op::Combine`), three steps so each step's registers depend on the last.
#[test]
fn executor_matches_the_interpreter_on_register_coefficients() {
    use diffuse::solvers::program::{lin, model_input, ModelTime, Over, Sx::*};
    let t = ModelTime {
        t: 500.0,
        alpha: 0.6,
        sigma: 0.8,
    };
    let step = vec![
        model_input(Buf::X, 1.0),
        Op::Model(t),
        lin(Buf::Slot(0), vec![(Buf::ModelOut, 1.0), (Buf::X, -0.5)]),
        Op::Dot {
            dst: 0,
            a: Buf::X,
            b: Buf::Slot(0),
            over: Over::Channel,
        },
        Op::Dot {
            dst: 1,
            a: Buf::Slot(0),
            b: Buf::Slot(0),
            over: Over::Channel,
        },
        Op::Dot {
            dst: 2,
            a: Buf::X,
            b: Buf::X,
            over: Over::Sample,
        },
        // r3 = clamp(r0/r1, −2, 2); r4 = sigmoid(0.25|r3|)·0.3/sqrt(r2/48)
        Op::Scalar {
            dst: 3,
            code: vec![Reg(0), Reg(1), Div, Const(-2.0), Max, Const(2.0), Min],
        },
        Op::Scalar {
            dst: 4,
            code: vec![
                Reg(3),
                Abs,
                Const(0.25),
                Mul,
                Sigmoid,
                Const(0.3),
                Mul,
                Reg(2),
                Const(48.0),
                Div,
                Sqrt,
                Div,
            ],
        },
        Op::Combine {
            dst: Buf::X,
            terms: vec![
                (Buf::X, 0.9, Some(4)),
                (Buf::Slot(0), -0.4, Some(3)),
                (Buf::ModelOut, 0.2, None),
            ],
        },
    ];
    let p = Program::new(1.0, 1, vec![step.clone(), step.clone(), step]);
    assert_eq!(p.scalars(), 5);
    let shape = [2, 3, 4, 4];
    let out = TestRng(5).values(96, -1.0, 1.0, DType::F32);
    let run = |b| run_fixed(b, &shape, &out, None, &p, 9, None, None);
    let (gpu, host) = (run(Backend::Gpu), run(Backend::Host));
    let scale = host.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = gpu
        .iter()
        .zip(&host)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("register coefficients, 3 steps: max|gpu − host| {d:.2e} (max|x| {scale:.2})");
    assert!(d <= 2e-6 * scale.max(1.0), "{d}");
}
