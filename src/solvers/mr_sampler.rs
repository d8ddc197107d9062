//! MR Sampler (Li et al., "MR Sampler: Fast Sampling of Mean-Reverting Diffusion", arXiv
//! 2502.07856; grrrute/mr-sampler `utils/sampler.py`), ODE solver orders 1–3 with noise or data
//! prediction, written from the paper's update rules in x with the condition μ. For the
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
use crate::schedule::restoration::MeanReverting;

/// Network parameterisation of the MR model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MrPrediction {
    Noise,
    Data,
}

/// The ops every MR step starts with: on the first step, x_T = λ_s·z + μ (the executor draws
/// λ_s·z); the model input; the model call at the float training-index time `t`.
fn evaluate(sched: &MeanReverting, i: usize, t: f64, model_in: &[(Buf, f64)]) -> Vec<Op> {
    let mut ops = Vec::new();
    if i == 0 {
        ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Cond, 1.0)]));
    }
    ops.push(lin(Buf::ModelIn, model_in.to_vec()));
    ops.push(Op::Model(ModelTime {
        t,
        alpha: sched.m(t),
        sigma: sched.sigma_bar(t),
    }));
    ops
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

/// The MRS ODE program over descending times `ts` (training-index units, last > 0 or = 0 with
/// σ̄ > 0); the model input is `model_in` (e.g. X, or X − Cond for a y-space model); x_T is
/// μ + λ_s·z (init handled by the caller: the program's first instruction adds μ).
pub fn ode_program(
    sched: &MeanReverting,
    ts: &[f64],
    order: usize,
    solve: MrPrediction,
    network: Prediction,
    model_in: &[(Buf, f64)],
) -> Result<Program> {
    check_order("ODE", order, 3)?;
    let n = ts.len() - 1;
    let pt = |t: f64| (sched.m(t), sched.sigma_bar(t));
    let lam = |t: f64| sched.lambda(t);
    let hist = |k: usize| Buf::Slot(k % 3);
    let mut prog = Vec::new();
    // x_T = μ + λ_s z: the executor draws z·init; the first step adds μ.
    for i in 0..n {
        let (t_s, t_t) = (ts[i], ts[i + 1]);
        let ((m_s, s_s), (m_t, s_t)) = (pt(t_s), pt(t_t));
        let h = lam(t_t) - lam(t_s);
        let mut ops = evaluate(sched, i, t_s, model_in);
        ops.push(lin(
            hist(i),
            stored(solve, network, m_s, s_s, sched.max_sigma)?,
        ));
        let y = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
        let k = step_order(order, i, n);
        let m0 = [(hist(i), 1.0)];
        type Terms = Vec<(Buf, f64)>;
        let (d1, d2): (Terms, Terms) = match k {
            1 => (vec![], vec![]),
            _ => {
                let r0 = (lam(t_s) - lam(ts[i - 1])) / h;
                let d1_0 = vec![(hist(i), 1.0 / r0), (hist(i - 1), -1.0 / r0)];
                if k == 2 {
                    (d1_0, vec![])
                } else {
                    let r1 = (lam(ts[i - 1]) - lam(ts[i - 2])) / h;
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
        let mu = [(Buf::Cond, 1.0)];
        let terms = match solve {
            MrPrediction::Data => {
                let phi1 = (-h).exp_m1();
                let c = s_t / s_s;
                combine(&[
                    (c, &y),
                    (1.0, &mu),
                    (-m_t * phi1, &m0),
                    (m_t * (phi1 / h + 1.0), &d1),
                    (-m_t * ((phi1 + h) / (h * h) - 0.5), &d2),
                ])
            }
            MrPrediction::Noise => {
                let phi1 = h.exp_m1();
                let c = m_t / m_s;
                combine(&[
                    (c, &y),
                    (1.0, &mu),
                    (-s_t * phi1, &m0),
                    (-s_t * (phi1 / h - 1.0), &d1),
                    (-s_t * ((phi1 - h) / (h * h) - 0.5), &d2),
                ])
            }
        };
        ops.push(lin(Buf::X, terms));
        prog.push(ops);
    }
    Ok(Program::new(sched.max_sigma, 3, prog))
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
/// y = x − μ = m·(x0 − μ) + σ̄·ε. Velocity networks predict v = λ_s·m·ε − (σ̄/λ_s)(x0 − μ) (the
/// VP v of y/λ_s, scaled by λ_s, since m² + (σ̄/λ_s)² = 1): x̂0 − μ = m·y − (σ̄/λ_s)·v̂ and
/// ε̂ = (m·v̂ + (σ̄/λ_s)·y)/λ_s.
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

/// The MRS SDE solver, orders 1–2 (fresh z each step):
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
    check_order("SDE", order, 2)?;
    let pt = |t: f64| (sched.m(t), sched.sigma_bar(t));
    let lam = |t: f64| sched.lambda(t);
    let hist = |k: usize| Buf::Slot(k % 3);
    let mut prog = Vec::new();
    for i in 0..ts.len() - 1 {
        let (t_s, t_t) = (ts[i], ts[i + 1]);
        let ((m_s, s_s), (m_t, s_t)) = (pt(t_s), pt(t_t));
        let h = lam(t_t) - lam(t_s);
        let mut ops = evaluate(sched, i, t_s, model_in);
        ops.push(lin(
            hist(i),
            stored(solve, network, m_s, s_s, sched.max_sigma)?,
        ));
        let m0 = [(hist(i), 1.0)];
        let d1 = if step_order(order, i, ts.len() - 1) == 2 {
            let r0 = (lam(t_s) - lam(ts[i - 1])) / h;
            vec![(hist(i), 1.0 / r0), (hist(i - 1), -1.0 / r0)]
        } else {
            vec![]
        };
        let y = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
        let mu = [(Buf::Cond, 1.0)];
        let (terms, noise) = match solve {
            MrPrediction::Data => {
                let e2 = -(-2.0 * h).exp_m1(); // 1 − e^{−2h}
                (
                    combine(&[
                        (s_t / s_s * (-h).exp(), &y),
                        (1.0, &mu),
                        (m_t * e2, &m0),
                        (m_t * (1.0 - e2 / (2.0 * h)), &d1),
                    ]),
                    s_t * e2.max(0.0).sqrt(),
                )
            }
            MrPrediction::Noise => {
                let phi1 = h.exp_m1();
                (
                    combine(&[
                        (m_t / m_s, &y),
                        (1.0, &mu),
                        (-2.0 * s_t * phi1, &m0),
                        (-2.0 * s_t * (phi1 / h - 1.0), &d1),
                    ]),
                    s_t * (2.0 * h).exp_m1().max(0.0).sqrt(),
                )
            }
        };
        ops.push(Op::Lin {
            dst: Buf::X,
            terms,
            noise,
            clamp: None,
        });
        prog.push(ops);
    }
    Ok(Program::new(sched.max_sigma, 3, prog))
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
        let mut ops = evaluate(sched, i, t as f64, model_in);
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
        let mut ops = evaluate(sched, i, t as f64, model_in);
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

/// `denoise_last`: appends an instruction replacing the final sample by the last evaluation's
/// x̂0 (for data-solve programs, whose history holds x̂0 − μ in slot (steps − 1) mod 3).
pub fn denoise_last(mut program: Program, solve: MrPrediction) -> Result<Program> {
    if solve != MrPrediction::Data {
        return Err(Error::Argument {
            op: "MR Sampler",
            arg: "denoise_last",
            reason: "needs the data-prediction solver (its history holds x̂0)".into(),
        });
    }
    let n = program.steps.len();
    if let Some(last) = program.steps.last_mut() {
        last.push(lin(
            Buf::X,
            vec![(Buf::Slot((n - 1) % 3), 1.0), (Buf::Cond, 1.0)],
        ));
    }
    Ok(program)
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
    if solve != MrPrediction::Data {
        return Err(Error::Argument {
            op: "MR Sampler",
            arg: "thresholding",
            reason: "needs the data-prediction solver (it thresholds x̂0)".into(),
        });
    }
    if !(0.0..=1.0).contains(&ratio) || max.is_nan() || max < 1.0 {
        return Err(Error::Argument {
            op: "MR Sampler",
            arg: "thresholding",
            reason: format!("ratio {ratio} must lie in [0, 1] and sample_max_value {max} be ≥ 1"),
        });
    }
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
