//! A UNet conditioned by channel concatenation (`in_channels = C_x + C_μ`): the solver sees an
//! input of the sample's channels; each run concatenates the condition μ behind it (recorded
//! once) before the recorded forward.

use super::{Denoiser, Prediction};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::nn::unet_2d::UNetForward;
use crate::ops;
use crate::schedule::ModelTime;
use crate::tensor::Tensor;

pub struct ConditionedUNet {
    forward: UNetForward,
    prediction: Prediction,
    input: Tensor,
    concat: Recording,
}

impl ConditionedUNet {
    /// `cond` is μ [N, C_μ, H, W] in the model's dtype; the forward must take C_x + C_μ channels.
    pub fn new(
        gpu: &Gpu,
        forward: UNetForward,
        prediction: Prediction,
        cond: &Tensor,
    ) -> Result<Self> {
        let s = forward.sample.shape().to_vec();
        let c = cond.shape();
        if c.len() != 4 || c[0] != s[0] || c[2] != s[2] || c[3] != s[3] || c[1] >= s[1] {
            return Err(Error::Shape {
                op: "conditioned model",
                tensor: cond.name().into(),
                got: c.to_vec(),
                expected: format!(
                    "[{}, C_μ < {}, {}, {}] to concatenate into the model's {:?} input",
                    s[0], s[1], s[2], s[3], s
                ),
            });
        }
        let input = Tensor::zeros(
            gpu,
            "x",
            &[s[0], s[1] - c[1], s[2], s[3]],
            forward.sample.dtype(),
        )?;
        let mut rec = gpu.recorder();
        ops::concat::concat_channels(&mut rec, &input, cond, &forward.sample)?;
        let concat = rec.finish()?;
        Ok(ConditionedUNet {
            forward,
            prediction,
            input,
            concat,
        })
    }
}

impl Denoiser for ConditionedUNet {
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn output(&self) -> &Tensor {
        &self.forward.output
    }
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        self.concat.submit(gpu);
        let n = self.input.shape()[0];
        self.forward.run(gpu, &vec![time.t as f32; n], None)
    }
}
