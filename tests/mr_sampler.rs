//! The MRS–DPM-Solver identity (MR issue): MR Sampler on (x, μ) — written from the paper's
//! update rules with μ — equals the solver library's DPM-Solver(++) on y = x − μ with α → m_t,
//! σ → σ̄_t, for orders 1–3 and data / noise prediction, on a closed-form model of y. Every
//! test that runs a program runs it on the GPU executor and, as `<name>_interpreter`, through
//! the f64 host interpreter (`solvers::interpreter`, no adapter needed).

mod common;

use common::fixed::{run_error, run_fixed, run_program};
use common::Backend;
use diffuse::models::analytic::{AnalyticDenoiser, GaussianMixture, HostMixture};
use diffuse::models::{HostDenoiser, Prediction};
use diffuse::schedule::config::{DpmAlgorithm, SolverType};
use diffuse::schedule::mrs::{Interpolation, MrsOptions};
use diffuse::schedule::options::DpmSolverConfig;
use diffuse::schedule::restoration::MeanReverting;
use diffuse::selfcheck::TestRng;
use diffuse::solvers::mr_sampler::{ode_program, program_on_grid, MrPrediction};
use diffuse::solvers::program::{Buf, ModelTime};
use diffuse::solvers::{dpm_solver, program::Program};
use diffuse::{DType, Tensor};

/// Runs `program` on the analytic ε-model `mix` from x_T = init·z with condition `cond`.
fn run(
    backend: Backend,
    program: &Program,
    mix: &GaussianMixture,
    z: &[f32],
    cond: Option<&[f32]>,
) -> Vec<f32> {
    let batch = z.len() / mix.dim();
    let x = common::run_analytic(
        backend,
        mix,
        Prediction::Epsilon,
        batch,
        program,
        0,
        Some(z),
        cond,
    );
    x.iter().map(|&v| v as f32).collect()
}

/// max |a − b| over paired elements.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn mr_sampler_equals_dpm_solver_on_x_minus_mu() {
    mrs_identity(Backend::Gpu);
}

#[test]
fn mr_sampler_equals_dpm_solver_on_x_minus_mu_interpreter() {
    mrs_identity(Backend::Host);
}

fn mrs_identity(backend: Backend) {
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
                let x = run(backend, &mrs, &mix, &z, Some(&mu_v));
                let cfg = DpmSolverConfig {
                    solver_order: order,
                    solver_type: SolverType::Heun,
                    lower_order_final: false,
                    algorithm: match solve {
                        MrPrediction::Data => DpmAlgorithm::DpmSolverPlusPlus,
                        MrPrediction::Noise => DpmAlgorithm::DpmSolver,
                    },
                    ..Default::default()
                };
                let mut dpm =
                    dpm_solver::on_points(&cfg, Prediction::Epsilon, &pts, &[(Buf::X, 1.0)])
                        .unwrap();
                dpm.init_sigma = sched.max_sigma;
                let y = run(backend, &dpm, &mix, &z, None);
                let worst = x
                    .iter()
                    .zip(&y)
                    .zip(&mu_v)
                    .map(|((a, b), m)| (a - (b + m)).abs())
                    .fold(0f32, f32::max);
                println!(
                    "{backend:?} steps {steps} order {order} {solve:?}: max|x_MRS − (y_DPM + μ)| = {worst:.2e}"
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
    let e = run_error(backend, &[4, 1, 4, 4], &mrs, None);
    assert!(e.contains("condition"), "{e}");
}

/// RMS error, in y/m units at the end time, of running `p` on the analytic y-space model `mix`
/// from the draw `z` with condition μ (values `mu_v`), against the exact solution `y_end`.
#[allow(clippy::too_many_arguments)]
fn rms_vs_exact(
    backend: Backend,
    p: &Program,
    mix: &GaussianMixture,
    mu_v: &[f32],
    z: &[f32],
    y_end: &[f64],
    m_end: f64,
) -> f64 {
    let x = run(backend, p, mix, z, Some(mu_v));
    let se: f64 = x
        .iter()
        .zip(mu_v)
        .zip(y_end)
        .map(|((xv, m), ye)| ((*xv as f64 - *m as f64) / m_end - ye).powi(2))
        .sum();
    (se / x.len() as f64).sqrt()
}

#[test]
fn mr_sampler_ode_converges_at_orders_one_two_three() {
    mrs_ode_orders(Backend::Gpu);
}

#[test]
fn mr_sampler_ode_converges_at_orders_one_two_three_interpreter() {
    mrs_ode_orders(Backend::Host);
}

fn mrs_ode_orders(backend: Backend) {
    // Error against the exact PF-ODE solution; fitted global order within ±0.3 of theory.
    let sched = MeanReverting::cosine(100, 0.005, 50.0, false);
    let mix = common::smooth_mixture();
    let batch = 4;
    let mu_v = TestRng(8).values(batch * 16, -0.5, 0.5, DType::F32);
    let z = TestRng(9).values(batch * 16, -1.5, 1.5, DType::F32);
    let (m_t, s_t) = (sched.m(100.0), sched.sigma_bar(100.0));
    let y_t: Vec<f64> = z
        .iter()
        .map(|&v| sched.max_sigma * v as f64 / m_t)
        .collect();
    let yin = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
    // Orders 1–2: the full linear-λ grid λ_T = −3.67 → λ_0 = 6.11. Order 3: a uniform-λ grid
    // λ_T → 1 (σ̄/m = 0.37). Over the full range order 3 fits only 2.1–2.35 (N = 16…160): the
    // deficit comes from the low-noise end λ ∈ [1, 6.1] (ending at λ = 3 fits 2.35, at λ = 1
    // 2.88), and not from the order-1/2 warm-up steps (a start at λ_T = −9.9 fits the same).
    // The identity test shows MRS equals the library's DPM-Solver++ 3M on the same points, so
    // this is the 3M multistep on this problem, not the MR transcription.
    for (order, solve, lambda_end, ns) in [
        (1, MrPrediction::Data, None, [10usize, 14, 20, 28, 40]),
        (2, MrPrediction::Data, None, [10, 14, 20, 28, 40]),
        (3, MrPrediction::Data, Some(1.0), [16, 23, 32, 45, 64]),
        (2, MrPrediction::Noise, None, [10, 14, 20, 28, 40]),
    ] {
        let t_end = lambda_end.map_or(0.0, |l| sched.t_from_lambda(l));
        let (m_0, s_0) = (sched.m(t_end), sched.sigma_bar(t_end));
        let y_end = common::exact_pf_ode(&mix, &y_t, s_t / m_t, s_0 / m_0);
        let errs: Vec<f64> = ns
            .iter()
            .map(|&n| {
                let ts: Vec<f64> = match lambda_end {
                    None => sched.linear_lambda_times(n, -5.0),
                    Some(le) => diffuse::schedule::linspace(sched.lambda(100.0), le, n + 1)
                        .into_iter()
                        .enumerate()
                        .map(|(i, l)| {
                            if i == 0 {
                                100.0
                            } else {
                                sched.t_from_lambda(l)
                            }
                        })
                        .collect(),
                };
                let p = ode_program(&sched, &ts, order, solve, Prediction::Epsilon, &yin).unwrap();
                rms_vs_exact(backend, &p, &mix, &mu_v, &z, &y_end, m_0)
            })
            .collect();
        let p = common::fitted_order(&ns, &errs);
        println!(
            "{backend:?} MRS-ODE order {order} {solve:?}: fitted {p:.2}, RMS errors {:?}",
            errs.iter().map(|e| format!("{e:.2e}")).collect::<Vec<_>>()
        );
        assert!(
            (p - order as f64).abs() <= 0.3,
            "order {order} {solve:?}: fitted {p:.2}"
        );
    }
}

#[test]
fn mr_sde_and_posterior_statistics() {
    mr_statistics(Backend::Gpu);
}

#[test]
fn mr_sde_and_posterior_statistics_interpreter() {
    mr_statistics(Backend::Host);
}

fn mr_statistics(backend: Backend) {
    // x0 − μ ~ N(d, s² I) in 4 dims, 10⁴ samples. SDE-1 and the posterior step coincide, and
    // at 100 steps both under-disperse like DDPM (the exact E[x0|x_t] replaces x0).
    let sched = MeanReverting::cosine(100, 0.005, 50.0, false);
    let d = [0.2, -0.1, 0.05, 0.3];
    let mix = GaussianMixture {
        shape: [1, 2, 2],
        weights: vec![1.0],
        means: vec![d.to_vec()],
        variances: vec![0.04],
    };
    let n = 10_000;
    let mu_v: Vec<f32> = (0..n * 4)
        .map(|i| [0.5f32, -0.5, 0.0, 0.25][i % 4])
        .collect();
    let yin = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
    let sde = |k: usize, order: usize| {
        diffuse::solvers::mr_sampler::sde_program(
            &sched,
            &sched.linear_lambda_times(k, -5.0),
            order,
            MrPrediction::Data,
            Prediction::Epsilon,
            &yin,
        )
        .unwrap()
    };
    let runs: Vec<(&str, Program)> = vec![
        ("MRS-SDE order 1, 50 linear-λ steps", sde(50, 1)),
        ("MRS-SDE order 2, 50 linear-λ steps", sde(50, 2)),
        ("MRS-SDE order 2, 200 linear-λ steps", sde(200, 2)),
        (
            "posterior, 100 steps",
            diffuse::solvers::mr_sampler::posterior_program(&sched, 100, Prediction::Epsilon, &yin)
                .unwrap(),
        ),
    ];
    for (name, p) in runs {
        let x = common::run_analytic(
            backend,
            &mix,
            Prediction::Epsilon,
            n,
            &p,
            17,
            None,
            Some(&mu_v),
        );
        let y: Vec<f64> = x.iter().zip(&mu_v).map(|(a, m)| a - *m as f64).collect();
        let mean: Vec<f64> = (0..4)
            .map(|j| (0..n).map(|i| y[i * 4 + j]).sum::<f64>() / n as f64)
            .collect();
        let var = (0..4)
            .map(|j| {
                (0..n)
                    .map(|i| (y[i * 4 + j] - mean[j]).powi(2))
                    .sum::<f64>()
                    / (n - 1) as f64
            })
            .sum::<f64>()
            / 4.0;
        let worst_mean = (0..4).map(|j| (mean[j] - d[j]).abs()).fold(0.0, f64::max);
        let tm = 5.0 * 0.2 / (n as f64).sqrt();
        println!(
            "{backend:?} {name}: max|mean − d| {worst_mean:.2e} (5 SE {tm:.1e}), pooled var {var:.5} vs 0.04"
        );
        // The means are unbiased for every variant: asserted. The variance is asserted for the
        // second-order SDE solver at 200 steps (within 5 SE); first-order steps (SDE-1 ≡ the
        // posterior step) under-disperse at these step counts, as DDPM does.
        assert!(worst_mean <= tm, "{name}: mean off by {worst_mean}");
        if name.starts_with("posterior") {
            // The posterior step with the exact E[y0|y_t] is linear-Gaussian for Gaussian data,
            // so its output variance has a closed form (per dimension, f64): it under-disperses
            // by design (E[x0|x_t] replaces x0). Assert the GPU run matches that recursion
            // within 5 SE, and that the recursion is within 10 % of the data variance.
            let (v, ls) = (0.04, sched.max_sigma);
            let mut var_y = ls * ls;
            for t in (1..=100usize).rev() {
                let (m, sb) = (sched.m(t as f64), sched.sigma_bar(t as f64));
                let k = m * v / (m * m * v + sb * sb);
                let a = (-(sched.theta_bar[t] - sched.theta_bar[t - 1]) * sched.dt).exp();
                let b = (-sched.theta_bar[t] * sched.dt).exp();
                let c = (-sched.theta_bar[t - 1] * sched.dt).exp();
                let den = 1.0 - b * b;
                let (ca, cb) = (a * (1.0 - c * c) / den, c * (1.0 - a * a) / den);
                let std2 = if t == 1 {
                    0.0
                } else {
                    ls * ls * (1.0 - a * a) * (1.0 - c * c) / den
                };
                var_y = (ca + cb * k).powi(2) * var_y + std2;
            }
            let tv = 5.0 * var_y * (2.0 / (4.0 * n as f64)).sqrt();
            println!("{name}: closed-form variance of the sampler {var_y:.5}");
            assert!(
                (var - var_y).abs() <= tv,
                "{name}: variance {var} vs the sampler's closed form {var_y} ± {tv}"
            );
            assert!((var_y - v).abs() <= 0.1 * v, "closed form {var_y} vs {v}");
        }
        if name.contains("order 2, 200") {
            let tv = 5.0 * 0.04 * (2.0 / (4.0 * n as f64)).sqrt();
            assert!(
                (var - 0.04).abs() <= tv,
                "{name}: variance {var} vs 0.04 ± {tv}"
            );
        }
        assert!(var.is_finite() && var > 0.0);
    }
}

#[test]
fn rddm_last_step_returns_i0_hat() {
    rddm_last_step(Backend::Gpu);
}

#[test]
fn rddm_last_step_returns_i0_hat_interpreter() {
    rddm_last_step(Backend::Host);
}

fn rddm_last_step(backend: Backend) {
    use diffuse::schedule::restoration::rddm_schedule;
    use diffuse::solvers::residual_shift::rddm_program;
    let (abar, bbar) = rddm_schedule(1000, 0.01);
    assert!(
        (abar[999] - 1.0).abs() < 1e-12 && (bbar[999] - 0.1).abs() < 1e-12,
        "ᾱ_T = 1, β̄_T² = sum_scale"
    );
    let res = TestRng(1).values(16, -0.5, 0.5, DType::F32);
    let eps = TestRng(2).values(16, -1.0, 1.0, DType::F32);
    let cond_v = TestRng(3).values(16, -1.0, 1.0, DType::F32);
    let z = TestRng(4).values(16, -1.0, 1.0, DType::F32);
    let shape = [1, 1, 4, 4];
    let steps = 5;
    let p = rddm_program(&abar, &bbar, steps).unwrap();
    let got = run_fixed(
        backend,
        &shape,
        &res,
        Some(&eps),
        &p,
        0,
        Some(&z),
        Some(&cond_v),
    );
    // Host recurrence in f64 over the same times; the final state must be Î_0 of the last step.
    let idx: Vec<i64> = diffuse::schedule::linspace(-1.0, 999.0, steps + 1)
        .iter()
        .map(|v| v.trunc() as i64)
        .rev()
        .collect();
    let at = |k: i64| {
        if k < 0 {
            (0.0, 0.0)
        } else {
            (abar[k as usize], bbar[k as usize])
        }
    };
    for i in 0..16 {
        let mut x = cond_v[i] as f64 + bbar[999] * z[i] as f64;
        let mut last_i0 = 0.0;
        for w in idx.windows(2) {
            let ((a_t, b_t), (a_s, b_s)) = (at(w[0]), at(w[1]));
            last_i0 = x - a_t * res[i] as f64 - b_t * eps[i] as f64;
            x = x - (a_t - a_s) * res[i] as f64 - (b_t - b_s) * eps[i] as f64;
        }
        assert!(
            (x - last_i0).abs() < 1e-12,
            "the last step's formula is Î_0"
        );
        assert!(
            (got[i] as f64 - last_i0).abs() < 1e-5,
            "element {i}: {} vs Î_0 {last_i0}",
            got[i]
        );
    }
    // A single-head model cannot run RDDM.
    let e = run_error(backend, &shape, &p, Some(&cond_v));
    assert!(e.contains("second model head"), "{e}");
}

#[test]
fn resshift_posterior_at_t1_returns_x0_and_resfusion_runs() {
    resshift_and_resfusion(Backend::Gpu);
}

#[test]
fn resshift_posterior_at_t1_returns_x0_and_resfusion_runs_interpreter() {
    resshift_and_resfusion(Backend::Host);
}

fn resshift_and_resfusion(backend: Backend) {
    use diffuse::schedule::restoration::{resfusion_sqrt_abar, resshift_sqrt_eta};
    use diffuse::solvers::residual_shift::{
        resfusion_program, resshift_program, ResShiftPrediction,
    };
    let x0 = TestRng(3).values(2 * 16, -1.0, 1.0, DType::F32);
    let y0 = TestRng(4).values(2 * 16, -1.0, 1.0, DType::F32);
    let shape = [2, 1, 4, 4];
    let run =
        |out: &[f32], p: &Program| run_fixed(backend, &shape, out, None, p, 9, None, Some(&y0));
    // ResShift (T = 4, κ = 2, min_noise 0.2): whatever x_T, an x0-predicting model that returns x0
    // lands exactly on x0 (the t = 1 posterior has mean x̂0 and no variance).
    let p = resshift_program(
        &resshift_sqrt_eta(4, 2.0, 0.2, 0.3),
        2.0,
        ResShiftPrediction::XStart,
    )
    .unwrap();
    let got = run(&x0, &p);
    assert_eq!(got, x0, "ResShift's last step must return x̂0 exactly");
    // Residual parameterisation: r̂ = y0 − x0 gives the same.
    let r: Vec<f32> = y0.iter().zip(&x0).map(|(y, x)| y - x).collect();
    let p = resshift_program(
        &resshift_sqrt_eta(4, 2.0, 0.2, 0.3),
        2.0,
        ResShiftPrediction::Residual,
    )
    .unwrap();
    let got = run(&r, &p);
    let worst = max_diff(&got, &x0);
    assert!(worst < 1e-6, "{worst}");
    // Resfusion (T = 12 → 5 steps from √ᾱ = ½) produces finite samples.
    let sa = resfusion_sqrt_abar(12);
    let p = resfusion_program(
        &diffuse::schedule::linspace(1000.0 / 12.0 * 1e-4, 1000.0 / 12.0 * 0.02, 12),
        &sa,
    )
    .unwrap();
    assert_eq!(p.nfe, 5);
    let got = run(&x0, &p);
    assert!(got.iter().all(|v| v.is_finite()));
}

#[test]
fn mr_schedules_and_denoise_last() {
    mr_schedules_denoise_last(Backend::Gpu);
}

#[test]
fn mr_schedules_and_denoise_last_interpreter() {
    mr_schedules_denoise_last(Backend::Host);
}

fn mr_schedules_denoise_last(backend: Backend) {
    let sched = MeanReverting::cosine(100, 0.005, 50.0, false);
    for ts in [sched.karras_times(12), sched.linear_lambda_times(12, -5.0)] {
        assert_eq!(ts.len(), 13);
        assert_eq!((ts[0], ts[12]), (100.0, 0.0));
        assert!(ts.windows(2).all(|w| w[0] > w[1]), "{ts:?}");
    }
    // denoise_last returns μ + the last x̂0 − μ: with a fixed x0-predicting model, exactly x0.
    let x0 = TestRng(11).values(16, -1.0, 1.0, DType::F32);
    let mu_v = TestRng(12).values(16, -1.0, 1.0, DType::F32);
    // Both forms: the noise form converts its last ε̂ back to x̂0. 6 steps, 6 NFE.
    for form in [MrPrediction::Data, MrPrediction::Noise] {
        let o = MrsOptions {
            order: 2,
            form,
            denoise_last: true,
            ..Default::default()
        };
        let grid = sched.mrs_grid(&sched.karras_times(6), Interpolation::Consistent);
        let p = program_on_grid(
            &grid,
            sched.max_sigma,
            &o,
            Prediction::Sample,
            &[(Buf::X, 1.0)],
            false,
        )
        .unwrap();
        assert_eq!((p.nfe, p.steps.len()), (6, 6));
        let got = run_fixed(backend, &[1, 1, 4, 4], &x0, None, &p, 0, None, Some(&mu_v));
        let worst = max_diff(&got, &x0);
        assert!(worst < 1e-5, "{form}: {worst}");
    }
}

/// An MR velocity network built from the ε-predicting analytic model: with y = x − μ,
/// v = λ_s·m·ε − (σ̄/λ_s)·y0 and y0 = (y − σ̄ε)/m, so v = (λ_s·m + σ̄²/(λ_s·m))·ε − σ̄/(λ_s·m)·y.
struct Velocity {
    inner: AnalyticDenoiser,
    out: Tensor,
    lambda_s: f64,
}

impl diffuse::models::Denoiser for Velocity {
    fn input(&self) -> &Tensor {
        self.inner.input()
    }
    fn output(&self) -> &Tensor {
        &self.out
    }
    fn prediction(&self) -> Prediction {
        Prediction::VPrediction
    }
    fn run(&mut self, gpu: &diffuse::Gpu, time: ModelTime) -> diffuse::Result<()> {
        self.inner.run(gpu, time)?;
        let (m, s, l) = (time.alpha, time.sigma, self.lambda_s);
        let (a, b) = (l * m + s * s / (l * m), -s / (l * m));
        use diffuse::ops::elementwise::{axpby, unary, Unary};
        gpu.run(|rec| {
            unary(
                rec,
                Unary::Affine {
                    alpha: b as f32,
                    beta: 0.0,
                },
                self.inner.input(),
                &self.out,
            )?;
            axpby(rec, a as f32, self.inner.output(), 1.0, &self.out)
        })
    }
}

#[test]
fn mr_velocity_prediction_matches_noise_prediction() {
    mr_velocity(Backend::Gpu);
}

#[test]
fn mr_velocity_prediction_matches_noise_prediction_interpreter() {
    mr_velocity(Backend::Host);
}

fn mr_velocity(backend: Backend) {
    // The same analytic y-space model seen as an ε- and as a v-network: every MR program gives
    // the same samples (f32 rounding apart).
    use diffuse::solvers::mr_sampler::{posterior_program, sde_program};
    let sched = MeanReverting::cosine(100, 0.005, 50.0, false);
    let mix = GaussianMixture {
        shape: [1, 4, 4],
        weights: vec![0.5, 0.5],
        means: vec![vec![0.2; 16], vec![-0.1; 16]],
        variances: vec![0.01, 0.02],
    };
    let mu_v = TestRng(15).values(4 * 16, -0.8, 0.8, DType::F32);
    let z = TestRng(16).values(4 * 16, -2.0, 2.0, DType::F32);
    let yin = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
    let ts = sched.linear_lambda_times(10, -5.0);
    let lambda_s = sched.max_sigma;
    let run_with = |p: &Program, velocity: bool| -> Vec<f32> {
        if backend == Backend::Host {
            // The same velocity network on the host: v = a·ε̂ + b·y at (m, σ̄).
            let mut eps = HostMixture {
                mixture: mix.clone(),
                prediction: Prediction::Epsilon,
            };
            let mut v = |y: &[f64], t: ModelTime, out: &mut [f64]| {
                eps.run(y, t, out).unwrap();
                let (m, s) = (t.alpha, t.sigma);
                let (a, b) = (lambda_s * m + s * s / (lambda_s * m), -s / (lambda_s * m));
                out.iter_mut()
                    .zip(y)
                    .for_each(|(o, yi)| *o = a * *o + b * yi);
            };
            let model: &mut dyn HostDenoiser = if velocity {
                &mut v
            } else {
                &mut HostMixture {
                    mixture: mix.clone(),
                    prediction: Prediction::Epsilon,
                }
            };
            let x = common::run_host(model, &[4, 1, 4, 4], p, 3, Some(&z), Some(&mu_v));
            return x.iter().map(|&v| v as f32).collect();
        }
        let gpu = common::gpu();
        let mu = Tensor::from_f32(gpu, "mu", &[4, 1, 4, 4], &mu_v, DType::F32).unwrap();
        let inner =
            AnalyticDenoiser::new(gpu, mix.clone(), Prediction::Epsilon, 4, DType::F32).unwrap();
        let mut model: Box<dyn diffuse::models::Denoiser> = if velocity {
            let out = Tensor::zeros(gpu, "v", &[4, 1, 4, 4], DType::F32).unwrap();
            Box::new(Velocity {
                inner,
                out,
                lambda_s,
            })
        } else {
            Box::new(inner)
        };
        run_program(model.as_mut(), p, 3, Some(&z), Some(&mu))
    };
    for (name, eps_p, v_p) in [
        (
            "ODE-3 data",
            ode_program(
                &sched,
                &ts,
                3,
                MrPrediction::Data,
                Prediction::Epsilon,
                &yin,
            ),
            ode_program(
                &sched,
                &ts,
                3,
                MrPrediction::Data,
                Prediction::VPrediction,
                &yin,
            ),
        ),
        (
            "ODE-2 noise",
            ode_program(
                &sched,
                &ts,
                2,
                MrPrediction::Noise,
                Prediction::Epsilon,
                &yin,
            ),
            ode_program(
                &sched,
                &ts,
                2,
                MrPrediction::Noise,
                Prediction::VPrediction,
                &yin,
            ),
        ),
        (
            "SDE-2 data",
            sde_program(
                &sched,
                &ts,
                2,
                MrPrediction::Data,
                Prediction::Epsilon,
                &yin,
            ),
            sde_program(
                &sched,
                &ts,
                2,
                MrPrediction::Data,
                Prediction::VPrediction,
                &yin,
            ),
        ),
        (
            "posterior 20",
            posterior_program(&sched, 20, Prediction::Epsilon, &yin),
            posterior_program(&sched, 20, Prediction::VPrediction, &yin),
        ),
    ] {
        let (a, b) = (
            run_with(&eps_p.unwrap(), false),
            run_with(&v_p.unwrap(), true),
        );
        let worst = max_diff(&a, &b);
        println!("{backend:?} {name}: max|x_ε − x_v| = {worst:.2e}");
        assert!(worst < 1e-4, "{name}: {worst}");
        assert!(a.iter().all(|v| v.is_finite()));
    }
}

/// torch.quantile (linear interpolation at position q·(D − 1)) of |v|, then Imagen's rule.
fn threshold_reference(v: &[f64], q: f64, max: f64) -> Vec<f64> {
    let mut a: Vec<f64> = v.iter().map(|x| x.abs()).collect();
    a.sort_by(f64::total_cmp);
    let pos = q * (a.len() - 1) as f64;
    let (k, f) = (pos.floor() as usize, pos - pos.floor());
    let hi = a[(k + 1).min(a.len() - 1)];
    let s = (a[k] + f * (hi - a[k])).clamp(1.0, max);
    v.iter().map(|x| x.clamp(-s, s) / s).collect()
}

#[test]
fn dynamic_thresholding_matches_a_cpu_quantile() {
    dynamic_thresholding_vs_cpu(Backend::Gpu);
}

#[test]
fn dynamic_thresholding_matches_a_cpu_quantile_interpreter() {
    dynamic_thresholding_vs_cpu(Backend::Host);
}

fn dynamic_thresholding_vs_cpu(backend: Backend) {
    use diffuse::solvers::mr_sampler::dynamic_thresholding;
    use diffuse::solvers::program::{lin, Op};
    // Four samples of D = 3·5·7 = 105 (not a multiple of the workgroup): quantiles below 1
    // (pure clip at 1), between 1 and the max, above the max, and with ties.
    let (n, d) = (4, 105);
    let mut x0: Vec<f32> = Vec::new();
    for (i, scale) in [0.8f32, 1.3, 3.0, 1.2].iter().enumerate() {
        let r = TestRng(40 + i as u64).values(d, -1.0, 1.0, DType::F32);
        x0.extend(r.iter().map(|v| {
            if i == 3 {
                (v * 4.0).round() / 4.0 * scale // many equal values
            } else {
                v * scale
            }
        }));
    }
    let mu_v = TestRng(50).values(n * d, -0.5, 0.5, DType::F32);
    let shape = [n, 3, 5, 7];
    let t = ModelTime {
        t: 1.0,
        alpha: 1.0,
        sigma: 1.0,
    };
    for (ratio, max) in [(0.995, 1.5), (0.9, 2.0), (0.5, 1.1)] {
        // x̂0 − μ into slot 0 (as the MR data solver stores it), thresholded, then X = slot + μ.
        let prog = Program::new(
            1.0,
            1,
            vec![vec![
                Op::Model(t),
                lin(Buf::Slot(0), vec![(Buf::ModelOut, 1.0), (Buf::Cond, -1.0)]),
                lin(Buf::X, vec![(Buf::Slot(0), 1.0), (Buf::Cond, 1.0)]),
            ]],
        );
        let prog = dynamic_thresholding(prog, MrPrediction::Data, ratio, max).unwrap();
        assert!(
            matches!(prog.steps[0][2], Op::Threshold { .. }),
            "inserted after the store"
        );
        let zero = vec![0.0; n * d];
        let got = run_fixed(
            backend,
            &shape,
            &x0,
            None,
            &prog,
            0,
            Some(&zero),
            Some(&mu_v),
        );
        let mut worst = 0f64;
        for s in 0..n {
            let v: Vec<f64> = x0[s * d..(s + 1) * d].iter().map(|&x| x as f64).collect();
            let want = threshold_reference(&v, ratio, max);
            for j in 0..d {
                worst = worst.max((got[s * d + j] as f64 - want[j]).abs());
            }
        }
        println!("{backend:?} ratio {ratio}, max {max}: max error {worst:.2e}");
        assert!(worst < 2e-6, "ratio {ratio} max {max}: {worst}");
    }
    // A program naming a history slot it does not declare is refused, not a panic.
    let bad = Program::new(1.0, 0, vec![vec![lin(Buf::Slot(1), vec![(Buf::X, 1.0)])]]);
    let e = run_error(backend, &shape, &bad, Some(&mu_v));
    assert!(e.contains("slot 1"), "{e}");
    assert!(dynamic_thresholding(
        Program::new(1.0, 1, vec![]),
        MrPrediction::Noise,
        0.995,
        1.5
    )
    .is_err());
}

#[test]
fn mr_step_orders_follow_the_reference_driver() {
    use diffuse::solvers::mr_sampler::step_order;
    let orders =
        |order: usize, n: usize| (0..n).map(|i| step_order(order, i, n)).collect::<Vec<_>>();
    // ≥ 10 steps: warm-up, then the full order to the end.
    assert_eq!(orders(3, 10), [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]);
    assert_eq!(orders(2, 12), [1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
    // < 10 steps: steps order..n−1 (1-based) use min(order, n − i); the last uses the full order.
    assert_eq!(orders(3, 5), [1, 2, 2, 1, 3]);
    assert_eq!(orders(2, 5), [1, 2, 2, 1, 2]);
    assert_eq!(orders(3, 3), [1, 2, 3]);
    assert_eq!(orders(1, 4), [1, 1, 1, 1]);
    assert_eq!(orders(3, 9), [1, 2, 3, 3, 3, 3, 2, 1, 3]);
}

#[test]
fn ir_sde_probability_flow_ode_tracks_the_exact_solution() {
    ir_sde_pf_ode(Backend::Gpu);
}

#[test]
fn ir_sde_probability_flow_ode_tracks_the_exact_solution_interpreter() {
    ir_sde_pf_ode(Backend::Host);
}

fn ir_sde_pf_ode(backend: Backend) {
    // IR-SDE's PF-ODE by Euler (one step per training time, T = 100) against the exact PF-ODE
    // solution on an analytic y-space mixture: a first-order method at 100 steps, so its error
    // must be small and of the size of MRS-ODE order 1 on the same 100 integer times.
    use diffuse::solvers::mr_sampler::pf_ode_program;
    let sched = MeanReverting::cosine(100, 0.005, 50.0, false);
    let mix = GaussianMixture {
        shape: [1, 4, 4],
        weights: vec![0.6, 0.4],
        means: vec![vec![0.3; 16], vec![-0.2; 16]],
        variances: vec![0.05, 0.03],
    };
    let batch = 4;
    let mu_v = TestRng(30).values(batch * 16, -0.5, 0.5, DType::F32);
    let z = TestRng(31).values(batch * 16, -1.5, 1.5, DType::F32);
    let (m_t, s_t) = (sched.m(100.0), sched.sigma_bar(100.0));
    let (m_0, s_0) = (sched.m(0.0), sched.sigma_bar(0.0));
    let y_t: Vec<f64> = z
        .iter()
        .map(|&v| sched.max_sigma * v as f64 / m_t)
        .collect();
    let y_end = common::exact_pf_ode(&mix, &y_t, s_t / m_t, s_0 / m_0);
    let yin = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
    let rms = |p: &Program| rms_vs_exact(backend, p, &mix, &mu_v, &z, &y_end, m_0);
    let pf = rms(&pf_ode_program(&sched, Prediction::Epsilon, &yin).unwrap());
    let ts: Vec<f64> = (0..=100).rev().map(|t| t as f64).collect();
    let mrs1 = rms(&ode_program(
        &sched,
        &ts,
        1,
        MrPrediction::Data,
        Prediction::Epsilon,
        &yin,
    )
    .unwrap());
    println!("{backend:?} IR-SDE PF-ODE (Euler, 100 steps): RMS error {pf:.3e}; MRS-ODE-1 on the same times {mrs1:.3e}");
    assert!(pf < 0.05, "PF-ODE error {pf}");
    assert!(pf < 5.0 * mrs1.max(1e-3), "PF-ODE {pf} vs MRS-1 {mrs1}");
}
