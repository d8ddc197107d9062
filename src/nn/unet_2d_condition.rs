//! `UNet2DConditionModel` of diffusers (`models/unets/unet_2d_condition.py`), the denoiser of
//! Latent Diffusion / Stable Diffusion 1.x and 2.x (Rombach et al., 2022): a UNet whose
//! attention blocks are spatial transformers attending to text states. Loaded from an
//! unmodified diffusers folder; its forward is recorded once per (batch, height, width, text
//! length) as a [`UNetConditionForward`] and replayed with only the inputs changing.

use super::embeddings::Conditioning;
use super::layers::{Conv2d, GroupNorm, Loader};
use super::resnet::ResnetOptions;
use super::transformer_2d::TransformerOptions;
use super::unet_2d_blocks::{DownBlock, UpBlock};
use super::unet_2d_condition_blocks::{CrossAttnDownBlock, CrossAttnUpBlock, MidBlockCrossAttn};
use super::unet_2d_condition_config::{
    CrossDownBlockType, CrossUpBlockType, UNet2DConditionConfig,
};
use super::Graph;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::load::{self, WeightSource, Weights};
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// Text length of the SD pipelines' prompt embeddings (CLIP's 77 positions).
pub const TEXT_LEN: usize = 77;

enum Down {
    Cross(Box<CrossAttnDownBlock>),
    Plain(Box<DownBlock>),
}

enum Up {
    Cross(Box<CrossAttnUpBlock>),
    Plain(Box<UpBlock>),
}

/// A loaded UNet2DConditionModel: config plus weights on the GPU.
pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    pub dtype: DType,
    conditioning: Conditioning,
    conv_in: Conv2d,
    down: Vec<Down>,
    mid: Option<MidBlockCrossAttn>,
    up: Vec<Up>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Bytes of the weight tensors on the GPU (on CPU adapters convs also keep a packed copy).
    pub weight_bytes: u64,
}

fn same(k: usize) -> Conv2dArgs {
    Conv2dArgs {
        stride: 1,
        padding: (k - 1) / 2,
        extra_end: 0,
    }
}

impl UNet2DConditionModel {
    /// Loads a diffusers model folder (or the `unet/` subfolder of a pipeline folder).
    pub fn from_dir(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Self> {
        let dir = load::resolve_model_dir(dir, "unet")?;
        let config = UNet2DConditionConfig::from_file(&dir.join(load::CONFIG))?;
        let weights = Weights::open(&dir.join(load::WEIGHTS))?;
        let model = Self::load(gpu, config, &weights, dtype)?;
        weights.check_all_used()?;
        Ok(model)
    }

    /// Builds the model from a parsed config and a weight source (a checkpoint, or
    /// [`load::RandomWeights`]).
    pub fn load(
        gpu: &Gpu,
        config: UNet2DConditionConfig,
        weights: &dyn WeightSource,
        dtype: DType,
    ) -> Result<Self> {
        let l = Loader::new(gpu, weights, dtype);
        let cfg = &config;
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let opts = ResnetOptions {
            groups: cfg.norm_num_groups,
            groups_out: cfg.norm_num_groups,
            force_shortcut: false,
            eps: cfg.norm_eps,
            temb_channels: cfg.time_embed_dim(),
            scale_shift: false,
            output_scale_factor: 1.0,
        };
        let topts = |i: usize| TransformerOptions {
            heads: cfg.num_attention_heads[i],
            layers: cfg.transformer_layers_per_block[i],
            cross_attention_dim: cfg.cross_attention_dim,
            groups: cfg.norm_num_groups,
            use_linear_projection: cfg.use_linear_projection,
        };
        let conditioning = Conditioning::positional(
            &l,
            boc[0],
            cfg.time_embed_dim(),
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        )?;
        let conv_in = l.conv(
            "conv_in",
            cfg.in_channels,
            boc[0],
            cfg.conv_in_kernel,
            same(cfg.conv_in_kernel),
        )?;
        let mut down = Vec::new();
        let mut cout = boc[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let cin = cout;
            cout = boc[i];
            let last = i == n - 1;
            let prefix = format!("down_blocks.{i}");
            let layers = cfg.layers_per_block[i];
            down.push(match kind {
                CrossDownBlockType::CrossAttnDownBlock2D => {
                    Down::Cross(Box::new(CrossAttnDownBlock::load(
                        &l,
                        &prefix,
                        cin,
                        cout,
                        layers,
                        topts(i),
                        (!last).then_some(cfg.downsample_padding),
                        opts,
                    )?))
                }
                CrossDownBlockType::DownBlock2D => Down::Plain(Box::new(DownBlock::load(
                    &l,
                    &prefix,
                    cin,
                    cout,
                    layers,
                    None,
                    (!last).then_some((super::config::Resample::Conv, cfg.downsample_padding)),
                    opts,
                )?)),
            });
        }
        let mid = if cfg.mid_block {
            let mid_opts = ResnetOptions {
                output_scale_factor: cfg.mid_block_scale_factor,
                ..opts
            };
            Some(MidBlockCrossAttn::load(
                &l,
                boc[n - 1],
                topts(n - 1),
                mid_opts,
            )?)
        } else {
            None
        };
        let mut up = Vec::new();
        let mut out_c = boc[n - 1];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            // The up path walks the per-block lists reversed.
            let r = n - 1 - i;
            let prev = out_c;
            out_c = boc[r];
            let cin = boc[r.saturating_sub(1)];
            let last = i == n - 1;
            let prefix = format!("up_blocks.{i}");
            let layers = cfg.layers_per_block[r] + 1;
            up.push(match kind {
                CrossUpBlockType::CrossAttnUpBlock2D => {
                    Up::Cross(Box::new(CrossAttnUpBlock::load(
                        &l,
                        &prefix,
                        cin,
                        out_c,
                        prev,
                        layers,
                        topts(r),
                        !last,
                        opts,
                    )?))
                }
                CrossUpBlockType::UpBlock2D => Up::Plain(Box::new(UpBlock::load(
                    &l,
                    &prefix,
                    cin,
                    out_c,
                    prev,
                    layers,
                    None,
                    (!last).then_some(super::config::Resample::Conv),
                    opts,
                )?)),
            });
        }
        let conv_norm_out =
            l.group_norm("conv_norm_out", boc[0], cfg.norm_num_groups, cfg.norm_eps)?;
        let conv_out = l.conv(
            "conv_out",
            boc[0],
            cfg.out_channels,
            cfg.conv_out_kernel,
            same(cfg.conv_out_kernel),
        )?;
        Ok(UNet2DConditionModel {
            config,
            dtype,
            conditioning,
            conv_in,
            down,
            mid,
            up,
            conv_norm_out,
            conv_out,
            weight_bytes: l.bytes.get(),
        })
    }

    /// Records the forward for `batch` samples of `height`×`width` latents attending to
    /// [`TEXT_LEN`] text states.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<UNetConditionForward> {
        self.prepare_text_len(gpu, batch, height, width, TEXT_LEN)
    }

    /// [`UNet2DConditionModel::prepare`] with `text_len` text states per sample.
    pub fn prepare_text_len(
        &self,
        gpu: &Gpu,
        batch: usize,
        height: usize,
        width: usize,
        text_len: usize,
    ) -> Result<UNetConditionForward> {
        const OP: &str = "UNet2DConditionModel";
        let cfg = &self.config;
        let levels = cfg.block_out_channels.len() as u32 - 1;
        let div = 1usize << levels;
        if batch == 0 {
            return Err(Error::Argument {
                op: OP,
                arg: "batch",
                reason: "must be at least 1 (the input is an empty batch)".into(),
            });
        }
        if text_len == 0 {
            return Err(Error::Argument {
                op: OP,
                arg: "encoder_hidden_states",
                reason: "needs at least one text state per sample".into(),
            });
        }
        if height == 0 || width == 0 || height % div != 0 || width % div != 0 {
            return Err(Error::Argument {
                op: OP,
                arg: "sample size",
                reason: format!(
                    "{batch}×{height}×{width} latents do not fit a UNet with {} resolution levels (height and width must be positive multiples of {div})",
                    levels + 1
                ),
            });
        }
        let sample = Tensor::zeros(
            gpu,
            "sample",
            &[batch, cfg.in_channels, height, width],
            self.dtype,
        )?;
        let timesteps = Tensor::zeros(gpu, "timestep", &[batch], DType::F32)?;
        let context = Tensor::zeros(
            gpu,
            "encoder_hidden_states",
            &[batch, text_len, cfg.cross_attention_dim],
            self.dtype,
        )?;
        let mut g = Graph::new(gpu, self.dtype);
        let temb = self.conditioning.forward(&mut g, &timesteps, None)?;
        let input = if cfg.center_input_sample {
            let c = g.alloc("centered", sample.shape())?;
            let op = ops::elementwise::Unary::Affine {
                alpha: 2.0,
                beta: -1.0,
            };
            ops::elementwise::unary(&mut g.rec, op, &sample, &c)?;
            c
        } else {
            sample.clone()
        };
        let mut h = self.conv_in.forward(&mut g, &input, "conv_in")?;
        let mut skips = vec![h.clone()];
        for d in &self.down {
            h = match d {
                Down::Cross(b) => b.forward(&mut g, h, &temb, &context, &mut skips)?,
                Down::Plain(b) => b.forward(&mut g, h, &temb, &mut skips)?,
            };
        }
        if let Some(m) = &self.mid {
            h = m.forward(&mut g, &h, &temb, &context)?;
        }
        for u in &self.up {
            h = match u {
                Up::Cross(b) => b.forward(&mut g, h, &temb, &context, &mut skips)?,
                Up::Plain(b) => b.forward(&mut g, h, &temb, &mut skips)?,
            };
        }
        let nrm = self
            .conv_norm_out
            .forward(&mut g, &h, true, "conv_norm_out")?;
        let output = self.conv_out.forward(&mut g, &nrm, "conv_out")?;
        let flops = g.flops;
        let recording = g.finish(&[&output])?;
        Ok(UNetConditionForward {
            activation_bytes: recording.activation_bytes(),
            recording,
            sample,
            timesteps,
            encoder_hidden_states: context,
            output,
            flops,
        })
    }
}

/// A recorded forward: write the inputs, submit, read or chain the output.
pub struct UNetConditionForward {
    recording: Recording,
    /// Input latents [N, C_in, H, W] in the model dtype.
    pub sample: Tensor,
    /// f32 [N].
    pub timesteps: Tensor,
    /// Text states [N, L, cross_attention_dim] in the model dtype.
    pub encoder_hidden_states: Tensor,
    /// Output [N, C_out, H, W] in the model dtype (valid after [`UNetConditionForward::run`]).
    pub output: Tensor,
    /// Bytes of activation buffers the recording holds.
    pub activation_bytes: u64,
    /// FLOPs of one forward (GEMMs, convolutions and attention products, 2 per multiply-add).
    pub flops: u64,
}

impl UNetConditionForward {
    /// Sets the time and submits the recorded forward on the current `sample` and
    /// `encoder_hidden_states`.
    pub fn run(&self, gpu: &Gpu, timesteps: &[f32]) -> Result<()> {
        let n = self.sample.shape()[0];
        if timesteps.len() != n {
            return Err(Error::HostLength {
                tensor: "timestep".into(),
                got: timesteps.len(),
                want: n,
                shape: vec![n],
            });
        }
        self.timesteps.write_f32(gpu, timesteps)?;
        self.recording.submit(gpu);
        Ok(())
    }

    /// Convenience: upload `sample` and `encoder_hidden_states` (f32 host values), run, and
    /// download the output as f32.
    pub fn forward_host(
        &self,
        gpu: &Gpu,
        sample: &[f32],
        timesteps: &[f32],
        encoder_hidden_states: &[f32],
    ) -> Result<Vec<f32>> {
        self.sample.write_f32(gpu, sample)?;
        self.encoder_hidden_states
            .write_f32(gpu, encoder_hidden_states)?;
        self.run(gpu, timesteps)?;
        self.output.to_vec_f32(gpu)
    }

    /// Runs the forward once on the current inputs with a GPU timestamp per dispatch (the
    /// time must have been set by a previous [`UNetConditionForward::run`]).
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<crate::gpu::DispatchTime>> {
        self.recording.profile(gpu)
    }

    /// Number of recorded dispatches.
    pub fn dispatches(&self) -> usize {
        self.recording.len()
    }
}
