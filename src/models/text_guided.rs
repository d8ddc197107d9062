//! A text-conditioned UNet (`UNet2DConditionModel`) as a [`Denoiser`], with classifier-free
//! guidance as diffusers' `StableDiffusionPipeline` does it: one 2N-sample forward whose text
//! states are the N prompts' and the N negative prompts', combined with guidance scale w
//! ([`super::cfg`]); without guidance (w ≤ 1 in diffusers) one N-sample forward on the prompts.

use super::cfg::CfgHalves;
use super::{Denoiser, Prediction};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::unet_2d_condition::UNetConditionForward;
use crate::schedule::ModelTime;
use crate::tensor::Tensor;

pub struct TextGuidedUNet {
    forward: UNetConditionForward,
    prediction: Prediction,
    /// The guidance plumbing; `None` runs the forward on the prompts alone.
    halves: Option<CfgHalves>,
    rows: usize,
}

impl TextGuidedUNet {
    /// `text_states` are written into the forward once: [N, L, D] (no guidance) or [2N, L, D]
    /// with the N prompts first and the N negative prompts second (guidance `Some(w)`); the
    /// forward must be prepared for as many samples.
    pub fn new(
        gpu: &Gpu,
        forward: UNetConditionForward,
        prediction: Prediction,
        text_states: &[f32],
        guidance: Option<f32>,
    ) -> Result<Self> {
        let rows = forward.sample.shape()[0];
        let ctx = forward.encoder_hidden_states.numel();
        if text_states.len() != ctx {
            return Err(Error::HostLength {
                tensor: "encoder_hidden_states".into(),
                got: text_states.len(),
                want: ctx,
                shape: forward.encoder_hidden_states.shape().to_vec(),
            });
        }
        forward.encoder_hidden_states.write_f32(gpu, text_states)?;
        let halves = match guidance {
            Some(w) => Some(CfgHalves::new(
                gpu,
                "guidance",
                &forward.sample,
                &forward.output,
                rows / 2,
                w,
            )?),
            None => None,
        };
        Ok(TextGuidedUNet {
            forward,
            prediction,
            halves,
            rows,
        })
    }
}

impl Denoiser for TextGuidedUNet {
    fn input(&self) -> &Tensor {
        match &self.halves {
            Some(h) => &h.input,
            None => &self.forward.sample,
        }
    }
    fn output(&self) -> &Tensor {
        match &self.halves {
            Some(h) => &h.output,
            None => &self.forward.output,
        }
    }
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        if let Some(h) = &self.halves {
            h.copy_in(gpu);
        }
        self.forward.run(gpu, &vec![time.t as f32; self.rows])?;
        if let Some(h) = &self.halves {
            h.combine(gpu);
        }
        Ok(())
    }
}
