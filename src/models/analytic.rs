//! Closed-form models: data distributed as an isotropic Gaussian mixture, whose ε / x0 / v at any
//! VP noise level is exact (`shaders/analytic.wgsl`; f64 twin for references). They make solver
//! tests exact: convergence orders against the true ODE solution, and sample statistics against
//! the true data distribution. Usable from the CLI as `--model analytic:<name>`, and on the host
//! ([`HostMixture`]) by the program interpreter.

use super::{Denoiser, HostDenoiser, Prediction};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::analytic::{self as kernel, Mixture, Output};
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

    /// The model output in parameterisation `pred` for one sample x (VP input at `time`), in
    /// f64: ε = (x − α x̂0)/σ, v = α ε − σ x̂0, flow = ε − x̂0, score = −ε/σ (as the kernel).
    pub fn predict_f64(&self, x: &[f64], time: ModelTime, pred: Prediction) -> Vec<f64> {
        let (a, s) = (time.alpha, time.sigma);
        let mut out = self.x0_f64(x, a, s);
        for (o, &xi) in out.iter_mut().zip(x) {
            let x0 = *o;
            let eps = (xi - a * x0) / s;
            *o = match pred {
                Prediction::Epsilon => eps,
                Prediction::Sample => x0,
                Prediction::VPrediction => a * eps - s * x0,
                Prediction::Flow => eps - x0,
                Prediction::Score => -eps / s,
            };
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

/// The mixture as a host (f64) model for the program interpreter: each sample of the input is
/// one draw of [`GaussianMixture::dim`] values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMixture {
    pub mixture: GaussianMixture,
    pub prediction: Prediction,
}

impl HostDenoiser for HostMixture {
    fn run(&mut self, input: &[f64], time: ModelTime, output: &mut [f64]) -> Result<()> {
        let d = self.mixture.dim();
        if d == 0 || input.len() % d != 0 || output.len() != input.len() {
            return Err(Error::Argument {
                op: "analytic model",
                arg: "input",
                reason: format!(
                    "{} input and {} output values are not whole samples of {d} dimensions",
                    input.len(),
                    output.len()
                ),
            });
        }
        for (x, y) in input.chunks(d).zip(output.chunks_mut(d)) {
            y.copy_from_slice(&self.mixture.predict_f64(x, time, self.prediction));
        }
        Ok(())
    }
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
        if k == 0 || k > kernel::MAX_COMPONENTS {
            return Err(Error::Argument {
                op: "analytic model",
                arg: "components",
                reason: format!("{k} components (1..={} supported)", kernel::MAX_COMPONENTS),
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
        let out = match self.prediction {
            Prediction::Epsilon => Output::Epsilon,
            Prediction::Sample => Output::Sample,
            Prediction::VPrediction => Output::V,
            Prediction::Flow => Output::Flow,
            Prediction::Score => Output::Score,
        };
        let mix = Mixture {
            weights: &m.weights,
            variances: &m.variances,
            alpha: time.alpha,
            sigma: time.sigma,
        };
        gpu.run(|rec| {
            kernel::gaussian_mixture(rec, &self.input, &self.means, &self.output, out, &mix)
        })
    }
}
