//! `Encoder` and `Decoder` of diffusers' variational autoencoder (`models/autoencoders/vae.py`;
//! the KL-regularised autoencoder of Rombach et al., "High-Resolution Image Synthesis with
//! Latent Diffusion Models", 2022): `DownEncoderBlock2D`, `UpDecoderBlock2D` and a mid block
//! of residual blocks without time embedding around one single-head spatial attention.

use super::attention::AttentionBlock;
use super::layers::{Conv2d, GroupNorm, Loader};
use super::resnet::{BlockResample, Downsample2D, ResnetBlock2D, ResnetOptions, Upsample2D};
use super::vae_bands::Bands;
use super::vae_config::AutoencoderKLConfig;
use super::Graph;
use crate::error::Result;
use crate::ops::conv2d::Conv2dArgs;
use crate::tensor::Tensor;

/// The VAE's GroupNorm epsilon (hard-wired in diffusers' `Encoder`/`Decoder`).
pub const VAE_EPS: f64 = 1e-6;

const SAME: Conv2dArgs = Conv2dArgs {
    stride: 1,
    padding: 1,
    extra_end: 0,
};

fn resnet_opts(cfg: &AutoencoderKLConfig) -> ResnetOptions {
    ResnetOptions {
        groups: cfg.norm_num_groups,
        groups_out: cfg.norm_num_groups,
        force_shortcut: false,
        eps: VAE_EPS,
        temb_channels: 0,
        scale_shift: false,
        output_scale_factor: 1.0,
    }
}

fn resnet(
    l: &Loader<'_>,
    p: &str,
    cin: usize,
    cout: usize,
    o: ResnetOptions,
) -> Result<ResnetBlock2D> {
    ResnetBlock2D::load(l, p, cin, cout, BlockResample::None, o)
}

/// `UNetMidBlock2D` with `temb_channels=None`: resnet → attention (heads of the full channel
/// width, i.e. one head) → resnet.
struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<AttentionBlock>,
}

impl MidBlock {
    fn load(l: &Loader<'_>, prefix: &str, cfg: &AutoencoderKLConfig) -> Result<Self> {
        let c = *cfg.block_out_channels.last().unwrap_or(&1);
        let o = resnet_opts(cfg);
        let r0 = resnet(l, &format!("{prefix}.resnets.0"), c, c, o)?;
        let attention = if cfg.mid_block_add_attention {
            let p = format!("{prefix}.attentions.0");
            Some(AttentionBlock::load(
                l,
                &p,
                c,
                c,
                Some(cfg.norm_num_groups),
                VAE_EPS,
                1.0,
            )?)
        } else {
            None
        };
        let r1 = resnet(l, &format!("{prefix}.resnets.1"), c, c, o)?;
        Ok(MidBlock {
            resnets: [r0, r1],
            attention,
        })
    }

    fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward_no_temb(g, x)?;
        if let Some(a) = &self.attention {
            h = a.forward(g, &h)?;
        }
        self.resnets[1].forward_no_temb(g, &h)
    }
}

/// diffusers' `Encoder` with `double_z=True`: image → 2·latent_channels moments.
pub struct Encoder {
    conv_in: Conv2d,
    /// Per down block: its resnets and, except the last, a stride-2 conv with (0, 1, 0, 1) pad.
    down: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn load(l: &Loader<'_>, prefix: &str, cfg: &AutoencoderKLConfig) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let o = resnet_opts(cfg);
        let conv_in = l.conv(
            &format!("{prefix}.conv_in"),
            cfg.in_channels,
            boc[0],
            3,
            SAME,
        )?;
        let mut down = Vec::new();
        let mut cout = boc[0];
        for (i, &c) in boc.iter().enumerate() {
            let cin = cout;
            cout = c;
            let p = format!("{prefix}.down_blocks.{i}");
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let ci = if j == 0 { cin } else { cout };
                    resnet(l, &format!("{p}.resnets.{j}"), ci, cout, o)
                })
                .collect::<Result<Vec<_>>>()?;
            let ds = (i + 1 < boc.len())
                .then(|| Downsample2D::load(l, &format!("{p}.downsamplers.0"), cout, 0))
                .transpose()?;
            down.push((resnets, ds));
        }
        let c = boc[boc.len() - 1];
        let mid = MidBlock::load(l, &format!("{prefix}.mid_block"), cfg)?;
        let conv_norm_out = l.group_norm(
            &format!("{prefix}.conv_norm_out"),
            c,
            cfg.norm_num_groups,
            VAE_EPS,
        )?;
        let conv_out = l.conv(
            &format!("{prefix}.conv_out"),
            c,
            2 * cfg.latent_channels,
            3,
            SAME,
        )?;
        Ok(Encoder {
            conv_in,
            down,
            mid,
            conv_norm_out,
            conv_out,
        })
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(g, x, "encoder.conv_in")?;
        for (resnets, ds) in &self.down {
            for r in resnets {
                h = r.forward_no_temb(g, &h)?;
            }
            if let Some(d) = ds {
                h = d.forward(g, &h)?;
            }
        }
        h = self.mid.forward(g, &h)?;
        let n = self
            .conv_norm_out
            .forward(g, &h, true, "encoder.norm_out")?;
        self.conv_out.forward(g, &n, "encoder.conv_out")
    }
}

/// diffusers' `Decoder` (`norm_type="group"`): latents → image.
pub struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    /// Per up block: layers_per_block + 1 resnets and, except the last, nearest ×2 + conv.
    up: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn load(l: &Loader<'_>, prefix: &str, cfg: &AutoencoderKLConfig) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let o = resnet_opts(cfg);
        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let conv_in = l.conv(
            &format!("{prefix}.conv_in"),
            cfg.latent_channels,
            rev[0],
            3,
            SAME,
        )?;
        let mid = MidBlock::load(l, &format!("{prefix}.mid_block"), cfg)?;
        let mut up = Vec::new();
        let mut cout = rev[0];
        for (i, &c) in rev.iter().enumerate() {
            let prev = cout;
            cout = c;
            let p = format!("{prefix}.up_blocks.{i}");
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| {
                    let ci = if j == 0 { prev } else { cout };
                    resnet(l, &format!("{p}.resnets.{j}"), ci, cout, o)
                })
                .collect::<Result<Vec<_>>>()?;
            let us = (i + 1 < rev.len())
                .then(|| Upsample2D::load(l, &format!("{p}.upsamplers.0"), cout))
                .transpose()?;
            up.push((resnets, us));
        }
        let conv_norm_out = l.group_norm(
            &format!("{prefix}.conv_norm_out"),
            boc[0],
            cfg.norm_num_groups,
            VAE_EPS,
        )?;
        let conv_out = l.conv(
            &format!("{prefix}.conv_out"),
            boc[0],
            cfg.out_channels,
            3,
            SAME,
        )?;
        Ok(Decoder {
            conv_in,
            mid,
            up,
            conv_norm_out,
            conv_out,
        })
    }

    pub fn forward(&self, g: &mut Graph<'_>, z: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(g, z, "decoder.conv_in")?;
        h = self.mid.forward(g, &h)?;
        for (resnets, us) in &self.up {
            for r in resnets {
                h = r.forward_no_temb(g, &h)?;
            }
            if let Some(u) = us {
                h = u.forward(g, &h)?;
            }
        }
        let n = self
            .conv_norm_out
            .forward(g, &h, true, "decoder.norm_out")?;
        self.conv_out.forward(g, &n, "decoder.conv_out")
    }

    /// [`Decoder::forward`] with everything after the mid block run in `bands` row bands
    /// ([`super::vae_bands`]): the same output to rounding, no tensor larger than one band.
    pub fn forward_banded(&self, g: &mut Graph<'_>, z: &Tensor, bands: usize) -> Result<Tensor> {
        let mut h = self.conv_in.forward(g, z, "decoder.conv_in")?;
        h = self.mid.forward(g, &h)?;
        let mut b = Bands::split(g, &h, bands)?;
        drop(h);
        for (resnets, us) in &self.up {
            for r in resnets {
                b = b.resnet(g, r)?;
            }
            if let Some(u) = us {
                b = b.upsample(g, u)?;
            }
        }
        let n = b.group_norm(g, &self.conv_norm_out, true)?;
        drop(b);
        let y = n.conv(g, &self.conv_out, None, "decoder.conv_out")?;
        y.join(g, "decoder.out")
    }
}
