//! What a solver can call: the denoiser trait, its parameterisations, and the backends — the
//! recorded UNet2DModel and closed-form Gaussian-mixture models.

pub mod analytic;
pub mod guided;
pub mod unet;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::solvers::program::ModelTime;
use crate::tensor::Tensor;

/// What the network predicts (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// ε (noise).
    Epsilon,
    /// x0 (`sample`).
    Sample,
    /// v = α·ε − σ·x0 (`v_prediction`).
    VPrediction,
    /// Rectified-flow velocity v = ε − x0 (`flow_prediction`), for x = (1 − σ)·x0 + σ·ε.
    Flow,
    /// The score ∇ log p(x_in) of the model-input marginal, −ε/σ (Score-SDE models).
    Score,
}

impl std::str::FromStr for Prediction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "epsilon" => Ok(Prediction::Epsilon),
            "sample" => Ok(Prediction::Sample),
            "v_prediction" => Ok(Prediction::VPrediction),
            "flow_prediction" => Ok(Prediction::Flow),
            "score" => Ok(Prediction::Score),
            o => Err(format!(
                "unknown prediction_type `{o}` (epsilon, sample, v_prediction, flow_prediction)"
            )),
        }
    }
}

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
}
