//! The blocks of the official DA-CLIP `ConditionalUNet` (grrrute/mr-sampler,
//! `universal-image-restoration/config/daclip-sde/models/modules/module_util.py` and
//! `attention.py`): `ResBlock` with its scale-shift time modulation, the channel `LayerNorm`
//! of `PreNorm`, `LinearAttention` (Shen et al., "Efficient Attention", 2021, as in lucidrains'
//! denoising-diffusion-pytorch), `Residual(PreNorm(.., SpatialTransformer))` and the
//! down/up-sampling convs. Names follow the official modules and their state-dict keys.

use super::conditional_unet_config::HEAD_CHANNELS;
use super::layers::{Conv2d, Linear, Loader};
use super::transformer_2d::{Transformer2DModel, TransformerOptions};
use super::Graph;
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;
use crate::ops::elementwise::Unary;
use crate::ops::gemm::GemmDesc;
use crate::tensor::{DType, Tensor};

/// `padding = k // 2`, stride 1 (`default_conv`, `nn.Conv2d(.., 3, 1, 1)`).
pub fn same(k: usize) -> Conv2dArgs {
    Conv2dArgs {
        stride: 1,
        padding: k / 2,
        extra_end: 0,
    }
}

/// The eps of the channel LayerNorm. The official `LayerNorm.forward` takes 1e-5 when its
/// input is float32 and 1e-3 for any other dtype — so the same weights normalise differently
/// under float16 autocast (measured on the goldens: the official module under CPU float16
/// autocast is 2.4e-2…3.8e-2·max|y| from its float32 run, almost all of it this eps). The
/// released pipeline (`test.py`, `app.py`) runs the network in float32 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelNormEps {
    /// 1e-5 in both engine dtypes: the network as the official code runs it (float32); an f16
    /// model only stores in f16 (all arithmetic is f32). The default.
    #[default]
    Float32,
    /// The official rule applied to the engine's storage dtype: 1e-5 in f32, 1e-3 in f16 — the
    /// official module under float16 autocast.
    ByDtype,
}

impl ChannelNormEps {
    pub fn eps(self, dtype: DType) -> f32 {
        match (self, dtype) {
            (ChannelNormEps::ByDtype, DType::F16) => 1e-3,
            _ => 1e-5,
        }
    }
}

/// The official `LayerNorm(dim)`: normalises each pixel over the channel axis of [N, C, H, W]
/// (population variance) and scales by `g` (no bias). Recorded as transpose → LayerNorm over
/// the last axis → transpose back.
pub struct ChannelNorm {
    g: Tensor,
    eps: f32,
}

impl ChannelNorm {
    /// `prefix.g` [1, dim, 1, 1].
    pub fn load(l: &Loader<'_>, prefix: &str, dim: usize, eps: ChannelNormEps) -> Result<Self> {
        let g = l.tensor(&format!("{prefix}.g"), &[1, dim, 1, 1])?;
        Ok(ChannelNorm {
            g: g.reshape(&[dim])?,
            eps: eps.eps(l.dtype),
        })
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, name: &str) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (n, c, l) = (s[0], s[1], s[2] * s[3]);
        let t = g.alloc(&format!("{name}.tokens"), &[n, l, c])?;
        ops::transpose::transpose(&mut g.rec, x, &t, n, c, l)?;
        let normed = g.alloc(&format!("{name}.normed"), &[n, l, c])?;
        ops::layer_norm::layer_norm(&mut g.rec, &t, Some(&self.g), None, &normed, self.eps)?;
        let y = g.alloc(name, &s)?;
        ops::transpose::transpose(&mut g.rec, &normed, &y, n, l, c)?;
        Ok(y)
    }
}

/// `ResBlock(conv=default_conv, act=SiLU)`: h = SiLU(block1.proj(x)·(1 + scale) + shift)
/// with (scale, shift) = mlp(t) = Linear(SiLU(t)); h = SiLU(block2.proj(h)); h + res_conv(x)
/// (a 1×1 conv without bias when the widths differ). The 3×3 convs have no bias.
pub struct ResBlock {
    mlp: Linear,
    block1: Conv2d,
    block2: Conv2d,
    res_conv: Option<Conv2d>,
}

impl ResBlock {
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        dim_in: usize,
        dim_out: usize,
        time_dim: usize,
    ) -> Result<Self> {
        Ok(ResBlock {
            mlp: l.linear(&format!("{prefix}.mlp.1"), time_dim, 2 * dim_out)?,
            block1: l.conv_no_bias(
                &format!("{prefix}.block1.proj"),
                dim_in,
                dim_out,
                3,
                same(3),
            )?,
            block2: l.conv_no_bias(
                &format!("{prefix}.block2.proj"),
                dim_out,
                dim_out,
                3,
                same(3),
            )?,
            res_conv: (dim_in != dim_out)
                .then(|| l.conv_no_bias(&format!("{prefix}.res_conv"), dim_in, dim_out, 1, same(1)))
                .transpose()?,
        })
    }

    /// `x` [N, dim_in, H, W], `silu_t` = SiLU(t) [N, time_dim] → [N, dim_out, H, W].
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, silu_t: &Tensor) -> Result<Tensor> {
        let ss = self.mlp.forward(g, silu_t, "resblock.scale_shift")?;
        let h = self.block1.forward(g, x, "resblock.block1")?;
        let m = g.alloc("resblock.modulated", h.shape())?;
        ops::elementwise::modulate(&mut g.rec, &h, &ss, &m)?;
        ops::elementwise::unary_inplace(&mut g.rec, Unary::Silu, &m)?;
        let h2 = self.block2.forward(g, &m, "resblock.block2")?;
        ops::elementwise::unary_inplace(&mut g.rec, Unary::Silu, &h2)?;
        let res = match &self.res_conv {
            Some(c) => c.forward(g, x, "resblock.res_conv")?,
            None => x.clone(),
        };
        super::layers::add(g, &h2, &res, "resblock.out")
    }
}

/// `LinearAttention(dim)` with 4 heads of 32: q, k, v = to_qkv(x) (1×1, no bias); q softmaxed
/// over its 32 features per position, k over the positions; q·32^−½, v/(h·w);
/// context[d, e] = Σₙ k[d, n] v[e, n]; out[e, n] = Σ_d context[d, e] q[d, n]; then `to_out`
/// = 1×1 conv (bias) + channel LayerNorm. Both scalings are folded into the context GEMM.
pub struct LinearAttention {
    to_qkv: Conv2d,
    to_out: Conv2d,
    norm: ChannelNorm,
}

/// Heads of `LinearAttention` (its defaults `heads=4, dim_head=32`).
pub const LINEAR_HEADS: usize = 4;

impl LinearAttention {
    pub fn load(l: &Loader<'_>, prefix: &str, dim: usize, eps: ChannelNormEps) -> Result<Self> {
        let hidden = LINEAR_HEADS * HEAD_CHANNELS;
        Ok(LinearAttention {
            to_qkv: l.conv_no_bias(&format!("{prefix}.to_qkv"), dim, 3 * hidden, 1, same(1))?,
            to_out: l.conv(&format!("{prefix}.to_out.0"), hidden, dim, 1, same(1))?,
            norm: ChannelNorm::load(l, &format!("{prefix}.to_out.1"), dim, eps)?,
        })
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (n, l) = (s[0], s[2] * s[3]);
        let (heads, d) = (LINEAR_HEADS, HEAD_CHANNELS);
        let hidden = heads * d;
        let qkv = self.to_qkv.forward(g, x, "linattn.qkv")?;
        // q: [N·heads, d, L] → softmax over d (via [N·heads, L, d]) → back.
        let q = g.alloc("linattn.q", &[n, hidden, s[2], s[3]])?;
        ops::concat::slice_channels(&mut g.rec, &qkv, 0, &q)?;
        let qt = g.alloc("linattn.q_t", &[n * heads, l, d])?;
        ops::transpose::transpose(&mut g.rec, &q, &qt, n * heads, d, l)?;
        let qts = g.alloc("linattn.q_t_softmax", &[n * heads, l, d])?;
        ops::softmax::softmax(&mut g.rec, &qt, &qts, 1.0)?;
        let qs = g.alloc("linattn.q_softmax", &[n * heads, d, l])?;
        ops::transpose::transpose(&mut g.rec, &qts, &qs, n * heads, l, d)?;
        // k: softmax over the positions.
        let k = g.alloc("linattn.k", &[n * hidden, l])?;
        ops::concat::slice_channels(
            &mut g.rec,
            &qkv,
            hidden,
            &k.reshape(&[n, hidden, s[2], s[3]])?,
        )?;
        let ks = g.alloc("linattn.k_softmax", &[n * hidden, l])?;
        ops::softmax::softmax(&mut g.rec, &k, &ks, 1.0)?;
        // contextᵀ[e, d] = Σₙ v[e, n] k[d, n] · scale / L, v read inside qkv.
        let ctx = g.alloc("linattn.context", &[n * heads, d, d])?;
        let scale = 1.0 / ((d as f64).sqrt() * l as f64);
        let dc = GemmDesc {
            m: d,
            n: d,
            k: l,
            batch: n * heads,
            batch_inner: heads,
            lda: l,
            ldb: l,
            ldc: d,
            a_strides: [3 * hidden * l, d * l],
            b_strides: [hidden * l, d * l],
            c_strides: [heads * d * d, d * d],
            trans_b: true,
            alpha: scale as f32,
        };
        g.flops += 2 * (n * heads * d * d * l) as u64;
        ops::gemm::gemm_offset(&mut g.rec, &dc, &qkv, 2 * hidden * l, &ks, &ctx, 0)?;
        // out[e, n] = Σ_d contextᵀ[e, d] q[d, n].
        let out = g.alloc("linattn.out", &[n, hidden, s[2], s[3]])?;
        let dout = GemmDesc {
            m: d,
            n: l,
            k: d,
            batch: n * heads,
            batch_inner: heads,
            lda: d,
            ldb: l,
            ldc: l,
            a_strides: [heads * d * d, d * d],
            b_strides: [hidden * l, d * l],
            c_strides: [hidden * l, d * l],
            trans_b: false,
            alpha: 1.0,
        };
        g.flops += 2 * (n * heads * d * d * l) as u64;
        ops::gemm::gemm(&mut g.rec, &dout, &ctx, &qs, None, &out)?;
        let o = self.to_out.forward(g, &out, "linattn.to_out")?;
        self.norm.forward(g, &o, "linattn.norm")
    }
}

/// The attention of a level: `LinearAttention`, or a `SpatialTransformer` (1 block, heads of
/// 32 channels, cross-attention to the image context) — the official `attention.py` module
/// has diffusers' `Transformer2DModel` keys and math (GroupNorm(32, eps 1e-6), 1×1 `proj_in`/
/// `proj_out`, self-attention, cross-attention, GEGLU feed-forward, three LayerNorms, and
/// its own `+ x_in`).
pub enum Attention {
    Linear(Box<LinearAttention>),
    Spatial(Box<Transformer2DModel>),
}

/// `Residual(PreNorm(dim, attention))`: attention(norm(x)) + x. For a SpatialTransformer the
/// residual is therefore applied twice (its own `+ x_in` adds norm(x), then `Residual` adds x),
/// as in the official code.
pub struct ResidualAttention {
    norm: ChannelNorm,
    attn: Attention,
}

impl ResidualAttention {
    /// `spatial`: `Some(context_dim)` for a SpatialTransformer.
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        dim: usize,
        spatial: Option<usize>,
        eps: ChannelNormEps,
    ) -> Result<Self> {
        let inner = format!("{prefix}.fn.fn");
        let attn = match spatial {
            None => Attention::Linear(Box::new(LinearAttention::load(l, &inner, dim, eps)?)),
            Some(context_dim) => {
                let o = TransformerOptions {
                    heads: dim / HEAD_CHANNELS,
                    layers: 1,
                    cross_attention_dim: context_dim,
                    groups: 32,
                    use_linear_projection: false,
                };
                Attention::Spatial(Box::new(Transformer2DModel::load(l, &inner, dim, o)?))
            }
        };
        Ok(ResidualAttention {
            norm: ChannelNorm::load(l, &format!("{prefix}.fn.norm"), dim, eps)?,
            attn,
        })
    }

    /// `context` [N, 1, context_dim] is the image context (required by a SpatialTransformer).
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<Tensor> {
        let normed = self.norm.forward(g, x, "prenorm")?;
        let y = match &self.attn {
            Attention::Linear(a) => a.forward(g, &normed)?,
            Attention::Spatial(t) => {
                let ctx = context.ok_or_else(|| Error::Argument {
                    op: "ConditionalUNet",
                    arg: "image_context",
                    reason: "required by the SpatialTransformers of a use_image_context model"
                        .into(),
                })?;
                t.forward(g, &normed, ctx)?
            }
        };
        super::layers::add(g, &y, x, "residual")
    }
}

/// What ends a level: `Downsample` (4×4 stride-2 conv, padding 1, bias), `Upsample` (nearest
/// ×2 then 3×3 conv with bias) or, at the deepest level (down) and the first (up), a
/// `default_conv` (3×3, no bias) that keeps the resolution.
pub enum Resample {
    Down(Conv2d),
    Up(Conv2d),
    Same(Conv2d),
}

impl Resample {
    pub fn down(l: &Loader<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        let args = Conv2dArgs {
            stride: 2,
            padding: 1,
            extra_end: 0,
        };
        Ok(Resample::Down(l.conv(prefix, cin, cout, 4, args)?))
    }

    pub fn up(l: &Loader<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Resample::Up(l.conv(
            &format!("{prefix}.1"),
            cin,
            cout,
            3,
            same(3),
        )?))
    }

    pub fn same(l: &Loader<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Resample::Same(l.conv_no_bias(
            prefix,
            cin,
            cout,
            3,
            same(3),
        )?))
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        match self {
            Resample::Down(c) => c.forward(g, x, "downsample"),
            Resample::Same(c) => c.forward(g, x, "level_conv"),
            Resample::Up(c) => {
                let s = x.shape();
                let up = g.alloc("upsample.nearest", &[s[0], s[1], 2 * s[2], 2 * s[3]])?;
                ops::resample::upsample_nearest(&mut g.rec, x, &up, 2)?;
                c.forward(g, &up, "upsample")
            }
        }
    }
}
