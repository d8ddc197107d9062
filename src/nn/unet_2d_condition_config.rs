//! `config.json` of diffusers' `UNet2DConditionModel` (`models/unets/unet_2d_condition.py`),
//! the Stable Diffusion 1.x/2.x subset: field names and defaults as in diffusers. Every field an
//! SD 1.x/2.x checkpoint writes is read; any other field, or a known field with a value that
//! changes the math in a way this engine does not implement, is an error naming the field.

use super::config::MAX_WIDTH;
use crate::domain::Domain;
use crate::error::Result;
use crate::load::ConfigFields;
use serde_json::Value;
use std::path::Path;

/// An entry of `down_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossDownBlockType {
    /// Residual blocks, each followed by a `Transformer2DModel` attending to the text.
    CrossAttnDownBlock2D,
    /// Residual blocks only.
    DownBlock2D,
}

/// An entry of `up_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossUpBlockType {
    CrossAttnUpBlock2D,
    UpBlock2D,
}

/// The parsed config.
#[derive(Debug, Clone, PartialEq)]
pub struct UNet2DConditionConfig {
    pub sample_size: Option<(usize, usize)>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<CrossDownBlockType>,
    /// `mid_block_type` is `UNetMidBlock2DCrossAttn` (true) or null (false).
    pub mid_block: bool,
    pub up_block_types: Vec<CrossUpBlockType>,
    pub block_out_channels: Vec<usize>,
    /// Residual blocks per down block (an int in the config is repeated per block).
    pub layers_per_block: Vec<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    /// `BasicTransformerBlock`s per `Transformer2DModel`, per down block.
    pub transformer_layers_per_block: Vec<usize>,
    /// Attention heads per down block. diffusers reads `attention_head_dim` as the head
    /// *count* (its `num_attention_heads = num_attention_heads or attention_head_dim`; SD 1.5's
    /// "8" is 8 heads of 40, 80, 160 channels), and refuses a non-null `num_attention_heads`.
    pub num_attention_heads: Vec<usize>,
    /// Linear `proj_in`/`proj_out` (SD 2.x) instead of 1×1 convs.
    pub use_linear_projection: bool,
    /// diffusers computes q·kᵀ in f32 when set; this engine always does (all arithmetic is
    /// f32, see the precision policy), so the flag is read and changes nothing.
    pub upcast_attention: bool,
    pub time_embedding_dim: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
}

/// Fields read above, plus bookkeeping.
const KNOWN: &[&str] = &[
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "attention_head_dim",
    "use_linear_projection",
    "upcast_attention",
    "time_embedding_dim",
    "conv_in_kernel",
    "conv_out_kernel",
    // No effect at inference.
    "dropout",
    // Irrelevant while addition_embed_type is null (checked).
    "addition_embed_type_num_heads",
];

/// Fields SD checkpoints write whose only supported value is diffusers' default (or a value
/// equivalent to it): (name, accepted values described, check).
type DefaultCheck = (&'static str, &'static str, fn(&Value) -> bool);

fn is_false(v: &Value) -> bool {
    v.as_bool() == Some(false)
}

fn only_false(v: &Value) -> bool {
    is_false(v) || v.as_array().is_some_and(|a| a.iter().all(is_false))
}

const DEFAULT_ONLY: &[DefaultCheck] = &[
    ("act_fn", "\"silu\"", |v| {
        matches!(v.as_str(), Some("silu" | "swish"))
    }),
    ("only_cross_attention", "false", only_false),
    ("mid_block_only_cross_attention", "null or false", is_false),
    ("dual_cross_attention", "false", is_false),
    ("class_embed_type", "null", |_| false),
    ("num_class_embeds", "null", |_| false),
    ("class_embeddings_concat", "false", is_false),
    ("projection_class_embeddings_input_dim", "null", |_| false),
    ("addition_embed_type", "null", |_| false),
    ("addition_time_embed_dim", "null", |_| false),
    ("encoder_hid_dim", "null", |_| false),
    ("encoder_hid_dim_type", "null", |_| false),
    (
        "num_attention_heads",
        "null (diffusers itself refuses it; the head count is attention_head_dim)",
        |_| false,
    ),
    ("resnet_time_scale_shift", "\"default\"", |v| {
        v.as_str() == Some("default")
    }),
    ("resnet_skip_time_act", "false", is_false),
    ("resnet_out_scale_factor", "1.0", |v| {
        v.as_f64() == Some(1.0)
    }),
    ("time_embedding_type", "\"positional\"", |v| {
        v.as_str() == Some("positional")
    }),
    ("time_embedding_act_fn", "null", |_| false),
    ("timestep_post_act", "null", |_| false),
    ("time_cond_proj_dim", "null", |_| false),
    ("attention_type", "\"default\"", |v| {
        v.as_str() == Some("default")
    }),
    ("cross_attention_norm", "null", |_| false),
    ("reverse_transformer_layers_per_block", "null", |_| false),
];

impl UNet2DConditionConfig {
    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = crate::load::read_json(path)?;
        Self::from_json(&v, &path.display().to_string())
    }

    /// Parses a config object; `file` names it in errors.
    pub fn from_json(v: &Value, file: &str) -> Result<Self> {
        let f = ConfigFields::new(v, file)?;
        for k in f.keys() {
            let known = KNOWN.contains(&k.as_str()) || DEFAULT_ONLY.iter().any(|d| d.0 == k);
            if !known {
                return Err(f.err(
                    k,
                    "not a UNet2DConditionModel field this engine knows; refusing to guess",
                ));
            }
        }
        for (k, want, ok) in DEFAULT_ONLY {
            // null reads as absent (diffusers' default) for every field of this list.
            if let Some(v) = f.get(k) {
                if !ok(v) {
                    return Err(f.err(
                        k,
                        format!("value {v} is not supported (only {want}, as SD 1.x/2.x)"),
                    ));
                }
            }
        }
        let class = f.str("_class_name", "UNet2DConditionModel")?;
        if class != "UNet2DConditionModel" {
            return Err(f.err(
                "_class_name",
                format!("`{class}` is not supported here (only UNet2DConditionModel)"),
            ));
        }
        let sample_size = match f.get("sample_size") {
            None => None,
            Some(Value::Array(a)) if a.len() == 2 => {
                let d = f.ints("sample_size", 1..=MAX_WIDTH)?;
                Some((d[0], d[1]))
            }
            Some(_) => {
                let s = f.int("sample_size", 0, 1..=MAX_WIDTH)?;
                Some((s, s))
            }
        };
        let down_block_types = f
            .strs(
                "down_block_types",
                &[
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "DownBlock2D",
                ],
            )?
            .iter()
            .map(|s| match s.as_str() {
                "CrossAttnDownBlock2D" => Ok(CrossDownBlockType::CrossAttnDownBlock2D),
                "DownBlock2D" => Ok(CrossDownBlockType::DownBlock2D),
                o => Err(f.err(
                    "down_block_types",
                    format!(
                        "block type `{o}` is not supported (CrossAttnDownBlock2D, DownBlock2D)"
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_block_types = f
            .strs(
                "up_block_types",
                &[
                    "UpBlock2D",
                    "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D",
                ],
            )?
            .iter()
            .map(|s| match s.as_str() {
                "CrossAttnUpBlock2D" => Ok(CrossUpBlockType::CrossAttnUpBlock2D),
                "UpBlock2D" => Ok(CrossUpBlockType::UpBlock2D),
                o => Err(f.err(
                    "up_block_types",
                    format!("block type `{o}` is not supported (CrossAttnUpBlock2D, UpBlock2D)"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let mid_block = match f.get("mid_block_type") {
            None if f.contains("mid_block_type") => false,
            _ => {
                let m = f.str("mid_block_type", "UNetMidBlock2DCrossAttn")?;
                if m != "UNetMidBlock2DCrossAttn" {
                    return Err(f.err(
                        "mid_block_type",
                        format!("`{m}` is not supported (UNetMidBlock2DCrossAttn or null)"),
                    ));
                }
                true
            }
        };
        let block_out_channels = match f.get("block_out_channels") {
            None => vec![320, 640, 1280, 1280],
            Some(_) => f.ints("block_out_channels", 1..=MAX_WIDTH)?,
        };
        let n = down_block_types.len();
        if n == 0 || block_out_channels.len() != n || up_block_types.len() != n {
            return Err(f.err(
                "block_out_channels",
                format!(
                    "{} channels for {} down and {} up blocks; the three must agree and be non-empty",
                    block_out_channels.len(),
                    n,
                    up_block_types.len()
                ),
            ));
        }
        // An int, or one entry per down block.
        let per_block = |k: &str, d: usize, range: std::ops::RangeInclusive<usize>| {
            let v = match f.get(k) {
                Some(Value::Array(_)) => f.ints(k, range)?,
                _ => vec![f.int(k, d, range)?; n],
            };
            if v.len() != n {
                return Err(f.err(
                    k,
                    format!(
                        "{} entries for {n} down blocks; give an int or one per block",
                        v.len()
                    ),
                ));
            }
            Ok(v)
        };
        let layers_per_block = per_block("layers_per_block", 2, 1..=MAX_WIDTH)?;
        if matches!(f.get("transformer_layers_per_block"), Some(Value::Array(a)) if a.iter().any(Value::is_array))
        {
            return Err(f.err(
                "transformer_layers_per_block",
                "nested per-layer lists (SDXL-style) are not supported; give an int or one per block",
            ));
        }
        let transformer_layers_per_block =
            per_block("transformer_layers_per_block", 1, 1..=MAX_WIDTH)?;
        let num_attention_heads = per_block("attention_head_dim", 8, 1..=MAX_WIDTH)?;
        if matches!(f.get("cross_attention_dim"), Some(Value::Array(_))) {
            return Err(f.err(
                "cross_attention_dim",
                "a per-block list is not supported (one int, as SD 1.x/2.x)",
            ));
        }
        if f.contains("norm_num_groups") && f.get("norm_num_groups").is_none() {
            return Err(f.err(
                "norm_num_groups",
                "null (no output norm) is not supported; SD 1.x/2.x use 32",
            ));
        }
        let odd_kernel = |k: &str| -> Result<usize> {
            let v = f.int(k, 3, 1..=15)?;
            if v % 2 == 0 {
                return Err(f.err(k, format!("{v} is even; only odd kernels keep the size")));
            }
            Ok(v)
        };
        let dropout = f.f64("dropout", 0.0, Domain::FINITE)?;
        if !(0.0..1.0).contains(&dropout) {
            return Err(f.err("dropout", format!("{dropout} is not a probability below 1")));
        }
        let cfg = UNet2DConditionConfig {
            sample_size,
            in_channels: f.int("in_channels", 4, 1..=MAX_WIDTH)?,
            out_channels: f.int("out_channels", 4, 1..=MAX_WIDTH)?,
            center_input_sample: f.bool("center_input_sample", false)?,
            flip_sin_to_cos: f.bool("flip_sin_to_cos", true)?,
            freq_shift: f.f64("freq_shift", 0.0, Domain::FINITE)?,
            down_block_types,
            mid_block,
            up_block_types,
            block_out_channels,
            layers_per_block,
            downsample_padding: f.int("downsample_padding", 1, 0..=MAX_WIDTH)?,
            mid_block_scale_factor: f.f64("mid_block_scale_factor", 1.0, Domain::FINITE)?,
            norm_num_groups: f.int("norm_num_groups", 32, 1..=MAX_WIDTH)?,
            norm_eps: f.f64("norm_eps", 1e-5, Domain::POSITIVE)?,
            cross_attention_dim: f.int("cross_attention_dim", 1280, 1..=MAX_WIDTH)?,
            transformer_layers_per_block,
            num_attention_heads,
            use_linear_projection: f.bool("use_linear_projection", false)?,
            upcast_attention: f.bool("upcast_attention", false)?,
            time_embedding_dim: match f.get("time_embedding_dim") {
                None => None,
                Some(_) => Some(f.int("time_embedding_dim", 0, 1..=MAX_WIDTH)?),
            },
            conv_in_kernel: odd_kernel("conv_in_kernel")?,
            conv_out_kernel: odd_kernel("conv_out_kernel")?,
        };
        if cfg.mid_block_scale_factor == 0.0 {
            return Err(f.err("mid_block_scale_factor", "must be non-zero"));
        }
        let g = cfg.norm_num_groups;
        if let Some(&c) = cfg.block_out_channels.iter().find(|&&c| c % g != 0) {
            return Err(f.err(
                "norm_num_groups",
                format!("{g} groups do not divide block_out_channels entry {c}"),
            ));
        }
        for (i, (&c, &h)) in cfg
            .block_out_channels
            .iter()
            .zip(&cfg.num_attention_heads)
            .enumerate()
        {
            if h > c {
                return Err(f.err(
                    "attention_head_dim",
                    format!("{h} heads for block {i} of {c} channels (a head needs a channel)"),
                ));
            }
        }
        Ok(cfg)
    }

    /// Width of the time embedding (`time_embedding_dim` or 4 × the first block's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }
}
