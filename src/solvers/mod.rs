//! Floor 4: solvers. Each algorithm is host-side f64 coefficient code that emits a
//! [`program::Program`] (one file per algorithm); [`executor::Executor`] runs any program on the
//! GPU with one fused update kernel; [`interpreter::run`] runs it on the host in f64 (the
//! executor's reference, and the solver tests' path without an adapter). Parameterisations are
//! converted in one place ([`program::x0_terms`], [`program::eps_terms`]).

pub mod bdia;
pub mod ddim;
pub mod ddpm;
pub mod dds;
pub mod dpm_solver;
pub mod edm;
pub mod euler;
pub mod evodiff;
pub mod executor;
pub mod flow;
pub mod flowchef;
pub mod heun;
pub mod interpreter;
pub mod lml;
pub mod lms;
pub mod mr_sampler;
pub mod pndm;
pub mod program;
pub mod red_diff;
pub mod residual_shift;
pub mod score_sde;
pub mod sdedit;
pub mod unipc;

use crate::error::Result;
use crate::schedule::config::{SchedulerConfig, SolverConfig, TrainingSchedule};
use crate::schedule::options::SigmaGrid;
use crate::schedule::Spacing;
use program::Program;

/// A time grid of N + 1 points with descending σ_E (the last may be 0) and the network time of
/// each point: step i integrates from point i to point i + 1. Solvers are written on grids; the
/// `program(cfg, train, steps)` functions build diffusers' grid for a scheduler config.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub t: Vec<f64>,
    pub sigma: Vec<f64>,
}

impl Grid {
    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.sigma.len().saturating_sub(1)
    }

    /// A Karras et al. (EDM) grid of `n` steps from σ_max to σ_min (ρ = 7), with network times
    /// from `vp` (no extra final point: the run ends at σ_min).
    pub fn karras(
        vp: &crate::schedule::DiscreteVp,
        sigma_min: f64,
        sigma_max: f64,
        n: usize,
    ) -> Self {
        let sigma = crate::schedule::karras_sigmas(sigma_min, sigma_max, n + 1, 7.0);
        let t = sigma.iter().map(|&s| vp.t_from_sigma(s)).collect();
        Grid { t, sigma }
    }
}

/// Builds the program of `cfg` for `steps` inference steps. Every solver's entry point has the
/// one shape `program(options, training schedule, steps)`.
pub fn build(cfg: &SchedulerConfig, steps: usize) -> Result<Program> {
    let train = &cfg.train;
    match &cfg.solver {
        SolverConfig::Ddpm(c) => ddpm::program(c, train, steps),
        SolverConfig::Ddim(c) => ddim::program(c, train, steps),
        SolverConfig::Bdia(c) => bdia::program(c, train, steps),
        SolverConfig::Euler(c) => euler::program(c, train, steps),
        SolverConfig::Heun(c) => heun::program(c, train, steps),
        SolverConfig::Pndm(c) => pndm::program(c, train, steps),
        SolverConfig::Lms(c) => lms::program(c, train, steps),
        SolverConfig::DpmSolver(c) => dpm_solver::program(c, train, steps),
        SolverConfig::UniPc(c) => unipc::program(c, train, steps),
        SolverConfig::EvoDiff(c) => evodiff::program(c, train, steps),
        SolverConfig::Flow(c) => flow::program(c, train, steps),
        SolverConfig::Edm(c) => edm::program(c, train, steps),
        SolverConfig::ScoreSde(c) => score_sde::program(c, train, steps),
        SolverConfig::Lml(c) => lml::program(c, train, steps),
    }
}

/// What an inversion run leaves for sampling: the states `latents` (X) and, for BDIA,
/// `latents_next` (the slot [`bdia::NEXT_SLOT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inverted {
    /// DDIM inversion: x_T only.
    State,
    /// BDIA: x_T and the state one step later.
    Pair,
}

fn not_invertible(cfg: &SchedulerConfig, op: &'static str) -> crate::error::Error {
    crate::error::Error::Argument {
        op,
        arg: "scheduler",
        reason: format!(
            "{} has no inversion; use DDIMScheduler (`ddim`, approximate) or BDIAScheduler \
             (`bdia`, exact)",
            cfg.kind().class_name()
        ),
    }
}

/// The inversion program of `cfg` (x0 uploaded as x_T with init σ 1 → the states sampling
/// starts from) and what it leaves. DDIM and BDIA only.
pub fn inversion(cfg: &SchedulerConfig, steps: usize) -> Result<(Program, Inverted)> {
    match &cfg.solver {
        SolverConfig::Ddim(c) => Ok((ddim::inversion(c, &cfg.train, steps)?, Inverted::State)),
        SolverConfig::Bdia(c) => Ok((bdia::inversion(c, &cfg.train, steps)?, Inverted::Pair)),
        _ => Err(not_invertible(cfg, "invert")),
    }
}

/// The sampling program of `cfg` from inverted states (X = `latents` uploaded as x_T with init
/// σ 1; for BDIA [`program::Buf::Cond`] = `latents_next`) and which states it needs.
pub fn from_latents(cfg: &SchedulerConfig, steps: usize) -> Result<(Program, Inverted)> {
    match &cfg.solver {
        SolverConfig::Ddim(c) => Ok((ddim::program(c, &cfg.train, steps)?, Inverted::State)),
        SolverConfig::Bdia(c) => Ok((bdia::from_latents(c, &cfg.train, steps)?, Inverted::Pair)),
        _ => Err(not_invertible(cfg, "sample")),
    }
}

/// Integer timesteps of DDPM/DDIM `set_timesteps` for a spacing (descending).
pub(crate) fn discrete_timesteps(
    spacing: Spacing,
    train: &TrainingSchedule,
    steps: usize,
) -> Vec<usize> {
    let t = train.num_train_timesteps;
    match spacing {
        Spacing::Linspace => crate::schedule::linspace(0.0, (t - 1) as f64, steps)
            .iter()
            .rev()
            .map(|v| v.round_ties_even() as usize)
            .collect(),
        Spacing::Leading => {
            let r = t / steps;
            (0..steps)
                .rev()
                .map(|i| i * r + train.steps_offset)
                .collect()
        }
        Spacing::Trailing => {
            let r = t as f64 / steps as f64;
            (0..)
                .map(|i| t as f64 - i as f64 * r)
                .take_while(|x| *x > 0.0)
                .map(|x| (x.round_ties_even() as i64 - 1).max(0) as usize)
                .collect()
        }
    }
}

/// [`discrete_timesteps`] for the solvers that index ᾱ with them (DDPM, DDIM): a `leading`
/// timestep pushed past T − 1 by `steps_offset` is an error (an IndexError in diffusers).
pub(crate) fn indexed_timesteps(
    spacing: Spacing,
    train: &TrainingSchedule,
    steps: usize,
) -> Result<Vec<usize>> {
    let ts = discrete_timesteps(spacing, train, steps);
    let last = train.num_train_timesteps - 1;
    match ts.iter().find(|&&t| t > last) {
        Some(t) => Err(crate::error::Error::Argument {
            op: "set_timesteps",
            arg: "steps_offset",
            reason: format!(
                "{steps} leading steps with steps_offset {} reach timestep {t}, past the last \
                 training timestep {last}",
                train.steps_offset
            ),
        }),
        None => Ok(ts),
    }
}

/// Fractional timesteps and σ_E of the Euler-family `set_timesteps` (descending, final σ
/// appended): linspace over [0, T−1] (floats), leading / trailing as integers, optionally
/// Karras σ with timesteps from σ by log-σ interpolation.
pub(crate) fn sigma_timesteps(
    grid: &SigmaGrid,
    train: &TrainingSchedule,
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let t = train.num_train_timesteps;
    let vp = train.vp()?;
    let ts: Vec<f64> = match grid.spacing {
        Spacing::Linspace => crate::schedule::linspace(0.0, (t - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|v| v as f32 as f64)
            .collect(),
        _ => discrete_timesteps(grid.spacing, train, steps)
            .into_iter()
            .map(|v| v as f64)
            .collect(),
    };
    let mut sigmas: Vec<f64> = ts.iter().map(|&x| vp.sigma_at(x)).collect();
    let mut ts = ts;
    if grid.use_karras_sigmas {
        let (lo, hi) = (sigmas[sigmas.len() - 1], sigmas[0]);
        sigmas = crate::schedule::karras_sigmas(lo, hi, steps, 7.0);
        ts = sigmas.iter().map(|&s| vp.t_from_sigma(s)).collect();
    }
    let last = if grid.final_sigma_zero {
        0.0
    } else {
        ((1.0 - vp.abar(0)) / vp.abar(0)).sqrt()
    };
    sigmas.push(last);
    Ok((ts, sigmas))
}

/// diffusers' `init_noise_sigma` of the Euler family.
pub(crate) fn euler_init_sigma(spacing: Spacing, sigmas: &[f64]) -> f64 {
    let max = sigmas.iter().cloned().fold(0.0, f64::max);
    match spacing {
        Spacing::Linspace | Spacing::Trailing => max,
        Spacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// The model time of σ-space solvers at σ_E with network time `t`: the model input is
/// x / √(σ² + 1), i.e. VP with α = 1/√(σ² + 1), σ_vp = σ·α.
pub(crate) fn sigma_time(t: f64, sigma: f64) -> program::ModelTime {
    let a = 1.0 / (sigma * sigma + 1.0).sqrt();
    program::ModelTime {
        t,
        alpha: a,
        sigma: sigma * a,
    }
}
