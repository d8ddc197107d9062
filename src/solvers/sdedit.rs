//! Starting a sampler mid-schedule from a noised image (SDEdit: Meng et al., "SDEdit: Guided
//! Image Synthesis and Editing with Stochastic Differential Equations", ICLR 2022), as diffusers'
//! img2img pipelines do it: `get_timesteps` keeps the last ⌊N·strength⌋ of N inference steps
//! (the schedule is still the N-step one), the scheduler starts at that index
//! (`set_begin_index`; multistep histories, PNDM's counter and Heun's first-order flag start
//! empty there) and the start state is `scheduler.add_noise(x0, z, t_begin)`.
//!
//! [`start`] returns the cut program and the `add_noise` coefficients (a, s): the state the
//! program starts from is a·x0 + s·z in the solver's own scaling (VP solvers: √ᾱ, √(1 − ᾱ) at
//! the first timestep; σ-space solvers: 1, σ at the begin index), read off the program's first
//! model evaluation, whose input is c·X with model-input marginal α·x0 + σ·ε (so a = α/c,
//! s = σ/c).

use super::program::{Buf, Op, Program};
use super::{ddim, ddpm, dpm_solver, euler, heun, lms, pndm, unipc};
use crate::error::{Error, Result};
use crate::schedule::config::{SchedulerConfig, SolverConfig};

/// A program that starts mid-schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The cut program (`init_sigma` 1: X is uploaded as the start state).
    pub program: Program,
    /// The start state is `alpha·x0 + sigma·z`.
    pub alpha: f64,
    pub sigma: f64,
}

/// diffusers' `get_timesteps`: the index of the first of N steps that an img2img run of
/// `strength` keeps, N − min(⌊N·strength⌋, N). `strength` must lie in [0, 1].
pub fn t_start(steps: usize, strength: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(Error::Argument {
            op: "img2img",
            arg: "strength",
            reason: format!("must lie in [0, 1] (got {strength})"),
        });
    }
    let init = ((steps as f64 * strength) as usize).min(steps);
    Ok(steps - init)
}

/// The program of `cfg` for `steps` inference steps started at step `t_start` (the first
/// `t_start·order` entries of diffusers' `timesteps` dropped), and its `add_noise`
/// coefficients. A program left with no step (diffusers returns an empty batch there) is an
/// error naming `strength`.
pub fn start(cfg: &SchedulerConfig, steps: usize, t_start: usize) -> Result<Started> {
    let train = &cfg.train;
    if t_start > steps {
        return Err(Error::Argument {
            op: "img2img",
            arg: "strength",
            reason: format!("begin index {t_start} is past the {steps} steps"),
        });
    }
    let program = match &cfg.solver {
        SolverConfig::Ddpm(c) => slice(ddpm::program(c, train, steps)?, t_start)?,
        SolverConfig::Ddim(c) => slice(ddim::program(c, train, steps)?, t_start)?,
        SolverConfig::Euler(c) => slice(euler::program(c, train, steps)?, t_start)?,
        // Heun's order 2: the cut drops t_start·2 entries, i.e. t_start whole steps.
        SolverConfig::Heun(c) => slice(heun::program(c, train, steps)?, t_start)?,
        SolverConfig::Pndm(c) => pndm::program_from(c, train, steps, t_start)?,
        SolverConfig::Lms(c) => lms::program_from(c, train, steps, t_start)?,
        SolverConfig::DpmSolver(c) => dpm_solver::program_from(c, train, steps, t_start)?,
        SolverConfig::UniPc(c) => unipc::program_from(c, train, steps, t_start)?,
        _ => {
            return Err(Error::Argument {
                op: "img2img",
                arg: "scheduler",
                reason: format!(
                    "{} cannot start mid-schedule; img2img supports DDPMScheduler, \
                     DDIMScheduler, PNDMScheduler, EulerDiscreteScheduler, \
                     EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, \
                     LMSDiscreteScheduler, DPMSolverMultistepScheduler and \
                     UniPCMultistepScheduler",
                    cfg.kind().class_name()
                ),
            })
        }
    };
    if program.steps.is_empty() {
        return Err(Error::Argument {
            op: "img2img",
            arg: "strength",
            reason: format!(
                "the strength keeps none of the {steps} steps of {} (cut at step {t_start}; \
                 diffusers returns an empty batch); raise the strength or the steps",
                cfg.kind().class_name()
            ),
        });
    }
    let (alpha, sigma) = add_noise(&program)?;
    Ok(Started {
        program: Program::new(1.0, program.slots, program.steps),
        alpha,
        sigma,
    })
}

/// The steps of a stateless program from `begin` on; an error if a kept step reads a history
/// slot that only a dropped step writes (that solver needs its own begin-aware builder).
fn slice(p: Program, begin: usize) -> Result<Program> {
    let steps: Vec<Vec<Op>> = p.steps.into_iter().skip(begin).collect();
    let mut written = vec![false; p.slots];
    for op in steps.iter().flatten() {
        for (b, write) in op.buffers() {
            if let Buf::Slot(i) = b {
                if write {
                    written[i] = true;
                } else if !written[i] {
                    return Err(Error::Argument {
                        op: "img2img",
                        arg: "scheduler",
                        reason: format!(
                            "the program cut at step {begin} reads history slot {i} before \
                             writing it"
                        ),
                    });
                }
            }
        }
    }
    Ok(Program::new(p.init_sigma, p.slots, steps))
}

/// (a, s) of the start state a·x0 + s·z, from the first model evaluation.
fn add_noise(p: &Program) -> Result<(f64, f64)> {
    let first: Vec<&Op> = p.steps.iter().flatten().take(2).collect();
    match first.as_slice() {
        [Op::Lin {
            dst: Buf::ModelIn,
            terms,
            noise,
            ..
        }, Op::Model(time)]
            if *noise == 0.0 && terms.len() == 1 && terms[0].0 == Buf::X && terms[0].1 > 0.0 =>
        {
            let c = terms[0].1;
            Ok((time.alpha / c, time.sigma / c))
        }
        _ => Err(Error::Argument {
            op: "img2img",
            arg: "scheduler",
            reason: "the program does not start with a model evaluation of the state".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_start_is_diffusers_get_timesteps() {
        assert_eq!(t_start(10, 0.75).unwrap(), 3);
        assert_eq!(t_start(10, 0.3).unwrap(), 7);
        assert_eq!(t_start(10, 1.0).unwrap(), 0);
        assert_eq!(t_start(10, 0.0).unwrap(), 10);
        assert_eq!(t_start(50, 0.8).unwrap(), 10);
        assert!(t_start(10, 1.5).is_err());
        assert!(t_start(10, -0.1).is_err());
        assert!(t_start(10, f64::NAN).is_err());
    }
}
