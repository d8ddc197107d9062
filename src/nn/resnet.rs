//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D` of diffusers (`models/resnet.py`,
//! `downsampling.py`, `upsampling.py`), after Ho et al. (DDPM, 2020) and the BigGAN-style
//! up/down residual blocks of Song et al. (Score SDE, 2021).

use super::layers::{Conv2d, GroupNorm, Linear, Loader};
use super::Graph;
use crate::error::Result;
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;
use crate::tensor::Tensor;

/// Resampling inside a residual block (`up=True` / `down=True`, default kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockResample {
    None,
    /// 2×2 average pooling of both branches (`Downsample2D(use_conv=False)`).
    Down,
    /// Nearest ×2 of both branches (`Upsample2D(use_conv=False)`).
    Up,
    /// FIR [1, 3, 3, 1] downsampling of both branches (`kernel="fir"`, NCSN++).
    FirDown,
    /// FIR [1, 3, 3, 1] upsampling of both branches (`kernel="fir"`, NCSN++).
    FirUp,
}

/// NCSN++'s resampling filter.
pub const FIR_KERNEL: [f64; 4] = [1.0, 3.0, 3.0, 1.0];

/// Records FIR resampling by 2 of x (`up` or down) into a new activation.
pub fn fir_resample(g: &mut Graph<'_>, x: &Tensor, up: bool, name: &str) -> Result<Tensor> {
    use crate::ops::fir::{make_kernel, upfirdn2d, UpFirDn};
    let (k, geo) = if up {
        (make_kernel(&FIR_KERNEL, 4.0), UpFirDn::upsample(4, 2))
    } else {
        (make_kernel(&FIR_KERNEL, 1.0), UpFirDn::downsample(4, 2))
    };
    let s = x.shape();
    let (ho, wo) = geo.output(s[2], s[3], 4, 4).unwrap_or((0, 0));
    let y = g.alloc(name, &[s[0], s[1], ho, wo])?;
    upfirdn2d(&mut g.rec, x, &y, &k, geo)?;
    Ok(y)
}

/// Options shared by every residual block of a model.
#[derive(Debug, Clone, Copy)]
pub struct ResnetOptions {
    /// Groups of norm1.
    pub groups: usize,
    /// Groups of norm2 (diffusers' `groups_out`; equal to `groups` unless a block sets it).
    pub groups_out: usize,
    /// `use_in_shortcut=True`: a 1×1 shortcut conv even when the channel count is unchanged.
    pub force_shortcut: bool,
    pub eps: f64,
    pub temb_channels: usize,
    pub scale_shift: bool,
    pub output_scale_factor: f64,
}

/// The layers of a plain residual block ([`ResnetBlock2D::plain_layers`]).
pub struct PlainLayers<'a> {
    pub norm1: &'a GroupNorm,
    pub conv1: &'a Conv2d,
    pub norm2: &'a GroupNorm,
    pub conv2: &'a Conv2d,
    pub conv_shortcut: Option<&'a Conv2d>,
}

/// `ResnetBlock2D`: norm1 → SiLU → conv1 → + time projection → norm2 → SiLU → conv2, plus the
/// (1×1-projected) input, divided by `output_scale_factor`.
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    /// None when `temb_channels` is 0 (diffusers' `temb_channels=None`, the VAE's blocks).
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    resample: BlockResample,
    opts: ResnetOptions,
    out_channels: usize,
}

impl ResnetBlock2D {
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        resample: BlockResample,
        opts: ResnetOptions,
    ) -> Result<Self> {
        let same = Conv2dArgs {
            stride: 1,
            padding: 1,
            extra_end: 0,
        };
        let proj = if opts.scale_shift { 2 * cout } else { cout };
        Ok(ResnetBlock2D {
            norm1: l.group_norm(&format!("{prefix}.norm1"), cin, opts.groups, opts.eps)?,
            conv1: l.conv(&format!("{prefix}.conv1"), cin, cout, 3, same)?,
            time_emb_proj: (opts.temb_channels > 0)
                .then(|| l.linear(&format!("{prefix}.time_emb_proj"), opts.temb_channels, proj))
                .transpose()?,
            norm2: l.group_norm(&format!("{prefix}.norm2"), cout, opts.groups_out, opts.eps)?,
            conv2: l.conv(&format!("{prefix}.conv2"), cout, cout, 3, same)?,
            conv_shortcut: if cin != cout || opts.force_shortcut {
                Some(l.conv(
                    &format!("{prefix}.conv_shortcut"),
                    cin,
                    cout,
                    1,
                    Conv2dArgs {
                        stride: 1,
                        padding: 0,
                        extra_end: 0,
                    },
                )?)
            } else {
                None
            },
            resample,
            opts,
            out_channels: cout,
        })
    }

    /// (norm1, conv1, norm2, conv2, conv_shortcut) of a block that is only those — no time
    /// embedding, no resampling, output scale 1 (the VAE's) — for drivers that run the layers
    /// piecewise (`nn::vae_bands`); None for any other block.
    pub fn plain_layers(&self) -> Option<PlainLayers<'_>> {
        let plain = self.time_emb_proj.is_none()
            && self.resample == BlockResample::None
            && !self.opts.scale_shift
            && self.opts.output_scale_factor == 1.0;
        plain.then_some(PlainLayers {
            norm1: &self.norm1,
            conv1: &self.conv1,
            norm2: &self.norm2,
            conv2: &self.conv2,
            conv_shortcut: self.conv_shortcut.as_ref(),
        })
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// `x` is not consumed; `temb_act` is SiLU(time embedding) [N, temb_channels].
    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, temb_act: &Tensor) -> Result<Tensor> {
        self.forward_with(g, x, Some(temb_act))
    }

    /// The block without a time embedding (loaded with `temb_channels` 0, as the VAE's):
    /// conv1 → norm2 directly.
    pub fn forward_no_temb(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        self.forward_with(g, x, None)
    }

    fn forward_with(
        &self,
        g: &mut Graph<'_>,
        x: &Tensor,
        temb_act: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut h = self.norm1.forward(g, x, true, "resnet.h")?;
        let mut input = x.clone();
        if matches!(self.resample, BlockResample::FirDown | BlockResample::FirUp) {
            let up = self.resample == BlockResample::FirUp;
            input = fir_resample(g, x, up, "resnet.input")?;
            h = fir_resample(g, &h, up, "resnet.h")?;
        } else if self.resample != BlockResample::None {
            let s = x.shape();
            let (ho, wo) = match self.resample {
                BlockResample::Down => (s[2] / 2, s[3] / 2),
                _ => (s[2] * 2, s[3] * 2),
            };
            let resample = |g: &mut Graph<'_>, t: &Tensor, name: &str| -> Result<Tensor> {
                let y = g.alloc(name, &[s[0], s[1], ho, wo])?;
                match self.resample {
                    BlockResample::Down => ops::resample::avg_pool2x(&mut g.rec, t, &y)?,
                    _ => ops::resample::upsample_nearest(&mut g.rec, t, &y, 2)?,
                }
                Ok(y)
            };
            input = resample(g, x, "resnet.input")?;
            h = resample(g, &h, "resnet.h")?;
        }
        let temb = match (&self.time_emb_proj, temb_act) {
            (Some(p), Some(t)) => Some(p.forward(g, t, "resnet.temb")?),
            _ => None,
        };
        let Some(t) = temb else {
            if self.opts.scale_shift {
                return Err(crate::error::Error::Argument {
                    op: "ResnetBlock2D",
                    arg: "temb",
                    reason: "resnet_time_scale_shift `scale_shift` needs a time embedding".into(),
                });
            }
            let h1 = self.conv1.forward(g, &h, "resnet.conv1")?;
            let h2 = self.norm2.forward(g, &h1, true, "resnet.norm2")?;
            return self.finish(g, &h2, input);
        };
        let n = t.shape()[0];
        let h2 = if self.opts.scale_shift {
            let h1 = self.conv1.forward(g, &h, "resnet.conv1")?;
            let normed = self.norm2.forward(g, &h1, false, "resnet.norm2")?;
            let y = g.alloc("resnet.modulated", normed.shape())?;
            ops::elementwise::modulate(&mut g.rec, &normed, &t, &y)?;
            ops::elementwise::unary_inplace(&mut g.rec, ops::elementwise::Unary::Silu, &y)?;
            y
        } else {
            // conv1 with the time projection added per (sample, channel) in its epilogue.
            let t2 = t.reshape(&[n, self.out_channels])?;
            let epi = ops::conv2d::Epilogue {
                add_nc: Some(&t2),
                ..Default::default()
            };
            let with_t = self.conv1.forward_fused(g, &h, "resnet.h_temb", epi)?;
            self.norm2.forward(g, &with_t, true, "resnet.norm2")?
        };
        self.finish(g, &h2, input)
    }

    /// conv2 of `h2` plus the (projected) `input`, scaled.
    fn finish(&self, g: &mut Graph<'_>, h2: &Tensor, input: Tensor) -> Result<Tensor> {
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(g, &input, "resnet.shortcut")?,
            None => input,
        };
        // conv2 with the residual add and the output scale in its epilogue.
        let epi = ops::conv2d::Epilogue {
            add_nc: None,
            residual: Some(&shortcut),
            scale: (1.0 / self.opts.output_scale_factor) as f32,
        };
        self.conv2.forward_fused(g, h2, "resnet.out", epi)
    }
}

/// `Downsample2D(use_conv=True)`: a 3×3 stride-2 conv; with `padding=0` diffusers first pads
/// (0, 1, 0, 1).
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    pub fn load(l: &Loader<'_>, prefix: &str, channels: usize, padding: usize) -> Result<Self> {
        let args = Conv2dArgs {
            stride: 2,
            padding,
            extra_end: if padding == 0 { 1 } else { 0 },
        };
        Ok(Downsample2D {
            conv: l.conv(&format!("{prefix}.conv"), channels, channels, 3, args)?,
        })
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(g, x, "downsample")
    }
}

/// `Upsample2D(use_conv=True)`: nearest ×2 then a 3×3 conv.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn load(l: &Loader<'_>, prefix: &str, channels: usize) -> Result<Self> {
        let args = Conv2dArgs {
            stride: 1,
            padding: 1,
            extra_end: 0,
        };
        Ok(Upsample2D {
            conv: l.conv(&format!("{prefix}.conv"), channels, channels, 3, args)?,
        })
    }

    /// The 3×3 conv after the nearest ×2.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        let s = x.shape();
        let up = g.alloc("upsample.nearest", &[s[0], s[1], 2 * s[2], 2 * s[3]])?;
        ops::resample::upsample_nearest(&mut g.rec, x, &up, 2)?;
        let y = self.conv.forward(g, &up, "upsample")?;
        Ok(y)
    }
}
