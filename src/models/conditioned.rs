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
    /// Two-head models: the forward's output split into (head 0, head 1) after each run.
    heads: Option<(Tensor, Tensor, Recording)>,
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
            heads: None,
        })
    }

    /// Treats the output [N, 2C, H, W] as two heads of C channels each ([`Denoiser::output`] is
    /// the first, [`Denoiser::aux_output`] the second).
    pub fn two_heads(mut self, gpu: &Gpu) -> Result<Self> {
        let s = self.forward.output.shape().to_vec();
        let c = self.input.shape()[1];
        if s[1] != 2 * c {
            return Err(Error::Shape {
                op: "two-head model",
                tensor: "output".into(),
                got: s,
                expected: format!("{} channels (two heads of {c})", 2 * c),
            });
        }
        let dt = self.forward.output.dtype();
        let h0 = Tensor::zeros(gpu, "head0", &[s[0], c, s[2], s[3]], dt)?;
        let h1 = Tensor::zeros(gpu, "head1", &[s[0], c, s[2], s[3]], dt)?;
        let mut rec = gpu.recorder();
        ops::concat::slice_channels(&mut rec, &self.forward.output, 0, &h0)?;
        ops::concat::slice_channels(&mut rec, &self.forward.output, c, &h1)?;
        self.heads = Some((h0, h1, rec.finish()?));
        Ok(self)
    }
}

impl Denoiser for ConditionedUNet {
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn output(&self) -> &Tensor {
        match &self.heads {
            Some((h0, _, _)) => h0,
            None => &self.forward.output,
        }
    }
    fn aux_output(&self) -> Option<&Tensor> {
        self.heads.as_ref().map(|h| &h.1)
    }
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        self.concat.submit(gpu);
        let n = self.input.shape()[0];
        self.forward.run(gpu, &vec![time.t as f32; n], None)?;
        if let Some((_, _, split)) = &self.heads {
            split.submit(gpu);
        }
        Ok(())
    }
}
