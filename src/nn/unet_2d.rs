//! `UNet2DModel` of diffusers (`models/unets/unet_2d.py`; Ho et al., DDPM 2020; Song et al.,
//! Score SDE 2021): loaded from an unmodified diffusers folder, its forward recorded once per
//! (batch, height, width) as a [`UNetForward`] and replayed with only the inputs changing.

use super::config::{TimeEmbeddingType, UNet2DConfig};
use super::embeddings::Conditioning;
use super::layers::{Conv2d, GroupNorm, Loader};
use super::resnet::ResnetOptions;
use super::unet_2d_blocks::{
    AttnOptions, DownBlock, MidBlock, SkipDownBlock, SkipOptions, SkipUpBlock, UpBlock,
};
use super::Graph;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::load::{self, WeightSource, Weights};
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;
use crate::tensor::{DType, Tensor};
use std::path::Path;

enum AnyDownBlock {
    Plain(Box<DownBlock>),
    Skip(Box<SkipDownBlock>),
}

enum AnyUpBlock {
    Plain(Box<UpBlock>),
    Skip(Box<SkipUpBlock>),
}

/// Per-layer input statistics of an observed forward: (layer prefix, f32 [batch]).
pub type Observed = Vec<(String, Tensor)>;

/// A loaded UNet2DModel: config plus weights on the GPU.
pub struct UNet2DModel {
    pub config: UNet2DConfig,
    pub dtype: DType,
    conditioning: Conditioning,
    conv_in: Conv2d,
    down: Vec<AnyDownBlock>,
    mid: Option<MidBlock>,
    up: Vec<AnyUpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Bytes of the weight tensors on the GPU (int8 weights and their scales for a quantized
    /// folder; on CPU adapters float convs also keep a packed copy).
    pub weight_bytes: u64,
}

impl UNet2DModel {
    /// Loads a diffusers model folder (or the `unet/` subfolder of a pipeline folder).
    pub fn from_dir(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Self> {
        let dir = load::resolve_model_dir(dir, "unet")?;
        let config = UNet2DConfig::from_file(&dir.join(load::CONFIG))?;
        let quant = load::quant::QuantConfig::from_dir(&dir)?;
        let weights = Weights::open(&dir.join(load::WEIGHTS))?.with_quantization(quant);
        let model = Self::load(gpu, config, &weights, dtype)?;
        weights.check_all_used()?;
        Ok(model)
    }

    /// Builds the model from a parsed config and an opened checkpoint.
    pub fn load(
        gpu: &Gpu,
        config: UNet2DConfig,
        weights: &dyn WeightSource,
        dtype: DType,
    ) -> Result<Self> {
        let l = Loader::new(gpu, weights, dtype);
        let cfg = &config;
        let boc = &cfg.block_out_channels;
        let same = Conv2dArgs {
            stride: 1,
            padding: 1,
            extra_end: 0,
        };
        let plain_groups = cfg.norm_num_groups.unwrap_or(1);
        let opts = ResnetOptions {
            groups: plain_groups,
            groups_out: plain_groups,
            force_shortcut: false,
            eps: cfg.norm_eps,
            temb_channels: cfg.time_embed_dim(),
            scale_shift: cfg.scale_shift,
            output_scale_factor: 1.0,
        };
        let conditioning = Conditioning::load(&l, cfg)?;
        let conv_in = l.conv("conv_in", cfg.in_channels, boc[0], 3, same)?;
        let nblocks = boc.len();
        let mut down = Vec::new();
        let mut cout = boc[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let cin = cout;
            cout = boc[i];
            let last = i == nblocks - 1;
            if kind.is_skip() {
                let so = SkipOptions {
                    eps: cfg.norm_eps,
                    temb_channels: cfg.time_embed_dim(),
                    scale_shift: cfg.scale_shift,
                    dim_head: kind.has_attention().then(|| cfg.head_dim(cout)),
                };
                let b = SkipDownBlock::load(
                    &l,
                    &format!("down_blocks.{i}"),
                    cin,
                    cout,
                    cfg.layers_per_block,
                    !last,
                    so,
                )?;
                down.push(AnyDownBlock::Skip(Box::new(b)));
                continue;
            }
            let attn = kind.has_attention().then_some(AttnOptions {
                dim_head: cfg.head_dim(cout),
                groups: Some(plain_groups),
                eps: cfg.norm_eps,
            });
            // DownBlock2D always downsamples by conv; AttnDownBlock2D by `downsample_type`.
            let resample = if kind.has_attention() {
                cfg.downsample_type
            } else {
                super::config::Resample::Conv
            };
            let d = (!last).then_some((resample, cfg.downsample_padding));
            let b = DownBlock::load(
                &l,
                &format!("down_blocks.{i}"),
                cin,
                cout,
                cfg.layers_per_block,
                attn,
                d,
                opts,
            )?;
            down.push(AnyDownBlock::Plain(Box::new(b)));
        }
        let c_last = boc[nblocks - 1];
        let mid = if cfg.mid_block {
            let mg = cfg.groups_for(c_last);
            let groups = cfg
                .attn_norm_num_groups
                .or((!cfg.scale_shift).then_some(mg));
            let attn = cfg.add_attention.then_some(AttnOptions {
                dim_head: cfg.head_dim(c_last),
                groups,
                eps: cfg.norm_eps,
            });
            let mid_opts = ResnetOptions {
                output_scale_factor: cfg.mid_block_scale_factor,
                groups: mg,
                groups_out: mg,
                ..opts
            };
            Some(MidBlock::load(&l, c_last, attn, mid_opts)?)
        } else {
            None
        };
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut out_c = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let prev = out_c;
            out_c = rev[i];
            let cin = rev[(i + 1).min(nblocks - 1)];
            let last = i == nblocks - 1;
            if kind.is_skip() {
                let so = SkipOptions {
                    eps: cfg.norm_eps,
                    temb_channels: cfg.time_embed_dim(),
                    scale_shift: cfg.scale_shift,
                    dim_head: kind.has_attention().then(|| cfg.head_dim(out_c)),
                };
                let b = SkipUpBlock::load(
                    &l,
                    &format!("up_blocks.{i}"),
                    cin,
                    out_c,
                    prev,
                    cfg.layers_per_block + 1,
                    !last,
                    so,
                )?;
                up.push(AnyUpBlock::Skip(Box::new(b)));
                continue;
            }
            let attn = kind.has_attention().then_some(AttnOptions {
                dim_head: cfg.head_dim(out_c),
                groups: Some(plain_groups),
                eps: cfg.norm_eps,
            });
            let resample = if kind.has_attention() {
                cfg.upsample_type
            } else {
                super::config::Resample::Conv
            };
            let u = (!last).then_some(resample);
            up.push(AnyUpBlock::Plain(Box::new(UpBlock::load(
                &l,
                &format!("up_blocks.{i}"),
                cin,
                out_c,
                prev,
                cfg.layers_per_block + 1,
                attn,
                u,
                opts,
            )?)));
        }
        let conv_norm_out = l.group_norm(
            "conv_norm_out",
            boc[0],
            cfg.groups_for(boc[0]),
            cfg.norm_eps,
        )?;
        let conv_out = l.conv("conv_out", boc[0], cfg.out_channels, 3, same)?;
        Ok(UNet2DModel {
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

    /// Number of class labels of a class-conditional model with a lookup table.
    pub fn num_classes(&self) -> Option<usize> {
        self.conditioning.num_classes()
    }

    /// True when the model takes class labels.
    pub fn is_class_conditional(&self) -> bool {
        self.conditioning.needs_labels()
    }

    /// Records the forward for `batch` samples of `height`×`width`.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<UNetForward> {
        Ok(self.prepare_with(gpu, batch, height, width, None)?.0)
    }

    /// [`UNet2DModel::prepare`] that also records, for activation calibration, max |input| per
    /// sample of every conv and linear layer: (layer prefix, f32 [batch]) in recording order,
    /// rewritten by each run. With `values`, a copy of each input itself instead (same shape
    /// as the input, in the model dtype).
    pub fn prepare_observed(
        &self,
        gpu: &Gpu,
        batch: usize,
        height: usize,
        width: usize,
        values: bool,
    ) -> Result<(UNetForward, Vec<(String, Tensor)>)> {
        let (f, o) = self.prepare_with(gpu, batch, height, width, Some(values))?;
        Ok((f, o.unwrap_or_default()))
    }

    fn prepare_with(
        &self,
        gpu: &Gpu,
        batch: usize,
        height: usize,
        width: usize,
        observe: Option<bool>,
    ) -> Result<(UNetForward, Option<Observed>)> {
        let cfg = &self.config;
        let levels = cfg.block_out_channels.len() as u32 - 1;
        let div = 1usize << levels;
        if batch == 0 {
            return Err(Error::Argument {
                op: "UNet2DModel",
                arg: "batch",
                reason: "must be at least 1 (the input is an empty batch)".into(),
            });
        }
        if height == 0 || width == 0 || height % div != 0 || width % div != 0 {
            return Err(Error::Argument {
                op: "UNet2DModel",
                arg: "sample size",
                reason: format!(
                    "{batch}×{height}×{width} does not fit a UNet with {} resolution levels (height and width must be positive multiples of {div})",
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
        let labels = if self.is_class_conditional() {
            Some(Tensor::zeros(gpu, "class_labels", &[batch], DType::F32)?)
        } else {
            None
        };
        let mut g = Graph::new(gpu, self.dtype);
        if let Some(values) = observe {
            g.observe = Some(Vec::new());
            g.observe_values = values;
        }
        let temb = self
            .conditioning
            .forward(&mut g, &timesteps, labels.as_ref())?;
        let input = if cfg.center_input_sample {
            let c = g.alloc("centered", sample.shape())?;
            ops::elementwise::unary(
                &mut g.rec,
                ops::elementwise::Unary::Affine {
                    alpha: 2.0,
                    beta: -1.0,
                },
                &sample,
                &c,
            )?;
            c
        } else {
            sample.clone()
        };
        let h = self.conv_in.forward(&mut g, &input, "conv_in")?;
        let mut skips = vec![h.clone()];
        let mut h = h;
        // NCSN++'s image path: the (centred) input, FIR-downsampled by each skip block.
        let mut skip_image = input.clone();
        for d in &self.down {
            h = match d {
                AnyDownBlock::Plain(b) => b.forward(&mut g, h, &temb, &mut skips)?,
                AnyDownBlock::Skip(b) => {
                    let (out, s) = b.forward(&mut g, h, &temb, skip_image.clone(), &mut skips)?;
                    skip_image = s;
                    out
                }
            };
        }
        if let Some(m) = &self.mid {
            h = m.forward(&mut g, &h, &temb)?;
        }
        let mut skip_out: Option<Tensor> = None;
        for u in &self.up {
            h = match u {
                AnyUpBlock::Plain(b) => b.forward(&mut g, h, &temb, &mut skips)?,
                AnyUpBlock::Skip(b) => {
                    let (out, s) = b.forward(&mut g, h, &temb, skip_out.take(), &mut skips)?;
                    skip_out = s;
                    out
                }
            };
        }
        let n = self
            .conv_norm_out
            .forward(&mut g, &h, true, "conv_norm_out")?;
        let mut out = self.conv_out.forward(&mut g, &n, "conv_out")?;
        if let Some(s) = skip_out {
            out = super::layers::add(&mut g, &out, &s, "sample")?;
        }
        if cfg.time_embedding_type == TimeEmbeddingType::Fourier {
            // diffusers divides the output by the timestep (the noise level σ).
            ops::elementwise::divide_per_sample(&mut g.rec, &out, &timesteps)?;
        }
        let output = out;
        let flops = g.flops;
        let observed = g.observe.take();
        let recording = g.finish(&[&output])?;
        let bytes = recording.activation_bytes();
        let forward = UNetForward {
            recording,
            sample,
            timesteps,
            labels,
            output,
            num_classes: self.conditioning.num_classes(),
            activation_bytes: bytes,
            flops,
        };
        Ok((forward, observed))
    }
}

/// A recorded forward: write inputs, submit, read or chain the output.
pub struct UNetForward {
    recording: Recording,
    /// Input [N, C_in, H, W] in the model dtype.
    pub sample: Tensor,
    /// f32 [N].
    pub timesteps: Tensor,
    /// f32 [N] class indices, for class-conditional models.
    pub labels: Option<Tensor>,
    /// Output [N, C_out, H, W] in the model dtype (valid after [`UNetForward::run`]).
    pub output: Tensor,
    num_classes: Option<usize>,
    /// Bytes of activation buffers the recording holds.
    pub activation_bytes: u64,
    /// FLOPs of one forward (GEMMs and convolutions, 2 per multiply-add).
    pub flops: u64,
}

impl UNetForward {
    /// Sets the time (and labels) and submits the recorded forward on the current `sample`.
    pub fn run(&self, gpu: &Gpu, timesteps: &[f32], labels: Option<&[i64]>) -> Result<()> {
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
        match (&self.labels, labels) {
            (Some(t), Some(l)) => {
                if let Some(bad) = l
                    .iter()
                    .find(|&&c| c < 0 || self.num_classes.is_some_and(|k| c as usize >= k))
                {
                    return Err(Error::Argument {
                        op: "UNet2DModel",
                        arg: "class_labels",
                        reason: format!(
                            "label {bad} is outside 0..{}",
                            self.num_classes.map_or("?".into(), |k| k.to_string())
                        ),
                    });
                }
                let f: Vec<f32> = l.iter().map(|&c| c as f32).collect();
                t.write_f32(gpu, &f)?;
            }
            (Some(_), None) => {
                return Err(Error::Argument {
                    op: "UNet2DModel",
                    arg: "class_labels",
                    reason: "this model is class-conditional: class_labels are required".into(),
                })
            }
            (None, Some(_)) => {
                return Err(Error::Argument {
                    op: "UNet2DModel",
                    arg: "class_labels",
                    reason: "this model has no class embedding".into(),
                })
            }
            (None, None) => {}
        }
        self.recording.submit(gpu);
        Ok(())
    }

    /// Convenience: upload `sample` (f32 host values), run, and download the output as f32.
    pub fn forward_host(
        &self,
        gpu: &Gpu,
        sample: &[f32],
        timesteps: &[f32],
        labels: Option<&[i64]>,
    ) -> Result<Vec<f32>> {
        self.sample.write_f32(gpu, sample)?;
        self.run(gpu, timesteps, labels)?;
        self.output.to_vec_f32(gpu)
    }

    /// Runs the forward once on the current inputs with a GPU timestamp per dispatch (the
    /// time and labels must have been set by a previous [`UNetForward::run`]).
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<crate::gpu::DispatchTime>> {
        self.recording.profile(gpu)
    }

    /// Number of recorded dispatches.
    pub fn dispatches(&self) -> usize {
        self.recording.len()
    }
}
