//! Post-training quantization of a model folder (Shang et al., "Post-training Quantization on
//! Diffusion Models", CVPR 2023 — PTQ4DM): every conv and linear weight becomes symmetric
//! per-output-channel int8 with an MSE-chosen clipping range (`load::quant`); norms, embeddings
//! and biases are copied unchanged. With int8 activations (W8A8) every quantized layer also gets
//! `P.input_scale` = max |input| / 127 over a calibration set drawn from the model's own
//! sampling trajectories (`super::calibrate`: NDTC or uniform time steps). The output folder is
//! planned with [`crate::output::OutputPlan`] before any work (it must not exist) and written
//! into a temporary sibling renamed into place, so a failure leaves nothing behind.

pub use super::calibrate::Calibration;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::load::quant::{self, Activations, CalibrationInfo, QuantConfig};
use crate::load::{self, Weights};
use crate::nn::unet_2d::UNet2DModel;
use crate::schedule::config::SchedulerConfig;
use crate::tensor::DType;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// The default sampler whose trajectories the calibration inputs come from (`--scheduler` name)
/// and its steps: DPM-Solver++ (2M) at 20, the engine's default few-step sampler. PTQ4DM
/// calibrates on the sampler the model will run; `calibration_scheduler`/`calibration_steps`
/// choose it.
pub const CALIBRATION_SAMPLER: &str = "dpm-solver++";
pub const CALIBRATION_STEPS: usize = 20;
/// Trajectories per sampler batch during calibration.
pub const CALIBRATION_BATCH: usize = 32;

/// Options of [`quantize_folder`] (`diffuse quantize`).
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// The weight scheme; only "int8".
    pub weights: String,
    pub activations: Activations,
    pub calibration: Calibration,
    /// Calibration inputs (≥ 1; used with int8 activations).
    pub calibration_samples: usize,
    pub seed: u64,
    /// The sampler (`--scheduler` name) whose trajectories are recorded.
    pub calibration_scheduler: String,
    /// Its steps (≥ 1).
    pub calibration_steps: usize,
    /// How each layer's input range is fitted to the calibration inputs.
    pub activation_range: super::calibrate::RangeMethod,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            weights: "int8".into(),
            activations: Activations::None,
            calibration: Calibration::Nd,
            calibration_samples: 256,
            seed: 0,
            calibration_scheduler: CALIBRATION_SAMPLER.into(),
            calibration_steps: CALIBRATION_STEPS,
            activation_range: super::calibrate::RangeMethod::AbsMax,
        }
    }
}

/// What [`quantize_folder`] did.
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    /// Conv/linear weights turned into int8.
    pub quantized: usize,
    /// Tensors copied unchanged (norms, embeddings, biases).
    pub copied: usize,
    /// Weight file sizes before and after.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Mean over the quantized weights of the relative RMS error ‖w − s·q‖ / ‖w‖.
    pub mean_rel_rms: f64,
    /// W8A8: the calibrated max |input| of every quantized layer, by prefix.
    pub input_ranges: BTreeMap<String, f32>,
}

fn arg(reason: String, what: &'static str) -> Error {
    Error::Argument {
        op: "quantize",
        arg: what,
        reason,
    }
}

/// Quantizes the diffusers model folder `model` into the new folder `out`. Int8 activations
/// need `gpu` (the calibration runs the sampler); weights-only quantization runs on the host.
pub fn quantize_folder(
    model: &Path,
    out: &Path,
    o: &QuantizeOptions,
    gpu: Option<&Gpu>,
) -> Result<QuantizeReport> {
    if o.weights != "int8" {
        return Err(arg(
            format!("unknown weight scheme `{}` (expected int8)", o.weights),
            "weights",
        ));
    }
    if o.calibration_samples < 1 {
        return Err(arg("must be at least 1".into(), "calibration_samples"));
    }
    if o.calibration_steps < 1 {
        return Err(arg("must be at least 1".into(), "calibration_steps"));
    }
    let dir = load::resolve_model_dir(model, "unet")?;
    let cfg_path = dir.join(load::CONFIG);
    let mut cfg = load::read_json(&cfg_path)?;
    if cfg.get("quantization_config").is_some() {
        return Err(Error::Config {
            file: cfg_path.display().to_string(),
            field: "quantization_config".into(),
            reason: "the folder is already quantized".into(),
        });
    }
    let mut plan = crate::output::OutputPlan::new();
    let id = plan.dir("--out", out)?;
    if o.activations == Activations::Int8 && gpu.is_none() {
        return Err(arg(
            "int8 activations are calibrated by running the sampler: a GPU is needed".into(),
            "activations",
        ));
    }
    let w = Weights::open(&dir.join(load::WEIGHTS))?;
    // W8A8: calibrate the input ranges on the float model before anything is written.
    let (input_ranges, calibration) = match (o.activations, gpu) {
        (Activations::Int8, Some(gpu)) => {
            let sched = super::generate::resolve_scheduler(
                &model.to_string_lossy(),
                Some(&o.calibration_scheduler),
                None,
            )?;
            let ranges = calibrate(gpu, &dir, &sched, o)?;
            let info = CalibrationInfo {
                timesteps: o.calibration.name().into(),
                samples: o.calibration_samples,
                seed: o.seed,
                sampler: sched.kind().class_name().into(),
                steps: o.calibration_steps,
                range: o.activation_range.name().into(),
            };
            (ranges, Some(info))
        }
        _ => (BTreeMap::new(), None),
    };
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let (mut quantized, mut copied, mut rel) = (0, 0, 0.0);
    for name in w.names() {
        let Some((dt, shape, raw)) = w.raw(&name) else {
            continue;
        };
        let float = matches!(dt, Dtype::F32 | Dtype::F16 | Dtype::BF16);
        if float && quant::is_quantizable(&name, &shape) {
            let h = w.read_f32(&name, None)?;
            if let Some(i) = h.data.iter().position(|v| !v.is_finite()) {
                return Err(Error::Load {
                    file: dir.join(load::WEIGHTS).display().to_string(),
                    reason: format!("tensor `{name}` holds a non-finite value at flat index {i}"),
                });
            }
            let (q, s) = quant::quantize_weight(&h.data, shape[0]);
            let per = q.len() / shape[0];
            let (mut num, mut den) = (0.0, 0.0);
            for (i, (&qv, &wv)) in q.iter().zip(&h.data).enumerate() {
                let d = wv as f64 - s[i / per] as f64 * qv as f64;
                num += d * d;
                den += (wv as f64) * (wv as f64);
            }
            rel += if den > 0.0 { (num / den).sqrt() } else { 0.0 };
            quantized += 1;
            tensors.push((
                format!("{name}{}", quant::SCALE_SUFFIX),
                Dtype::F32,
                vec![shape[0]],
                s.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            if o.activations == Activations::Int8 {
                let layer = name.strip_suffix(".weight").unwrap_or(&name);
                let r = input_ranges.get(layer).ok_or_else(|| Error::Load {
                    file: dir.join(load::WEIGHTS).display().to_string(),
                    reason: format!(
                        "`{name}` is not the weight of a conv or linear layer the model runs, \
                         so its input cannot be calibrated"
                    ),
                })?;
                let s = (*r as f64 / 127.0) as f32;
                tensors.push((
                    quant::input_scale_name(&name),
                    Dtype::F32,
                    vec![1],
                    s.to_le_bytes().to_vec(),
                ));
            }
            tensors.push((name, Dtype::I8, shape, q.iter().map(|&v| v as u8).collect()));
        } else {
            copied += 1;
            tensors.push((name, dt, shape, raw.to_vec()));
        }
    }
    if quantized == 0 {
        return Err(Error::Load {
            file: dir.join(load::WEIGHTS).display().to_string(),
            reason: "no conv or linear weights to quantize".into(),
        });
    }
    let qc = QuantConfig {
        activations: o.activations,
        calibration,
    };
    cfg["quantization_config"] = qc.to_json();
    let views = tensors
        .iter()
        .map(|(n, dt, shape, b)| {
            TensorView::new(*dt, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| write_err(out, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, None).map_err(|e| write_err(out, e.to_string()))?;
    let cfg_text = serde_json::to_string_pretty(&cfg).map_err(|e| write_err(out, e.to_string()))?;
    let tmp = plan.path(id).to_path_buf();
    write_folder(&dir, &tmp, &cfg_text, &data)?;
    // A pipeline folder keeps its scheduler config in scheduler/: bring it along.
    let sched = model.join("scheduler").join(load::SCHEDULER_CONFIG);
    let dst = tmp.join(load::SCHEDULER_CONFIG);
    if dir != model && sched.is_file() && !dst.exists() {
        std::fs::copy(&sched, &dst).map_err(|e| write_err(&sched, e.to_string()))?;
    }
    plan.commit()?;
    let bytes_in = std::fs::metadata(dir.join(load::WEIGHTS)).map_or(0, |m| m.len());
    Ok(QuantizeReport {
        quantized,
        copied,
        bytes_in,
        bytes_out: data.len() as u64,
        mean_rel_rms: rel / quantized as f64,
        input_ranges,
    })
}

/// The calibrated max |input| of every conv/linear layer of the float model in `dir`.
fn calibrate(
    gpu: &Gpu,
    dir: &Path,
    sched: &SchedulerConfig,
    o: &QuantizeOptions,
) -> Result<BTreeMap<String, f32>> {
    let model = UNet2DModel::from_dir(gpu, dir, DType::F32)?;
    let ks = super::calibrate::step_indices(
        o.calibration,
        o.calibration_samples,
        o.calibration_steps,
        o.seed,
    );
    let set = super::calibrate::collect(
        gpu,
        &model,
        sched,
        o.calibration_steps,
        &ks,
        o.seed,
        CALIBRATION_BATCH,
    )?;
    super::calibrate::input_ranges(gpu, &model, &set, CALIBRATION_BATCH, o.activation_range)
}

fn write_err(out: &Path, reason: String) -> Error {
    Error::Write {
        file: out.display().to_string(),
        reason,
    }
}

/// The new folder: the other files of the model folder (scheduler config, model card) copied,
/// then config.json and the weights.
fn write_folder(dir: &Path, tmp: &Path, cfg: &str, weights: &[u8]) -> Result<()> {
    let fail = |p: &Path, e: std::io::Error| write_err(p, e.to_string());
    for entry in std::fs::read_dir(dir).map_err(|e| fail(dir, e))? {
        let entry = entry.map_err(|e| fail(dir, e))?;
        let name = entry.file_name();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && name != load::CONFIG && name != load::WEIGHTS {
            std::fs::copy(entry.path(), tmp.join(&name)).map_err(|e| fail(&entry.path(), e))?;
        }
    }
    std::fs::write(tmp.join(load::CONFIG), cfg).map_err(|e| fail(tmp, e))?;
    std::fs::write(tmp.join(load::WEIGHTS), weights).map_err(|e| fail(tmp, e))?;
    Ok(())
}
