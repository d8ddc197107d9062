//! From a model path and sampler choice to a ready [`Denoiser`] and scheduler config: the
//! unconditional, class-conditional and classifier-free-guided UNet2DModel cases and the
//! analytic models. Shared by `diffuse sample` and `diffuse eval`.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::load;
use crate::models::analytic::{AnalyticDenoiser, GaussianMixture};
use crate::models::guided::GuidedUNet;
use crate::models::unet::UNetDenoiser;
use crate::models::Denoiser;
use crate::nn::unet_2d::UNet2DModel;
use crate::schedule::config::SchedulerConfig;
use crate::tensor::DType;
use std::path::Path;

fn arg_error(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "sample",
        arg,
        reason,
    }
}

/// The scheduler to sample with: an explicit config file, else a named sampler built on the
/// model folder's training schedule, else the folder's own `scheduler_config.json`.
pub fn resolve_scheduler(
    model: &str,
    scheduler: Option<&str>,
    scheduler_config: Option<&Path>,
) -> Result<SchedulerConfig> {
    if let Some(p) = scheduler_config {
        return SchedulerConfig::from_file(p);
    }
    let folder_cfg = match model.strip_prefix("analytic:") {
        Some(_) => None,
        None => {
            let dir = load::resolve_model_dir(Path::new(model), "unet")?;
            let candidates = [
                dir.join(load::SCHEDULER_CONFIG),
                dir.parent()
                    .map(|p| p.join("scheduler").join(load::SCHEDULER_CONFIG))
                    .unwrap_or_default(),
            ];
            candidates
                .iter()
                .find(|p| p.is_file())
                .map(|p| SchedulerConfig::from_file(p))
                .transpose()?
        }
    };
    match (scheduler, folder_cfg) {
        (Some(name), f) => SchedulerConfig::named(name, f.as_ref()),
        (None, Some(c)) => Ok(c),
        (None, None) => Err(arg_error(
            "scheduler",
            "the model has no scheduler_config.json; name a scheduler or give a scheduler config file".into(),
        )),
    }
}

/// What to build a sampling model for.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// A diffusers folder, or `analytic:gaussian` / `analytic:mixture`.
    pub model: String,
    pub batch: usize,
    /// Classifier-free guidance scale (class-conditional models).
    pub guidance: Option<f32>,
    /// Per-sample class labels (class-conditional models); default: cycle the classes.
    pub labels: Option<Vec<i64>>,
    pub dtype: DType,
}

/// A loaded UNet (kept so further batches can be prepared without reloading).
pub enum LoadedModel {
    UNet(Box<UNet2DModel>),
    Analytic(String),
}

impl LoadedModel {
    /// Loads the model named by `req.model` once.
    pub fn load(gpu: &Gpu, model: &str, dtype: DType) -> Result<Self> {
        match model.strip_prefix("analytic:") {
            Some(name) => Ok(LoadedModel::Analytic(name.to_string())),
            None => Ok(LoadedModel::UNet(Box::new(UNet2DModel::from_dir(
                gpu,
                Path::new(model),
                dtype,
            )?))),
        }
    }

    /// The host-side checks of [`LoadedModel::load`] (the folder, its `config.json` and
    /// `quantization_config`, the analytic model's name), so a run can refuse a bad model
    /// before it starts the GPU.
    pub fn check(model: &str) -> Result<()> {
        match model.strip_prefix("analytic:") {
            Some(name) => GaussianMixture::named(name).map(drop),
            None => {
                let dir = load::resolve_model_dir(Path::new(model), "unet")?;
                crate::nn::config::UNet2DConfig::from_file(&dir.join(load::CONFIG))?;
                load::quant::QuantConfig::from_dir(&dir)?;
                Ok(())
            }
        }
    }

    /// Number of usable classes (without the null label when guiding), if class-conditional.
    pub fn classes(&self, guided: bool) -> Option<usize> {
        match self {
            LoadedModel::UNet(u) => u.num_classes().map(|k| if guided { k - 1 } else { k }),
            LoadedModel::Analytic(_) => None,
        }
    }

    /// A denoiser for one batch, validated against the model.
    pub fn denoiser(
        &self,
        gpu: &Gpu,
        cfg: &SchedulerConfig,
        req: &ModelRequest,
    ) -> Result<Box<dyn Denoiser>> {
        if req.batch == 0 {
            return Err(arg_error("batch", "must be at least 1".into()));
        }
        if let Some(g) = req.guidance {
            crate::domain::Domain::FINITE
                .check_f32(g)
                .map_err(|r| arg_error("guidance", r))?;
        }
        let unet = match self {
            LoadedModel::Analytic(name) => {
                if req.guidance.is_some() || req.labels.is_some() {
                    return Err(arg_error(
                        "guidance",
                        "analytic models are unconditional".into(),
                    ));
                }
                let mix = GaussianMixture::named(name)?;
                return Ok(Box::new(AnalyticDenoiser::new(
                    gpu,
                    mix,
                    cfg.train.prediction,
                    req.batch,
                    req.dtype,
                )?));
            }
            LoadedModel::UNet(u) => u,
        };
        let (h, w) = unet.config.sample_size.ok_or_else(|| {
            arg_error(
                "model",
                "config.json has no sample_size to sample at".into(),
            )
        })?;
        // The batch as the model sees it (twice it under guidance), checked before any tensor
        // is sized from it: an absurd --batch is named as the batch, not as an empty tensor.
        let rows = if req.guidance.is_some() { 2 } else { 1 };
        crate::size::mul("batch", req.batch, rows)
            .and_then(|b| crate::size::elements("batch", &[b, unet.config.in_channels, h, w]))
            .and_then(|n| crate::size::bytes("batch", n, 4))
            .map_err(|e| arg_error("batch", format!("{} is too large ({e})", req.batch)))?;
        if unet.config.in_channels != unet.config.out_channels {
            return Err(arg_error(
                "model",
                format!(
                    "in_channels {} ≠ out_channels {}: a conditioned model needs a restoration sampler (`pipeline::restore`)",
                    unet.config.in_channels, unet.config.out_channels
                ),
            ));
        }
        let Some(k) = unet.num_classes() else {
            if req.guidance.is_some() || req.labels.is_some() {
                return Err(arg_error(
                    "guidance",
                    "guidance and class labels need a class-conditional model".into(),
                ));
            }
            return Ok(Box::new(UNetDenoiser {
                forward: unet.prepare(gpu, req.batch, h, w)?,
                prediction: cfg.train.prediction,
                labels: None,
            }));
        };
        let usable = if req.guidance.is_some() { k - 1 } else { k };
        let labels: Vec<i64> = match &req.labels {
            Some(l) => {
                if l.len() != req.batch {
                    return Err(arg_error(
                        "labels",
                        format!("{} labels for a batch of {}", l.len(), req.batch),
                    ));
                }
                if let Some(bad) = l.iter().find(|&&c| c < 0 || c as usize >= usable) {
                    return Err(arg_error("labels", format!("{bad} is outside 0..{usable}")));
                }
                l.clone()
            }
            None => (0..req.batch).map(|i| (i % usable.max(1)) as i64).collect(),
        };
        Ok(match req.guidance {
            Some(scale) => Box::new(GuidedUNet::new(
                gpu,
                unet.prepare(gpu, 2 * req.batch, h, w)?,
                cfg.train.prediction,
                &labels,
                (k - 1) as i64,
                scale,
            )?),
            None => Box::new(UNetDenoiser {
                forward: unet.prepare(gpu, req.batch, h, w)?,
                prediction: cfg.train.prediction,
                labels: Some(labels),
            }),
        })
    }
}

/// Reads the standard-normal draw `sample` of `shape` from a safetensors file.
pub fn read_noise(path: &Path, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(load::Weights::open(path)?
        .read_input("sample", Some(shape))?
        .data)
}
