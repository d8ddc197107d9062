//! Closed-form models: data distributed as an isotropic Gaussian mixture, whose ε / x0 / v at any
//! VP noise level is exact (`shaders/analytic.wgsl`; f64 twin for references). They make solver
//! tests exact: convergence orders against the true ODE solution, and sample statistics against
//! the true data distribution. Usable from the CLI as `--model analytic:<name>`.

use super::{Denoiser, Prediction};
use crate::error::{Error, Result};
use crate::gpu::{params, Gpu, KernelKey};
use crate::ops::{grid_1d, WG_1D};
use crate::schedule::ModelTime;
use crate::tensor::{DType, Tensor};

/// An isotropic Gaussian mixture over [C, H, W] samples.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianMixture {
    pub shape: [usize; 3],
    pub weights: Vec<f64>,
    /// Per-component mean, C·H·W values each.
    pub means: Vec<Vec<f64>>,
    /// Per-component variance s_k².
    pub variances: Vec<f64>,
}

impl GaussianMixture {
    /// Dimensions per sample.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// The named models of `--model analytic:<name>`.
    pub fn named(name: &str) -> Result<Self> {
        let (c, h, w) = (1, 8, 8);
        let d = c * h * w;
        let pattern = |f: &dyn Fn(usize, usize) -> f64| -> Vec<f64> {
            (0..d).map(|i| f((i / w) % h, i % w)).collect()
        };
        match name {
            // One Gaussian: a bright disc on a dark background, s = 0.2.
            "gaussian" => Ok(GaussianMixture {
                shape: [c, h, w],
                weights: vec![1.0],
                means: vec![pattern(&|y, x| {
                    let r2 = (y as f64 - 3.5).powi(2) + (x as f64 - 3.5).powi(2);
                    if r2 < 9.0 {
                        0.8
                    } else {
                        -0.8
                    }
                })],
                variances: vec![0.04],
            }),
            // Four unequal modes (stripes, checks, a disc, a gradient), s = 0.1–0.3.
            "mixture" => Ok(GaussianMixture {
                shape: [c, h, w],
                weights: vec![0.4, 0.3, 0.2, 0.1],
                means: vec![
                    pattern(&|y, _| if y % 2 == 0 { 0.7 } else { -0.7 }),
                    pattern(&|y, x| if (y / 2 + x / 2) % 2 == 0 { 0.6 } else { -0.6 }),
                    pattern(&|y, x| {
                        if (y as f64 - 3.5).powi(2) + (x as f64 - 3.5).powi(2) < 6.0 {
                            0.9
                        } else {
                            -0.5
                        }
                    }),
                    pattern(&|_, x| -0.8 + 1.6 * x as f64 / 7.0),
                ],
                variances: vec![0.01, 0.04, 0.09, 0.02],
            }),
            o => Err(Error::Argument {
                op: "analytic model",
                arg: "name",
                reason: format!("unknown analytic model `{o}` (gaussian, mixture)"),
            }),
        }
    }

    /// E[x0 | x] for one sample x (VP input at α, σ), in f64.
    pub fn x0_f64(&self, x: &[f64], alpha: f64, sigma: f64) -> Vec<f64> {
        let d = self.dim() as f64;
        let logr: Vec<f64> = (0..self.weights.len())
            .map(|k| {
                let v = alpha * alpha * self.variances[k] + sigma * sigma;
                let d2: f64 = x
                    .iter()
                    .zip(&self.means[k])
                    .map(|(xi, mi)| (xi - alpha * mi).powi(2))
                    .sum();
                self.weights[k].ln() - 0.5 * d * v.ln() - 0.5 * d2 / v
            })
            .collect();
        let m = logr.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logr.iter().map(|l| (l - m).exp()).sum();
        let mut out = vec![0.0; x.len()];
        for (k, lr) in logr.iter().enumerate() {
            let r = (lr - m).exp() / z;
            let v = alpha * alpha * self.variances[k] + sigma * sigma;
            for (i, o) in out.iter_mut().enumerate() {
                let mu = self.means[k][i];
                *o += r * (mu + alpha * self.variances[k] / v * (x[i] - alpha * mu));
            }
        }
        out
    }

    /// Mean and per-dimension variance of the data distribution.
    pub fn moments(&self) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim();
        let mut mean = vec![0.0; d];
        let mut second = vec![0.0; d];
        for k in 0..self.weights.len() {
            for i in 0..d {
                mean[i] += self.weights[k] * self.means[k][i];
                second[i] += self.weights[k] * (self.variances[k] + self.means[k][i].powi(2));
            }
        }
        let var = (0..d).map(|i| second[i] - mean[i] * mean[i]).collect();
        (mean, var)
    }
}

params! {
    /// `#uniform Params` of `shaders/analytic.wgsl`.
    struct Params {
        /// samples
        n: u32,
        /// dimensions per sample
        d: u32,
        /// components (≤ 8)
        k: u32,
        _p0: u32,
        alpha: f32,
        sigma: f32,
        _p1: u32,
        _p2: u32,
        /// log w_k
        logw: [[f32; 4]; 2],
        /// s_k²
        s2: [[f32; 4]; 2],
    }
}

/// Workgroup size for `d` dimensions per sample: a power of two from 8 to 256 (one workgroup per
/// sample, so small samples must not idle 256 invocations each).
fn workgroup(d: usize) -> u32 {
    (d.next_power_of_two() as u32).clamp(8, WG_1D)
}

fn key(dt: DType, pred: Prediction, wg: u32) -> KernelKey {
    KernelKey::new::<Params>("analytic", "main", dt, [wg, 1, 1]).flag(
        match pred {
            Prediction::Epsilon => "PRED_EPS",
            Prediction::Sample => "PRED_X0",
            Prediction::VPrediction => "PRED_V",
            Prediction::Flow => "PRED_FLOW",
            Prediction::Score => "PRED_SCORE",
        },
        true,
    )
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for p in [
        Prediction::Epsilon,
        Prediction::Sample,
        Prediction::VPrediction,
        Prediction::Flow,
        Prediction::Score,
    ] {
        for wg in [8, WG_1D] {
            v.push(key(dt, p, wg));
        }
    }
    v
}

/// The mixture as a GPU [`Denoiser`] for `batch` samples.
pub struct AnalyticDenoiser {
    pub mixture: GaussianMixture,
    pub prediction: Prediction,
    input: Tensor,
    output: Tensor,
    means: Tensor,
}

impl AnalyticDenoiser {
    pub fn new(
        gpu: &Gpu,
        mixture: GaussianMixture,
        prediction: Prediction,
        batch: usize,
        dtype: DType,
    ) -> Result<Self> {
        let k = mixture.weights.len();
        if k == 0 || k > 8 {
            return Err(Error::Argument {
                op: "analytic model",
                arg: "components",
                reason: format!("{k} components (1..=8 supported)"),
            });
        }
        let [c, h, w] = mixture.shape;
        let flat: Vec<f32> = mixture.means.iter().flatten().map(|&v| v as f32).collect();
        let means = Tensor::from_f32(
            gpu,
            "analytic.means",
            &[k, mixture.dim()],
            &flat,
            DType::F32,
        )?;
        Ok(AnalyticDenoiser {
            input: Tensor::zeros(gpu, "analytic.input", &[batch, c, h, w], dtype)?,
            output: Tensor::zeros(gpu, "analytic.output", &[batch, c, h, w], dtype)?,
            means,
            mixture,
            prediction,
        })
    }
}

impl Denoiser for AnalyticDenoiser {
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn output(&self) -> &Tensor {
        &self.output
    }
    fn prediction(&self) -> Prediction {
        self.prediction
    }
    fn run(&mut self, gpu: &Gpu, time: ModelTime) -> Result<()> {
        let m = &self.mixture;
        let mut p = Params {
            n: self.input.shape()[0] as u32,
            d: m.dim() as u32,
            k: m.weights.len() as u32,
            _p0: 0,
            alpha: time.alpha as f32,
            sigma: time.sigma as f32,
            _p1: 0,
            _p2: 0,
            logw: [[0.0; 4]; 2],
            s2: [[0.0; 4]; 2],
        };
        for k in 0..m.weights.len() {
            p.logw[k / 4][k % 4] = m.weights[k].ln() as f32;
            p.s2[k / 4][k % 4] = m.variances[k] as f32;
        }
        gpu.run(|rec| {
            let g = grid_1d(gpu, "analytic", p.n as u64)?;
            let binds = [
                ("x", self.input.binding(gpu, "analytic")?),
                ("mu", self.means.binding(gpu, "analytic")?),
                ("y", self.output.binding(gpu, "analytic")?),
            ];
            rec.dispatch(
                &key(self.input.dtype(), self.prediction, workgroup(m.dim())),
                &p,
                &binds,
                g,
            )?;
            Ok(())
        })
    }
}
