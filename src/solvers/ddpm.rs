//! DDPM ancestral sampling (Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models",
//! NeurIPS 2020), as diffusers' `DDPMScheduler`: the posterior q(x_{t′} | x_t, x̂0) with
//! `fixed_small` (β̃) or `fixed_large` (β) variance; no noise at t = 0.

use super::program::{combine, model_input, x0_terms, Buf, ModelTime, Op, Program};
use crate::error::Result;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::{DdpmConfig, VarianceType};

pub fn program(cfg: &DdpmConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let vp = train.vp()?;
    let stride = (train.num_train_timesteps / steps) as i64;
    let mut prog = Vec::new();
    for t in super::indexed_timesteps(cfg.spacing, train, steps)? {
        let a_t = vp.abar(t);
        let prev = t as i64 - stride;
        let a_prev = if prev >= 0 {
            vp.abar(prev as usize)
        } else {
            1.0
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        let time = ModelTime {
            t: t as f64,
            alpha: a_t.sqrt(),
            sigma: b_t.sqrt(),
        };
        let c_x0 = a_prev.sqrt() * cur_beta / b_t;
        let c_x = cur_alpha.sqrt() * b_prev / b_t;
        let std = if t > 0 {
            match cfg.variance_type {
                VarianceType::FixedSmall => (b_prev / b_t * cur_beta).max(1e-20).sqrt(),
                VarianceType::FixedLarge => cur_beta.sqrt(),
            }
        } else {
            0.0
        };
        let x0 = x0_terms(train.prediction, Buf::X, 1.0, time);
        let mut ops = vec![model_input(Buf::X, 1.0), Op::Model(time)];
        let terms = match cfg.clip_sample {
            Some(r) => {
                ops.push(Op::Lin {
                    dst: Buf::Slot(0),
                    terms: x0,
                    noise: 0.0,
                    clamp: Some(r),
                });
                combine(&[(c_x0, &[(Buf::Slot(0), 1.0)]), (c_x, &[(Buf::X, 1.0)])])
            }
            None => combine(&[(c_x0, &x0), (c_x, &[(Buf::X, 1.0)])]),
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
