//! Activation calibration of PTQ4DM (Shang et al., "Post-training Quantization on Diffusion
//! Models", CVPR 2023): the calibration set is made of network inputs recorded while the
//! engine's own sampler runs from x_T, one input per trajectory, at a model-evaluation index
//! drawn by NDTC (Normally Distributed Time-step Calibration) or uniformly; the per-tensor input
//! range of every conv and linear layer is then measured by running the float model on that set.
//!
//! NDTC as the official code draws it (`generate_t(t_mode="normal")` and
//! `backward_t_calib_data_generator` in `improved-diffusion/scripts/quant_image_sample.py`,
//! repository 42Shawn/PTQ4DM at 180a4d15, run by `quant_sample_ddim_in_backward_DNTC.sh` with
//! `--calib_t_mode_normal_mean 0.4 --calib_t_mode_normal_std 0.4`): k = trunc(S · z) with
//! z ~ N(μ = 0.4, σ = 0.4), clamped to [0, S − 1], where S is the number of sampler steps and k
//! counts steps from x_T (k = 0 is the first, noisiest evaluation). The truncated, clamped
//! normal is skewed: 16 % of the mass sits at k = 0 (z < 0) and 7 % at k = S − 1 (z > 1),
//! with the mode 40 % of the way from x_T to x_0. Uniform (the paper's baseline, the official
//! `t_mode="uniform"`): k_i = round_half_even(i · S / (n − 1)) (linspace over [0, S]; k_0 = 0
//! for n = 1), clamped to S − 1.
//!
//! Two differences from the official code, stated: it records the sampler's output after step k
//! and pairs it with the time index k itself as the model's timestep; we record the input the
//! network actually receives at evaluation k together with its real timestep. And it fits the
//! activation ranges with QDrop's search on the quantized model; we fit each layer's range on
//! the float model's inputs over the set, either as their max |input| (min/max, the default),
//! s = max/127, or ([`RangeMethod::Mse`]) as the clipping range c = max · (1 − i/100),
//! i < 80, that minimises the squared int8 quantization error Σ (x − s·q(x))² of those inputs
//! (the weights' grid, `load::quant::quantize_channel`; the error summed over a 4096-bin
//! histogram of |x| per layer, so two passes over the set and no stored activations).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::unet::UNetDenoiser;
use crate::models::{Denoiser, Prediction};
use crate::nn::unet_2d::UNet2DModel;
use crate::schedule::config::SchedulerConfig;
use crate::schedule::ModelTime;
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// NDTC's mean and standard deviation, as fractions of the number of sampler steps (the
/// official script's `--calib_t_mode_normal_mean 0.4 --calib_t_mode_normal_std 0.4`).
pub const ND_MEAN: f64 = 0.4;
pub const ND_STD: f64 = 0.4;

/// Timesteps the activation calibration inputs are recorded at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calibration {
    /// PTQ4DM's Normally Distributed Time-step Calibration.
    Nd,
    /// Uniform over the sampler's steps (the paper's baseline).
    Uniform,
}

impl Calibration {
    /// The name written into `quantization_config` ("nd" | "uniform").
    pub fn name(self) -> &'static str {
        match self {
            Calibration::Nd => "nd",
            Calibration::Uniform => "uniform",
        }
    }
}

/// The model-evaluation index (0 = first, from x_T) of each of `n` calibration inputs over a
/// sampler of `steps` evaluations; NDTC draws z with the reference Philox (seed, stream 1).
pub fn step_indices(kind: Calibration, n: usize, steps: usize, seed: u64) -> Vec<usize> {
    let last = steps.saturating_sub(1) as f64;
    (0..n)
        .map(|i| {
            let k = match kind {
                Calibration::Nd => {
                    let z = ND_MEAN + ND_STD * crate::reference::philox_normal(seed, 1, i as u64);
                    (z * steps as f64).trunc()
                }
                Calibration::Uniform if n == 1 => 0.0,
                Calibration::Uniform => {
                    (i as f64 * steps as f64 / (n - 1) as f64).round_ties_even()
                }
            };
            k.clamp(0.0, last) as usize
        })
        .collect()
}

/// The recorded network inputs: `x` [n, C, H, W] flat, their timesteps and class labels.
#[derive(Debug, Clone)]
pub struct CalibrationSet {
    pub x: Vec<f32>,
    pub t: Vec<f32>,
    pub labels: Option<Vec<i64>>,
    /// Elements per input.
    pub per: usize,
}

/// A denoiser that reads back the input of the evaluations the calibration wants.
struct InputRecorder<'a> {
    inner: UNetDenoiser,
    want: &'a [usize],
    eval: usize,
    got: Vec<Option<(Vec<f32>, f32)>>,
}

impl Denoiser for InputRecorder<'_> {
    fn input(&self) -> &Tensor {
        self.inner.input()
    }
    fn output(&self) -> &Tensor {
        self.inner.output()
    }
    fn prediction(&self) -> Prediction {
        self.inner.prediction()
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        if self.want.contains(&self.eval) {
            let x = self.inner.input().to_vec_f32(gpu)?;
            let per = x.len() / self.want.len();
            for (i, &k) in self.want.iter().enumerate() {
                if k == self.eval {
                    self.got[i] = Some((x[i * per..(i + 1) * per].to_vec(), time.t as f32));
                }
            }
        }
        self.eval += 1;
        self.inner.run(gpu, time)
    }
}

/// Runs `cfg` for `steps` on the float `model` from x_T (seed `seed + chunk`) in batches of
/// `batch` trajectories and records input i at evaluation `ks[i]`; class-conditional models
/// get label i mod classes.
pub fn collect(
    gpu: &Gpu,
    model: &UNet2DModel,
    cfg: &SchedulerConfig,
    steps: usize,
    ks: &[usize],
    seed: u64,
    batch: usize,
) -> Result<CalibrationSet> {
    let (h, w) = model.config.sample_size.ok_or_else(|| Error::Argument {
        op: "quantize",
        arg: "model",
        reason: "config.json has no sample_size to calibrate at".into(),
    })?;
    let n = ks.len();
    let batch = batch.clamp(1, n.max(1));
    let classes = model.num_classes();
    let mut set = CalibrationSet {
        x: Vec::new(),
        t: Vec::new(),
        labels: classes.map(|_| Vec::new()),
        per: 0,
    };
    for (c, want) in ks.chunks(batch).enumerate() {
        // Every chunk runs a full batch (the last one's extra trajectories are not recorded).
        let mut padded = want.to_vec();
        padded.resize(batch, usize::MAX);
        let labels: Option<Vec<i64>> =
            classes.map(|k| (0..batch).map(|i| ((c * batch + i) % k) as i64).collect());
        let inner = UNetDenoiser {
            forward: model.prepare(gpu, batch, h, w)?,
            prediction: cfg.train.prediction,
            labels: labels.clone(),
        };
        let mut rec = InputRecorder {
            inner,
            want: &padded,
            eval: 0,
            got: vec![None; batch],
        };
        let last = want.iter().copied().max().unwrap_or(0);
        let opts = super::SampleOptions {
            steps,
            seed: seed.wrapping_add(c as u64),
            noise: None,
        };
        // Stop once the last wanted evaluation has run (step i has made ≥ i evaluations).
        let r = super::sample_controlled(gpu, &mut rec, cfg, &opts, |i, _| {
            if i > last {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match r {
            Ok(_) | Err(Error::Cancelled { .. }) => {}
            Err(e) => return Err(e),
        }
        for (i, g) in rec.got.into_iter().take(want.len()).enumerate() {
            let (x, t) = g.ok_or_else(|| Error::Argument {
                op: "quantize",
                arg: "calibration_samples",
                reason: format!(
                    "the sampler made fewer than {} model evaluations",
                    want[i] + 1
                ),
            })?;
            set.per = x.len();
            set.x.extend(x);
            set.t.push(t);
            if let (Some(l), Some(ls)) = (&labels, set.labels.as_mut()) {
                ls.push(l[i]);
            }
        }
    }
    Ok(set)
}

/// Max |input| over the calibration set of every conv and linear layer of the float `model`,
/// by checkpoint prefix.
pub fn input_ranges(
    gpu: &Gpu,
    model: &UNet2DModel,
    set: &CalibrationSet,
    batch: usize,
    method: RangeMethod,
) -> Result<BTreeMap<String, f32>> {
    let maxima = observe(gpu, model, set, batch, false, &mut |_, _| Ok(()))?;
    if method == RangeMethod::AbsMax {
        return Ok(maxima);
    }
    let mut hist: BTreeMap<String, AbsHistogram> = maxima
        .iter()
        .map(|(k, &m)| (k.clone(), AbsHistogram::new(m)))
        .collect();
    observe(gpu, model, set, batch, true, &mut |name, v| {
        if let Some(h) = hist.get_mut(name) {
            h.add(v);
        }
        Ok(())
    })?;
    Ok(hist.into_iter().map(|(k, h)| (k, h.best_range())).collect())
}

/// How [`input_ranges`] fits a layer's input range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMethod {
    /// max |input| over the set (min/max).
    AbsMax,
    /// The clipping range of least squared quantization error.
    Mse,
}

impl RangeMethod {
    /// The name `quantization_config.calibration.range` records.
    pub fn name(self) -> &'static str {
        match self {
            RangeMethod::AbsMax => "absmax",
            RangeMethod::Mse => "mse",
        }
    }
}

/// Bins of the |input| histograms of [`RangeMethod::Mse`].
pub const HIST_BINS: usize = 4096;

/// A histogram of |x| over [0, max] in [`HIST_BINS`] bins.
#[derive(Debug, Clone)]
pub struct AbsHistogram {
    max: f32,
    counts: Vec<u64>,
}

impl AbsHistogram {
    pub fn new(max: f32) -> Self {
        AbsHistogram {
            max,
            counts: vec![0; HIST_BINS],
        }
    }

    pub fn add(&mut self, v: &[f32]) {
        if self.max <= 0.0 {
            return;
        }
        let k = HIST_BINS as f32 / self.max;
        for x in v {
            let b = ((x.abs() * k) as usize).min(HIST_BINS - 1);
            self.counts[b] += 1;
        }
    }

    /// The clipping range c = max · (1 − i/100), i < [`crate::load::quant::CLIP_STEPS`],
    /// minimising Σ count · (v − s·q(v))² over the bin centres v, s = c/127 (max itself on
    /// ties: min/max is the first candidate).
    pub fn best_range(&self) -> f32 {
        use crate::load::quant::{quantize_value, CLIP_STEPS};
        if self.max <= 0.0 {
            return self.max;
        }
        let width = self.max as f64 / HIST_BINS as f64;
        let mut best = (f64::INFINITY, self.max);
        for i in 0..CLIP_STEPS {
            let c = (self.max as f64 * (1.0 - i as f64 / 100.0)) as f32;
            let s = c / 127.0;
            if s == 0.0 {
                continue;
            }
            let err: f64 = self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(b, &n)| {
                    let v = (b as f64 + 0.5) * width;
                    let d = v - s as f64 * quantize_value(v, s) as f64;
                    n as f64 * d * d
                })
                .sum();
            if err < best.0 {
                best = (err, c);
            }
        }
        best.1
    }
}

/// Runs the observed float forward over the set in batches of `batch`: with `values` false,
/// returns each layer's max |input|; with `values` true, hands each layer's inputs of the real
/// samples of every batch to `each` (layer, values) and returns the maxima too.
fn observe(
    gpu: &Gpu,
    model: &UNet2DModel,
    set: &CalibrationSet,
    batch: usize,
    values: bool,
    each: &mut dyn FnMut(&str, &[f32]) -> Result<()>,
) -> Result<BTreeMap<String, f32>> {
    let (h, w) = model.config.sample_size.unwrap_or((0, 0));
    let n = set.t.len();
    let batch = batch.clamp(1, n.max(1));
    let (fwd, observed) = model.prepare_observed(gpu, batch, h, w, values)?;
    let mut ranges: BTreeMap<String, f32> = BTreeMap::new();
    for start in (0..n).step_by(batch) {
        let m = batch.min(n - start);
        // A short last chunk repeats its first input (the maxima are unchanged).
        let idx: Vec<usize> = (0..batch)
            .map(|i| start + if i < m { i } else { 0 })
            .collect();
        let mut x = Vec::with_capacity(batch * set.per);
        for &i in &idx {
            x.extend_from_slice(&set.x[i * set.per..(i + 1) * set.per]);
        }
        let t: Vec<f32> = idx.iter().map(|&i| set.t[i]).collect();
        let labels: Option<Vec<i64>> = set
            .labels
            .as_ref()
            .map(|l| idx.iter().map(|&i| l[i]).collect());
        fwd.sample.write_f32(gpu, &x)?;
        fwd.run(gpu, &t, labels.as_deref())?;
        for (name, tensor) in &observed {
            let v = tensor.to_vec_f32(gpu)?;
            // Values: only the batch's real samples (a short last chunk repeats its first).
            let v = if values {
                &v[..v.len() / batch * m]
            } else {
                &v[..]
            };
            let mx = v.iter().fold(0f32, |a, &b| a.max(b.abs()));
            if let Some(i) = v.iter().position(|v| !v.is_finite()) {
                let per = (v.len() / if values { m } else { batch }).max(1);
                return Err(Error::Argument {
                    op: "quantize",
                    arg: "model",
                    reason: format!(
                        "the input of `{name}` is not finite for calibration input {}",
                        start + i / per
                    ),
                });
            }
            let e = ranges.entry(name.clone()).or_insert(0.0);
            *e = e.max(mx);
            if values {
                each(name, v)?;
            }
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The squared int8 error of clipping range `c` over the values themselves.
    fn exact_err(v: &[f32], c: f32) -> f64 {
        let s = c / 127.0;
        v.iter()
            .map(|&x| {
                let q = crate::load::quant::quantize_value(x as f64, s) as f64;
                (x as f64 - s as f64 * q).powi(2)
            })
            .sum()
    }

    #[test]
    fn mse_range_search_against_the_exact_error() {
        // Uniform values: clipping buys little, the range stays near max.
        let u: Vec<f32> = (0..100_000)
            .map(|i| (i as f32 / 99_999.0) * 2.0 - 1.0)
            .collect();
        // A bell-shaped bulk (a sum of four uniforms) with rare large outliers: clipping pays.
        let mut g: Vec<f32> = (0..100_000u64)
            .map(|i| {
                let h = |k: u64| ((i * 2654435761 + k * 40503) % 10007) as f32 / 10007.0 - 0.5;
                (h(1) + h(2) + h(3) + h(4)) * 0.5
            })
            .collect();
        g.extend([9.0, -8.0, 7.5]);
        for (v, lo, hi) in [(&u, 0.95, 1.0), (&g, 0.5, 0.9)] {
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let mut h = AbsHistogram::new(max);
            h.add(v);
            let c = h.best_range();
            let r = c / max;
            assert!((lo..=hi).contains(&r), "range {r} of max, want {lo}..{hi}");
            // Chosen on the histogram, checked on the values: never worse than min/max, and
            // within 1 % of the best candidate's exact error.
            let best = (0..crate::load::quant::CLIP_STEPS)
                .map(|i| exact_err(v, (max as f64 * (1.0 - i as f64 / 100.0)) as f32))
                .fold(f64::INFINITY, f64::min);
            let e = exact_err(v, c);
            assert!(e <= exact_err(v, max) * (1.0 + 1e-9), "{e} vs min/max");
            assert!(e <= best * 1.01, "{e} vs the exact optimum {best}");
        }
        // An all-zero layer keeps range 0.
        let mut z = AbsHistogram::new(0.0);
        z.add(&[0.0; 4]);
        assert_eq!(z.best_range(), 0.0);
    }
}
