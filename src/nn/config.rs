//! `config.json` of diffusers' `UNet2DModel`, field names and defaults as in diffusers
//! (`models/unets/unet_2d.py`). Unknown fields, unsupported values and unsupported block types
//! are errors naming the field: a checkpoint we cannot run exactly is refused, never run wrong.

use crate::domain::Domain;
use crate::error::Result;
use serde_json::Value;
use std::path::Path;

/// An entry of `down_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    DownBlock2D,
    AttnDownBlock2D,
    /// NCSN++ block: FIR-downsampling residual block and a skip path from the input image.
    SkipDownBlock2D,
    AttnSkipDownBlock2D,
}

impl DownBlockType {
    pub fn has_attention(self) -> bool {
        matches!(
            self,
            DownBlockType::AttnDownBlock2D | DownBlockType::AttnSkipDownBlock2D
        )
    }
    pub fn is_skip(self) -> bool {
        matches!(
            self,
            DownBlockType::SkipDownBlock2D | DownBlockType::AttnSkipDownBlock2D
        )
    }
}

/// An entry of `up_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockType {
    UpBlock2D,
    AttnUpBlock2D,
    /// NCSN++ block: FIR-upsampling residual block and a skip path to the output image.
    SkipUpBlock2D,
    AttnSkipUpBlock2D,
}

impl UpBlockType {
    pub fn has_attention(self) -> bool {
        matches!(
            self,
            UpBlockType::AttnUpBlock2D | UpBlockType::AttnSkipUpBlock2D
        )
    }
    pub fn is_skip(self) -> bool {
        matches!(
            self,
            UpBlockType::SkipUpBlock2D | UpBlockType::AttnSkipUpBlock2D
        )
    }
}

/// `time_embedding_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEmbeddingType {
    /// Sinusoidal `Timesteps`.
    Positional,
    /// `GaussianFourierProjection(scale=16)`, log of the noise level; the output is divided by
    /// the noise level.
    Fourier,
}

/// `class_embed_type` with `num_class_embeds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassEmbedding {
    /// `nn.Embedding(num_class_embeds, time_embed_dim)` (class_embed_type None).
    Lookup { num_class_embeds: usize },
    /// `TimestepEmbedding` of the time projection of the label (class_embed_type "timestep").
    Timestep,
}

/// How the resampling in a block is done (`downsample_type` / `upsample_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// Strided conv (down) or nearest ×2 then conv (up).
    Conv,
    /// A ResnetBlock2D with down=True / up=True (average pool / nearest inside the block).
    Resnet,
}

/// The largest channel count, head dimension, group count or layer count a config may give
/// (checked before any weight is read or allocated).
pub const MAX_WIDTH: usize = 1 << 16;

/// The parsed config.
#[derive(Debug, Clone, PartialEq)]
pub struct UNet2DConfig {
    pub sample_size: Option<(usize, usize)>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub time_embedding_type: TimeEmbeddingType,
    pub time_embedding_dim: Option<usize>,
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<DownBlockType>,
    /// `None` when `mid_block_type` is null.
    pub mid_block: bool,
    pub up_block_types: Vec<UpBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub mid_block_scale_factor: f64,
    pub downsample_padding: usize,
    pub downsample_type: Resample,
    pub upsample_type: Resample,
    pub attention_head_dim: Option<usize>,
    /// `None` (null in the config): per-layer min(channels / 4, 32), as NCSN++ configs use.
    pub norm_num_groups: Option<usize>,
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    /// `resnet_time_scale_shift == "scale_shift"`.
    pub scale_shift: bool,
    pub add_attention: bool,
    pub class_embedding: Option<ClassEmbedding>,
}

const KNOWN: &[&str] = &[
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    // Read by load::quant (int8 weights; PTQ4DM).
    "quantization_config",
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "time_embedding_dim",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "dropout",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "num_train_timesteps",
];

impl UNet2DConfig {
    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = crate::load::read_json(path)?;
        Self::from_json(&v, &path.display().to_string())
    }

    /// Parses a config object; `file` names it in errors.
    pub fn from_json(v: &Value, file: &str) -> Result<Self> {
        let f = crate::load::ConfigFields::new(v, file)?;
        for k in f.keys() {
            if !KNOWN.contains(&k.as_str()) {
                return Err(f.err(
                    k,
                    "not a UNet2DModel field this engine knows; refusing to guess",
                ));
            }
        }
        let class = f.str("_class_name", "UNet2DModel")?;
        if class != "UNet2DModel" {
            return Err(f.err(
                "_class_name",
                format!("`{class}` is not supported (only UNet2DModel)"),
            ));
        }
        let sample_size = match f.get("sample_size") {
            None => None,
            Some(Value::Array(a)) if a.len() == 2 => {
                let d: Vec<usize> = a
                    .iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect();
                if d.len() != 2 {
                    return Err(f.err("sample_size", "expected an integer or [height, width]"));
                }
                Some((d[0], d[1]))
            }
            Some(v) => {
                let s = v
                    .as_u64()
                    .ok_or_else(|| f.err("sample_size", "expected an integer or [height, width]"))?
                    as usize;
                Some((s, s))
            }
        };
        let tet = match f.str("time_embedding_type", "positional")?.as_str() {
            "positional" => TimeEmbeddingType::Positional,
            "fourier" => TimeEmbeddingType::Fourier,
            o => {
                return Err(f.err(
                    "time_embedding_type",
                    format!("`{o}` is not supported (positional, fourier)"),
                ))
            }
        };
        let down_block_types = f
            .strs(
                "down_block_types",
                &[
                    "DownBlock2D",
                    "AttnDownBlock2D",
                    "AttnDownBlock2D",
                    "AttnDownBlock2D",
                ],
            )?
            .iter()
            .map(|s| match s.as_str() {
                "DownBlock2D" => Ok(DownBlockType::DownBlock2D),
                "AttnDownBlock2D" => Ok(DownBlockType::AttnDownBlock2D),
                "SkipDownBlock2D" => Ok(DownBlockType::SkipDownBlock2D),
                "AttnSkipDownBlock2D" => Ok(DownBlockType::AttnSkipDownBlock2D),
                o => Err(f.err(
                    "down_block_types",
                    format!("block type `{o}` is not supported yet"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_block_types = f
            .strs(
                "up_block_types",
                &[
                    "AttnUpBlock2D",
                    "AttnUpBlock2D",
                    "AttnUpBlock2D",
                    "UpBlock2D",
                ],
            )?
            .iter()
            .map(|s| match s.as_str() {
                "UpBlock2D" => Ok(UpBlockType::UpBlock2D),
                "AttnUpBlock2D" => Ok(UpBlockType::AttnUpBlock2D),
                "SkipUpBlock2D" => Ok(UpBlockType::SkipUpBlock2D),
                "AttnSkipUpBlock2D" => Ok(UpBlockType::AttnSkipUpBlock2D),
                o => Err(f.err(
                    "up_block_types",
                    format!("block type `{o}` is not supported yet"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let mid_block = match f.get("mid_block_type") {
            None if f.contains("mid_block_type") => false,
            _ => {
                let m = f.str("mid_block_type", "UNetMidBlock2D")?;
                if m != "UNetMidBlock2D" {
                    return Err(f.err(
                        "mid_block_type",
                        format!("`{m}` is not supported (UNetMidBlock2D or null)"),
                    ));
                }
                true
            }
        };
        // Every width, count and group number of the config is a checked integer in a range
        // (a 0 or an absurd value is an error naming the field, never a failed weight load).
        let opt_int = |k: &str| f.get(k).map(|_| f.int(k, 0, 1..=MAX_WIDTH)).transpose();
        let block_out_channels = f.usizes("block_out_channels", &[224, 448, 672, 896])?;
        if let Some(&c) = block_out_channels.iter().find(|&&c| c > MAX_WIDTH) {
            return Err(f.err(
                "block_out_channels",
                format!("{c} is out of range (expected 1..={MAX_WIDTH})"),
            ));
        }
        if block_out_channels.len() != down_block_types.len()
            || up_block_types.len() != down_block_types.len()
        {
            return Err(f.err(
                "block_out_channels",
                format!(
                    "{} channels for {} down and {} up blocks; the three must agree",
                    block_out_channels.len(),
                    down_block_types.len(),
                    up_block_types.len()
                ),
            ));
        }
        if block_out_channels.is_empty() || block_out_channels.contains(&0) {
            return Err(f.err("block_out_channels", "must be non-empty and positive"));
        }
        let resample = |k: &str| -> Result<Resample> {
            match f.str(k, "conv")?.as_str() {
                "conv" => Ok(Resample::Conv),
                "resnet" => Ok(Resample::Resnet),
                o => Err(f.err(k, format!("`{o}` is not supported (conv, resnet)"))),
            }
        };
        let act = f.str("act_fn", "silu")?;
        if act != "silu" && act != "swish" {
            return Err(f.err("act_fn", format!("`{act}` is not supported (silu)")));
        }
        let scale_shift = match f.str("resnet_time_scale_shift", "default")?.as_str() {
            "default" => false,
            "scale_shift" => true,
            o => {
                return Err(f.err(
                    "resnet_time_scale_shift",
                    format!("`{o}` is not supported (default, scale_shift)"),
                ))
            }
        };
        let num_class_embeds = f.opt_usize("num_class_embeds")?;
        let class_embedding = match (
            f.get("class_embed_type").and_then(|v| v.as_str()),
            num_class_embeds,
        ) {
            (None, None) => None,
            (None, Some(n)) if n > 0 => Some(ClassEmbedding::Lookup {
                num_class_embeds: n,
            }),
            (None, Some(_)) => return Err(f.err("num_class_embeds", "must be positive")),
            (Some("timestep"), _) => Some(ClassEmbedding::Timestep),
            (Some(o), _) => {
                return Err(f.err(
                    "class_embed_type",
                    format!("`{o}` is not supported (null, timestep)"),
                ))
            }
        };
        let cfg = UNet2DConfig {
            sample_size,
            in_channels: f.int("in_channels", 3, 1..=MAX_WIDTH)?,
            out_channels: f.int("out_channels", 3, 1..=MAX_WIDTH)?,
            center_input_sample: f.bool("center_input_sample", false)?,
            time_embedding_type: tet,
            time_embedding_dim: opt_int("time_embedding_dim")?,
            freq_shift: f.f64("freq_shift", 0.0, Domain::FINITE)?,
            flip_sin_to_cos: f.bool("flip_sin_to_cos", true)?,
            down_block_types,
            mid_block,
            up_block_types,
            block_out_channels,
            layers_per_block: f.int("layers_per_block", 2, 1..=MAX_WIDTH)?,
            mid_block_scale_factor: f.f64("mid_block_scale_factor", 1.0, Domain::FINITE)?,
            downsample_padding: f.int("downsample_padding", 1, 0..=MAX_WIDTH)?,
            downsample_type: resample("downsample_type")?,
            upsample_type: resample("upsample_type")?,
            attention_head_dim: match f.get("attention_head_dim") {
                None if f.contains("attention_head_dim") => None,
                _ => Some(f.int("attention_head_dim", 8, 1..=MAX_WIDTH)?),
            },
            norm_num_groups: match f.get("norm_num_groups") {
                None if f.contains("norm_num_groups") => None,
                _ => Some(f.int("norm_num_groups", 32, 1..=MAX_WIDTH)?),
            },
            attn_norm_num_groups: opt_int("attn_norm_num_groups")?,
            norm_eps: f.f64("norm_eps", 1e-5, Domain::POSITIVE)?,
            scale_shift,
            add_attention: f.bool("add_attention", true)?,
            class_embedding,
        };
        if cfg.in_channels == 0 || cfg.out_channels == 0 {
            return Err(f.err("in_channels", "channel counts must be positive"));
        }
        if cfg.layers_per_block == 0 {
            return Err(f.err("layers_per_block", "must be at least 1"));
        }
        if let Some(g) = cfg.norm_num_groups {
            if g == 0 {
                return Err(f.err("norm_num_groups", "must be positive"));
            }
            for &c in &cfg.block_out_channels {
                if c % g != 0 {
                    return Err(f.err(
                        "norm_num_groups",
                        format!("{g} groups do not divide block_out_channels entry {c}"),
                    ));
                }
            }
        }
        let skip = cfg.down_block_types.iter().any(|b| b.is_skip())
            || cfg.up_block_types.iter().any(|b| b.is_skip());
        if skip && (cfg.in_channels != 3 || cfg.out_channels != 3) {
            return Err(f.err(
                "in_channels",
                "Skip*Block2D types hard-wire 3 image channels in diffusers; in_channels and out_channels must be 3",
            ));
        }
        let plain = cfg.down_block_types.iter().any(|b| !b.is_skip())
            || cfg.up_block_types.iter().any(|b| !b.is_skip());
        if plain && cfg.norm_num_groups.is_none() {
            return Err(f.err(
                "norm_num_groups",
                "null is only supported with Skip*Block2D blocks (as in diffusers)",
            ));
        }
        if cfg.norm_eps.is_nan() || cfg.norm_eps <= 0.0 {
            return Err(f.err("norm_eps", "must be positive"));
        }
        if cfg.mid_block_scale_factor == 0.0 {
            return Err(f.err("mid_block_scale_factor", "must be non-zero"));
        }
        Ok(cfg)
    }

    /// Width of the time embedding (`time_embedding_dim` or 4 × the first block's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    /// Width of the time projection fed to `time_embedding.linear_1`.
    pub fn timestep_input_dim(&self) -> usize {
        match self.time_embedding_type {
            TimeEmbeddingType::Positional => self.block_out_channels[0],
            TimeEmbeddingType::Fourier => 2 * self.block_out_channels[0],
        }
    }

    /// Groups of a GroupNorm over `channels` where the config's `norm_num_groups` applies:
    /// the configured value, or min(channels / 4, 32) when it is null.
    pub fn groups_for(&self, channels: usize) -> usize {
        self.norm_num_groups.unwrap_or((channels / 4).clamp(1, 32))
    }

    /// The head dimension of attention over `channels` (diffusers: `attention_head_dim` or
    /// the block's channels when null).
    pub fn head_dim(&self, channels: usize) -> usize {
        self.attention_head_dim.unwrap_or(channels)
    }
}
