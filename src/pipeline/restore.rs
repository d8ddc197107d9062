//! Conditioned restoration: a model folder with a mean-reverting or residual-shift process
//! (`scheduler_config.json`) and a UNet2DModel taking [x, μ], run by the chosen sampler on a
//! degraded batch μ. Shared by `diffuse restore` and `diffuse eval-restore`.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::load;
use crate::models::conditioned::ConditionedUNet;
use crate::models::Prediction;
use crate::nn::unet_2d::UNet2DModel;
use crate::schedule::restoration::{MrConfig, ResidualConfig};
use crate::solvers::executor::Executor;
use crate::solvers::mr_sampler::{self, MrPrediction};
use crate::solvers::program::{Buf, Program};
use crate::solvers::residual_shift;
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// Sampler choice of a restoration run.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// mrs, mr-posterior, mr-euler, resshift, rddm, resfusion.
    pub sampler: String,
    /// MR Sampler: ode or sde.
    pub solver: String,
    pub order: usize,
    pub steps: usize,
    pub dtype: DType,
}

fn rarg(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "restore",
        arg,
        reason,
    }
}

/// A restoration model with its sampler program, validated and loaded once.
pub struct Restorer {
    unet: UNet2DModel,
    program: Program,
    prediction: Prediction,
    two_heads: bool,
    dtype: DType,
}

impl Restorer {
    /// Reads the process, builds the sampler program (all argument errors come before the
    /// weights are loaded), then loads the UNet.
    pub fn load(gpu: &Gpu, model: &Path, o: &RestoreOptions) -> Result<Self> {
        let dir = load::resolve_model_dir(model, "unet")?;
        let cfg_path = dir.join(load::SCHEDULER_CONFIG);
        if !cfg_path.is_file() {
            return Err(Error::Load {
                file: cfg_path.display().to_string(),
                reason: "missing: a restoration model folder needs a scheduler_config.json (MeanRevertingScheduler, ResShiftScheduler, RDDMScheduler or ResfusionScheduler)".into(),
            });
        }
        if o.steps == 0 {
            return Err(rarg("steps", "must be at least 1".into()));
        }
        let yin = [(Buf::X, 1.0)];
        let (program, prediction) = match o.sampler.as_str() {
            "resshift" | "resfusion" | "rddm" => {
                let program = match (o.sampler.as_str(), ResidualConfig::from_file(&cfg_path)?) {
                    (
                        "resshift",
                        ResidualConfig::ResShift {
                            sqrt_eta,
                            kappa,
                            prediction,
                        },
                    ) => {
                        use residual_shift::ResShiftPrediction as P;
                        let p = match prediction.as_str() {
                            "epsilon" => P::Epsilon,
                            "residual" => P::Residual,
                            _ => P::XStart,
                        };
                        residual_shift::resshift_program(&sqrt_eta, kappa, p)?
                    }
                    ("resfusion", ResidualConfig::Resfusion { betas, sqrt_abar }) => {
                        residual_shift::resfusion_program(&betas, &sqrt_abar)?
                    }
                    ("rddm", ResidualConfig::Rddm { abar, bbar }) => {
                        residual_shift::rddm_program(&abar, &bbar, o.steps)?
                    }
                    _ => {
                        return Err(rarg(
                            "sampler",
                            format!(
                                "`{}` does not match the model's scheduler_config.json process",
                                o.sampler
                            ),
                        ))
                    }
                };
                (program, Prediction::Sample)
            }
            s => {
                let mr = MrConfig::from_file(&cfg_path)?;
                let sched = &mr.schedule;
                let program = match s {
                    "mrs" => {
                        let ts = sched.linear_lambda_times(o.steps, -5.0);
                        let solve = MrPrediction::Data;
                        let build = match o.solver.as_str() {
                            "ode" => mr_sampler::ode_program,
                            "sde" => mr_sampler::sde_program,
                            x => return Err(rarg("solver", format!("`{x}` (ode, sde)"))),
                        };
                        let p = build(sched, &ts, o.order, solve, mr.prediction, &yin)?;
                        match mr.thresholding {
                            Some((ratio, max)) => {
                                mr_sampler::dynamic_thresholding(p, solve, ratio, max)?
                            }
                            None => p,
                        }
                    }
                    "mr-posterior" => {
                        mr_sampler::posterior_program(sched, o.steps, mr.prediction, &yin)?
                    }
                    "mr-euler" => match o.solver.as_str() {
                        "sde" => mr_sampler::euler_program(sched, mr.prediction, &yin)?,
                        "ode" => mr_sampler::pf_ode_program(sched, mr.prediction, &yin)?,
                        x => return Err(rarg("solver", format!("`{x}` (ode, sde)"))),
                    },
                    x => {
                        return Err(rarg(
                            "sampler",
                            format!("unknown sampler `{x}` (mrs, mr-posterior, mr-euler, resshift, rddm, resfusion)"),
                        ))
                    }
                };
                (program, mr.prediction)
            }
        };
        let unet = UNet2DModel::from_dir(gpu, model, o.dtype)?;
        Ok(Restorer {
            unet,
            program,
            prediction,
            two_heads: o.sampler == "rddm",
            dtype: o.dtype,
        })
    }

    /// Model evaluations per restoration.
    pub fn nfe(&self) -> usize {
        self.program.nfe
    }

    /// Sampler steps per restoration (progress units).
    pub fn steps(&self) -> usize {
        self.program.steps.len()
    }

    /// Checks that a [N, C, H, W] condition fits the model (in = 2·C, out = C or 2·C).
    pub fn check_condition(&self, shape: &[usize]) -> Result<()> {
        let cfg = &self.unet.config;
        let heads = if self.two_heads { 2 } else { 1 };
        if shape.len() != 4
            || cfg.in_channels != 2 * shape[1]
            || cfg.out_channels != heads * shape[1]
        {
            return Err(rarg(
                "condition",
                format!(
                    "condition of shape {shape:?} for a model with in_channels {} and out_channels {} (conditioned models take x and μ: in = 2·C, out = C, or 2·C for RDDM's two heads)",
                    cfg.in_channels, cfg.out_channels
                ),
            ));
        }
        Ok(())
    }

    /// Restores the batch μ ([N, C, H, W], model scale). `noise` is the standard-normal draw
    /// of the prior (drawn from `seed` when `None`). Returns the final sample (f32, host).
    pub fn restore(
        &self,
        gpu: &Gpu,
        mu: &[f32],
        shape: &[usize],
        seed: u64,
        noise: Option<&[f32]>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        self.check_condition(shape)?;
        if let Some(i) = mu.iter().position(|v| !v.is_finite()) {
            return Err(rarg(
                "condition",
                format!("non-finite value at flat index {i}"),
            ));
        }
        let (n, h, w) = (shape[0], shape[2], shape[3]);
        let fwd = self.unet.prepare(gpu, n, h, w)?;
        let cond_model = Tensor::from_f32(gpu, "condition", shape, mu, self.dtype)?;
        let cond_state = Tensor::from_f32(gpu, "mu", shape, mu, DType::F32)?;
        let mut model = ConditionedUNet::new(gpu, fwd, self.prediction, &cond_model)?;
        if self.two_heads {
            model = model.two_heads(gpu)?;
        }
        let exec = Executor::with_condition(
            gpu,
            &model,
            &self.program,
            seed,
            noise.is_some(),
            Some(&cond_state),
        )?;
        if let Some(z) = noise {
            if z.len() != mu.len() {
                return Err(Error::HostLength {
                    tensor: "noise".into(),
                    got: z.len(),
                    want: mu.len(),
                    shape: shape.to_vec(),
                });
            }
            exec.set_noise(gpu, z)?;
        }
        let x = exec.run(gpu, &mut model, progress)?.to_vec_f32(gpu)?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(rarg(
                "output",
                format!("non-finite value at flat index {i}; nothing written"),
            ));
        }
        Ok(x)
    }
}
