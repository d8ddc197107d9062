//! MR Sampler (Li et al., "MR Sampler: Fast Sampling of Mean-Reverting Diffusion", arXiv
//! 2502.07856; grrrute/mr-sampler `utils/sampler.py`), ODE solver orders 1–3 with noise or data
//! prediction, written from the paper's update rules in x with the condition μ. For the
//! mean-reverting SDE x_t = μ + m_t(x0 − μ) + σ̄_t ε, with λ = ln(m/σ̄), h = λ_i − λ_{i−1}:
//! - data:  x_i = μ + (σ̄_i/σ̄_s)(x − μ) + m_i(1 − e^{−h})(x̂0 − μ) + m_i((e^{−h} − 1)/h + 1)·D1
//!          − m_i((e^{−h} − 1 + h)/h² − ½)·D2,
//! - noise: x_i = μ + (m_i/m_s)(x − μ) − σ̄_i(e^h − 1)ε̂ − σ̄_i((e^h − 1)/h − 1)·D1
//!          − σ̄_i((e^h − 1 − h)/h² − ½)·D2,
//!   with D1, D2 the divided differences of the stored outputs (x̂0 − μ, or ε̂).
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
    if !(1..=3).contains(&order) {
        return Err(Error::Argument {
            op: "MR Sampler",
            arg: "order",
            reason: format!("ODE orders 1–3 are supported, not {order}"),
        });
    }
    let n = ts.len() - 1;
    let pt = |t: f64| (sched.m(t), sched.sigma_bar(t));
    let lam = |t: f64| {
        let (m, s) = pt(t);
        m.ln() - s.ln()
    };
    let hist = |k: usize| Buf::Slot(k % 3);
    let mut prog = Vec::new();
    // x_T = μ + λ_s z: the executor draws z·init; the first step adds μ.
    for i in 0..n {
        let (t_s, t_t) = (ts[i], ts[i + 1]);
        let ((m_s, s_s), (m_t, s_t)) = (pt(t_s), pt(t_t));
        let h = lam(t_t) - lam(t_s);
        let time = ModelTime {
            t: t_s,
            alpha: m_s,
            sigma: s_s,
        };
        let mut ops = Vec::new();
        if i == 0 {
            ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Cond, 1.0)]));
        }
        ops.push(lin(Buf::ModelIn, model_in.to_vec()));
        ops.push(Op::Model(time));
        // Stored output: x̂0 − μ (data) or ε̂ (noise), from the network's parameterisation,
        // with y = x − μ = m·(x0 − μ) + σ̄·ε.
        let y = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
        let out = [(Buf::ModelOut, 1.0)];
        let stored = match (solve, network) {
            (MrPrediction::Data, Prediction::Epsilon) => {
                combine(&[(1.0 / m_s, &y), (-s_s / m_s, &out)])
            }
            (MrPrediction::Data, Prediction::Sample) => {
                combine(&[(1.0, &out), (-1.0, &[(Buf::Cond, 1.0)])])
            }
            (MrPrediction::Noise, Prediction::Epsilon) => out.to_vec(),
            (MrPrediction::Noise, Prediction::Sample) => {
                // ε̂ = (y − m (x̂0 − μ))/σ̄
                combine(&[
                    (1.0 / s_s, &y),
                    (-m_s / s_s, &out),
                    (m_s / s_s, &[(Buf::Cond, 1.0)]),
                ])
            }
            (_, p) => {
                return Err(Error::Argument {
                    op: "MR Sampler",
                    arg: "prediction",
                    reason: format!("{p:?} networks are not supported yet (epsilon, sample)"),
                })
            }
        };
        ops.push(lin(hist(i), stored));
        let k = order.min(i + 1);
        let m0 = [(hist(i), 1.0)];
        let (d1, d2): (Vec<(Buf, f64)>, Vec<(Buf, f64)>) = match k {
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
