//! Classifier-free guidance (Ho & Salimans, 2022) around a class-conditional UNet: one batched
//! forward of 2N samples (N conditional, N with the null label), combined as
//! ε̂ = (1 − w)·ε̂_uncond + w·ε̂_cond.

use super::{Denoiser, Prediction};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::unet_2d::UNetForward;
use crate::ops;
use crate::schedule::ModelTime;
use crate::tensor::Tensor;

pub struct GuidedUNet {
    forward: UNetForward,
    prediction: Prediction,
    labels: Vec<i64>,
    scale: f32,
    input: Tensor,
    uncond: Tensor,
    output: Tensor,
}

impl GuidedUNet {
    /// `forward` must be prepared for 2N samples; `labels` are the N conditional labels and
    /// `null_label` the unconditional one.
    pub fn new(
        gpu: &Gpu,
        forward: UNetForward,
        prediction: Prediction,
        labels: &[i64],
        null_label: i64,
        scale: f32,
    ) -> Result<Self> {
        let s = forward.sample.shape().to_vec();
        let n = labels.len();
        if s[0] != 2 * n {
            return Err(Error::Argument {
                op: "guidance",
                arg: "batch",
                reason: format!(
                    "the forward holds {} samples; guidance of {n} needs {}",
                    s[0],
                    2 * n
                ),
            });
        }
        let half = [n, s[1], s[2], s[3]];
        let bytes = (half.iter().product::<usize>() * forward.sample.dtype().size()) as u64;
        if bytes % 4 != 0 {
            return Err(Error::Argument {
                op: "guidance",
                arg: "batch",
                reason: format!("{n} samples of {:?} in {:?} are not a whole number of 4-byte words; use an even batch", &s[1..], forward.sample.dtype()),
            });
        }
        let mut all = labels.to_vec();
        all.extend(std::iter::repeat_n(null_label, n));
        let dt = forward.sample.dtype();
        Ok(GuidedUNet {
            input: Tensor::zeros(gpu, "guided.input", &half, dt)?,
            uncond: Tensor::zeros(gpu, "guided.uncond", &half, dt)?,
            output: Tensor::zeros(gpu, "guided.output", &half, dt)?,
            forward,
            prediction,
            labels: all,
            scale,
        })
    }
}

impl Denoiser for GuidedUNet {
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn output(&self) -> &Tensor {
        &self.output
    }
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        let bytes = self
            .input
            .storage_bytes()
            .min((self.input.numel() * self.input.dtype().size()) as u64);
        let (src, dst) = (self.input.allocation(), self.forward.sample.allocation());
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("cfg.in"),
            });
        enc.copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), 0, bytes);
        enc.copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), bytes, bytes);
        gpu.queue().submit([enc.finish()]);
        let n2 = self.labels.len();
        self.forward
            .run(gpu, &vec![time.t as f32; n2], Some(&self.labels))?;
        let out = self.forward.output.allocation();
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("cfg.out"),
            });
        enc.copy_buffer_to_buffer(out.buffer(), 0, self.output.allocation().buffer(), 0, bytes);
        enc.copy_buffer_to_buffer(
            out.buffer(),
            bytes,
            self.uncond.allocation().buffer(),
            0,
            bytes,
        );
        gpu.queue().submit([enc.finish()]);
        let w = self.scale;
        gpu.run(|rec| ops::elementwise::axpby(rec, 1.0 - w, &self.uncond, w, &self.output))
    }
}
