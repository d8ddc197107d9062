//! Training-free inverse problems on an unconditional model folder: simulate y = A(x) + σ_y·n,
//! and restore x from y with `pinv` (A†y), `dds` (`solvers::dds`), `red-diff`
//! (`solvers::red_diff`) or, on a rectified-flow model, `flowchef` (`solvers::flowchef`). Everything runs on the GPU; nothing is read back inside the loop.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::unet::UNetDenoiser;
use crate::nn::unet_2d::UNet2DModel;
use crate::ops::degrade::{Degrader, Mode, Operator};
use crate::pipeline::generate::resolve_scheduler;
use crate::reference::philox_normal;
use crate::schedule::config::SchedulerConfig;
use crate::solvers::dds::{self, DdsOptions};
use crate::solvers::executor::Executor;
use crate::solvers::flowchef;
use crate::solvers::red_diff::{self, RedDiffOptions};
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// Philox stream of the simulated measurement noise (key = the run's seed).
pub const MEASUREMENT_NOISE_STREAM: u32 = 0x4e4f_4953;

fn arg(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "inverse",
        arg,
        reason,
    }
}

/// A restoration method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pinv,
    Dds,
    RedDiff,
    FlowChef,
}

/// The method names, as `--method` takes them.
pub const METHODS: [&str; 4] = ["pinv", "dds", "red-diff", "flowchef"];

impl Method {
    pub fn parse(name: &str) -> Result<Method> {
        match name {
            "pinv" => Ok(Method::Pinv),
            "dds" => Ok(Method::Dds),
            "red-diff" => Ok(Method::RedDiff),
            "flowchef" => Ok(Method::FlowChef),
            _ => Err(arg(
                "method",
                format!("unknown method `{name}` (one of {})", METHODS.join(", ")),
            )),
        }
    }

    /// The official default number of steps (model evaluations); 0 for `pinv`.
    pub fn default_steps(self) -> usize {
        match self {
            Method::Pinv => 0,
            Method::Dds => dds::DEFAULT_STEPS,
            Method::RedDiff => red_diff::DEFAULT_STEPS,
            Method::FlowChef => flowchef::DEFAULT_STEPS,
        }
    }
}

/// y = A(x) + σ_y·n for clean images `x` of `shape` [N, C, H, W] (n: Philox normals, stream
/// [`MEASUREMENT_NOISE_STREAM`], key `seed`, element e of the measurement).
pub fn simulate(
    gpu: &Gpu,
    op: Operator,
    x: &[f32],
    shape: &[usize],
    sigma_y: f64,
    seed: u64,
) -> Result<Vec<f32>> {
    check_sigma(sigma_y)?;
    let ms = op.measurement_shape(shape, "clean")?;
    let d = Degrader::new(gpu, op, shape[2], shape[3])?;
    let xt = Tensor::from_f32(gpu, "clean", shape, x, DType::F32)?;
    let yt = Tensor::zeros(gpu, "measurement", &ms, DType::F32)?;
    gpu.run(|rec| d.record(rec, Mode::Forward, &xt, &yt))?;
    let mut y = yt.to_vec_f32(gpu)?;
    if sigma_y > 0.0 {
        for (e, v) in y.iter_mut().enumerate() {
            *v += (sigma_y * philox_normal(seed, MEASUREMENT_NOISE_STREAM, e as u64)) as f32;
        }
    }
    Ok(y)
}

fn check_sigma(sigma_y: f64) -> Result<()> {
    if sigma_y.is_nan() || sigma_y < 0.0 {
        return Err(arg("sigma_y", format!("must be ≥ 0 (got {sigma_y})")));
    }
    Ok(())
}

/// What to restore.
#[derive(Debug, Clone)]
pub struct InverseOptions {
    pub operator: Operator,
    pub method: Method,
    /// Model evaluations (None: the method's official default).
    pub steps: Option<usize>,
    pub sigma_y: f64,
    pub seed: u64,
    pub dtype: DType,
}

/// An unconditional model loaded for inverse problems.
pub struct InverseModel {
    unet: UNet2DModel,
    cfg: SchedulerConfig,
}

impl InverseModel {
    /// Loads a diffusers UNet2DModel folder (unconditional, in = out channels).
    pub fn load(gpu: &Gpu, model: &Path, dtype: DType) -> Result<Self> {
        let name = model.display().to_string();
        let cfg = resolve_scheduler(&name, None, None)?;
        let unet = UNet2DModel::from_dir(gpu, model, dtype)?;
        if unet.num_classes().is_some() || unet.config.in_channels != unet.config.out_channels {
            return Err(arg(
                "model",
                "inverse problems need an unconditional model (no class labels, in = out channels)"
                    .into(),
            ));
        }
        Ok(InverseModel { unet, cfg })
    }

    /// The image shape [N, C, H, W] of a batch of `n` at the model's sample size.
    pub fn image_shape(&self, n: usize) -> Result<Vec<usize>> {
        let (h, w) = self
            .unet
            .config
            .sample_size
            .ok_or_else(|| arg("model", "config.json has no sample_size".into()))?;
        Ok(vec![n, self.unet.config.in_channels, h, w])
    }

    /// Checks that images of `shape` fit the model (channels; any H×W the UNet can take).
    pub fn check_image(&self, shape: &[usize], what: &str) -> Result<()> {
        if shape.len() != 4 || shape[1] != self.unet.config.in_channels {
            return Err(Error::Shape {
                op: "inverse",
                tensor: what.into(),
                got: shape.to_vec(),
                expected: format!(
                    "[N, {}, H, W] (the model's channels)",
                    self.unet.config.in_channels
                ),
            });
        }
        Ok(())
    }

    /// Restores images of `shape` [N, C, H, W] from the measurement `y` (the operator's output
    /// shape); `progress(step, total)` after each step.
    pub fn restore(
        &self,
        gpu: &Gpu,
        o: &InverseOptions,
        y: &[f32],
        shape: &[usize],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        check_sigma(o.sigma_y)?;
        self.check_image(shape, "measurement")?;
        let op = o.operator;
        let ms = op.measurement_shape(shape, "measurement")?;
        if y.len() != ms.iter().product::<usize>() {
            return Err(Error::HostLength {
                tensor: "measurement".into(),
                got: y.len(),
                want: ms.iter().product(),
                shape: ms,
            });
        }
        let d = Degrader::new(gpu, op, shape[2], shape[3])?;
        let yt = Tensor::from_f32(gpu, "measurement", &ms, y, DType::F32)?;
        if matches!(o.method, Method::Dds | Method::RedDiff)
            && self.cfg.train.prediction == crate::schedule::Prediction::Flow
        {
            return Err(arg(
                "method",
                "dds and red-diff need a DDPM-family (VP) model; this is a rectified-flow model (use flowchef)".into(),
            ));
        }
        let steps = o.steps.unwrap_or(o.method.default_steps());
        let program = match o.method {
            Method::Pinv => {
                if o.steps.is_some_and(|s| s != 0) {
                    return Err(arg("steps", "pinv takes no steps".into()));
                }
                let xt = Tensor::zeros(gpu, "sample", shape, DType::F32)?;
                gpu.run(|rec| d.record(rec, Mode::Pinv, &yt, &xt))?;
                progress(1, 1);
                return xt.to_vec_f32(gpu);
            }
            Method::Dds => {
                let opts = DdsOptions {
                    noisy: o.sigma_y > 0.0,
                    ..Default::default()
                };
                dds::program(&opts, &self.cfg.train, steps)?
            }
            Method::RedDiff => red_diff::program(
                &RedDiffOptions::default(),
                &self.cfg.train,
                steps,
                &op,
                shape,
            )?,
            Method::FlowChef => flowchef::program(
                &self.cfg.train,
                steps,
                flowchef::GRADIENT_SCALE,
                ms[1..].iter().product(),
            )?,
        };
        let aty = Tensor::zeros(gpu, "aty", shape, DType::F32)?;
        gpu.run(|rec| d.record(rec, Mode::Adjoint, &yt, &aty))?;
        let mut model = UNetDenoiser {
            forward: self.unet.prepare(gpu, shape[0], shape[2], shape[3])?,
            prediction: self.cfg.train.prediction,
            labels: None,
        };
        let exec =
            Executor::with_operator(gpu, &model, &program, o.seed, false, Some(&aty), Some(&d))?;
        exec.run(gpu, &mut model, &mut progress)?.to_vec_f32(gpu)
    }
}
