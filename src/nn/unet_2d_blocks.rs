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
pub enum Downsampler {
    None,
    Conv(Downsample2D),
    Resnet(Box<ResnetBlock2D>),
}

/// `DownBlock2D` (no attentions) or `AttnDownBlock2D`.
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
    down: Downsampler,
}

/// Attention settings of a block: head dim, group count (None = no norm), eps.
#[derive(Debug, Clone, Copy)]
pub struct AttnOptions {
    pub dim_head: usize,
    pub groups: Option<usize>,
    pub eps: f64,
}

impl AttnOptions {
    /// The attention at `path` over `channels`, rescaled like the block's residual blocks.
    fn load(
        &self,
        l: &Loader<'_>,
        path: &str,
        channels: usize,
        opts: ResnetOptions,
    ) -> Result<AttentionBlock> {
        AttentionBlock::load(
            l,
            path,
            channels,
            self.dim_head,
            self.groups,
            self.eps,
            opts.output_scale_factor,
        )
    }
}

/// `y` through the attention when there is one (releasing `y`), else `y` itself.
fn attend(g: &mut Graph<'_>, attention: Option<&AttentionBlock>, y: Tensor) -> Result<Tensor> {
    Ok(match attention {
        Some(a) => a.forward(g, &y)?,
        None => y,
    })
}

/// A residual block followed by its attention, when the block has one.
fn resnet_then_attention(
    g: &mut Graph<'_>,
    r: &ResnetBlock2D,
    attention: Option<&AttentionBlock>,
    x: &Tensor,
    temb: &Tensor,
) -> Result<Tensor> {
    let y = r.forward(g, x, temb)?;
    attend(g, attention, y)
}

/// The resampling residual block at `path` (`Resample::Resnet` in the config).
fn resampling_resnet(
    l: &Loader<'_>,
    path: &str,
    channels: usize,
    resample: BlockResample,
    opts: ResnetOptions,
) -> Result<Box<ResnetBlock2D>> {
    Ok(Box::new(ResnetBlock2D::load(
        l, path, channels, channels, resample, opts,
    )?))
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
                attentions.push(a.load(l, &format!("{prefix}.attentions.{i}"), cout, opts)?);
            }
        }
        let down = match down {
            None => Downsampler::None,
            Some((super::config::Resample::Conv, padding)) => Downsampler::Conv(Downsample2D::load(
                l,
                &format!("{prefix}.downsamplers.0"),
                cout,
                padding,
            )?),
            Some((super::config::Resample::Resnet, _)) => Downsampler::Resnet(resampling_resnet(
                l,
                &format!("{prefix}.downsamplers.0"),
                cout,
                BlockResample::Down,
                opts,
            )?),
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
            let y = resnet_then_attention(g, r, self.attentions.get(i), &h, temb)?;
            skips.push(y.clone());
            h = y;
        }
        let out = match &self.down {
            Downsampler::None => return Ok(h),
            Downsampler::Conv(d) => d.forward(g, &h)?,
            Downsampler::Resnet(r) => r.forward(g, &h, temb)?,
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
            .map(|a| a.load(l, "mid_block.attentions.0", channels, opts))
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
        let h = resnet_then_attention(g, &self.resnets[0], self.attention.as_ref(), x, temb)?;
        self.resnets[1].forward(g, &h, temb)
    }
}

/// How an up block ends.
pub enum Upsampler {
    None,
    Conv(Upsample2D),
    Resnet(Box<ResnetBlock2D>),
}

/// `UpBlock2D` or `AttnUpBlock2D`: each residual block takes cat([h, skip]).
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
    up: Upsampler,
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
                attentions.push(a.load(l, &format!("{prefix}.attentions.{i}"), cout, opts)?);
            }
        }
        let up = match up {
            None => Upsampler::None,
            Some(super::config::Resample::Conv) => Upsampler::Conv(Upsample2D::load(
                l,
                &format!("{prefix}.upsamplers.0"),
                cout,
            )?),
            Some(super::config::Resample::Resnet) => Upsampler::Resnet(resampling_resnet(
                l,
                &format!("{prefix}.upsamplers.0"),
                cout,
                BlockResample::Up,
                opts,
            )?),
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
            let y = r.forward(g, &cat, temb)?;
            h = attend(g, self.attentions.get(i), y)?;
        }
        let out = match &self.up {
            Upsampler::None => return Ok(h),
            Upsampler::Conv(u) => u.forward(g, &h)?,
            Upsampler::Resnet(r) => r.forward(g, &h, temb)?,
        };
        Ok(out)
    }
}

/// diffusers' group count for the NCSN++ blocks: min(channels / 4, 32).
pub fn ncsnpp_groups(channels: usize) -> usize {
    (channels / 4).min(32)
}

/// Output scale of the NCSN++ blocks' residual and attention layers (√2).
pub const SKIP_SCALE: f64 = std::f64::consts::SQRT_2;

/// NCSN++ options common to a model's skip blocks.
#[derive(Debug, Clone, Copy)]
pub struct SkipOptions {
    pub eps: f64,
    pub temb_channels: usize,
    pub scale_shift: bool,
    /// Attention head dim when the block has attention.
    pub dim_head: Option<usize>,
}

impl SkipOptions {
    fn resnet(&self, groups: usize, groups_out: usize, force_shortcut: bool) -> ResnetOptions {
        ResnetOptions {
            groups,
            groups_out,
            force_shortcut,
            eps: self.eps,
            temb_channels: self.temb_channels,
            scale_shift: self.scale_shift,
            output_scale_factor: SKIP_SCALE,
        }
    }
    fn attention(
        &self,
        l: &Loader<'_>,
        prefix: &str,
        channels: usize,
    ) -> Result<Option<AttentionBlock>> {
        self.dim_head
            .map(|d| AttentionBlock::load(l, prefix, channels, d, Some(32), self.eps, SKIP_SCALE))
            .transpose()
    }
}

/// `SkipDownBlock2D` / `AttnSkipDownBlock2D` (NCSN++).
pub struct SkipDownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
    /// resnet_down and skip_conv (3 → C, 1×1) when the block downsamples.
    down: Option<(ResnetBlock2D, super::layers::Conv2d)>,
}

impl SkipDownBlock {
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        layers: usize,
        add_downsample: bool,
        o: SkipOptions,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let ci = if i == 0 { cin } else { cout };
            let opts = o.resnet(ncsnpp_groups(ci), ncsnpp_groups(cout), false);
            resnets.push(ResnetBlock2D::load(
                l,
                &format!("{prefix}.resnets.{i}"),
                ci,
                cout,
                BlockResample::None,
                opts,
            )?);
            if let Some(a) = o.attention(l, &format!("{prefix}.attentions.{i}"), cout)? {
                attentions.push(a);
            }
        }
        let down = if add_downsample {
            let g = ncsnpp_groups(cout);
            let r = ResnetBlock2D::load(
                l,
                &format!("{prefix}.resnet_down"),
                cout,
                cout,
                BlockResample::FirDown,
                o.resnet(g, g, true),
            )?;
            let one = crate::ops::conv2d::Conv2dArgs {
                stride: 1,
                padding: 0,
                extra_end: 0,
            };
            Some((r, l.conv(&format!("{prefix}.skip_conv"), 3, cout, 1, one)?))
        } else {
            None
        };
        Ok(SkipDownBlock {
            resnets,
            attentions,
            down,
        })
    }

    /// Returns (output, skip image); pushes the skip tensors onto `skips`. `skip_sample` is
    /// the 3-channel image path (the model input at the first block).
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: Tensor,
        temb: &Tensor,
        skip_sample: Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let mut h = x;
        for (i, r) in self.resnets.iter().enumerate() {
            let y = resnet_then_attention(g, r, self.attentions.get(i), &h, temb)?;
            skips.push(y.clone());
            h = y;
        }
        let Some((resnet_down, skip_conv)) = &self.down else {
            return Ok((h, skip_sample));
        };
        let hd = resnet_down.forward(g, &h, temb)?;
        let s = super::resnet::fir_resample(g, &skip_sample, false, "skip_sample")?;
        let sc = skip_conv.forward(g, &s, "skip_conv")?;
        let out = super::layers::add(g, &sc, &hd, "skip_down.out")?;
        skips.push(out.clone());
        Ok((out, s))
    }
}

/// `SkipUpBlock2D` / `AttnSkipUpBlock2D` (NCSN++).
pub struct SkipUpBlock {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<AttentionBlock>,
    /// skip_norm, skip_conv (C → 3, 3×3) and resnet_up when the block upsamples.
    up: Option<(
        super::layers::GroupNorm,
        super::layers::Conv2d,
        ResnetBlock2D,
    )>,
}

impl SkipUpBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        prev: usize,
        layers: usize,
        add_upsample: bool,
        o: SkipOptions,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { cin } else { cout };
            let rin = if i == 0 { prev } else { cout };
            // diffusers computes AttnSkipUpBlock2D's groups as min(rin + skip // 4, 32)
            // (operator precedence) and SkipUpBlock2D's as min((rin + skip) // 4, 32).
            let groups = if o.dim_head.is_some() {
                (rin + skip / 4).min(32)
            } else {
                ncsnpp_groups(rin + skip)
            };
            let opts = o.resnet(groups, ncsnpp_groups(cout), false);
            resnets.push(ResnetBlock2D::load(
                l,
                &format!("{prefix}.resnets.{i}"),
                rin + skip,
                cout,
                BlockResample::None,
                opts,
            )?);
        }
        let attention = o.attention(l, &format!("{prefix}.attentions.0"), cout)?;
        let up = if add_upsample {
            let gr = ncsnpp_groups(cout);
            let same = crate::ops::conv2d::Conv2dArgs {
                stride: 1,
                padding: 1,
                extra_end: 0,
            };
            Some((
                l.group_norm(&format!("{prefix}.skip_norm"), cout, gr, o.eps)?,
                l.conv(&format!("{prefix}.skip_conv"), cout, 3, 3, same)?,
                ResnetBlock2D::load(
                    l,
                    &format!("{prefix}.resnet_up"),
                    cout,
                    cout,
                    BlockResample::FirUp,
                    o.resnet(gr, gr, true),
                )?,
            ))
        } else {
            None
        };
        Ok(SkipUpBlock {
            resnets,
            attention,
            up,
        })
    }

    /// Consumes `x` and `resnets.len()` skips; threads the 3-channel output image path.
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: Tensor,
        temb: &Tensor,
        skip_sample: Option<Tensor>,
        skips: &mut Vec<Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut h = x;
        for r in &self.resnets {
            let skip = skips
                .pop()
                .expect("the UNet pushes one skip per up-block resnet");
            let (s, k) = (h.shape().to_vec(), skip.shape()[1]);
            let cat = g.alloc("up.cat", &[s[0], s[1] + k, s[2], s[3]])?;
            crate::ops::concat::concat_channels(&mut g.rec, &h, &skip, &cat)?;
            h = r.forward(g, &cat, temb)?;
        }
        if let Some(a) = &self.attention {
            h = a.forward(g, &h)?;
        }
        let mut skip_sample = match skip_sample {
            Some(s) => Some(super::resnet::fir_resample(g, &s, true, "skip_sample")?),
            None => None,
        };
        if let Some((norm, conv, resnet_up)) = &self.up {
            let n = norm.forward(g, &h, true, "skip_norm")?;
            let c = conv.forward(g, &n, "skip_conv")?;
            skip_sample = Some(match skip_sample {
                Some(s) => super::layers::add(g, &s, &c, "skip_sample")?,
                None => c,
            });
            h = resnet_up.forward(g, &h, temb)?;
        }
        Ok((h, skip_sample))
    }
}
