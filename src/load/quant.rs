//! Post-training weight quantization (Shang et al., "Post-training Quantization on Diffusion
//! Models", CVPR 2023 — PTQ4DM): the `quantization_config` block of `config.json` and the
//! symmetric per-output-channel int8 quantizer with the MSE-minimising clipping range of
//! PTQ4DM's baseline. Host f64 arithmetic only.
//!
//! Checkpoint format: every quantized conv / linear `P.weight` is an `I8` tensor in PyTorch
//! layout ([Cout, Cin, kh, kw] or [out, in]) beside `P.weight_scale`, `F32` [Cout]; the layer
//! computes with w = weight_scale[c] · q. Norms, embeddings and biases stay float.
//!
//! Rounding rules (the kernels and [`crate::reference`] compute with exactly these q and s):
//! s = α / 127 rounded to f32; q = clamp(round_half_even(w / s), −127, 127) with w / s in f64
//! (−128 is never used, so the range is symmetric); an all-zero channel has s = 0, q = 0.
//!
//! W8A8 (`activations: int8`): every quantized layer `P` also has `P.input_scale`, `F32` [1], a
//! per-tensor symmetric range for the layer's input calibrated by `pipeline::calibrate`. The
//! kernels quantise the input as q = clamp(round_half_even(f32(x · f32(1/s))), −127, 127)
//! (an f32 multiply by the reciprocal, correctly rounded, so a reference can reproduce it
//! bit for bit; s = 0 gives q = 0) and compute y = f32(Σ q_w·q_x) · (s_w · s_x) + bias.

use super::CONFIG;
use crate::error::{Error, Result};
use std::path::Path;

/// The `quant_method` this engine writes and reads.
pub const METHOD: &str = "ptq4dm";
/// The weight scheme: symmetric int8, one scale per output channel.
pub const WEIGHT_SCHEME: &str = "int8_symmetric_per_output_channel";
/// Suffix of the scale tensor beside a quantized `P.weight`: `P.weight_scale`.
pub const SCALE_SUFFIX: &str = "_scale";
/// The activation scheme of W8A8 folders: symmetric int8, one range per layer input.
pub const ACTIVATION_SCHEME: &str = "int8_symmetric_per_tensor";

/// The name of the input scale of the layer whose weight is `weight` (`P.weight` →
/// `P.input_scale`).
pub fn input_scale_name(weight: &str) -> String {
    format!(
        "{}.input_scale",
        weight.strip_suffix(".weight").unwrap_or(weight)
    )
}

/// The input rule of the module doc (defined beside the W8A8 kernels that apply it).
pub use crate::ops::conv2d_a8::{inverse_scale, quantize_input};

/// How the calibration inputs of a W8A8 folder were drawn (recorded in `quantization_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationInfo {
    /// "nd" (PTQ4DM's NDTC) or "uniform".
    pub timesteps: String,
    pub samples: usize,
    pub seed: u64,
    /// The sampler (diffusers class) and steps of the trajectories.
    pub sampler: String,
    pub steps: usize,
    /// The range statistic ("absmax").
    pub range: String,
}

/// Activation quantization of a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    /// Activations stay float (W8A32).
    None,
    /// Per-tensor int8 ranges for every conv/linear input (W8A8).
    Int8,
}

/// A parsed `quantization_config`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantConfig {
    pub activations: Activations,
    /// How the activation ranges were calibrated (W8A8 only).
    pub calibration: Option<CalibrationInfo>,
}

impl QuantConfig {
    /// The JSON block written into `config.json`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "quant_method": METHOD,
            "weights": "int8",
            "weight_scheme": WEIGHT_SCHEME,
            "weight_clipping": "mse",
            "activations": match self.activations {
                Activations::None => "none",
                Activations::Int8 => "int8",
            },
        });
        if let Some(c) = &self.calibration {
            v["activation_scheme"] = ACTIVATION_SCHEME.into();
            v["calibration"] = serde_json::json!({
                "timesteps": c.timesteps,
                "samples": c.samples,
                "seed": c.seed,
                "sampler": c.sampler,
                "steps": c.steps,
                "range": c.range,
            });
        }
        v
    }

    /// Parses the `quantization_config` of a config.json value (None when absent). Unknown
    /// methods, schemes or values are errors naming the field.
    pub fn from_config(v: &serde_json::Value, file: &Path) -> Result<Option<QuantConfig>> {
        let Some(q) = v.get("quantization_config") else {
            return Ok(None);
        };
        let err = |field: &str, reason: String| Error::Config {
            file: file.display().to_string(),
            field: format!("quantization_config.{field}"),
            reason,
        };
        if !q.is_object() {
            return Err(err("", "must be an object".into()));
        }
        let s = |field: &str| -> Result<String> {
            q.get(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| err(field, "missing or not a string".into()))
        };
        let method = s("quant_method")?;
        if method != METHOD {
            return Err(err(
                "quant_method",
                format!("unknown method `{method}` (this engine reads `{METHOD}`)"),
            ));
        }
        let w = s("weights")?;
        if w != "int8" {
            return Err(err(
                "weights",
                format!("unknown scheme `{w}` (expected int8)"),
            ));
        }
        let ws = s("weight_scheme")?;
        if ws != WEIGHT_SCHEME {
            return Err(err(
                "weight_scheme",
                format!("unknown scheme `{ws}` (expected {WEIGHT_SCHEME})"),
            ));
        }
        let activations = match s("activations")?.as_str() {
            "none" => Activations::None,
            "int8" => Activations::Int8,
            o => {
                return Err(err(
                    "activations",
                    format!("unknown value `{o}` (none|int8)"),
                ))
            }
        };
        let calibration = match activations {
            Activations::None => None,
            Activations::Int8 => {
                let a = s("activation_scheme")?;
                if a != ACTIVATION_SCHEME {
                    return Err(err(
                        "activation_scheme",
                        format!("unknown scheme `{a}` (expected {ACTIVATION_SCHEME})"),
                    ));
                }
                let c = q
                    .get("calibration")
                    .filter(|c| c.is_object())
                    .ok_or_else(|| err("calibration", "missing or not an object".into()))?;
                let cs = |f: &str| -> Result<String> {
                    c.get(f)
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            err(
                                &format!("calibration.{f}"),
                                "missing or not a string".into(),
                            )
                        })
                };
                let cu = |f: &str| -> Result<u64> {
                    c.get(f).and_then(|v| v.as_u64()).ok_or_else(|| {
                        err(
                            &format!("calibration.{f}"),
                            "missing or not a whole number".into(),
                        )
                    })
                };
                let timesteps = cs("timesteps")?;
                if timesteps != "nd" && timesteps != "uniform" {
                    return Err(err(
                        "calibration.timesteps",
                        format!("unknown value `{timesteps}` (nd|uniform)"),
                    ));
                }
                let samples = cu("samples")?;
                if samples < 1 {
                    return Err(err("calibration.samples", "must be at least 1".into()));
                }
                Some(CalibrationInfo {
                    timesteps,
                    samples: samples as usize,
                    seed: cu("seed")?,
                    sampler: cs("sampler")?,
                    steps: cu("steps")? as usize,
                    range: cs("range")?,
                })
            }
        };
        Ok(Some(QuantConfig {
            activations,
            calibration,
        }))
    }

    /// Reads the `quantization_config` of a model folder's config.json.
    pub fn from_dir(dir: &Path) -> Result<Option<QuantConfig>> {
        let path = dir.join(CONFIG);
        Self::from_config(&super::read_json(&path)?, &path)
    }
}

/// One channel quantized: its int8 values and scale.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantChannel {
    pub q: Vec<i8>,
    pub scale: f32,
}

/// q for one value at scale s (the rounding rule of the module doc).
pub fn quantize_value(w: f64, s: f32) -> i8 {
    if s == 0.0 {
        return 0;
    }
    (w / s as f64).round_ties_even().clamp(-127.0, 127.0) as i8
}

/// Candidate clipping ranges α = max|w| · (1 − i/100), i = 0..80 (down to 0.21·max|w|).
pub const CLIP_STEPS: usize = 80;

/// Quantizes one output channel: the clipping range α minimising Σ (w − s·q)² over the grid of
/// [`CLIP_STEPS`] fractions of max|w| (PTQ4DM's MSE baseline; α = max|w| is the min/max
/// quantizer and is always a candidate, so the chosen error is never worse than min/max).
pub fn quantize_channel(w: &[f32]) -> QuantChannel {
    let amax = w.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    if amax == 0.0 {
        return QuantChannel {
            q: vec![0; w.len()],
            scale: 0.0,
        };
    }
    let mut best = (f64::INFINITY, 0f32);
    for i in 0..CLIP_STEPS {
        let s = (amax * (1.0 - i as f64 / 100.0) / 127.0) as f32;
        if s == 0.0 {
            continue;
        }
        let err: f64 = w
            .iter()
            .map(|&v| {
                let d = v as f64 - s as f64 * quantize_value(v as f64, s) as f64;
                d * d
            })
            .sum();
        if err < best.0 {
            best = (err, s);
        }
    }
    let s = best.1;
    QuantChannel {
        q: w.iter().map(|&v| quantize_value(v as f64, s)).collect(),
        scale: s,
    }
}

/// Quantizes a weight [Cout, …] row by row (one scale per output channel).
pub fn quantize_weight(w: &[f32], cout: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / cout.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(cout);
    for c in w.chunks(per.max(1)).take(cout) {
        let ch = quantize_channel(c);
        q.extend(ch.q);
        scales.push(ch.scale);
    }
    (q, scales)
}

/// Whether a checkpoint tensor is the weight of a conv or linear layer that `quantize` turns
/// into int8: `*.weight` of rank 4 (conv) or rank 2 (linear), except embedding tables
/// (`*embedding.weight`, an `nn.Embedding`).
pub fn is_quantizable(name: &str, shape: &[usize]) -> bool {
    name.ends_with(".weight")
        && !name.ends_with("embedding.weight")
        && (shape.len() == 4 || shape.len() == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_even_and_symmetric() {
        assert_eq!(quantize_value(2.5, 1.0), 2);
        assert_eq!(quantize_value(3.5, 1.0), 4);
        assert_eq!(quantize_value(-2.5, 1.0), -2);
        assert_eq!(quantize_value(-1000.0, 1.0), -127);
        assert_eq!(quantize_value(1000.0, 1.0), 127);
    }

    #[test]
    fn mse_clipping_beats_min_max_on_an_outlier() {
        // 50 000 small values and one outlier: clipping the outlier costs (1 − α)² once and
        // buys a finer step for every other value.
        let mut w: Vec<f32> = (0..50_000)
            .map(|i| ((i % 17) as f32 - 8.0) * 0.0125)
            .collect();
        w.push(1.0);
        let err = |s: f32| -> f64 {
            w.iter()
                .map(|&v| {
                    let d = v as f64 - s as f64 * quantize_value(v as f64, s) as f64;
                    d * d
                })
                .sum()
        };
        let ch = quantize_channel(&w);
        let minmax = (1.0f64 / 127.0) as f32;
        assert!(ch.scale < minmax, "{} vs {minmax}", ch.scale);
        assert!(err(ch.scale) < err(minmax));
        // The grid's best, checked independently.
        let best = (0..CLIP_STEPS)
            .map(|i| err(((1.0 - i as f64 / 100.0) / 127.0) as f32))
            .fold(f64::INFINITY, f64::min);
        assert_eq!(err(ch.scale), best);
    }

    #[test]
    fn config_errors_name_the_field() {
        let f = Path::new("config.json");
        let ok = QuantConfig {
            activations: Activations::None,
            calibration: None,
        };
        let v = serde_json::json!({"quantization_config": ok.to_json()});
        assert_eq!(QuantConfig::from_config(&v, f).unwrap(), Some(ok));
        for (field, val) in [
            ("quant_method", "gptq"),
            ("weights", "int4"),
            ("weight_scheme", "per_tensor"),
            ("activations", "fp8"),
        ] {
            let mut v = v.clone();
            v["quantization_config"][field] = val.into();
            let e = QuantConfig::from_config(&v, f).unwrap_err().to_string();
            assert!(e.contains(&format!("quantization_config.{field}")), "{e}");
        }
        assert_eq!(
            QuantConfig::from_config(&serde_json::json!({}), f).unwrap(),
            None
        );
        let a8 = QuantConfig {
            activations: Activations::Int8,
            calibration: Some(CalibrationInfo {
                timesteps: "nd".into(),
                samples: 64,
                seed: 3,
                sampler: "DPMSolverMultistepScheduler".into(),
                steps: 20,
                range: "absmax".into(),
            }),
        };
        let v = serde_json::json!({"quantization_config": a8.to_json()});
        assert_eq!(QuantConfig::from_config(&v, f).unwrap(), Some(a8));
        for (field, val) in [
            ("activation_scheme", serde_json::json!("per_channel")),
            ("calibration", serde_json::json!(3)),
        ] {
            let mut v = v.clone();
            v["quantization_config"][field] = val;
            let e = QuantConfig::from_config(&v, f).unwrap_err().to_string();
            assert!(e.contains(&format!("quantization_config.{field}")), "{e}");
        }
        for (field, val) in [
            ("timesteps", serde_json::json!("lognormal")),
            ("samples", serde_json::json!(0)),
        ] {
            let mut v = v.clone();
            v["quantization_config"]["calibration"][field] = val;
            let e = QuantConfig::from_config(&v, f).unwrap_err().to_string();
            assert!(
                e.contains(&format!("quantization_config.calibration.{field}")),
                "{e}"
            );
        }
    }

    #[test]
    fn input_rule_rounds_half_even_after_an_f32_multiply() {
        assert_eq!(quantize_input(2.5, 1.0), 2);
        assert_eq!(quantize_input(-3.5, 1.0), -4);
        assert_eq!(quantize_input(1e9, 1.0), 127);
        assert_eq!(quantize_input(-1e9, 1.0), -127);
        assert_eq!(quantize_input(5.0, inverse_scale(0.0)), 0);
        assert_eq!(input_scale_name("a.b.weight"), "a.b.input_scale");
    }
}
