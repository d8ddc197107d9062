//! Classifier-free guidance (Ho & Salimans, 2022) around a class-conditional UNet: one batched
//! forward of 2N samples (N conditional, N with the null label), combined as
//! ε̂ = (1 − w)·ε̂_uncond + w·ε̂_cond.

use super::{Denoiser, Prediction};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::nn::unet_2d::UNetForward;
use crate::ops;
use crate::schedule::ModelTime;
use crate::tensor::Tensor;

pub struct GuidedUNet {
    forward: UNetForward,
    prediction: Prediction,
    labels: Vec<i64>,
    input: Tensor,
    output: Tensor,
    /// The input written into both halves of the forward's batch.
    before: Recording,
    /// The two halves of the forward's output combined into `output`.
    after: Recording,
    _uncond: Tensor,
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
        let s = forward.sample.shape().to_vec();
        let n = labels.len();
        if n == 0 || s[0] != 2 * n {
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
        let dt = forward.sample.dtype();
        let input = Tensor::zeros(gpu, "guided.input", &half, dt)?;
        let uncond = Tensor::zeros(gpu, "guided.uncond", &half, dt)?;
        let output = Tensor::zeros(gpu, "guided.output", &half, dt)?;
        // The batch halves as channel blocks of one sample: [2N, C, H, W] = [1, 2·N·C, H, W].
        let planes = |t: &Tensor, c: usize| t.reshape(&[1, c * s[1], s[2], s[3]]);
        let before = {
            let mut rec = gpu.recorder();
            let x = planes(&input, n)?;
            ops::concat::concat_channels(&mut rec, &x, &x, &planes(&forward.sample, 2 * n)?)?;
            rec.finish()?
        };
        let after = {
            let mut rec = gpu.recorder();
            let out = planes(&forward.output, 2 * n)?;
            ops::concat::slice_channels(&mut rec, &out, 0, &planes(&output, n)?)?;
            ops::concat::slice_channels(&mut rec, &out, n * s[1], &planes(&uncond, n)?)?;
            ops::elementwise::axpby(&mut rec, 1.0 - scale, &uncond, scale, &output)?;
            rec.finish()?
        };
        let mut all = labels.to_vec();
        all.extend(std::iter::repeat_n(null_label, n));
        Ok(GuidedUNet {
            input,
            output,
            before,
            after,
            _uncond: uncond,
            forward,
            prediction,
            labels: all,
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
        self.before.submit(gpu);
        let n2 = self.labels.len();
        self.forward
            .run(gpu, &vec![time.t as f32; n2], Some(&self.labels))?;
        self.after.submit(gpu);
        Ok(())
    }
}
