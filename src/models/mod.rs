//! What a solver can call: the denoiser trait, its parameterisations, and the backends — the
//! recorded UNet2DModel and closed-form Gaussian-mixture models — plus the host (f64) twin of
//! the trait that `solvers::interpreter` calls.

pub mod analytic;
pub mod cfg;
pub mod conditioned;
pub mod daclip_unet;
pub mod guided;
pub mod text_guided;
pub mod unet;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::schedule::ModelTime;
use crate::tensor::Tensor;

pub use crate::schedule::Prediction;

/// A model a solver evaluates: it owns an input and an output tensor of the sample shape; the
/// solver writes the input, calls [`Denoiser::run`], and reads the output — all on the GPU.
pub trait Denoiser {
    /// The input tensor [N, C, H, W] (VP scaling) the solver writes before each run.
    fn input(&self) -> &Tensor;
    /// The raw prediction [N, C, H, W], valid after `run`.
    fn output(&self) -> &Tensor;
    /// The parameterisation of `output`.
    fn prediction(&self) -> Prediction;
    /// Submits one evaluation at `time` (no readback).
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()>;

    /// A second prediction head (e.g. RDDM's noise head beside its residual head), valid after
    /// `run`; `None` for single-head models.
    fn aux_output(&self) -> Option<&Tensor> {
        None
    }
}

/// A model evaluated on the host in f64: the twin of [`Denoiser`] that the program interpreter
/// (`solvers::interpreter`) calls. It reads the model input and writes the raw prediction (in
/// the parameterisation the program was built for). Any
/// `FnMut(&[f64], ModelTime, &mut [f64])` is one.
pub trait HostDenoiser {
    /// Writes the prediction at `time` for `input` ([N, C, H, W] flat) into `output` (same
    /// length).
    fn run(&mut self, input: &[f64], time: ModelTime, output: &mut [f64]) -> Result<()>;

    /// The second head of a two-head model, valid after `run` (same length as the output);
    /// `None` for single-head models.
    fn aux_output(&self) -> Option<&[f64]> {
        None
    }
}

impl<F: FnMut(&[f64], ModelTime, &mut [f64])> HostDenoiser for F {
    fn run(&mut self, input: &[f64], time: ModelTime, output: &mut [f64]) -> Result<()> {
        self(input, time, output);
        Ok(())
    }
}
