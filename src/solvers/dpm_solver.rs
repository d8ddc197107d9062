//! Multistep DPM-Solver and DPM-Solver++ (Lu et al., "DPM-Solver: A Fast ODE Solver for
//! Diffusion Probabilistic Model Sampling in Around 10 Steps", NeurIPS 2022; "DPM-Solver++",
//! 2022), orders 1–3, midpoint/heun second-order terms and the SDE variants, as diffusers'
//! `DPMSolverMultistepScheduler` (same timesteps, order warm-up and final-step rules).

use super::program::{combine, eps_terms, lin, x0_terms, Buf, ModelTime, Op, Program};
use crate::error::{Error, Result};
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::{DpmAlgorithm, DpmSolverConfig, SolverType};
use crate::schedule::{check_steps, linspace, Prediction, Spacing};

/// Timesteps (descending, integers unless Karras on a cosine schedule) and σ_E with the final σ.
pub(crate) fn timesteps(
    cfg: &DpmSolverConfig,
    train: &TrainingSchedule,
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let vp = train.vp()?;
    let t_train = train.num_train_timesteps;
    // lambda_min_clipped: drop the last timesteps whose λ = log(α/σ) is below the limit.
    let clipped = vp
        .alphas_cumprod
        .iter()
        .filter(|&&a| 0.5 * (a / (1.0 - a)).ln() < cfg.lambda_min_clipped)
        .count();
    let last = t_train - clipped;
    let ts: Vec<f64> = match cfg.spacing {
        Spacing::Linspace => {
            let v = linspace(0.0, (last - 1) as f64, steps + 1);
            v.iter()
                .rev()
                .take(steps)
                .map(|x| x.round_ties_even())
                .collect()
        }
        Spacing::Leading => {
            let r = last / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * r + train.steps_offset) as f64)
                .collect()
        }
        Spacing::Trailing => {
            let r = t_train as f64 / steps as f64;
            (0..)
                .map(|i| last as f64 - i as f64 * r)
                .take_while(|x| *x > 0.0)
                .map(|x| x.round_ties_even() - 1.0)
                .collect()
        }
    };
    let mut sigmas: Vec<f64> = ts.iter().map(|&t| vp.sigma_at(t)).collect();
    let mut ts = ts;
    if cfg.use_lu_lambdas {
        // diffusers' `_convert_to_lu` (ρ = 1): log σ uniform between the training extremes.
        let all = vp.sigmas();
        let (lo, hi) = (all[0].ln(), all[all.len() - 1].ln());
        sigmas = linspace(hi, lo, steps).iter().map(|l| l.exp()).collect();
        let cosine = matches!(
            train.beta_schedule,
            crate::schedule::BetaSchedule::SquaredCosCapV2
        );
        ts = sigmas
            .iter()
            .map(|&s| {
                let t = vp.t_from_sigma(s);
                if cosine {
                    t
                } else {
                    t.round_ties_even()
                }
            })
            .collect();
    } else if cfg.use_karras_sigmas {
        let all = vp.sigmas();
        let (lo, hi) = (all[0], all[all.len() - 1]);
        sigmas = crate::schedule::karras_sigmas(lo, hi, steps, 7.0);
        let cosine = matches!(
            train.beta_schedule,
            crate::schedule::BetaSchedule::SquaredCosCapV2
        );
        ts = sigmas
            .iter()
            .map(|&s| {
                let t = vp.t_from_sigma(s);
                if cosine {
                    t
                } else {
                    t.round_ties_even()
                }
            })
            .collect();
    }
    let final_sigma = if cfg.final_sigma_zero {
        0.0
    } else {
        vp.sigmas()[0]
    };
    sigmas.push(final_sigma);
    ts.push(if final_sigma == 0.0 {
        0.0
    } else {
        vp.t_from_sigma(final_sigma)
    });
    Ok((ts, sigmas))
}

/// (α, σ, λ) of σ_E.
fn alpha_sigma(s: f64) -> (f64, f64, f64) {
    let a = 1.0 / (s * s + 1.0).sqrt();
    (a, s * a, -s.ln())
}

pub fn program(cfg: &DpmSolverConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    program_from(cfg, train, steps, 0)
}

/// [`program`] started at step `begin` (diffusers' `set_begin_index`, for img2img): the steps
/// before it are dropped and the history starts empty there (`lower_order_nums` = 0), while
/// the final-step rules still count the whole grid.
pub fn program_from(
    cfg: &DpmSolverConfig,
    train: &TrainingSchedule,
    steps: usize,
    begin: usize,
) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let (t, sigma) = timesteps(cfg, train, steps)?;
    let pts = points(&super::Grid { t, sigma });
    on_points_from(cfg, train.prediction, &pts, &[(Buf::X, 1.0)], begin)
}

fn points(grid: &super::Grid) -> Vec<ModelTime> {
    grid.t
        .iter()
        .zip(&grid.sigma)
        .map(|(&t, &s)| {
            let (alpha, sigma, _) = alpha_sigma(s);
            ModelTime { t, alpha, sigma }
        })
        .collect()
}

/// DPM-Solver(++) over `grid` with the order, algorithm, solver type and final-step rules of
/// `cfg` for a network predicting `prediction`; the state is VP, x_T = z.
pub fn on_grid(
    cfg: &DpmSolverConfig,
    prediction: Prediction,
    grid: &super::Grid,
) -> Result<Program> {
    on_points(cfg, prediction, &points(grid), &[(Buf::X, 1.0)])
}

/// DPM-Solver(++) over explicit marginal points x = α·x0 + σ·ε (any α, σ, e.g. the
/// mean-reverting process's m_t, σ̄_t acting on x − μ); the model input is `model_in` (a
/// combination of buffers, e.g. X + Cond). The last σ may be 0.
pub fn on_points(
    cfg: &DpmSolverConfig,
    prediction: Prediction,
    pts: &[ModelTime],
    model_in: &[(Buf, f64)],
) -> Result<Program> {
    on_points_from(cfg, prediction, pts, model_in, 0)
}

/// [`on_points`] from step `begin` on, with an empty history there.
fn on_points_from(
    cfg: &DpmSolverConfig,
    prediction: Prediction,
    pts: &[ModelTime],
    model_in: &[(Buf, f64)],
    begin: usize,
) -> Result<Program> {
    let lam = |p: &ModelTime| p.alpha.ln() - p.sigma.ln();
    let point = |p: &ModelTime| (p.alpha, p.sigma, lam(p));
    let data = matches!(
        cfg.algorithm,
        DpmAlgorithm::DpmSolverPlusPlus | DpmAlgorithm::SdeDpmSolverPlusPlus
    );
    let sde = matches!(
        cfg.algorithm,
        DpmAlgorithm::SdeDpmSolver | DpmAlgorithm::SdeDpmSolverPlusPlus
    );
    let n = pts.len().saturating_sub(1);
    let final_zero = pts.last().map(|p| p.sigma) == Some(0.0);
    if !data && final_zero {
        return Err(Error::Argument {
            op: "DPMSolverMultistepScheduler",
            arg: "final_sigmas_type",
            reason: "`zero` is only defined for the data-prediction algorithms (dpmsolver++, sde-dpmsolver++); use `sigma_min`".into(),
        });
    }
    let order = cfg.solver_order;
    let mut prog = Vec::new();
    let mut lower_order_nums = 0usize;
    for i in begin..n {
        let (a_s, s_s, l_s) = point(&pts[i]);
        let (a_t, s_t, l_t) = point(&pts[i + 1]);
        let time = pts[i];
        let slot = |k: usize| Buf::Slot(k % 3);
        // Converted output of this step into slot i.
        let conv = if data {
            x0_terms(prediction, Buf::X, 1.0, time)
        } else {
            eps_terms(prediction, Buf::X, 1.0, time)
        };
        let mut ops = vec![
            lin(Buf::ModelIn, model_in.to_vec()),
            Op::Model(time),
            lin(slot(i), conv),
        ];
        let final_low =
            i == n - 1 && (cfg.euler_at_final || (cfg.lower_order_final && n < 15) || final_zero);
        let second_low = i + 2 == n && cfg.lower_order_final && n < 15;
        let use_order = if order == 1 || lower_order_nums < 1 || final_low {
            1
        } else if order == 2 || lower_order_nums < 2 || second_low {
            2
        } else {
            3
        };
        let h = l_t - l_s;
        let m0 = [(slot(i), 1.0)];
        // D1 = (m0 − m1)/r0, D2 per 3M.
        type Terms = Vec<(Buf, f64)>;
        let (d1, d2): (Terms, Terms) = if use_order >= 2 {
            let l_s1 = lam(&pts[i - 1]);
            let r0 = (l_s - l_s1) / h;
            let d1_0 = vec![(slot(i), 1.0 / r0), (slot(i - 1), -1.0 / r0)];
            if use_order == 3 {
                let l_s2 = lam(&pts[i - 2]);
                let r1 = (l_s1 - l_s2) / h;
                let d1_1 = vec![(slot(i - 1), 1.0 / r1), (slot(i - 2), -1.0 / r1)];
                let d1 = combine(&[
                    (1.0, &d1_0),
                    (r0 / (r0 + r1), &d1_0),
                    (-r0 / (r0 + r1), &d1_1),
                ]);
                let d2 = combine(&[(1.0 / (r0 + r1), &d1_0), (-1.0 / (r0 + r1), &d1_1)]);
                (d1, d2)
            } else {
                (d1_0, vec![])
            }
        } else {
            (vec![], vec![])
        };
        let eh = (-h).exp(); // e^{−h} (0 when σ_t = 0)
        let x = [(Buf::X, 1.0)];
        let (terms, noise) = match (data, sde) {
            (true, false) => {
                // x_t = (σ_t/σ_s) x − α_t (e^{−h} − 1) D0 [+ second/third-order terms]
                let phi1 = eh - 1.0;
                let mut parts: Vec<(f64, &[(Buf, f64)])> =
                    vec![(s_t / s_s, &x), (-a_t * phi1, &m0)];
                let (c1, c2);
                match use_order {
                    2 => {
                        c1 = match cfg.solver_type {
                            SolverType::Midpoint => -0.5 * a_t * phi1,
                            SolverType::Heun => a_t * (phi1 / h + 1.0),
                        };
                        parts.push((c1, &d1));
                    }
                    3 => {
                        c1 = a_t * (phi1 / h + 1.0);
                        c2 = -a_t * ((phi1 + h) / (h * h) - 0.5);
                        parts.push((c1, &d1));
                        parts.push((c2, &d2));
                    }
                    _ => {}
                }
                (combine(&parts), 0.0)
            }
            (false, false) => {
                // x_t = (α_t/α_s) x − σ_t (e^h − 1) D0 [...]
                let phi1 = h.exp_m1();
                let mut parts: Vec<(f64, &[(Buf, f64)])> =
                    vec![(a_t / a_s, &x), (-s_t * phi1, &m0)];
                match use_order {
                    2 => {
                        let c1 = match cfg.solver_type {
                            SolverType::Midpoint => -0.5 * s_t * phi1,
                            SolverType::Heun => -s_t * (phi1 / h - 1.0),
                        };
                        parts.push((c1, &d1));
                    }
                    3 => {
                        parts.push((-s_t * (phi1 / h - 1.0), &d1));
                        parts.push((-s_t * ((phi1 - h) / (h * h) - 0.5), &d2));
                    }
                    _ => {}
                }
                (combine(&parts), 0.0)
            }
            (true, true) => {
                // x_t = (σ_t/σ_s) e^{−h} x + α_t (1 − e^{−2h}) D0 [+ ...] + σ_t √(1 − e^{−2h}) z
                let e2 = 1.0 - (-2.0 * h).exp();
                let mut parts: Vec<(f64, &[(Buf, f64)])> =
                    vec![(s_t / s_s * eh, &x), (a_t * e2, &m0)];
                if use_order >= 2 {
                    let c1 = match cfg.solver_type {
                        SolverType::Midpoint => 0.5 * a_t * e2,
                        SolverType::Heun => a_t * (1.0 - e2 / (2.0 * h)),
                    };
                    parts.push((c1, &d1));
                }
                (combine(&parts), s_t * e2.max(0.0).sqrt())
            }
            (false, true) => {
                // x_t = (α_t/α_s) x − 2σ_t (e^h − 1) D0 [...] + σ_t √(e^{2h} − 1) z
                let phi1 = h.exp_m1();
                let mut parts: Vec<(f64, &[(Buf, f64)])> =
                    vec![(a_t / a_s, &x), (-2.0 * s_t * phi1, &m0)];
                if use_order >= 2 {
                    let c1 = match cfg.solver_type {
                        SolverType::Midpoint => -s_t * phi1,
                        SolverType::Heun => -2.0 * s_t * (phi1 / h - 1.0),
                    };
                    parts.push((c1, &d1));
                }
                (combine(&parts), s_t * (2.0 * h).exp_m1().max(0.0).sqrt())
            }
        };
        if sde && use_order == 3 {
            return Err(Error::Argument {
                op: "DPMSolverMultistepScheduler",
                arg: "solver_order",
                reason: "the SDE variants support orders 1 and 2".into(),
            });
        }
        ops.push(Op::Lin {
            dst: Buf::X,
            terms,
            noise,
            clamp: None,
        });
        prog.push(ops);
        if lower_order_nums < order {
            lower_order_nums += 1;
        }
    }
    Ok(Program::new(1.0, 3, prog))
}
