//! The converted DA-CLIP universal image-restoration folder (tools/convert_daclip.py; Luo et
//! al., "Controlling Vision-Language Models for Multi-Task Image Restoration", ICLR 2024, run by
//! the MR Sampler, Li et al. arXiv 2502.07856): read and cross-checked on the host before the
//! GPU starts — `model_index.json` (`_class_name` "DaclipRestorationPipeline", the component
//! folders, `sample_range`), each component's config, the scheduler, `context_dim` against the
//! encoder's `embed_dim`, and every tensor's name and shape in the safetensors headers against
//! the official layouts ([`super::daclip_tensors`]).

use super::daclip_tensors::{self as layout, Manifest, UNetDims, VisionDims};
use crate::error::{Error, Result};
use crate::load;
use crate::schedule::restoration::MrConfig;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `model_index.json`'s class of a converted DA-CLIP folder.
pub const CLASS: &str = "DaclipRestorationPipeline";
/// The UNet's and the encoder's weights files.
pub const UNET_WEIGHTS: &str = load::WEIGHTS;
pub const DACLIP_WEIGHTS: &str = "model.safetensors";

fn cfg_err(file: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        file: file.display().to_string(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// The host-side facts of a DA-CLIP folder.
#[derive(Debug, Clone)]
pub struct DaclipFolder {
    pub dir: PathBuf,
    /// `unet/` (config.json, diffusion_pytorch_model.safetensors).
    pub unet_dir: PathBuf,
    /// `daclip/` (config.json, model.safetensors).
    pub daclip_dir: PathBuf,
    /// `scheduler/scheduler_config.json`.
    pub scheduler_config: PathBuf,
    pub unet: UNetDims,
    pub vision: VisionDims,
    pub scheduler: MrConfig,
    /// The data range of the network's images (`sample_range`, [0, 1] for DA-CLIP): PNG bytes
    /// map to lo + (hi − lo)·v/255.
    pub sample_range: (f64, f64),
}

/// Whether `dir` is a DA-CLIP folder (its `model_index.json` names [`CLASS`]); a folder
/// without a readable index is not one (the other readers report its problems).
pub fn is_daclip_folder(dir: &Path) -> bool {
    let index = dir.join("model_index.json");
    index.is_file()
        && load::read_json(&index)
            .ok()
            .and_then(|v| v.get("_class_name")?.as_str().map(|s| s == CLASS))
            .unwrap_or(false)
}

impl DaclipFolder {
    /// Reads and cross-checks the folder; every problem is an error naming the file and the
    /// field or tensor.
    pub fn read(dir: &Path) -> Result<Self> {
        let index = dir.join("model_index.json");
        if !index.is_file() {
            return Err(cfg_err(
                &index,
                "model_index.json",
                "not found: a DA-CLIP model is the folder tools/convert_daclip.py writes",
            ));
        }
        let v = load::read_json(&index)?;
        let f = load::ConfigFields::new(&v, &index.display().to_string())?;
        let class = f.str("_class_name", "")?;
        if class != CLASS {
            return Err(f.err("_class_name", format!("`{class}` is not {CLASS}")));
        }
        let sub = |k: &str| -> Result<PathBuf> {
            let name = f.str(k, k)?;
            let p = dir.join(&name);
            if name.is_empty() || name.contains("..") || !p.is_dir() {
                return Err(f.err(k, format!("no component folder `{}`", p.display())));
            }
            Ok(p)
        };
        let (unet_dir, daclip_dir, sched_dir) =
            (sub("unet")?, sub("image_encoder")?, sub("scheduler")?);
        let range = match f.get("sample_range") {
            None => (0.0, 1.0),
            Some(r) => {
                let a: Option<Vec<f64>> = r
                    .as_array()
                    .map(|a| a.iter().filter_map(load::json_f64).collect());
                match a.as_deref() {
                    Some(&[lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => (lo, hi),
                    _ => {
                        return Err(f.err(
                            "sample_range",
                            format!("{r} is not a finite [lo, hi] with lo < hi"),
                        ))
                    }
                }
            }
        };
        let unet_cfg = unet_dir.join(load::CONFIG);
        let unet = read_unet_dims(&unet_cfg)?;
        let daclip_cfg = daclip_dir.join(load::CONFIG);
        let vision = read_vision_dims(&daclip_cfg)?;
        if unet.use_degra_context || unet.use_image_context {
            if let Some(cd) = unet.context_dim.filter(|&c| c != vision.embed_dim) {
                return Err(cfg_err(
                    &unet_cfg,
                    "context_dim",
                    format!(
                        "{cd} does not match the image encoder's embed_dim {} ({}): the contexts are its features",
                        vision.embed_dim,
                        daclip_cfg.display()
                    ),
                ));
            }
        }
        let scheduler_config = sched_dir.join(load::SCHEDULER_CONFIG);
        if !scheduler_config.is_file() {
            return Err(Error::Load {
                file: scheduler_config.display().to_string(),
                reason: "missing: the folder's process (MeanRevertingScheduler)".into(),
            });
        }
        let scheduler = MrConfig::from_file(&scheduler_config)?;
        check_tensors(
            &unet_dir.join(UNET_WEIGHTS),
            &layout::conditional_unet(&unet),
        )?;
        check_tensors(
            &daclip_dir.join(DACLIP_WEIGHTS),
            &layout::daclip_visual(&vision),
        )?;
        Ok(DaclipFolder {
            dir: dir.to_path_buf(),
            unet_dir,
            daclip_dir,
            scheduler_config,
            unet,
            vision,
            scheduler,
            sample_range: range,
        })
    }
}

/// `unet/config.json` → the shape-setting constructor arguments.
fn read_unet_dims(path: &Path) -> Result<UNetDims> {
    let v = load::read_json(path)?;
    let f = load::ConfigFields::new(&v, &path.display().to_string())?;
    let class = f.str("_class_name", "ConditionalUNet")?;
    if class != "ConditionalUNet" {
        return Err(f.err("_class_name", format!("`{class}` is not ConditionalUNet")));
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
        return Err(f.err("ch_mult", format!("{} levels (1..=8)", ch_mult.len())));
    }
    let context_dim = if f.contains("context_dim") && f.get("context_dim").is_none() {
        None
    } else {
        Some(f.int("context_dim", 512, 1..=1 << 12)?)
    };
    Ok(UNetDims {
        in_nc: f.int("in_nc", 3, 1..=64)?,
        out_nc: f.int("out_nc", 3, 1..=64)?,
        nf: f.int("nf", 64, 32..=1 << 12)?,
        ch_mult,
        context_dim,
        use_degra_context: f.bool("use_degra_context", true)?,
        use_image_context: f.bool("use_image_context", false)?,
    })
}

/// `daclip/config.json` → the tower dimensions (open_clip's CLIPVisionCfg names and defaults).
fn read_vision_dims(path: &Path) -> Result<VisionDims> {
    let v = load::read_json(path)?;
    let file = path.display().to_string();
    let f = load::ConfigFields::new(&v, &file)?;
    let class = f.str("_class_name", "DaCLIP")?;
    if class != "DaCLIP" {
        return Err(f.err("_class_name", format!("`{class}` is not DaCLIP")));
    }
    let empty = serde_json::Value::Object(Default::default());
    let vf = load::ConfigFields::new(
        f.get("vision_cfg").unwrap_or(&empty),
        &format!("{file} (vision_cfg)"),
    )?;
    let width = vf.int("width", 768, 1..=1 << 16)?;
    let image_size = vf.int("image_size", 224, 1..=1 << 16)?;
    let patch_size = vf.int("patch_size", 16, 1..=image_size)?;
    let ratio = vf.f64("mlp_ratio", 4.0, crate::domain::Domain::closed(1e-3, 1e3))?;
    Ok(VisionDims {
        width,
        layers: vf.int("layers", 12, 1..=1024)?,
        patch_size,
        image_size,
        mlp_width: (width as f64 * ratio) as usize,
        embed_dim: f.int("embed_dim", 512, 1..=1 << 16)?,
    })
}

/// The tensor names, dtypes and shapes of a safetensors file's header (the data is not read).
pub fn read_header(path: &Path) -> Result<Vec<(String, String, Vec<usize>)>> {
    let file = path.display().to_string();
    let fail = |reason: String| Error::Load {
        file: file.clone(),
        reason,
    };
    let mut r = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut n8 = [0u8; 8];
    r.read_exact(&mut n8)
        .map_err(|_| fail("not a valid safetensors file (no 8-byte header length)".into()))?;
    let n = u64::from_le_bytes(n8);
    if n > 100_000_000 {
        return Err(fail(format!(
            "not a valid safetensors file (header length {n})"
        )));
    }
    let mut header = Vec::with_capacity(n as usize);
    r.take(n)
        .read_to_end(&mut header)
        .map_err(|e| fail(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| fail(format!("not a valid safetensors file ({e})")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| fail("not a valid safetensors file (header is not an object)".into()))?;
    let mut out = Vec::with_capacity(obj.len());
    for (k, t) in obj {
        if k == "__metadata__" {
            continue;
        }
        let dtype = t["dtype"].as_str().unwrap_or("").to_string();
        let shape: Option<Vec<usize>> = t["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
        let shape = shape.ok_or_else(|| fail(format!("tensor `{k}` has no valid shape")))?;
        out.push((k.clone(), dtype, shape));
    }
    Ok(out)
}

/// Every tensor of `want` present with its shape and a float dtype, and nothing else.
pub fn check_tensors(path: &Path, want: &Manifest) -> Result<()> {
    let file = path.display().to_string();
    if !path.is_file() {
        return Err(Error::Load {
            file,
            reason: "missing weights file".into(),
        });
    }
    let have = read_header(path)?;
    let map: std::collections::HashMap<&str, (&str, &[usize])> = have
        .iter()
        .map(|(k, d, s)| (k.as_str(), (d.as_str(), s.as_slice())))
        .collect();
    for (name, shape) in want {
        let Some((dtype, got)) = map.get(name.as_str()) else {
            return Err(Error::MissingTensor {
                file,
                tensor: name.clone(),
            });
        };
        if *got != shape.as_slice() {
            return Err(Error::TensorShape {
                file,
                tensor: name.clone(),
                got: got.to_vec(),
                want: shape.clone(),
            });
        }
        if !matches!(*dtype, "F32" | "F16" | "BF16") {
            return Err(Error::TensorDType {
                file,
                tensor: name.clone(),
                got: dtype.to_string(),
                extra: String::new(),
            });
        }
    }
    let known: std::collections::HashSet<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    let extra: Vec<&str> = have
        .iter()
        .map(|(k, _, _)| k.as_str())
        .filter(|k| !known.contains(k))
        .collect();
    if let Some(first) = extra.first() {
        return Err(Error::UnexpectedTensors {
            file,
            count: extra.len(),
            first: first.to_string(),
        });
    }
    Ok(())
}
