//! The DA-CLIP restoration network (`nn::conditional_unet`) as a [`Denoiser`] for the
//! restoration samplers: the condition μ and the two DA-CLIP contexts are written once, the
//! solver writes x_t into [`Denoiser::input`] and reads the noise prediction.
//!
//! Time and output, as the official MR Sampler calls the network (grrrute/mr-sampler,
//! `universal-image-restoration/utils/sampler.py`: `convert_params` replaces `IRSDE.score_fn`
//! by `noise_fn`, which calls `model(x, μ, t)` with the sampler's float timestep
//! `self.timesteps[i]`): the network receives [`ModelTime::t`] — the process's own time in
//! [0, T], continuous — unchanged, the same for every sample; its output is ε of the
//! mean-reverting marginal x_t = μ + α_t·(x0 − μ) + σ_t·ε (α_t = e^{−θ̄_t·dt}, σ_t = σ̄_t), i.e.
//! [`Prediction::Epsilon`], which the official sampler turns into x0 with
//! (x − σ·ε)/α − (1 − α)/α·μ (`fit_target: noise`).

use super::{Denoiser, Prediction};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::conditional_unet::{write_context, ConditionalUNetForward};
use crate::schedule::ModelTime;
use crate::tensor::Tensor;

/// A recorded ConditionalUNet forward with μ and the contexts in place.
pub struct DaclipUNet {
    forward: ConditionalUNetForward,
}

impl DaclipUNet {
    /// `cond`: μ [N, in_nc, H, W] (the degraded image, on the network's [0, 1] scale);
    /// `text_context`: the degradation features [N, context_dim] (DA-CLIP's `degra_features`);
    /// `image_context`: the image features [N, context_dim]. Each context must be given
    /// exactly when `forward` was recorded with it ([`crate::nn::conditional_unet::ConditionalUNet::prepare`]).
    pub fn new(
        gpu: &Gpu,
        forward: ConditionalUNetForward,
        cond: &[f32],
        text_context: Option<&[f32]>,
        image_context: Option<&[f32]>,
    ) -> Result<Self> {
        if let Some(i) = cond.iter().position(|v| !v.is_finite()) {
            return Err(Error::Argument {
                op: "DaclipUNet",
                arg: "cond",
                reason: format!("non-finite value at flat index {i}"),
            });
        }
        for (name, c) in [
            ("text_context", text_context),
            ("image_context", image_context),
        ] {
            if let Some(i) = c.and_then(|c| c.iter().position(|v| !v.is_finite())) {
                return Err(Error::Argument {
                    op: "DaclipUNet",
                    arg: name,
                    reason: format!("non-finite value at flat index {i}"),
                });
            }
        }
        forward.cond.write_f32(gpu, cond)?;
        write_context(
            gpu,
            "text_context",
            forward.text_context.as_ref(),
            text_context,
        )?;
        write_context(
            gpu,
            "image_context",
            forward.image_context.as_ref(),
            image_context,
        )?;
        Ok(DaclipUNet { forward })
    }

    /// [`DaclipUNet::new`] from tensors of any dtype (e.g. the DA-CLIP encoder's outputs); they
    /// are read back once (μ is one image, a context N·context_dim values).
    pub fn from_tensors(
        gpu: &Gpu,
        forward: ConditionalUNetForward,
        cond: &Tensor,
        text_context: Option<&Tensor>,
        image_context: Option<&Tensor>,
    ) -> Result<Self> {
        let host = |t: Option<&Tensor>| t.map(|t| t.to_vec_f32(gpu)).transpose();
        let (c, t, i) = (
            cond.to_vec_f32(gpu)?,
            host(text_context)?,
            host(image_context)?,
        );
        Self::new(gpu, forward, &c, t.as_deref(), i.as_deref())
    }

    /// The recorded forward (its activation bytes, FLOPs, dispatches).
    pub fn forward(&self) -> &ConditionalUNetForward {
        &self.forward
    }
}

impl Denoiser for DaclipUNet {
    fn input(&self) -> &Tensor {
        &self.forward.xt
    }
    fn output(&self) -> &Tensor {
        &self.forward.output
    }
    fn prediction(&self) -> Prediction {
        Prediction::Epsilon
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        let n = self.forward.xt.shape()[0];
        self.forward.run(gpu, &vec![time.t as f32; n])
    }
}
