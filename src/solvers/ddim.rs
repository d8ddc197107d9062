//! DDIM (Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021), as diffusers'
//! `DDIMScheduler`: x_{t′} = √ᾱ_{t′}·x̂0 + √(1 − ᾱ_{t′} − σ²)·ε̂ + σ·z with
//! σ = η√((1 − ᾱ_{t′})/(1 − ᾱ_t))√(1 − ᾱ_t/ᾱ_{t′}); t′ = t − T/N (diffusers' convention);
//! x̂0 optionally clipped (ε̂ is not recomputed from the clipped x̂0, as in diffusers). Also DDIM
//! inversion (§4.3 of the paper: the deterministic update run from x0 towards x_T, with the
//! model evaluated at the state it steps from), which is approximate.

use super::program::{combine, eps_terms, lin, model_input, x0_terms, Buf, ModelTime, Op, Program};
use crate::error::{Error, Result};
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::DdimConfig;
use crate::schedule::Prediction;

/// One DDIM step of diffusers' grid: the model time of the state it steps from, the target
/// ᾱ_{t′}, and the noise σ and direction coefficient √(1 − ᾱ_{t′} − σ²) of the update.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DdimStep {
    pub time: ModelTime,
    pub a_prev: f64,
    pub std: f64,
    pub dir: f64,
}

/// diffusers' DDIM grid (sampling order) and the final ᾱ (`set_alpha_to_one`).
pub(crate) fn grid(
    cfg: &DdimConfig,
    train: &TrainingSchedule,
    steps: usize,
) -> Result<(Vec<DdimStep>, f64)> {
    check_steps(steps, train.num_train_timesteps)?;
    let vp = train.vp()?;
    let final_abar = if cfg.set_alpha_to_one {
        1.0
    } else {
        vp.abar(0)
    };
    let stride = (train.num_train_timesteps / steps) as i64;
    let ts = super::indexed_timesteps(cfg.spacing, train, steps)?;
    let out = ts
        .iter()
        .map(|&t| {
            let a_t = vp.abar(t);
            let prev = t as i64 - stride;
            let a_prev = if prev >= 0 {
                vp.abar(prev as usize)
            } else {
                final_abar
            };
            let var = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
            let std = cfg.eta * var.max(0.0).sqrt();
            DdimStep {
                time: ModelTime {
                    t: t as f64,
                    alpha: a_t.sqrt(),
                    sigma: (1.0 - a_t).sqrt(),
                },
                a_prev,
                std,
                dir: (1.0 - a_prev - std * std).max(0.0).sqrt(),
            }
        })
        .collect();
    Ok((out, final_abar))
}

/// The model time of the clean end of the grid, where inversion starts: t = t_last − T/N (may
/// be negative, as in the official BDIA inversion and diffusers' `prev_timestep`), at the final
/// ᾱ.
pub(crate) fn start_time(
    last: &DdimStep,
    train: &TrainingSchedule,
    steps: usize,
    final_abar: f64,
) -> ModelTime {
    let stride = (train.num_train_timesteps / steps) as f64;
    ModelTime {
        t: last.time.t - stride,
        alpha: final_abar.sqrt(),
        sigma: (1.0 - final_abar).max(0.0).sqrt(),
    }
}

/// A linear combination of buffers.
pub(crate) type Terms = Vec<(Buf, f64)>;

/// The instructions that evaluate the model at `state` (time `time`) and the terms of x̂0
/// (clamped into `clip_slot` when clipping) and ε̂ that DDIM-type updates combine.
pub(crate) fn evaluate(
    clip: Option<f64>,
    clip_slot: Buf,
    pred: Prediction,
    state: Buf,
    time: ModelTime,
) -> (Vec<Op>, Terms, Terms) {
    let mut ops = vec![model_input(state, 1.0), Op::Model(time)];
    let x0 = x0_terms(pred, state, 1.0, time);
    let eps = eps_terms(pred, state, 1.0, time);
    let x0 = match clip {
        Some(r) => {
            ops.push(Op::Lin {
                dst: clip_slot,
                terms: x0,
                noise: 0.0,
                clamp: Some(r),
            });
            vec![(clip_slot, 1.0)]
        }
        None => x0,
    };
    (ops, x0, eps)
}

/// Errors unless every coefficient of `ops` is finite (ε̂ of an x0-prediction model at σ = 0).
pub(crate) fn check_finite(ops: &[Op], what: &str) -> Result<()> {
    let bad = ops.iter().any(|op| match op {
        Op::Lin { terms, .. } => terms.iter().any(|(_, c)| !c.is_finite()),
        _ => false,
    });
    if bad {
        return Err(Error::Argument {
            op: "invert",
            arg: "set_alpha_to_one",
            reason: format!(
                "{what} starts at ᾱ = 1 (σ = 0), where this model's prediction type gives no ε̂; \
                 use set_alpha_to_one = false"
            ),
        });
    }
    Ok(())
}

pub fn program(cfg: &DdimConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    let (grid, _) = grid(cfg, train, steps)?;
    let mut prog = Vec::new();
    for s in grid {
        let (mut ops, x0, eps) = evaluate(
            cfg.clip_sample,
            Buf::Slot(0),
            train.prediction,
            Buf::X,
            s.time,
        );
        ops.push(Op::Lin {
            dst: Buf::X,
            terms: combine(&[(s.a_prev.sqrt(), &x0), (s.dir, &eps)]),
            noise: s.std,
            clamp: None,
        });
        prog.push(ops);
    }
    Ok(Program::new(1.0, 1, prog))
}

/// DDIM inversion on the grid of [`program`]: x0 (uploaded as the run's x_T with init σ 1)
/// is carried to x_T by x_{t_{k}} = √ᾱ_{t_k}·x̂0 + √(1 − ᾱ_{t_k})·ε̂ with the model evaluated at
/// (x_{t_{k−1}}, t_{k−1}), starting from t_{−1} = t_0 − T/N at the final ᾱ. Approximate: ε̂ at
/// t_{k−1} stands in for ε̂ at t_k (Song et al. 2021 §4.3). `eta` plays no part.
pub fn inversion(cfg: &DdimConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    let (grid, final_abar) = grid(cfg, train, steps)?;
    let up: Vec<&DdimStep> = grid.iter().rev().collect();
    let mut from = start_time(up[0], train, steps, final_abar);
    let mut prog = Vec::new();
    for s in up {
        let (mut ops, x0, eps) = evaluate(
            cfg.clip_sample,
            Buf::Slot(0),
            train.prediction,
            Buf::X,
            from,
        );
        let a = s.time.alpha * s.time.alpha;
        ops.push(lin(
            Buf::X,
            combine(&[(a.sqrt(), &x0), ((1.0 - a).sqrt(), &eps)]),
        ));
        check_finite(&ops, "DDIM inversion")?;
        prog.push(ops);
        from = s.time;
    }
    Ok(Program::new(1.0, 1, prog))
}

/// Deterministic DDIM (η = 0, no clipping) over a σ grid; the state is VP, x_T = z.
pub fn on_grid(prediction: crate::models::Prediction, grid: &super::Grid) -> Program {
    let abar = |s: f64| 1.0 / (1.0 + s * s);
    let mut prog = Vec::new();
    for i in 0..grid.steps() {
        let (a_t, a_prev) = (abar(grid.sigma[i]), abar(grid.sigma[i + 1]));
        let time = ModelTime {
            t: grid.t[i],
            alpha: a_t.sqrt(),
            sigma: (1.0 - a_t).sqrt(),
        };
        let x0 = x0_terms(prediction, Buf::X, 1.0, time);
        let eps = eps_terms(prediction, Buf::X, 1.0, time);
        let terms = combine(&[(a_prev.sqrt(), &x0), ((1.0 - a_prev).sqrt(), &eps)]);
        prog.push(vec![
            model_input(Buf::X, 1.0),
            Op::Model(time),
            lin(Buf::X, terms),
        ]);
    }
    Program::new(1.0, 0, prog)
}
