//! `unet/config.json` of the DA-CLIP universal image-restoration network, the official
//! `ConditionalUNet` (grrrute/mr-sampler, `universal-image-restoration/config/daclip-sde/models/
//! modules/DenoisingUNet_arch.py`): the constructor's arguments under their own names and
//! defaults (`ch_mult` [1, 2, 4, 4], `context_dim` 512, `use_degra_context` true,
//! `use_image_context` false, `upscale` 1; `in_nc`, `out_nc`, `nf` have none). Any other field
//! is an error naming it.

use crate::error::Result;
use crate::load::ConfigFields;
use serde_json::Value;
use std::path::Path;

/// Channels per attention head of the official network (`num_head_channels = 32`).
pub const HEAD_CHANNELS: usize = 32;

/// The first level (0-based) whose attention is a `SpatialTransformer` when the image context
/// is used (`i < 3` keeps `LinearAttention`).
pub const FIRST_SPATIAL_LEVEL: usize = 3;

/// The parsed config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionalUNetConfig {
    pub in_nc: usize,
    pub out_nc: usize,
    pub nf: usize,
    pub ch_mult: Vec<usize>,
    /// `None` for a `null` context_dim (the official −1: no context path at all).
    pub context_dim: Option<usize>,
    pub use_degra_context: bool,
    pub use_image_context: bool,
    /// Stored by the official constructor and never used.
    pub upscale: usize,
}

const KNOWN: &[&str] = &[
    "_class_name",
    "in_nc",
    "out_nc",
    "nf",
    "ch_mult",
    "context_dim",
    "use_degra_context",
    "use_image_context",
    "upscale",
];

const MAX_CHANNELS: usize = 1 << 12;

impl ConditionalUNetConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = crate::load::read_json(path)?;
        Self::from_json(&v, &path.display().to_string())
    }

    /// Parses a config object; `file` names it in errors.
    pub fn from_json(v: &Value, file: &str) -> Result<Self> {
        let f = ConfigFields::new(v, file)?;
        for k in f.keys() {
            if !KNOWN.contains(&k.as_str()) {
                return Err(f.err(
                    k,
                    "not a ConditionalUNet constructor argument; refusing to guess",
                ));
            }
        }
        let class = f.str("_class_name", "ConditionalUNet")?;
        if class != "ConditionalUNet" {
            return Err(f.err(
                "_class_name",
                format!("`{class}` is not supported (only ConditionalUNet)"),
            ));
        }
        for k in ["in_nc", "out_nc", "nf"] {
            if f.get(k).is_none() {
                return Err(f.err(k, "required (the official constructor has no default)"));
            }
        }
        let ch_mult = if f.get("ch_mult").is_none() {
            vec![1, 2, 4, 4]
        } else {
            f.ints("ch_mult", 1..=64)?
        };
        if ch_mult.is_empty() || ch_mult.len() > 8 {
            return Err(f.err(
                "ch_mult",
                format!("{} levels (expected 1..=8)", ch_mult.len()),
            ));
        }
        let context_dim = if f.contains("context_dim") && f.get("context_dim").is_none() {
            None
        } else {
            Some(f.int("context_dim", 512, 1..=MAX_CHANNELS)?)
        };
        let cfg = ConditionalUNetConfig {
            in_nc: f.int("in_nc", 3, 1..=64)?,
            out_nc: f.int("out_nc", 3, 1..=64)?,
            // The official constructor divides by nf // 32 (heads per level).
            nf: f.int("nf", 64, HEAD_CHANNELS..=MAX_CHANNELS)?,
            ch_mult,
            context_dim,
            use_degra_context: f.bool("use_degra_context", true)?,
            use_image_context: f.bool("use_image_context", false)?,
            upscale: f.int("upscale", 1, 1..=16)?,
        };
        if cfg.use_image_context && cfg.context_dim.is_none() {
            // `use_image_context and context_dim > 0` compares None with 0: a TypeError.
            return Err(f.err(
                "context_dim",
                "null with use_image_context true (the official constructor fails on it)",
            ));
        }
        for d in cfg.spatial_dims() {
            if d % HEAD_CHANNELS != 0 {
                return Err(f.err(
                    "nf",
                    format!(
                        "a SpatialTransformer of {d} channels (nf·ch_mult) needs a multiple of 32 (GroupNorm(32) and 32-channel heads)"
                    ),
                ));
            }
        }
        if cfg.widest() > MAX_CHANNELS {
            return Err(f.err(
                "ch_mult",
                format!("{} channels at the widest level", cfg.widest()),
            ));
        }
        Ok(cfg)
    }

    /// Resolution levels (`len(ch_mult)`).
    pub fn depth(&self) -> usize {
        self.ch_mult.len()
    }

    /// Width of the time embedding (`nf · 4`).
    pub fn time_dim(&self) -> usize {
        4 * self.nf
    }

    /// (dim_in, dim_out) of level `i`: nf·[1, ch_mult…][i], nf·[1, ch_mult…][i + 1].
    pub fn level_dims(&self, i: usize) -> (usize, usize) {
        let m = |j: usize| if j == 0 { 1 } else { self.ch_mult[j - 1] };
        (self.nf * m(i), self.nf * m(i + 1))
    }

    /// Channels of the middle blocks.
    pub fn mid_dim(&self) -> usize {
        self.nf * self.ch_mult[self.depth() - 1]
    }

    fn widest(&self) -> usize {
        (0..self.depth())
            .map(|i| self.level_dims(i).1)
            .max()
            .unwrap_or(self.nf)
            .max(self.nf)
    }

    /// Whether the degradation prompt path exists (`context_dim > 0 and use_degra_context`).
    pub fn degra(&self) -> bool {
        self.context_dim.is_some() && self.use_degra_context
    }

    /// Whether SpatialTransformers attend to the image context.
    pub fn image(&self) -> bool {
        self.context_dim.is_some() && self.use_image_context
    }

    /// Whether level `i`'s attention is a SpatialTransformer.
    pub fn spatial_at(&self, i: usize) -> bool {
        self.image() && i >= FIRST_SPATIAL_LEVEL
    }

    /// Channels of every SpatialTransformer.
    fn spatial_dims(&self) -> Vec<usize> {
        let mut v = Vec::new();
        for i in 0..self.depth() {
            if self.spatial_at(i) {
                let (a, b) = self.level_dims(i);
                v.extend([a, b]);
            }
        }
        if self.image() {
            v.push(self.mid_dim());
        }
        v
    }

    /// Height and width are padded (reflect, right/bottom) to multiples of this (2^depth).
    pub fn pad_multiple(&self) -> usize {
        1 << self.depth()
    }
}
