//! `vae/config.json` of diffusers' `AutoencoderKL` (`models/autoencoders/autoencoder_kl.py`),
//! the Stable Diffusion subset: field names and defaults as in diffusers; fields that would
//! change the math with values other than the defaults are refused by name.

use super::config::MAX_WIDTH;
use crate::domain::Domain;
use crate::error::Result;
use serde_json::Value;
use std::path::Path;

/// The parsed config.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    /// Image size the model was trained at; diffusers' tiled decoding uses it as the tile size.
    pub sample_size: usize,
    /// Latents are `scaling_factor · z` in the diffusion model (Rombach et al., 2022, §4.3.2).
    pub scaling_factor: f64,
    /// diffusers runs this VAE in f32 even in an f16 pipeline.
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

const KNOWN: &[&str] = &[
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
];

impl AutoencoderKLConfig {
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
                    "not an AutoencoderKL field this engine knows; refusing to guess",
                ));
            }
        }
        let class = f.str("_class_name", "AutoencoderKL")?;
        if class != "AutoencoderKL" {
            return Err(f.err(
                "_class_name",
                format!("`{class}` is not supported (only AutoencoderKL)"),
            ));
        }
        let act = f.str("act_fn", "silu")?;
        if act != "silu" && act != "swish" {
            return Err(f.err("act_fn", format!("`{act}` is not supported (silu)")));
        }
        // Read by pipelines (SD3/Flux latents shift, SDXL-style latent statistics): not part
        // of SD 1.x/2.x, and silently ignoring them would give wrong images.
        for k in ["shift_factor", "latents_mean", "latents_std"] {
            if f.get(k).is_some() {
                return Err(f.err(k, "only null is supported (Stable Diffusion 1.x/2.x VAEs)"));
            }
        }
        let down = f.strs("down_block_types", &["DownEncoderBlock2D"])?;
        if let Some(b) = down.iter().find(|b| b.as_str() != "DownEncoderBlock2D") {
            return Err(f.err(
                "down_block_types",
                format!("block type `{b}` is not supported (DownEncoderBlock2D)"),
            ));
        }
        let up = f.strs("up_block_types", &["UpDecoderBlock2D"])?;
        if let Some(b) = up.iter().find(|b| b.as_str() != "UpDecoderBlock2D") {
            return Err(f.err(
                "up_block_types",
                format!("block type `{b}` is not supported (UpDecoderBlock2D)"),
            ));
        }
        let block_out_channels = f.ints("block_out_channels", 1..=MAX_WIDTH)?;
        let block_out_channels = if f.get("block_out_channels").is_none() {
            vec![64]
        } else {
            block_out_channels
        };
        if block_out_channels.is_empty()
            || block_out_channels.len() != down.len()
            || block_out_channels.len() != up.len()
        {
            return Err(f.err(
                "block_out_channels",
                format!(
                    "{} channels for {} down and {} up blocks; the three must agree and be non-empty",
                    block_out_channels.len(),
                    down.len(),
                    up.len()
                ),
            ));
        }
        if block_out_channels.len() > 16 {
            return Err(f.err("block_out_channels", "more than 16 resolution levels"));
        }
        let sample_size = match f.get("sample_size") {
            Some(Value::Array(_)) => {
                return Err(f.err(
                    "sample_size",
                    "a [height, width] list is not supported (diffusers' tiling needs one integer)",
                ))
            }
            _ => f.int("sample_size", 32, 1..=MAX_WIDTH)?,
        };
        let cfg = AutoencoderKLConfig {
            in_channels: f.int("in_channels", 3, 1..=MAX_WIDTH)?,
            out_channels: f.int("out_channels", 3, 1..=MAX_WIDTH)?,
            latent_channels: f.int("latent_channels", 4, 1..=MAX_WIDTH)?,
            block_out_channels,
            layers_per_block: f.int("layers_per_block", 1, 1..=MAX_WIDTH)?,
            norm_num_groups: f.int("norm_num_groups", 32, 1..=MAX_WIDTH)?,
            sample_size,
            scaling_factor: f.f64("scaling_factor", 0.18215, Domain::POSITIVE)?,
            force_upcast: f.bool("force_upcast", true)?,
            use_quant_conv: f.bool("use_quant_conv", true)?,
            use_post_quant_conv: f.bool("use_post_quant_conv", true)?,
            mid_block_add_attention: f.bool("mid_block_add_attention", true)?,
        };
        if let Some(c) = cfg
            .block_out_channels
            .iter()
            .find(|&&c| c % cfg.norm_num_groups != 0)
        {
            return Err(f.err(
                "norm_num_groups",
                format!(
                    "{} groups do not divide block_out_channels entry {c}",
                    cfg.norm_num_groups
                ),
            ));
        }
        Ok(cfg)
    }

    /// Spatial factor between image and latents (2^(levels − 1); 8 for SD).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// diffusers' `tile_latent_min_size`: int(sample_size / 2^(levels − 1)).
    pub fn tile_latent_min_size(&self) -> usize {
        self.sample_size / self.downscale()
    }
}
