//! The UNet's blocks (diffusers `models/unets/unet_2d_blocks.py`): `DownBlock2D` /
//! `AttnDownBlock2D`, `UNetMidBlock2D`, `UpBlock2D` / `AttnUpBlock2D`. Attention variants are
//! the plain ones with an attention after each residual block.

use super::attention::AttentionBlock;
use super::layers::Loader;
use super::resnet::{BlockResample, Downsample2D, ResnetBlock2D, ResnetOptions, Upsample2D};
use super::Graph;
use crate::error::Result;
use crate::tensor::Tensor;

/// How a block changes resolution at its end.
pub enum Down {
    None,
    Conv(Downsample2D),
    Resnet(Box<ResnetBlock2D>),
}

/// `DownBlock2D` (no attentions) or `AttnDownBlock2D`.
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
    down: Down,
}

/// Attention settings of a block: head dim, group count (None = no norm), eps.
#[derive(Debug, Clone, Copy)]
pub struct AttnOptions {
    pub dim_head: usize,
    pub groups: Option<usize>,
    pub eps: f64,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        layers: usize,
        attn: Option<AttnOptions>,
        down: Option<(super::config::Resample, usize)>,
        opts: ResnetOptions,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let ci = if i == 0 { cin } else { cout };
            resnets.push(ResnetBlock2D::load(
                l,
                &format!("{prefix}.resnets.{i}"),
                ci,
                cout,
                BlockResample::None,
                opts,
            )?);
            if let Some(a) = attn {
                attentions.push(AttentionBlock::load(
                    l,
                    &format!("{prefix}.attentions.{i}"),
                    cout,
                    a.dim_head,
                    a.groups,
                    a.eps,
                    opts.output_scale_factor,
                )?);
            }
        }
        let down = match down {
            None => Down::None,
            Some((super::config::Resample::Conv, padding)) => Down::Conv(Downsample2D::load(
                l,
                &format!("{prefix}.downsamplers.0"),
                cout,
                padding,
            )?),
            Some((super::config::Resample::Resnet, _)) => {
                Down::Resnet(Box::new(ResnetBlock2D::load(
                    l,
                    &format!("{prefix}.downsamplers.0"),
                    cout,
                    cout,
                    BlockResample::Down,
                    opts,
                )?))
            }
        };
        Ok(DownBlock {
            resnets,
            attentions,
            down,
        })
    }

    /// Returns the block output and pushes the skip tensors onto `skips`.
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: Tensor,
        temb: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x;
        for (i, r) in self.resnets.iter().enumerate() {
            let y = r.forward(g, &h, temb)?;
            let y = match self.attentions.get(i) {
                Some(a) => {
                    let z = a.forward(g, &y)?;
                    g.release(y);
                    z
                }
                None => y,
            };
            skips.push(y.clone());
            h = y;
        }
        let out = match &self.down {
            Down::None => return Ok(h),
            Down::Conv(d) => d.forward(g, &h)?,
            Down::Resnet(r) => r.forward(g, &h, temb)?,
        };
        skips.push(out.clone());
        Ok(out)
    }
}

/// `UNetMidBlock2D` with one attention (or none when `add_attention` is false).
pub struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Option<AttentionBlock>,
}

impl MidBlock {
    pub fn load(
        l: &Loader<'_>,
        channels: usize,
        attn: Option<AttnOptions>,
        opts: ResnetOptions,
    ) -> Result<Self> {
        let r0 = ResnetBlock2D::load(
            l,
            "mid_block.resnets.0",
            channels,
            channels,
            BlockResample::None,
            opts,
        )?;
        let attention = attn
            .map(|a| {
                AttentionBlock::load(
                    l,
                    "mid_block.attentions.0",
                    channels,
                    a.dim_head,
                    a.groups,
                    a.eps,
                    opts.output_scale_factor,
                )
            })
            .transpose()?;
        let r1 = ResnetBlock2D::load(
            l,
            "mid_block.resnets.1",
            channels,
            channels,
            BlockResample::None,
            opts,
        )?;
        Ok(MidBlock {
            resnets: [r0, r1],
            attention,
        })
    }

    pub fn forward(&self, g: &mut Graph<'_>, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(g, x, temb)?;
        if let Some(a) = &self.attention {
            let y = a.forward(g, &h)?;
            g.release(h);
            h = y;
        }
        let out = self.resnets[1].forward(g, &h, temb)?;
        g.release(h);
        Ok(out)
    }
}

/// How an up block ends.
pub enum Up {
    None,
    Conv(Upsample2D),
    Resnet(Box<ResnetBlock2D>),
}

/// `UpBlock2D` or `AttnUpBlock2D`: each residual block takes cat([h, skip]).
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
    up: Up,
}

impl UpBlock {
    /// `cin` is the channel count of the matching down block's input, `prev` the channels
    /// coming from below.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        prev: usize,
        layers: usize,
        attn: Option<AttnOptions>,
        up: Option<super::config::Resample>,
        opts: ResnetOptions,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { cin } else { cout };
            let rin = if i == 0 { prev } else { cout };
            resnets.push(ResnetBlock2D::load(
                l,
                &format!("{prefix}.resnets.{i}"),
                rin + skip,
                cout,
                BlockResample::None,
                opts,
            )?);
            if let Some(a) = attn {
                attentions.push(AttentionBlock::load(
                    l,
                    &format!("{prefix}.attentions.{i}"),
                    cout,
                    a.dim_head,
                    a.groups,
                    a.eps,
                    opts.output_scale_factor,
                )?);
            }
        }
        let up = match up {
            None => Up::None,
            Some(super::config::Resample::Conv) => Up::Conv(Upsample2D::load(
                l,
                &format!("{prefix}.upsamplers.0"),
                cout,
            )?),
            Some(super::config::Resample::Resnet) => Up::Resnet(Box::new(ResnetBlock2D::load(
                l,
                &format!("{prefix}.upsamplers.0"),
                cout,
                cout,
                BlockResample::Up,
                opts,
            )?)),
        };
        Ok(UpBlock {
            resnets,
            attentions,
            up,
        })
    }

    /// Number of skip tensors this block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// Consumes `x` and the last `num_skips` tensors of `skips`.
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: Tensor,
        temb: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x;
        for (i, r) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the UNet pushes one skip per up-block resnet");
            let (s, k) = (h.shape().to_vec(), skip.shape()[1]);
            let cat = g.alloc("up.cat", &[s[0], s[1] + k, s[2], s[3]])?;
            crate::ops::concat::concat_channels(&mut g.rec, &h, &skip, &cat)?;
            g.release(h);
            g.release(skip);
            let y = r.forward(g, &cat, temb)?;
            g.release(cat);
            h = match self.attentions.get(i) {
                Some(a) => {
                    let z = a.forward(g, &y)?;
                    g.release(y);
                    z
                }
                None => y,
            };
        }
        let out = match &self.up {
            Up::None => return Ok(h),
            Up::Conv(u) => u.forward(g, &h)?,
            Up::Resnet(r) => r.forward(g, &h, temb)?,
        };
        g.release(h);
        Ok(out)
    }
}
