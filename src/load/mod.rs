//! Checkpoint loading: safetensors files (F32/F16/BF16 → the engine's dtype) and the diffusers
//! folder layout (`config.json` + `diffusion_pytorch_model.safetensors`, or the `unet/`
//! subfolder of a pipeline folder with `model_index.json`).

pub mod clip_tokenizer;
mod config_fields;
pub mod quant;
mod random;
mod safetensors_file;
pub mod single_file;

pub use config_fields::ConfigFields;
pub use random::RandomWeights;
pub use safetensors_file::{f32_tensors_bytes, write_f32_tensors, HostTensor, Weights};

use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// Where a model's parameters come from: a checkpoint, or synthetic weights for benchmarks.
pub trait WeightSource {
    /// The parameter `name` with the shape the config implies, uploaded as `dtype`.
    fn tensor(&self, gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor>;

    /// The conv/linear weight `name` as int8 values and per-output-channel scales when the
    /// source stores it quantized ([`quant`]); None (the default) when it is float.
    fn int8_weight(&self, _name: &str, _shape: &[usize]) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
        Ok(None)
    }

    /// The int8 input scale of the quantized layer whose weight is `name`, when the source
    /// quantizes activations (W8A8, [`quant`]); None (the default) otherwise.
    fn input_scale(&self, _name: &str) -> Result<Option<f32>> {
        Ok(None)
    }
}

impl WeightSource for Weights {
    fn tensor(&self, gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Weights::tensor(self, gpu, name, shape, dtype)
    }
    fn int8_weight(&self, name: &str, shape: &[usize]) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
        Weights::int8_weight(self, name, shape)
    }
    fn input_scale(&self, name: &str) -> Result<Option<f32>> {
        Weights::input_scale(self, name)
    }
}

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Names of the files of a diffusers model folder.
pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
pub const SCHEDULER_CONFIG: &str = "scheduler_config.json";

/// Resolves a model directory: the folder itself when it holds `config.json`, else the
/// `subfolder` of a pipeline folder (one with `model_index.json`).
pub fn resolve_model_dir(dir: &Path, subfolder: &str) -> Result<PathBuf> {
    if dir.join(CONFIG).is_file() {
        return Ok(dir.to_path_buf());
    }
    let sub = dir.join(subfolder);
    if dir.join("model_index.json").is_file() && sub.join(CONFIG).is_file() {
        return Ok(sub);
    }
    Err(Error::Load {
        file: dir.display().to_string(),
        reason: if dir.is_dir() {
            format!("not a diffusers model folder: no {CONFIG} (nor model_index.json with {subfolder}/{CONFIG})")
        } else {
            "no such directory".into()
        },
    })
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Load {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&quote_non_finite(&text)).map_err(|e| Error::Load {
        file: path.display().to_string(),
        reason: format!("invalid JSON: {e}"),
    })
}

/// Python's `json` writes `Infinity`, `-Infinity` and `NaN` as bare tokens (diffusers configs
/// contain `"lambda_min_clipped": -Infinity`); JSON has no such numbers. Outside strings they
/// are turned into the strings "Infinity", "-Infinity", "NaN", which config readers accept.
pub fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_str = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        let mut matched = false;
        for tok in ["-Infinity", "Infinity", "NaN"] {
            if rest.starts_with(tok) {
                out.push('"');
                out.push_str(tok);
                out.push('"');
                rest = &rest[tok.len()..];
                matched = true;
                break;
            }
        }
        if !matched {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// A JSON number, or one of the strings written by [`quote_non_finite`].
pub fn json_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::String(s) => match s.as_str() {
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => None,
        },
        _ => v.as_f64(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_finite_tokens_are_quoted_outside_strings_only() {
        let t = r#"{"a": -Infinity, "b": "NaN and Infinity", "c": [Infinity, NaN]}"#;
        let q = super::quote_non_finite(t);
        let v: serde_json::Value = serde_json::from_str(&q).unwrap();
        assert_eq!(super::json_f64(&v["a"]), Some(f64::NEG_INFINITY));
        assert_eq!(v["b"], "NaN and Infinity");
        assert_eq!(super::json_f64(&v["c"][0]), Some(f64::INFINITY));
        assert!(super::json_f64(&v["c"][1]).unwrap().is_nan());
    }
}
