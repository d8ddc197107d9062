//! Score-SDE samplers (Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-Based Generative
//! Modeling through Stochastic Differential Equations", ICLR 2021; yang-song/score_sde
//! `sampling.py`, `sde_lib.py`): VE and VP SDEs; predictors Euler–Maruyama, reverse diffusion,
//! ancestral sampling, or the probability-flow ODE (Euler); the Langevin corrector with a
//! signal-to-noise ratio; predictor–corrector loop, returning the noise-free mean at the end.

use super::program::{combine, model_input, score_terms, Buf, ModelTime, Op, Program};
use crate::error::Result;
use crate::schedule::config::TrainingSchedule;

pub use crate::schedule::options::{Predictor, ScoreSdeOptions, Sde};

/// The predictor–corrector program of `n` steps over t = linspace(1, eps, n); the network's
/// time input is t·(T − 1) for VP models (VE models receive σ).
pub fn program(o: &ScoreSdeOptions, train: &TrainingSchedule, n: usize) -> Result<Program> {
    crate::schedule::check_steps(n, usize::MAX)?;
    let (prediction, time_scale) = (train.prediction, (train.num_train_timesteps - 1) as f64);
    let ts = crate::schedule::linspace(1.0, o.eps, n);
    // |dt| as in score_sde. Discrete σ_i (VE) and β_i (VP) of the reverse-diffusion and
    // ancestral predictors are indexed by round(t·(n − 1)).
    let dt = 1.0 / n as f64;
    let (ve_sigmas, vp_betas): (Vec<f64>, Vec<f64>) = match o.sde {
        Sde::Ve {
            sigma_min,
            sigma_max,
        } => (
            crate::schedule::linspace(sigma_min.ln(), sigma_max.ln(), n)
                .iter()
                .map(|v| v.exp())
                .collect(),
            vec![],
        ),
        Sde::Vp { beta_min, beta_max } | Sde::SubVp { beta_min, beta_max } => (
            vec![],
            crate::schedule::linspace(beta_min / n as f64, beta_max / n as f64, n),
        ),
    };
    let mut prog = Vec::new();
    for (k, &t) in ts.iter().enumerate() {
        let last = k + 1 == n;
        let idx = (t * (n - 1) as f64).round() as usize;
        let (a, s) = o.sde.marginal(t);
        let time = match o.sde {
            Sde::Ve { .. } => ModelTime {
                t: s,
                alpha: 1.0,
                sigma: s,
            },
            Sde::Vp { .. } | Sde::SubVp { .. } => ModelTime {
                t: t * time_scale,
                alpha: a,
                sigma: s,
            },
        };
        let score = score_terms(prediction, Buf::X, 1.0, time);
        let mut ops = Vec::new();
        for _ in 0..o.corrector_steps {
            let alpha = match o.sde {
                Sde::Ve { .. } => 1.0,
                Sde::Vp { .. } | Sde::SubVp { .. } => 1.0 - vp_betas[idx],
            };
            ops.push(model_input(Buf::X, 1.0));
            ops.push(Op::Model(time));
            ops.push(super::program::lin(Buf::Slot(0), score.clone()));
            ops.push(Op::Langevin {
                grad: Buf::Slot(0),
                noise: Buf::Slot(1),
                snr: o.snr,
                alpha,
            });
        }
        ops.push(model_input(Buf::X, 1.0));
        ops.push(Op::Model(time));
        let x = [(Buf::X, 1.0)];
        let (c_x, c_s, std) = match (o.sde, o.predictor) {
            (
                Sde::Ve {
                    sigma_min,
                    sigma_max,
                },
                Predictor::EulerMaruyama | Predictor::ProbabilityFlow,
            ) => {
                let g2 = s * s * 2.0 * (sigma_max / sigma_min).ln();
                if o.predictor == Predictor::ProbabilityFlow {
                    (1.0, 0.5 * g2 * dt, 0.0)
                } else {
                    (1.0, g2 * dt, (g2 * dt).sqrt())
                }
            }
            (Sde::Ve { .. }, Predictor::ReverseDiffusion | Predictor::Ancestral) => {
                let sig = ve_sigmas[idx];
                let adj = if idx == 0 { 0.0 } else { ve_sigmas[idx - 1] };
                let d = sig * sig - adj * adj;
                if o.predictor == Predictor::ReverseDiffusion {
                    (1.0, d, d.sqrt())
                } else {
                    (1.0, d, (adj * adj * d / (sig * sig)).sqrt())
                }
            }
            (
                Sde::Vp { beta_min, beta_max },
                Predictor::EulerMaruyama | Predictor::ProbabilityFlow,
            ) => {
                let beta = beta_min + t * (beta_max - beta_min);
                if o.predictor == Predictor::ProbabilityFlow {
                    (1.0 + 0.5 * beta * dt, 0.5 * beta * dt, 0.0)
                } else {
                    (1.0 + 0.5 * beta * dt, beta * dt, (beta * dt).sqrt())
                }
            }
            (Sde::SubVp { beta_min, beta_max }, p) => {
                // Only Euler–Maruyama and the ODE are defined for sub-VP (the config refuses
                // the others).
                let beta = beta_min + t * (beta_max - beta_min);
                let g2 = beta * (1.0 - a.powi(4));
                if p == Predictor::ProbabilityFlow {
                    (1.0 + 0.5 * beta * dt, 0.5 * g2 * dt, 0.0)
                } else {
                    (1.0 + 0.5 * beta * dt, g2 * dt, (g2 * dt).sqrt())
                }
            }
            (Sde::Vp { .. }, Predictor::ReverseDiffusion) => {
                let b = vp_betas[idx];
                (2.0 - (1.0 - b).sqrt(), b, b.sqrt())
            }
            (Sde::Vp { .. }, Predictor::Ancestral) => {
                let b = vp_betas[idx];
                let r = 1.0 / (1.0 - b).sqrt();
                (r, b * r, b.sqrt())
            }
        };
        ops.push(Op::Lin {
            dst: Buf::X,
            terms: combine(&[(c_x, &x), (c_s, &score)]),
            // The loop returns the mean of the last predictor step.
            noise: if last { 0.0 } else { std },
            clamp: None,
        });
        prog.push(ops);
    }
    let init = match o.sde {
        Sde::Ve { sigma_max, .. } => sigma_max,
        Sde::Vp { .. } | Sde::SubVp { .. } => 1.0,
    };
    Ok(Program::new(init, 2, prog))
}
