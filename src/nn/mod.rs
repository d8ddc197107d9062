//! Floor 3: network blocks named after diffusers, recorded into a [`Graph`] once per
//! (batch, resolution) and replayed each call.

pub mod attention;
pub mod autoencoder_kl;
pub mod classifier;
pub mod clip_text;
pub mod clip_transform;
pub mod clip_vision;
pub mod conditional_unet;
pub mod conditional_unet_blocks;
pub mod conditional_unet_config;
pub mod config;
pub mod daclip;
pub mod embeddings;
pub mod layers;
pub mod resnet;
pub mod transformer_2d;
pub mod unet_2d;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod unet_2d_condition_blocks;
pub mod unet_2d_condition_config;
pub mod vae;
pub mod vae_bands;
pub mod vae_config;
pub mod vae_tiling;

use crate::error::Result;
use crate::gpu::{Gpu, Recorder};
use crate::tensor::{DType, Tensor};

/// A forward pass being recorded. Blocks only allocate: every activation is planned by the
/// recorder from the dispatches that bind it (see [`crate::gpu::plan`]), so a buffer is reused
/// only after its last reader; the outputs named at [`Graph::finish`] keep their own storage.
pub struct Graph<'g> {
    pub rec: Recorder<'g>,
    pub dtype: DType,
    /// Multiply-add FLOPs (2 per MAC) of the GEMMs and convolutions recorded so far.
    pub flops: u64,
    /// Activation calibration (`pipeline::calibrate`): when set, every conv and linear layer
    /// also records max |input| per sample into an f32 [N] tensor, listed here with the
    /// layer's checkpoint prefix in recording order.
    pub observe: Option<Vec<(String, Tensor)>>,
    /// With `observe`: keep a copy of every layer input itself (model dtype) instead of its
    /// max |x| (the MSE range search of `pipeline::calibrate` needs the values).
    pub observe_values: bool,
}

impl<'g> Graph<'g> {
    pub fn new(gpu: &'g Gpu, dtype: DType) -> Self {
        Graph {
            rec: gpu.recorder(),
            dtype,
            flops: 0,
            observe: None,
            observe_values: false,
        }
    }

    /// Records max |x| per sample of the input `x` of layer `layer` when observing (see
    /// [`Graph::observe`]); nothing otherwise.
    pub fn observe_input(&mut self, layer: &str, x: &Tensor) -> Result<()> {
        if self.observe.is_none() {
            return Ok(());
        }
        let t = if self.observe_values {
            let t = Tensor::zeros(
                self.rec.gpu(),
                &format!("{layer}.input"),
                x.shape(),
                x.dtype(),
            )?;
            let copy = crate::ops::elementwise::Unary::Affine {
                alpha: 1.0,
                beta: 0.0,
            };
            crate::ops::elementwise::unary(&mut self.rec, copy, x, &t)?;
            t
        } else {
            let n = x.shape()[0];
            let t = Tensor::zeros(
                self.rec.gpu(),
                &format!("{layer}.input_absmax"),
                &[n],
                DType::F32,
            )?;
            crate::ops::reduce::reduce(&mut self.rec, crate::ops::reduce::Reduce::AbsMax, x, &t)?;
            t
        };
        if let Some(o) = self.observe.as_mut() {
            o.push((layer.to_string(), t));
        }
        Ok(())
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.rec.gpu()
    }

    /// An activation of the graph's dtype.
    pub fn alloc(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.alloc_dtype(name, shape, self.dtype)
    }

    /// [`Graph::alloc`] with an explicit dtype.
    pub fn alloc_dtype(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::activation(&mut self.rec, name, shape, dtype)
    }

    /// Plans the activations and finishes the recording; `outputs` outlive it (the host and
    /// other recordings may read them), every other activation is private to it.
    pub fn finish(mut self, outputs: &[&Tensor]) -> Result<crate::gpu::Recording> {
        for t in outputs {
            self.rec.output(&t.allocation())?;
        }
        self.rec.finish()
    }
}
