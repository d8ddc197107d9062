//! The cross-attention blocks of diffusers' `UNet2DConditionModel`
//! (`models/unets/unet_2d_blocks.py`): `CrossAttnDownBlock2D`, `UNetMidBlock2DCrossAttn` and
//! `CrossAttnUpBlock2D` — residual blocks each followed by a [`Transformer2DModel`] attending
//! to the text states (Rombach et al., 2022). The plain `DownBlock2D`/`UpBlock2D` are
//! [`super::unet_2d_blocks`]'s.

use super::layers::Loader;
use super::resnet::{BlockResample, Downsample2D, ResnetBlock2D, ResnetOptions, Upsample2D};
use super::transformer_2d::{Transformer2DModel, TransformerOptions};
use super::Graph;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `CrossAttnDownBlock2D`.
pub struct CrossAttnDownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    down: Option<Downsample2D>,
}

impl CrossAttnDownBlock {
    /// `down` is `Some(downsample_padding)` unless this is the last block.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        layers: usize,
        t: TransformerOptions,
        down: Option<usize>,
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
            attentions.push(Transformer2DModel::load(
                l,
                &format!("{prefix}.attentions.{i}"),
                cout,
                t,
            )?);
        }
        let down = down
            .map(|p| Downsample2D::load(l, &format!("{prefix}.downsamplers.0"), cout, p))
            .transpose()?;
        Ok(CrossAttnDownBlock {
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
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x;
        for (r, a) in self.resnets.iter().zip(&self.attentions) {
            let y = r.forward(g, &h, temb)?;
            h = a.forward(g, &y, context)?;
            skips.push(h.clone());
        }
        if let Some(d) = &self.down {
            h = d.forward(g, &h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) × transformer count (one).
pub struct MidBlockCrossAttn {
    first: ResnetBlock2D,
    rest: Vec<(Transformer2DModel, ResnetBlock2D)>,
}

impl MidBlockCrossAttn {
    pub fn load(
        l: &Loader<'_>,
        channels: usize,
        t: TransformerOptions,
        opts: ResnetOptions,
    ) -> Result<Self> {
        let resnet = |i: usize| {
            ResnetBlock2D::load(
                l,
                &format!("mid_block.resnets.{i}"),
                channels,
                channels,
                BlockResample::None,
                opts,
            )
        };
        let first = resnet(0)?;
        let a = Transformer2DModel::load(l, "mid_block.attentions.0", channels, t)?;
        let rest = vec![(a, resnet(1)?)];
        Ok(MidBlockCrossAttn { first, rest })
    }

    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        let mut h = self.first.forward(g, x, temb)?;
        for (a, r) in &self.rest {
            let y = a.forward(g, &h, context)?;
            h = r.forward(g, &y, temb)?;
        }
        Ok(h)
    }
}

/// `CrossAttnUpBlock2D`: each residual block takes cat([h, skip]), then its transformer.
pub struct CrossAttnUpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    up: Option<Upsample2D>,
}

impl CrossAttnUpBlock {
    /// `cin` is the channel count of the matching down block's input, `prev` the channels
    /// coming from below; `up` unless this is the last block.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        prev: usize,
        layers: usize,
        t: TransformerOptions,
        up: bool,
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
            attentions.push(Transformer2DModel::load(
                l,
                &format!("{prefix}.attentions.{i}"),
                cout,
                t,
            )?);
        }
        let up = up
            .then(|| Upsample2D::load(l, &format!("{prefix}.upsamplers.0"), cout))
            .transpose()?;
        Ok(CrossAttnUpBlock {
            resnets,
            attentions,
            up,
        })
    }

    /// Consumes `x` and the last `resnets.len()` tensors of `skips`.
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x;
        for (r, a) in self.resnets.iter().zip(&self.attentions) {
            let skip = skips.pop().ok_or_else(|| Error::Argument {
                op: "CrossAttnUpBlock2D",
                arg: "skips",
                reason: "the down path pushed fewer skip tensors than the up path takes".into(),
            })?;
            let (s, k) = (h.shape().to_vec(), skip.shape()[1]);
            let cat = g.alloc("up.cat", &[s[0], s[1] + k, s[2], s[3]])?;
            crate::ops::concat::concat_channels(&mut g.rec, &h, &skip, &cat)?;
            let y = r.forward(g, &cat, temb)?;
            h = a.forward(g, &y, context)?;
        }
        match &self.up {
            Some(u) => u.forward(g, &h),
            None => Ok(h),
        }
    }
}
