//! What a solver can call: the denoiser trait, its parameterisations, and the backends — the
//! recorded UNet2DModel and closed-form Gaussian-mixture models.

pub mod analytic;
pub mod conditioned;
pub mod guided;
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
