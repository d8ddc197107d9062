//! Flow-matching samplers for rectified-flow models (Liu et al., "Flow Straight and Fast", 2022;
//! Lipman et al., "Flow Matching for Generative Modeling", 2023): x_σ = (1 − σ)·x0 + σ·ε, the
//! network predicts v = ε − x0 at time t = σ·T, and the ODE dx/dσ = v is integrated by Euler
//! (diffusers' `FlowMatchEulerDiscreteScheduler`) or Heun (`FlowMatchHeunDiscreteScheduler`).

use super::program::{combine, eps_terms, lin, model_input, x0_terms, Buf, ModelTime, Op, Program};
use crate::error::Result;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::FlowConfig;
use crate::schedule::Prediction;

/// diffusers' flow σ schedule: shifted training σ bounds, N points linear in t, shifted again,
/// then 0.
pub(crate) fn sigmas(cfg: &FlowConfig, train: &TrainingSchedule, steps: usize) -> Vec<f64> {
    let t = train.num_train_timesteps as f64;
    let shift = |s: f64| (cfg.shift * s / (1.0 + (cfg.shift - 1.0) * s)) as f32 as f64;
    let (s_max, s_min) = (shift(1.0), shift(1.0 / t));
    let mut out: Vec<f64> = crate::schedule::linspace(s_max * t, s_min * t, steps)
        .into_iter()
        .map(|ts| shift((ts as f32 as f64) / t))
        .collect();
    out.push(0.0);
    out
}

/// The model time at flow σ: input α = 1 − σ, σ; network time σ·T.
pub(crate) fn flow_time(train: &TrainingSchedule, s: f64) -> ModelTime {
    ModelTime {
        t: s * train.num_train_timesteps as f64,
        alpha: 1.0 - s,
        sigma: s,
    }
}

/// v̂ as a combination of the state and the model output (v = ε̂ − x̂0 for any parameterisation).
pub(crate) fn velocity(prediction: Prediction, time: ModelTime) -> Vec<(Buf, f64)> {
    let e = eps_terms(prediction, Buf::X, 1.0, time);
    let x0 = x0_terms(prediction, Buf::X, 1.0, time);
    combine(&[(1.0, &e), (-1.0, &x0)])
}

pub fn program(cfg: &FlowConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let sig = sigmas(cfg, train, steps);
    let mut prog = Vec::new();
    for i in 0..steps {
        let (s, s_next) = (sig[i], sig[i + 1]);
        let time = flow_time(train, s);
        let dt = s_next - s;
        let v = velocity(train.prediction, time);
        let mut ops = vec![model_input(Buf::X, 1.0), Op::Model(time)];
        if !cfg.heun || s_next == 0.0 {
            ops.push(lin(Buf::X, combine(&[(1.0, &[(Buf::X, 1.0)]), (dt, &v)])));
        } else {
            // Keep x and v; predictor x̃ = x + dt·v; corrector x = x + dt·(v + ṽ)/2.
            ops.push(lin(Buf::Slot(1), v));
            ops.push(lin(Buf::Slot(0), vec![(Buf::X, 1.0)]));
            ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Slot(1), dt)]));
            let t2 = flow_time(train, s_next);
            ops.push(model_input(Buf::X, 1.0));
            ops.push(Op::Model(t2));
            let v2 = velocity(train.prediction, t2);
            ops.push(lin(
                Buf::X,
                combine(&[
                    (1.0, &[(Buf::Slot(0), 1.0)]),
                    (0.5 * dt, &[(Buf::Slot(1), 1.0)]),
                    (0.5 * dt, &v2),
                ]),
            ));
        }
        prog.push(ops);
    }
    Ok(Program::new(1.0, 2, prog))
}
