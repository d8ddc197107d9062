//! Checkpoint loading: safetensors files (F32/F16/BF16 → the engine's dtype) and the diffusers
//! folder layout (`config.json` + `diffusion_pytorch_model.safetensors`, or the `unet/`
//! subfolder of a pipeline folder with `model_index.json`).

mod random;
mod safetensors_file;

pub use random::RandomWeights;
pub use safetensors_file::{write_f32_tensors, HostTensor, Weights};

use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// Where a model's parameters come from: a checkpoint, or synthetic weights for benchmarks.
pub trait WeightSource {
    /// The parameter `name` with the shape the config implies, uploaded as `dtype`.
    fn tensor(&self, gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor>;
}

impl WeightSource for Weights {
    fn tensor(&self, gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Weights::tensor(self, gpu, name, shape, dtype)
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
    serde_json::from_str(&text).map_err(|e| Error::Load {
        file: path.display().to_string(),
        reason: format!("invalid JSON: {e}"),
    })
}
