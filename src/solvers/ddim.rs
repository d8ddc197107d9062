//! DDIM (Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021), as diffusers'
//! `DDIMScheduler`: x_{t′} = √ᾱ_{t′}·x̂0 + √(1 − ᾱ_{t′} − σ²)·ε̂ + σ·z with
//! σ = η√((1 − ᾱ_{t′})/(1 − ᾱ_t))√(1 − ᾱ_t/ᾱ_{t′}); t′ = t − T/N (diffusers' convention);
//! x̂0 optionally clipped (ε̂ is not recomputed from the clipped x̂0, as in diffusers).

use super::program::{combine, eps_terms, lin, model_input, x0_terms, Buf, ModelTime, Op, Program};
use crate::error::Result;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::DdimConfig;

pub fn program(cfg: &DdimConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let vp = train.vp()?;
    let final_abar = if cfg.set_alpha_to_one {
        1.0
    } else {
        vp.abar(0)
    };
    let stride = (train.num_train_timesteps / steps) as i64;
    let mut prog = Vec::new();
    for t in super::indexed_timesteps(cfg.spacing, train, steps)? {
        let a_t = vp.abar(t);
        let prev = t as i64 - stride;
        let a_prev = if prev >= 0 {
            vp.abar(prev as usize)
        } else {
            final_abar
        };
        let time = ModelTime {
            t: t as f64,
            alpha: a_t.sqrt(),
            sigma: (1.0 - a_t).sqrt(),
        };
        let var = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std = cfg.eta * var.max(0.0).sqrt();
        let dir = (1.0 - a_prev - std * std).max(0.0).sqrt();
        let x0 = x0_terms(train.prediction, Buf::X, 1.0, time);
        let eps = eps_terms(train.prediction, Buf::X, 1.0, time);
        let mut ops = vec![model_input(Buf::X, 1.0), Op::Model(time)];
        let terms = match cfg.clip_sample {
            Some(r) => {
                ops.push(Op::Lin {
                    dst: Buf::Slot(0),
                    terms: x0,
                    noise: 0.0,
                    clamp: Some(r),
                });
                combine(&[(a_prev.sqrt(), &[(Buf::Slot(0), 1.0)]), (dir, &eps)])
            }
            None => combine(&[(a_prev.sqrt(), &x0), (dir, &eps)]),
        };
        ops.push(Op::Lin {
            dst: Buf::X,
            terms,
            noise: std,
            clamp: None,
        });
        prog.push(ops);
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
