//! Classifier-free guidance (Ho & Salimans, 2022) around a class-conditional UNet: one batched
//! forward of 2N samples (N conditional, N with the null label), combined as
//! ε̂ = (1 − w)·ε̂_uncond + w·ε̂_cond.

use super::cfg::CfgHalves;
use super::{Denoiser, Prediction};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::nn::unet_2d::UNetForward;
use crate::schedule::ModelTime;
use crate::tensor::Tensor;

pub struct GuidedUNet {
    forward: UNetForward,
    prediction: Prediction,
    labels: Vec<i64>,
    halves: CfgHalves,
}

impl GuidedUNet {
    /// `forward` must be prepared for 2N samples; `labels` are the N conditional labels and
    /// `null_label` the unconditional one. The copies in and the combination out are
    /// recorded once.
    pub fn new(
        gpu: &Gpu,
        forward: UNetForward,
        prediction: Prediction,
        labels: &[i64],
        null_label: i64,
        scale: f32,
    ) -> Result<Self> {
        let n = labels.len();
        let halves = CfgHalves::new(gpu, "guidance", &forward.sample, &forward.output, n, scale)?;
        let mut all = labels.to_vec();
        all.extend(std::iter::repeat_n(null_label, n));
        Ok(GuidedUNet {
            halves,
            forward,
            prediction,
            labels: all,
        })
    }
}

impl Denoiser for GuidedUNet {
    fn input(&self) -> &Tensor {
        &self.halves.input
    }
    fn output(&self) -> &Tensor {
        &self.halves.output
    }
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        self.halves.copy_in(gpu);
        let n2 = self.labels.len();
        self.forward
            .run(gpu, &vec![time.t as f32; n2], Some(&self.labels))?;
        self.halves.combine(gpu);
        Ok(())
    }
}
