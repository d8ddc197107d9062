//! MR Sampler (Li et al., "MR Sampler: Fast Sampling of Mean-Reverting Diffusion", arXiv
//! 2502.07856; grrrute/mr-sampler `utils/sampler.py`), ODE orders 1–3 and SDE orders 1–2 with
//! noise or data prediction, written from the paper's update rules in x with the condition μ,
//! every option of the official `MRSampler` (time schedules, λ_min, final denoising,
//! thresholding; `schedule::mrs`) and its α, σ, λ convention at fractional t. For the
//! mean-reverting SDE x_t = μ + m_t(x0 − μ) + σ̄_t ε, with λ = ln(m/σ̄), h = λ_i − λ_{i−1}:
//! - data: x_i = μ + (σ̄_i/σ̄_s)(x − μ) + m_i(1 − e^{−h})(x̂0 − μ)
//!   + m_i((e^{−h} − 1)/h + 1)·D1 − m_i((e^{−h} − 1 + h)/h² − ½)·D2,
//! - noise: x_i = μ + (m_i/m_s)(x − μ) − σ̄_i(e^h − 1)ε̂ − σ̄_i((e^h − 1)/h − 1)·D1
//!   − σ̄_i((e^h − 1 − h)/h² − ½)·D2,
//!
//! with D1, D2 the divided differences of the stored outputs (x̂0 − μ, or ε̂). The SDE solver
//! (orders 1–2) and the IR-SDE baselines (Euler–Maruyama, probability-flow ODE, the optimal
//! posterior step) are below.
//! The network always receives the float training-index time t.

use super::program::{combine, lin, Buf, ModelTime, Op, Program};
use crate::error::{Error, Result};
use crate::models::Prediction;
use crate::schedule::mrs::Interpolation;
pub use crate::schedule::mrs::{MrPrediction, MrSolverType, MrsGrid, MrsOptions, TimeSchedule};
use crate::schedule::restoration::MeanReverting;

/// The ops every MR step starts with: on the first step, x_T = λ_s·z + μ (the executor draws
/// λ_s·z); the model input; the model call at `time` (the float training-index time t).
fn evaluate(i: usize, time: ModelTime, model_in: &[(Buf, f64)]) -> Vec<Op> {
    let mut ops = Vec::new();
    if i == 0 {
        ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Cond, 1.0)]));
    }
    ops.push(lin(Buf::ModelIn, model_in.to_vec()));
    ops.push(Op::Model(time));
    ops
}

/// The model time of grid point `i`.
fn time_at(grid: &MrsGrid, i: usize) -> ModelTime {
    ModelTime {
        t: grid.t[i],
        alpha: grid.alpha[i],
        sigma: grid.sigma[i],
    }
}

/// An error for an order outside `1..=max` of the `kind` ("ODE" or "SDE") solver.
fn check_order(kind: &str, order: usize, max: usize) -> Result<()> {
    if (1..=max).contains(&order) {
        return Ok(());
    }
    Err(Error::Argument {
        op: "MR Sampler",
        arg: "order",
        reason: format!("{kind} orders 1–{max} are supported, not {order}"),
    })
}

/// The full MR Sampler of `o` for `steps` requested steps: the official time schedule, α, σ, λ
/// under `o.interpolation`, the ODE or SDE solver, dynamic thresholding and the final
/// denoising. With `step_noise`, the SDE's draw at step k is read from [`Buf::StepNoise`]`(k)`
/// (the caller supplies one standard-normal draw per step) instead of drawn by the executor.
pub fn mrs_program(
    sched: &MeanReverting,
    o: &MrsOptions,
    steps: usize,
    network: Prediction,
    model_in: &[(Buf, f64)],
    step_noise: bool,
) -> Result<Program> {
    let times = sched.mrs_times(o, steps)?;
    let grid = sched.mrs_grid(&times, o.interpolation);
    program_on_grid(&grid, sched.max_sigma, o, network, model_in, step_noise)
}

/// The MR Sampler over an explicit grid (its times, α, σ, λ), stationary std `lambda_s`;
/// `o.time_schedule`, `lambda_min`, `interpolation`, `rho` and `timestep_offset` are the grid's
/// business and unused here.
pub fn program_on_grid(
    grid: &MrsGrid,
    lambda_s: f64,
    o: &MrsOptions,
    network: Prediction,
    model_in: &[(Buf, f64)],
    step_noise: bool,
) -> Result<Program> {
    let sde = o.solver_type == MrSolverType::Sde;
    if sde {
        check_order("SDE", o.order, 2)?;
    } else {
        check_order("ODE", o.order, 3)?;
    }
    if let Some((ratio, max)) = o.thresholding {
        check_thresholding(o.form, ratio, max)?;
    }
    let n = grid.t.len() - 1;
    if n == 0 {
        return Err(Error::Argument {
            op: "MR Sampler",
            arg: "steps",
            reason: "the time grid has a single point: no step to take".into(),
        });
    }
    let solve = o.form;
    let hist = |k: usize| Buf::Slot(k % 3);
    let y = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
    let mu = [(Buf::Cond, 1.0)];
    let (al, sg, lm) = (&grid.alpha, &grid.sigma, &grid.lambda);
    let mut prog = Vec::new();
    for i in 0..n {
        let mut ops = evaluate(i, time_at(grid, i), model_in);
        ops.push(lin(
            hist(i),
            stored(solve, network, al[i], sg[i], lambda_s)?,
        ));
        if o.denoise_last && i == n - 1 {
            // The official `denoise_last`: x̂0 of this evaluation is the sample (the noise form
            // converts its ε̂ to x̂0 = μ + (y − σ ε̂)/α; the official code returns ε̂ there).
            let x0 = match solve {
                MrPrediction::Data => combine(&[(1.0, &[(hist(i), 1.0)]), (1.0, &mu)]),
                MrPrediction::Noise => combine(&[
                    (1.0 / al[i], &y),
                    (1.0, &mu),
                    (-sg[i] / al[i], &[(hist(i), 1.0)]),
                ]),
            };
            ops.push(lin(Buf::X, x0));
            prog.push(ops);
            break;
        }
        let (s, t) = (i, i + 1);
        let h = lm[t] - lm[s];
        let m0 = [(hist(i), 1.0)];
        let k = step_order(o.order, i, n);
        type Terms = Vec<(Buf, f64)>;
        // Divided differences of the stored outputs, as the official steps form them.
        let (d1, d2): (Terms, Terms) = match k {
            1 => (vec![], vec![]),
            _ => {
                let r0 = (lm[s] - lm[s - 1]) / h;
                let d1_0 = vec![(hist(i), 1.0 / r0), (hist(i - 1), -1.0 / r0)];
                if k == 2 {
                    (d1_0, vec![])
                } else {
                    let r1 = (lm[s - 1] - lm[s - 2]) / h;
                    let d1_1 = vec![(hist(i - 1), 1.0 / r1), (hist(i - 2), -1.0 / r1)];
                    (
                        combine(&[
                            (1.0, &d1_0),
                            (r0 / (r0 + r1), &d1_0),
                            (-r0 / (r0 + r1), &d1_1),
                        ]),
                        combine(&[(1.0 / (r0 + r1), &d1_0), (-1.0 / (r0 + r1), &d1_1)]),
                    )
                }
            }
        };
        let (a_s, a_t, s_s, s_t) = (al[s], al[t], sg[s], sg[t]);
        // The official updates with the stored x̂0 − μ (ours) for its x̂0; the μ terms are the
        // official ones, which reduce to μ + c·(x − μ) when λ = ln(α/σ) and keep the official
        // numbers when it is not (`Interpolation::Official`).
        let (terms, noise) = match (sde, solve) {
            (false, MrPrediction::Data) => {
                let phi1 = (-h).exp_m1();
                let phi2 = phi1 / h + 1.0;
                let phi3 = phi2 / h - 0.5;
                let c = s_t / s_s;
                let extra = c * a_s - a_t * (-h).exp();
                (
                    combine(&[
                        (c, &y),
                        (1.0 + extra, &mu),
                        (-a_t * phi1, &m0),
                        (a_t * phi2, &d1),
                        (-a_t * phi3, &d2),
                    ]),
                    0.0,
                )
            }
            (false, MrPrediction::Noise) => {
                let phi1 = h.exp_m1();
                let phi2 = phi1 / h - 1.0;
                let phi3 = phi2 / h - 0.5;
                (
                    combine(&[
                        (a_t / a_s, &y),
                        (1.0, &mu),
                        (-s_t * phi1, &m0),
                        (-s_t * phi2, &d1),
                        (-s_t * phi3, &d2),
                    ]),
                    0.0,
                )
            }
            (true, MrPrediction::Data) => {
                let phi1 = -(-2.0 * h).exp_m1(); // 1 − e^{−2h}
                let phi2 = 1.0 - phi1 / (2.0 * h);
                let c = s_t / s_s * (-h).exp();
                let extra = c - a_t / a_s * (-2.0 * h).exp();
                (
                    combine(&[
                        (c, &y),
                        (1.0 + extra, &mu),
                        (a_t * phi1, &m0),
                        (a_t * phi2, &d1),
                    ]),
                    s_t * phi1.max(0.0).sqrt(),
                )
            }
            (true, MrPrediction::Noise) => {
                let phi1 = h.exp_m1();
                let phi2 = phi1 / h - 1.0;
                (
                    combine(&[
                        (a_t / a_s, &y),
                        (1.0, &mu),
                        (-2.0 * s_t * phi1, &m0),
                        (-2.0 * s_t * phi2, &d1),
                    ]),
                    s_t * (2.0 * h).exp_m1().max(0.0).sqrt(),
                )
            }
        };
        ops.push(if step_noise && noise != 0.0 {
            lin(
                Buf::X,
                combine(&[(1.0, &terms), (noise, &[(Buf::StepNoise(i), 1.0)])]),
            )
        } else {
            Op::Lin {
                dst: Buf::X,
                terms,
                noise,
                clamp: None,
            }
        });
        prog.push(ops);
    }
    let program = Program::new(lambda_s, 3, prog);
    match o.thresholding {
        Some((ratio, max)) => dynamic_thresholding(program, solve, ratio, max),
        None => Ok(program),
    }
}

/// The MRS ODE program over descending times `ts` (training-index units) with α, σ, λ from
/// the continuous process (`Interpolation::Consistent`); the model input is `model_in` (e.g.
/// X, or X − Cond for a y-space model); x_T is μ + λ_s·z (the program's first instruction
/// adds μ). For the data form, with h = λ_i − λ_{i−1}:
/// x_i = μ + (σ̄_i/σ̄_s)(x − μ) + m_i(1 − e^{−h})(x̂0 − μ) + m_i((e^{−h} − 1)/h + 1)·D1
/// − m_i((e^{−h} − 1 + h)/h² − ½)·D2; for the noise form,
/// x_i = μ + (m_i/m_s)(x − μ) − σ̄_i(e^h − 1)ε̂ − σ̄_i((e^h − 1)/h − 1)·D1
/// − σ̄_i((e^h − 1 − h)/h² − ½)·D2.
pub fn ode_program(
    sched: &MeanReverting,
    ts: &[f64],
    order: usize,
    solve: MrPrediction,
    network: Prediction,
    model_in: &[(Buf, f64)],
) -> Result<Program> {
    consistent(
        MrSolverType::Ode,
        sched,
        ts,
        order,
        solve,
        network,
        model_in,
    )
}

/// The order of step `i` (0-based) of `n`, as the MR Sampler's driver sets it: warm-up with
/// order i + 1 while fewer outputs are stored; with fewer than 10 steps, the steps before the
/// last use min(order, n − i − 1) (lower order towards the end) while the final step uses the
/// full order again (the reference implementation's rule, kept for parity).
pub fn step_order(order: usize, i: usize, n: usize) -> usize {
    let warm = order.min(i + 1);
    if n < 10 && i + 1 >= order && i + 1 < n {
        warm.min(n - i - 1)
    } else {
        warm
    }
}

/// The stored x̂0 − μ (data) or ε̂ (noise) at (m, σ̄) from the network's output, with
/// y = x − μ = m·(x0 − μ) + σ̄·ε (the official `convert_model_output`). Velocity networks
/// predict v = λ_s·m·ε − (σ̄/λ_s)(x0 − μ) (the VP v of y/λ_s, scaled by λ_s, since
/// m² + (σ̄/λ_s)² = 1): x̂0 − μ = m·y − (σ̄/λ_s)·v̂ and ε̂ = (m·v̂ + (σ̄/λ_s)·y)/λ_s.
fn stored(
    solve: MrPrediction,
    network: Prediction,
    m: f64,
    s: f64,
    lambda_s: f64,
) -> Result<Vec<(Buf, f64)>> {
    let y = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
    let out = [(Buf::ModelOut, 1.0)];
    let sn = s / lambda_s;
    Ok(match (solve, network) {
        (MrPrediction::Data, Prediction::Epsilon) => combine(&[(1.0 / m, &y), (-s / m, &out)]),
        (MrPrediction::Data, Prediction::Sample) => {
            combine(&[(1.0, &out), (-1.0, &[(Buf::Cond, 1.0)])])
        }
        (MrPrediction::Data, Prediction::VPrediction) => combine(&[(m, &y), (-sn, &out)]),
        (MrPrediction::Noise, Prediction::Epsilon) => out.to_vec(),
        (MrPrediction::Noise, Prediction::Sample) => {
            combine(&[(1.0 / s, &y), (-m / s, &out), (m / s, &[(Buf::Cond, 1.0)])])
        }
        (MrPrediction::Noise, Prediction::VPrediction) => {
            combine(&[(m / lambda_s, &out), (sn / lambda_s, &y)])
        }
        (_, p) => {
            return Err(Error::Argument {
                op: "MR Sampler",
                arg: "prediction",
                reason: format!("{p:?} networks are not supported (epsilon, sample, v_prediction)"),
            })
        }
    })
}

/// The MRS SDE solver over `ts` with the continuous process's α, σ, λ, orders 1–2 (fresh z
/// each step):
/// - data:  x_i = μ + (σ̄_i/σ̄_s)e^{−h}(x − μ) + m_i(1 − e^{−2h})(x̂0 − μ)
///   + m_i(1 − (1 − e^{−2h})/(2h))·D1 + σ̄_i√(1 − e^{−2h})·z,
/// - noise: x_i = μ + (m_i/m_s)(x − μ) − 2σ̄_i(e^h − 1)ε̂ − 2σ̄_i((e^h − 1)/h − 1)·D1
///   + σ̄_i√(e^{2h} − 1)·z.
pub fn sde_program(
    sched: &MeanReverting,
    ts: &[f64],
    order: usize,
    solve: MrPrediction,
    network: Prediction,
    model_in: &[(Buf, f64)],
) -> Result<Program> {
    consistent(
        MrSolverType::Sde,
        sched,
        ts,
        order,
        solve,
        network,
        model_in,
    )
}

/// [`program_on_grid`] over `ts` on the continuous process (`Interpolation::Consistent`).
fn consistent(
    solver_type: MrSolverType,
    sched: &MeanReverting,
    ts: &[f64],
    order: usize,
    form: MrPrediction,
    network: Prediction,
    model_in: &[(Buf, f64)],
) -> Result<Program> {
    let o = MrsOptions {
        solver_type,
        order,
        form,
        ..Default::default()
    };
    let grid = sched.mrs_grid(ts, Interpolation::Consistent);
    program_on_grid(&grid, sched.max_sigma, &o, network, model_in, false)
}

/// IR-SDE's optimal reverse ("posterior") step over integer times T → 0 (Luo et al. 2023):
/// with A = e^{−θ_t·dt}, B = e^{−θ̄_t·dt}, C = e^{−θ̄_{t−1}·dt} and x̂0 from the network,
/// x_{t−1} = μ + A(1 − C²)/(1 − B²)(x − μ) + C(1 − A²)/(1 − B²)(x̂0 − μ)
/// + λ_s√((1 − A²)(1 − C²)/(1 − B²))·z (no noise into t = 0).
pub fn posterior_program(
    sched: &MeanReverting,
    steps: usize,
    network: Prediction,
    model_in: &[(Buf, f64)],
) -> Result<Program> {
    let t_max = sched.theta.len() - 1;
    if steps == 0 || t_max % steps != 0 {
        return Err(Error::Argument {
            op: "MR posterior",
            arg: "steps",
            reason: format!("{steps} steps must divide the process's T = {t_max}"),
        });
    }
    let stride = t_max / steps;
    let mut prog = Vec::new();
    for (i, t) in (1..=steps).rev().map(|k| k * stride).enumerate() {
        let tp = t - stride;
        let (m_s, s_s) = (sched.m(t as f64), sched.sigma_bar(t as f64));
        // A = e^{−(θ̄_t − θ̄_{t'})·dt} covers the whole stride.
        let a = (-(sched.theta_bar[t] - sched.theta_bar[tp]) * sched.dt).exp();
        let b = (-sched.theta_bar[t] * sched.dt).exp();
        let c = (-sched.theta_bar[tp] * sched.dt).exp();
        let den = 1.0 - b * b;
        let mut ops = evaluate(i, sched_time(sched, t as f64), model_in);
        let x0 = stored(MrPrediction::Data, network, m_s, s_s, sched.max_sigma)?; // x̂0 − μ
        let y = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
        let terms = combine(&[
            (a * (1.0 - c * c) / den, &y),
            (1.0, &[(Buf::Cond, 1.0)]),
            (c * (1.0 - a * a) / den, &x0),
        ]);
        let std = if tp == 0 && sched.theta_bar[0] == 0.0 {
            0.0
        } else {
            sched.max_sigma * ((1.0 - a * a) * (1.0 - c * c) / den).max(0.0).sqrt()
        };
        ops.push(Op::Lin {
            dst: Buf::X,
            terms,
            noise: if tp == 0 { 0.0 } else { std },
            clamp: None,
        });
        prog.push(ops);
    }
    Ok(Program::new(sched.max_sigma, 0, prog))
}

/// IR-SDE's Euler–Maruyama reverse SDE over integer t = T → 1 (Luo et al. 2023):
/// x ← x − [θ_t(μ − x) − g_t²·ŝ]·dt + g_t√dt·z with g_t² = 2λ_s²θ_t, ŝ = −ε̂/σ̄_t (the reverse
/// step uses the training grid: one step per training time); no noise into t = 0.
pub fn euler_program(
    sched: &MeanReverting,
    network: Prediction,
    model_in: &[(Buf, f64)],
) -> Result<Program> {
    euler_steps(sched, network, model_in, false)
}

/// The IR-SDE probability-flow ODE by Euler over the same grid:
/// x ← x − [θ_t(μ − x) − ½g_t²·ŝ]·dt, no noise.
pub fn pf_ode_program(
    sched: &MeanReverting,
    network: Prediction,
    model_in: &[(Buf, f64)],
) -> Result<Program> {
    euler_steps(sched, network, model_in, true)
}

fn euler_steps(
    sched: &MeanReverting,
    network: Prediction,
    model_in: &[(Buf, f64)],
    ode: bool,
) -> Result<Program> {
    let t_max = sched.theta.len() - 1;
    let dt = sched.dt;
    let mut prog = Vec::new();
    for (i, t) in (1..=t_max).rev().enumerate() {
        let (m_s, s_s) = (sched.m(t as f64), sched.sigma_bar(t as f64));
        let th = sched.theta[t];
        let g2 = 2.0 * sched.max_sigma * sched.max_sigma * th;
        // The probability-flow ODE halves the score term and drops the noise.
        let score_w = if ode { 0.5 * g2 } else { g2 };
        let mut ops = evaluate(i, sched_time(sched, t as f64), model_in);
        let eps = stored(MrPrediction::Noise, network, m_s, s_s, sched.max_sigma)?;
        // x − θ(μ − x)dt + g² ŝ dt = (1 + θdt) x − θdt μ − (g² dt / σ̄) ε̂
        let terms = combine(&[
            (1.0 + th * dt, &[(Buf::X, 1.0)]),
            (-th * dt, &[(Buf::Cond, 1.0)]),
            (-score_w * dt / s_s, &eps),
        ]);
        let noise = if t > 1 && !ode { (g2 * dt).sqrt() } else { 0.0 };
        ops.push(Op::Lin {
            dst: Buf::X,
            terms,
            noise,
            clamp: None,
        });
        prog.push(ops);
    }
    Ok(Program::new(sched.max_sigma, 0, prog))
}

/// The model time at `t` on the continuous process.
fn sched_time(sched: &MeanReverting, t: f64) -> ModelTime {
    ModelTime {
        t,
        alpha: sched.m(t),
        sigma: sched.sigma_bar(t),
    }
}

/// The data form is needed and the ratio/max must be valid for thresholding.
fn check_thresholding(solve: MrPrediction, ratio: f64, max: f64) -> Result<()> {
    if solve != MrPrediction::Data {
        return Err(Error::Argument {
            op: "MR Sampler",
            arg: "thresholding",
            reason: "needs the data-prediction form (it thresholds x̂0)".into(),
        });
    }
    if !(0.0..=1.0).contains(&ratio) || max.is_nan() || max < 1.0 {
        return Err(Error::Argument {
            op: "MR Sampler",
            arg: "thresholding",
            reason: format!("ratio {ratio} must lie in [0, 1] and sample_max_value {max} be ≥ 1"),
        });
    }
    Ok(())
}

/// Dynamic thresholding of the data solver's x̂0 (the MR Sampler's `thresholding` option, after
/// Imagen): after every evaluation, the stored x̂0 − μ is replaced by
/// clamp(x̂0, −s, s)/s − μ with s = clamp(quantile(|x̂0|, ratio), 1, max) per sample.
pub fn dynamic_thresholding(
    mut program: Program,
    solve: MrPrediction,
    ratio: f64,
    max: f64,
) -> Result<Program> {
    check_thresholding(solve, ratio, max)?;
    for step in &mut program.steps {
        // The first write into a history slot after the model call stores x̂0 − μ.
        let after_model = step.iter().position(|o| matches!(o, Op::Model(_)));
        let store = after_model.and_then(|m| {
            step.iter().enumerate().skip(m).find_map(|(i, o)| match o {
                Op::Lin {
                    dst: d @ Buf::Slot(_),
                    ..
                } => Some((i, *d)),
                _ => None,
            })
        });
        if let Some((i, slot)) = store {
            step.insert(
                i + 1,
                Op::Threshold {
                    buf: slot,
                    shift: Some(Buf::Cond),
                    ratio,
                    max,
                },
            );
        }
    }
    Ok(program)
}
