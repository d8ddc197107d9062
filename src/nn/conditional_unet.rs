//! The restoration network of DA-CLIP (Luo et al., "Controlling Vision-Language Models for
//! Multi-Task Image Restoration", ICLR 2024) as the MR Sampler paper runs it: the official
//! `ConditionalUNet` of grrrute/mr-sampler (`universal-image-restoration/config/daclip-sde/
//! models/modules/DenoisingUNet_arch.py`), loaded from `unet/` of a converted DA-CLIP folder
//! (`config.json` = the constructor's arguments, `diffusion_pytorch_model.safetensors` = the
//! official state-dict keys) or from any [`WeightSource`]. The forward is recorded once per
//! (N, H, W, which contexts) as a [`ConditionalUNetForward`].
//!
//! The forward, as the official one: x = cat([xt − μ, μ]) reflect-padded (right/bottom) to a
//! multiple of 2^depth; `init_conv` 7×7; t = time_mlp(SinusoidalPosEmb(nf)(time)) (its own
//! frequencies exp(−i·ln 10000/(nf/2 − 1)), [sin, cos]; Linear, GELU, Linear), plus
//! prompt_mlp(softmax(text_mlp(text_context)) · prompt) when a degradation context is given;
//! per level two `ResBlock`s (a skip pushed after each; the second after the attention), the
//! `Residual(PreNorm(attention))`, and the down-sampling; the middle; per level upwards two
//! `ResBlock`s each on cat([x, skip]), the attention and the up-sampling; `final_res_block` on
//! cat([x, init_conv output]); `final_conv`; the crop back to H×W.

use super::conditional_unet_blocks::{same, ChannelNormEps, ResBlock, Resample, ResidualAttention};
use super::conditional_unet_config::ConditionalUNetConfig;
use super::layers::{Conv2d, Linear, Loader};
use super::Graph;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::load::{self, WeightSource, Weights};
use crate::ops;
use crate::ops::elementwise::{Binary, Unary};
use crate::tensor::{DType, Tensor};
use std::path::Path;

const OP: &str = "ConditionalUNet";

/// One level of the down or up path: two residual blocks, the attention, the resampling.
struct Level {
    block1: ResBlock,
    block2: ResBlock,
    attn: ResidualAttention,
    resample: Resample,
}

/// The degradation prompt path: `text_mlp` (Linear, SiLU, Linear), `prompt` [1, time_dim],
/// `prompt_mlp`.
struct Prompt {
    text1: Linear,
    text2: Linear,
    prompt: Tensor,
    prompt_mlp: Linear,
}

/// A loaded ConditionalUNet: config plus weights on the GPU.
pub struct ConditionalUNet {
    pub config: ConditionalUNetConfig,
    pub dtype: DType,
    /// The channel LayerNorm's eps rule the network was loaded with.
    pub norm_eps: ChannelNormEps,
    init_conv: Conv2d,
    time1: Linear,
    time2: Linear,
    prompt: Option<Prompt>,
    downs: Vec<Level>,
    mid1: ResBlock,
    mid_attn: ResidualAttention,
    mid2: ResBlock,
    ups: Vec<Level>,
    final_res: ResBlock,
    final_conv: Conv2d,
    /// Bytes of the weight tensors on the GPU (on CPU adapters convs also keep a packed copy).
    pub weight_bytes: u64,
}

impl ConditionalUNet {
    /// Loads `unet/` of a converted DA-CLIP folder (or a folder holding the config itself);
    /// every tensor of the file must be used.
    pub fn from_dir(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Self> {
        let dir = load::resolve_model_dir(dir, "unet")?;
        let config = ConditionalUNetConfig::from_file(&dir.join(load::CONFIG))?;
        let weights = Weights::open(&dir.join(load::WEIGHTS))?;
        let model = Self::load(gpu, config, &weights, dtype)?;
        weights.check_all_used()?;
        Ok(model)
    }

    /// Builds the network from a parsed config and a weight source (a checkpoint, or
    /// [`load::RandomWeights`]), with the float32 network's channel-norm eps
    /// ([`ChannelNormEps::Float32`]).
    pub fn load(
        gpu: &Gpu,
        config: ConditionalUNetConfig,
        weights: &dyn WeightSource,
        dtype: DType,
    ) -> Result<Self> {
        Self::load_with(gpu, config, weights, dtype, ChannelNormEps::default())
    }

    /// [`ConditionalUNet::load`] with a choice of the channel LayerNorm's eps rule.
    pub fn load_with(
        gpu: &Gpu,
        config: ConditionalUNetConfig,
        weights: &dyn WeightSource,
        dtype: DType,
        eps: ChannelNormEps,
    ) -> Result<Self> {
        let l = Loader::new(gpu, weights, dtype);
        let c = &config;
        let (nf, td, depth) = (c.nf, c.time_dim(), c.depth());
        let ctx = c.context_dim.unwrap_or(0);
        let prompt = if c.degra() {
            Some(Prompt {
                text1: l.linear("text_mlp.0", ctx, td)?,
                text2: l.linear("text_mlp.2", td, td)?,
                prompt: l.tensor("prompt", &[1, td])?,
                prompt_mlp: l.linear("prompt_mlp", td, td)?,
            })
        } else {
            None
        };
        let mut downs = Vec::new();
        for i in 0..depth {
            let (din, dout) = c.level_dims(i);
            let p = format!("downs.{i}");
            let spatial = c.spatial_at(i).then_some(ctx);
            downs.push(Level {
                block1: ResBlock::load(&l, &format!("{p}.0"), din, din, td)?,
                block2: ResBlock::load(&l, &format!("{p}.1"), din, din, td)?,
                attn: ResidualAttention::load(&l, &format!("{p}.2"), din, spatial, eps)?,
                resample: if i + 1 < depth {
                    Resample::down(&l, &format!("{p}.3"), din, dout)?
                } else {
                    Resample::same(&l, &format!("{p}.3"), din, dout)?
                },
            });
        }
        let mid = c.mid_dim();
        let mid_spatial = c.image().then_some(ctx);
        let mut ups = Vec::new();
        for j in 0..depth {
            // ups[j] was built for level i = depth − 1 − j (the official code inserts at 0).
            let i = depth - 1 - j;
            let (din, dout) = c.level_dims(i);
            let p = format!("ups.{j}");
            let spatial = c.spatial_at(i).then_some(ctx);
            ups.push(Level {
                block1: ResBlock::load(&l, &format!("{p}.0"), dout + din, dout, td)?,
                block2: ResBlock::load(&l, &format!("{p}.1"), dout + din, dout, td)?,
                attn: ResidualAttention::load(&l, &format!("{p}.2"), dout, spatial, eps)?,
                resample: if i != 0 {
                    Resample::up(&l, &format!("{p}.3"), dout, din)?
                } else {
                    Resample::same(&l, &format!("{p}.3"), dout, din)?
                },
            });
        }
        let model = ConditionalUNet {
            init_conv: l.conv_no_bias("init_conv", 2 * c.in_nc, nf, 7, same(7))?,
            time1: l.linear("time_mlp.1", nf, td)?,
            time2: l.linear("time_mlp.3", td, td)?,
            prompt,
            downs,
            mid1: ResBlock::load(&l, "mid_block1", mid, mid, td)?,
            mid_attn: ResidualAttention::load(&l, "mid_attn", mid, mid_spatial, eps)?,
            mid2: ResBlock::load(&l, "mid_block2", mid, mid, td)?,
            ups,
            final_res: ResBlock::load(&l, "final_res_block", 2 * nf, nf, td)?,
            final_conv: l.conv("final_conv", nf, c.out_nc, 3, same(3))?,
            weight_bytes: 0,
            config,
            dtype,
            norm_eps: eps,
        };
        Ok(ConditionalUNet {
            weight_bytes: l.bytes.get(),
            ..model
        })
    }

    /// Records the forward for `batch` images of `height`×`width` (any size: the network pads
    /// and crops). `text_context`/`image_context`: whether the forward takes a degradation
    /// context (the prompt path; only for a `use_degra_context` model) and an image context
    /// (required by, and only accepted for, a `use_image_context` model). A model without the
    /// prompt path ignores nothing: passing a context it has no use for is an error.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        batch: usize,
        height: usize,
        width: usize,
        text_context: bool,
        image_context: bool,
    ) -> Result<ConditionalUNetForward> {
        let c = &self.config;
        let arg = |arg: &'static str, reason: String| Error::Argument {
            op: OP,
            arg,
            reason,
        };
        if batch == 0 {
            return Err(arg("batch", "must be at least 1".into()));
        }
        let m = c.pad_multiple();
        let (hp, wp) = (height.div_ceil(m) * m, width.div_ceil(m) * m);
        if height == 0 || width == 0 || hp >= 2 * height || wp >= 2 * width {
            return Err(arg(
                "image size",
                format!(
                    "{height}×{width} cannot be reflect-padded to multiples of {m} (2^depth; the padding must be smaller than the image)"
                ),
            ));
        }
        if text_context && !c.degra() {
            return Err(arg(
                "text_context",
                "this model has no degradation prompt path (use_degra_context false or context_dim null)".into(),
            ));
        }
        if image_context != c.image() {
            return Err(arg(
                "image_context",
                if c.image() {
                    "required by this model's SpatialTransformers (use_image_context true)".into()
                } else {
                    "this model has no SpatialTransformer to use it (use_image_context false)"
                        .into()
                },
            ));
        }
        let dt = self.dtype;
        let ctx = c.context_dim.unwrap_or(0);
        let xt = Tensor::zeros(gpu, "xt", &[batch, c.in_nc, height, width], dt)?;
        let cond = Tensor::zeros(gpu, "cond", &[batch, c.in_nc, height, width], dt)?;
        let time = Tensor::zeros(gpu, "time", &[batch], DType::F32)?;
        let text = text_context
            .then(|| Tensor::zeros(gpu, "text_context", &[batch, ctx], dt))
            .transpose()?;
        let image = image_context
            .then(|| Tensor::zeros(gpu, "image_context", &[batch, ctx], dt))
            .transpose()?;
        let mut g = Graph::new(gpu, dt);
        let output = self.record(&mut g, &xt, &cond, &time, text.as_ref(), image.as_ref())?;
        let flops = g.flops;
        let recording = g.finish(&[&output])?;
        Ok(ConditionalUNetForward {
            activation_bytes: recording.activation_bytes(),
            recording,
            xt,
            cond,
            time,
            text_context: text,
            image_context: image,
            output,
            flops,
        })
    }

    fn record(
        &self,
        g: &mut Graph<'_>,
        xt: &Tensor,
        cond: &Tensor,
        time: &Tensor,
        text: Option<&Tensor>,
        image: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let s = xt.shape().to_vec();
        let (n, h, w) = (s[0], s[2], s[3]);
        // x = cat([xt − cond, cond]), padded.
        let diff = g.alloc("x_minus_cond", &s)?;
        let copy = Unary::Affine {
            alpha: 1.0,
            beta: 0.0,
        };
        ops::elementwise::unary(&mut g.rec, copy, xt, &diff)?;
        ops::elementwise::axpby(&mut g.rec, -1.0, cond, 1.0, &diff)?;
        let cat = g.alloc("input", &[n, 2 * c.in_nc, h, w])?;
        ops::concat::concat_channels(&mut g.rec, &diff, cond, &cat)?;
        let m = c.pad_multiple();
        let (hp, wp) = (h.div_ceil(m) * m, w.div_ceil(m) * m);
        let padded = if (hp, wp) == (h, w) {
            cat
        } else {
            let p = g.alloc("input_padded", &[n, 2 * c.in_nc, hp, wp])?;
            ops::resample::reflect_pad(&mut g.rec, &cat, &p)?;
            p
        };
        let x_init = self.init_conv.forward(g, &padded, "init_conv")?;
        let t = self.time_embedding(g, time, text)?;
        let silu_t = g.alloc("silu_t", t.shape())?;
        ops::elementwise::unary(&mut g.rec, Unary::Silu, &t, &silu_t)?;
        let image = image
            .map(|t| t.reshape(&[n, 1, c.context_dim.unwrap_or(0)]))
            .transpose()?;
        let ctx = image.as_ref();
        let mut x = x_init.clone();
        let mut skips = Vec::new();
        for lv in &self.downs {
            x = lv.block1.forward(g, &x, &silu_t)?;
            skips.push(x.clone());
            x = lv.block2.forward(g, &x, &silu_t)?;
            x = lv.attn.forward(g, &x, ctx)?;
            skips.push(x.clone());
            x = lv.resample.forward(g, &x)?;
        }
        x = self.mid1.forward(g, &x, &silu_t)?;
        x = self.mid_attn.forward(g, &x, ctx)?;
        x = self.mid2.forward(g, &x, &silu_t)?;
        for lv in &self.ups {
            for block in [&lv.block1, &lv.block2] {
                let skip = skips.pop().ok_or_else(|| Error::Argument {
                    op: OP,
                    arg: "skips",
                    reason: "the up path popped more skips than the down path pushed".into(),
                })?;
                let cat = concat(g, &x, &skip)?;
                x = block.forward(g, &cat, &silu_t)?;
            }
            x = lv.attn.forward(g, &x, ctx)?;
            x = lv.resample.forward(g, &x)?;
        }
        let cat = concat(g, &x, &x_init)?;
        x = self.final_res.forward(g, &cat, &silu_t)?;
        let y = self.final_conv.forward(g, &x, "final_conv")?;
        if (hp, wp) == (h, w) {
            return Ok(y);
        }
        let out = g.alloc("output", &[n, c.out_nc, h, w])?;
        ops::resample::reflect_pad(&mut g.rec, &y, &out)?;
        Ok(out)
    }

    /// t = time_mlp(time) (+ prompt_mlp(softmax(text_mlp(text)) · prompt)) [N, time_dim].
    fn time_embedding(
        &self,
        g: &mut Graph<'_>,
        time: &Tensor,
        text: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = time.shape()[0];
        let sin = g.alloc("time_sinusoidal", &[n, self.config.nf])?;
        // SinusoidalPosEmb: exp(−i·ln(10000)/(half − 1)), [sin, cos] = diffusers' embedding
        // with downscale_freq_shift 1 and no flip.
        let emb = ops::embedding::TimestepEmbedding {
            flip_sin_to_cos: false,
            downscale_freq_shift: 1.0,
            scale: 1.0,
            max_period: 10000.0,
        };
        ops::embedding::timestep_embedding(&mut g.rec, time, &sin, emb)?;
        let h = self.time1.forward(g, &sin, "time_mlp.1")?;
        ops::elementwise::unary_inplace(&mut g.rec, Unary::Gelu, &h)?;
        let t = self.time2.forward(g, &h, "time_mlp.3")?;
        let (Some(p), Some(text)) = (&self.prompt, text) else {
            return Ok(t);
        };
        let a = p.text1.forward(g, text, "text_mlp.0")?;
        ops::elementwise::unary_inplace(&mut g.rec, Unary::Silu, &a)?;
        let b = p.text2.forward(g, &a, "text_mlp.2")?;
        let sm = g.alloc("text_softmax", b.shape())?;
        ops::softmax::softmax(&mut g.rec, &b, &sm, 1.0)?;
        let weighted = g.alloc("prompt_weighted", b.shape())?;
        ops::elementwise::binary(&mut g.rec, Binary::Mul, &sm, &p.prompt, &weighted)?;
        let pe = p.prompt_mlp.forward(g, &weighted, "prompt_mlp")?;
        super::layers::add(g, &t, &pe, "time_with_prompt")
    }
}

fn concat(g: &mut Graph<'_>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    let y = g.alloc("skip_cat", &[sa[0], sa[1] + sb[1], sa[2], sa[3]])?;
    ops::concat::concat_channels(&mut g.rec, a, b, &y)?;
    Ok(y)
}

/// A recorded forward: write the inputs, submit, read or chain the output.
pub struct ConditionalUNetForward {
    recording: Recording,
    /// x_t [N, in_nc, H, W] in the model dtype.
    pub xt: Tensor,
    /// The condition μ [N, in_nc, H, W] in the model dtype.
    pub cond: Tensor,
    /// f32 [N]: the network's time per sample (continuous).
    pub time: Tensor,
    /// Degradation features [N, context_dim] when recorded with them.
    pub text_context: Option<Tensor>,
    /// Image features [N, context_dim] when recorded with them.
    pub image_context: Option<Tensor>,
    /// [N, out_nc, H, W] in the model dtype, valid after [`ConditionalUNetForward::run`].
    pub output: Tensor,
    /// Bytes of activation buffers the recording holds (the activation high-water mark).
    pub activation_bytes: u64,
    /// FLOPs of one forward (2 per multiply-add of the GEMMs, convolutions and attention).
    pub flops: u64,
}

impl ConditionalUNetForward {
    /// Sets the times and submits the recorded forward on the current inputs.
    pub fn run(&self, gpu: &Gpu, time: &[f32]) -> Result<()> {
        let n = self.xt.shape()[0];
        if time.len() != n {
            return Err(Error::HostLength {
                tensor: "time".into(),
                got: time.len(),
                want: n,
                shape: vec![n],
            });
        }
        if let Some(i) = time.iter().position(|t| !t.is_finite()) {
            return Err(Error::Argument {
                op: OP,
                arg: "time",
                reason: format!("non-finite time at index {i}"),
            });
        }
        self.time.write_f32(gpu, time)?;
        self.recording.submit(gpu);
        Ok(())
    }

    /// Convenience: uploads the inputs (f32 host values; a context must be given exactly when
    /// the forward was recorded with it), runs, and downloads the output as f32.
    pub fn forward_host(
        &self,
        gpu: &Gpu,
        xt: &[f32],
        cond: &[f32],
        time: &[f32],
        text_context: Option<&[f32]>,
        image_context: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        self.xt.write_f32(gpu, xt)?;
        self.cond.write_f32(gpu, cond)?;
        write_context(
            gpu,
            "text_context",
            self.text_context.as_ref(),
            text_context,
        )?;
        write_context(
            gpu,
            "image_context",
            self.image_context.as_ref(),
            image_context,
        )?;
        self.run(gpu, time)?;
        self.output.to_vec_f32(gpu)
    }

    /// Runs the forward once on the current inputs with a GPU timestamp per dispatch.
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<crate::gpu::DispatchTime>> {
        self.recording.profile(gpu)
    }

    /// Number of recorded dispatches.
    pub fn dispatches(&self) -> usize {
        self.recording.len()
    }
}

/// Writes a context the forward was recorded with; one given without a tensor, or a tensor
/// left unwritten, is an error naming it.
pub fn write_context(
    gpu: &Gpu,
    name: &'static str,
    tensor: Option<&Tensor>,
    data: Option<&[f32]>,
) -> Result<()> {
    match (tensor, data) {
        (Some(t), Some(d)) => t.write_f32(gpu, d),
        (None, None) => Ok(()),
        (Some(_), None) => Err(Error::Argument {
            op: OP,
            arg: name,
            reason: "the forward was recorded with this context; give its values".into(),
        }),
        (None, Some(_)) => Err(Error::Argument {
            op: OP,
            arg: name,
            reason: "the forward was recorded without this context".into(),
        }),
    }
}
