//! The recorded UNet2DModel forward as a [`Denoiser`], with optional class labels.

use super::{Denoiser, Prediction};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::nn::unet_2d::UNetForward;
use crate::schedule::ModelTime;
use crate::tensor::Tensor;

/// A UNet forward plus the prediction type its scheduler config declares.
pub struct UNetDenoiser {
    pub forward: UNetForward,
    pub prediction: Prediction,
    /// Class labels per sample for class-conditional models.
    pub labels: Option<Vec<i64>>,
}

impl Denoiser for UNetDenoiser {
    fn input(&self) -> &Tensor {
        &self.forward.sample
    }
    fn output(&self) -> &Tensor {
        &self.forward.output
    }
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        let n = self.forward.sample.shape()[0];
        self.forward
            .run(gpu, &vec![time.t as f32; n], self.labels.as_deref())
    }
}
