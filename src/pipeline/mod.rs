//! Floor 5: the sampling loop — a scheduler config and a model become a program, run on the
//! GPU from x_T (drawn in-kernel from the seed, or given), with a progress callback that can
//! cancel the run.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::Denoiser;
use crate::schedule::config::SchedulerConfig;
use crate::solvers::{self, executor::Executor};
use std::ops::ControlFlow;

pub mod calibrate;
pub mod daclip_folder;
pub mod daclip_restore;
pub mod daclip_tensors;
pub mod generate;
pub mod img2img;
pub mod inverse;
pub mod invert;
pub mod quantize;
pub mod restore;
pub mod stable_diffusion;

/// Options of one sampling run.
#[derive(Debug, Clone, Default)]
pub struct SampleOptions {
    pub steps: usize,
    pub seed: u64,
    /// The standard-normal draw x_T is built from (scaled by the scheduler's
    /// `init_noise_sigma`); drawn from `seed` when `None`.
    pub noise: Option<Vec<f32>>,
}

/// Runs `cfg` on `model` and returns the final sample (f32, host). `progress(step, total)`.
pub fn sample(
    gpu: &Gpu,
    model: &mut dyn Denoiser,
    cfg: &SchedulerConfig,
    opts: &SampleOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<f32>> {
    sample_controlled(gpu, model, cfg, opts, |i, n| {
        progress(i, n);
        ControlFlow::Continue(())
    })
}

/// [`sample`] that the caller can stop between steps: `progress(step, total)` returns
/// `ControlFlow::Break(())` to cancel, and the run then ends with [`Error::Cancelled`] without
/// reading anything back. An app runs this on a worker thread and breaks when its own cancel
/// flag is set (see `examples/embed.rs`).
pub fn sample_controlled(
    gpu: &Gpu,
    model: &mut dyn Denoiser,
    cfg: &SchedulerConfig,
    opts: &SampleOptions,
    progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Vec<f32>> {
    let program = solvers::build(cfg, opts.steps)?;
    sample_program(gpu, model, &program, opts, progress)
}

/// [`sample_controlled`] of a program already built (e.g. one started mid-schedule,
/// `solvers::sdedit`); `opts.steps` is not used.
pub fn sample_program(
    gpu: &Gpu,
    model: &mut dyn Denoiser,
    program: &solvers::program::Program,
    opts: &SampleOptions,
    progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Vec<f32>> {
    let exec = Executor::new(gpu, model, program, opts.seed, opts.noise.is_some())?;
    if let Some(z) = &opts.noise {
        if z.len() != model.input().numel() {
            return Err(Error::HostLength {
                tensor: "noise".into(),
                got: z.len(),
                want: model.input().numel(),
                shape: model.input().shape().to_vec(),
            });
        }
        exec.set_noise(gpu, z)?;
    }
    let x = exec.run_controlled(gpu, model, progress)?;
    let out = x.to_vec_f32(gpu)?;
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(Error::Argument {
            op: "sample",
            arg: "output",
            reason: format!("the run produced a non-finite value at flat index {i}"),
        });
    }
    Ok(out)
}
