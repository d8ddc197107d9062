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
//! activation ranges with QDrop's MSE search on the quantized model; we take each layer's max
//! |input| over the set on the float model (min/max calibration), s = max/127.

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
) -> Result<BTreeMap<String, f32>> {
    let (h, w) = model.config.sample_size.unwrap_or((0, 0));
    let n = set.t.len();
    let batch = batch.clamp(1, n.max(1));
    let (fwd, observed) = model.prepare_observed(gpu, batch, h, w)?;
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
            let mx = v.iter().fold(0f32, |a, &b| a.max(b));
            if let Some(i) = v.iter().position(|v| !v.is_finite()) {
                return Err(Error::Argument {
                    op: "quantize",
                    arg: "model",
                    reason: format!("the input of `{name}` is not finite for sample {i}"),
                });
            }
            let e = ranges.entry(name.clone()).or_insert(0.0);
            *e = e.max(mx);
        }
    }
    Ok(ranges)
}
