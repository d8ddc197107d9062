//! Conditioned restoration: a model folder with a mean-reverting or residual-shift process
//! (`scheduler_config.json`) and a UNet2DModel taking [x, μ], run by the chosen sampler on a
//! degraded batch μ. Shared by `diffuse restore` and `diffuse eval-restore`.

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::load;
use crate::models::conditioned::ConditionedUNet;
use crate::models::{Denoiser, Prediction};
use crate::nn::unet_2d::UNet2DModel;
use crate::schedule::mrs::MrsOptions;
use crate::schedule::restoration::{MrConfig, ResidualConfig};
use crate::solvers::executor::Executor;
use crate::solvers::mr_sampler;
use crate::solvers::program::{Buf, Program};
use crate::solvers::residual_shift;
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// Sampler choice of a restoration run.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// mrs, mr-posterior, mr-euler, resshift, rddm, resfusion.
    pub sampler: String,
    /// MR Sampler: ode or sde (default: the config's `solver_type`, "ode"); mr-euler: sde
    /// (default, Euler–Maruyama) or ode (probability-flow ODE).
    pub solver: Option<String>,
    /// MR Sampler order (default: the config's `solver_order`, 2).
    pub order: Option<usize>,
    pub steps: usize,
    pub dtype: DType,
    /// The MR Sampler's other options; each set one overrides the config's field.
    pub mrs: MrsFlags,
}

/// Flags overriding the `MeanRevertingScheduler` config's MR Sampler fields (`--form`,
/// `--time-schedule`, `--lambda-min`, `--denoise-last`, `--interpolation`, `--rho`,
/// `--timestep-offset`), and whether the SDE's per-step draws are supplied (`--step-noise`).
#[derive(Debug, Clone, Default)]
pub struct MrsFlags {
    pub form: Option<String>,
    pub time_schedule: Option<String>,
    pub lambda_min: Option<f64>,
    pub denoise_last: Option<bool>,
    pub interpolation: Option<String>,
    pub rho: Option<f64>,
    pub timestep_offset: Option<i64>,
    /// The run supplies the SDE's per-step draws ([`Restorer::restore_with_step_noise`]).
    pub step_noise: bool,
}

impl MrsFlags {
    /// `base` (the config's options) with the flags and `--solver`/`--order` applied.
    fn apply(
        &self,
        base: MrsOptions,
        solver: Option<&str>,
        order: Option<usize>,
    ) -> Result<MrsOptions> {
        fn parse<T: std::str::FromStr<Err = String>>(
            v: Option<&str>,
            flag: &'static str,
            d: T,
        ) -> Result<T> {
            v.map_or(Ok(d), |s| s.parse().map_err(|e| rarg(flag, e)))
        }
        let o = MrsOptions {
            solver_type: parse(solver, "solver", base.solver_type)?,
            form: parse(self.form.as_deref(), "form", base.form)?,
            time_schedule: parse(
                self.time_schedule.as_deref(),
                "time_schedule",
                base.time_schedule,
            )?,
            interpolation: parse(
                self.interpolation.as_deref(),
                "interpolation",
                base.interpolation,
            )?,
            order: order.unwrap_or(base.order),
            lambda_min: self
                .lambda_min
                .map(|v| Domain::FINITE.or_minus_inf().check(v))
                .transpose()
                .map_err(|r| rarg("lambda_min", r))?
                .unwrap_or(base.lambda_min),
            denoise_last: self.denoise_last.unwrap_or(base.denoise_last),
            rho: self
                .rho
                .map(|v| Domain::POSITIVE.check(v))
                .transpose()
                .map_err(|r| rarg("rho", r))?
                .unwrap_or(base.rho),
            timestep_offset: self.timestep_offset.unwrap_or(base.timestep_offset),
            ..base
        };
        let max = match o.solver_type {
            mr_sampler::MrSolverType::Ode => 3,
            mr_sampler::MrSolverType::Sde => 2,
        };
        if !(1..=max).contains(&o.order) {
            return Err(rarg(
                if order.is_some() {
                    "order"
                } else {
                    "solver_order"
                },
                format!(
                    "{} orders 1–{max} are supported, not {}",
                    o.solver_type.name().to_uppercase(),
                    o.order
                ),
            ));
        }
        if o.thresholding.is_some() && o.form != mr_sampler::MrPrediction::Data {
            return Err(rarg(
                "form",
                "the config's `thresholding` needs the data form (it thresholds x̂0)".into(),
            ));
        }
        if self.rho.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(rarg("rho", format!("{} must be positive", o.rho)));
        }
        Ok(o)
    }
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
    mrs: Option<MrsOptions>,
    prediction: Prediction,
    two_heads: bool,
    dtype: DType,
}

impl Restorer {
    /// Reads the process, builds the sampler program (all argument errors come before the
    /// weights are loaded), then loads the UNet.
    pub fn load(gpu: &Gpu, model: &Path, o: &RestoreOptions) -> Result<Self> {
        let (program, mrs, prediction) = Self::program(model, o)?;
        let unet = UNet2DModel::from_dir(gpu, model, o.dtype)?;
        Ok(Restorer {
            unet,
            program,
            mrs,
            prediction,
            two_heads: o.sampler == "rddm",
            dtype: o.dtype,
        })
    }

    /// The host-side checks of [`Restorer::load`] (process config, sampler options, the
    /// model's `config.json`), so a run can refuse bad input before it starts the GPU.
    pub fn check(model: &Path, o: &RestoreOptions) -> Result<()> {
        Self::program(model, o)?;
        let dir = load::resolve_model_dir(model, "unet")?;
        crate::nn::config::UNet2DConfig::from_file(&dir.join(load::CONFIG))?;
        Ok(())
    }

    /// The sampler program of the folder's process with the options applied.
    fn program(
        model: &Path,
        o: &RestoreOptions,
    ) -> Result<(Program, Option<MrsOptions>, Prediction)> {
        let dir = load::resolve_model_dir(model, "unet")?;
        Self::program_at(&dir.join(load::SCHEDULER_CONFIG), o)
    }

    /// The sampler program of the process in `cfg_path` (a `scheduler_config.json`) with the
    /// options applied: the MR Sampler's effective options and the model's parameterisation.
    pub fn program_at(
        cfg_path: &Path,
        o: &RestoreOptions,
    ) -> Result<(Program, Option<MrsOptions>, Prediction)> {
        let cfg_path = cfg_path.to_path_buf();
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
        let mut mrs = None;
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
                if o.mrs.step_noise {
                    return Err(rarg(
                        "step_noise",
                        format!(
                            "`{}` draws no supplied per-step noise (the MR Sampler's SDE does)",
                            o.sampler
                        ),
                    ));
                }
                (program, Prediction::Sample)
            }
            s => {
                let mr = MrConfig::from_file(&cfg_path)?;
                let sched = &mr.schedule;
                let program = match s {
                    "mrs" => {
                        let m = o.mrs.apply(mr.sampler, o.solver.as_deref(), o.order)?;
                        if let Err(Error::Argument { reason, .. }) = sched.max_timestep(m.lambda_min)
                        {
                            return Err(rarg("lambda_min", reason));
                        }
                        if o.mrs.step_noise && m.solver_type != mr_sampler::MrSolverType::Sde {
                            return Err(rarg(
                                "step_noise",
                                "only the SDE solver draws per-step noise (solver sde)".into(),
                            ));
                        }
                        let step_noise = o.mrs.step_noise;
                        mrs = Some(m);
                        mr_sampler::mrs_program(sched, &m, o.steps, mr.prediction, &yin, step_noise)
                            .map_err(|e| match e {
                                Error::Argument { arg: "order", reason, .. } => rarg("order", reason),
                                Error::Argument { arg: "steps", reason, .. } => rarg("steps", reason),
                                Error::Argument { arg: "rho", reason, .. } => rarg("rho", reason),
                                e => e,
                            })?
                    }
                    "mr-posterior" => {
                        mr_sampler::posterior_program(sched, o.steps, mr.prediction, &yin)?
                    }
                    "mr-euler" => match o.solver.as_deref().unwrap_or("sde") {
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
                if s != "mrs" && o.mrs.step_noise {
                    return Err(rarg(
                        "step_noise",
                        format!(
                            "`{s}` draws no supplied per-step noise (the MR Sampler's SDE does)"
                        ),
                    ));
                }
                (program, mr.prediction)
            }
        };
        Ok((program, mrs, prediction))
    }

    /// The MR Sampler's effective options (config fields with the flags applied), for `mrs`.
    pub fn mrs_options(&self) -> Option<MrsOptions> {
        self.mrs
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

    /// The channel count C of the images the model restores (in_channels = 2·C).
    pub fn channels(&self) -> usize {
        self.unet.config.in_channels / 2
    }

    /// The shape `--step-noise` must have for a condition of `shape`: [steps, N, C, H, W].
    pub fn step_noise_shape(&self, shape: &[usize]) -> Vec<usize> {
        [&[self.steps()][..], shape].concat()
    }

    /// Reads `--step-noise` (tensor `sample`, f32 [steps, N, C, H, W], draw k for step k) for
    /// a condition of `shape`; a missing file, wrong shape or non-finite value is an error
    /// naming the flag.
    pub fn read_step_noise(&self, path: &Path, shape: &[usize]) -> Result<Vec<f32>> {
        let want = self.step_noise_shape(shape);
        super::generate::read_noise(path, &want).map_err(|e| {
            rarg(
                "step_noise",
                format!(
                    "{}: {e} (expected `sample` of shape {want:?}: one draw per step)",
                    path.display()
                ),
            )
        })
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
        self.restore_with_step_noise(gpu, mu, shape, seed, noise, None, progress)
    }

    /// [`Restorer::restore`] with the SDE's per-step draws supplied (`step_noise`: [steps, N,
    /// C, H, W] flat, draw k for step k; needed when loaded with `MrsFlags::step_noise`).
    #[allow(clippy::too_many_arguments)]
    pub fn restore_with_step_noise(
        &self,
        gpu: &Gpu,
        mu: &[f32],
        shape: &[usize],
        seed: u64,
        noise: Option<&[f32]>,
        step_noise: Option<&[f32]>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        self.check_condition(shape)?;
        let step_noise = check_step_noise(&self.program, self.steps(), step_noise, shape)?;
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
        run_conditioned(
            gpu,
            &self.program,
            &mut model,
            &cond_state,
            seed,
            noise,
            step_noise,
            progress,
        )
    }
}

/// The supplied per-step draws ([steps, N, C, H, W] flat) cut to what `program` reads; an error
/// naming `step_noise` when their length is wrong or the program needs draws none were given.
pub(super) fn check_step_noise<'a>(
    program: &Program,
    steps: usize,
    step_noise: Option<&'a [f32]>,
    shape: &[usize],
) -> Result<Option<&'a [f32]>> {
    let len: usize = shape.iter().product();
    let draws = program.step_noise_draws();
    match step_noise {
        Some(z) if z.len() == steps * len => Ok(Some(&z[..draws * len])),
        Some(z) => Err(rarg(
            "step_noise",
            format!(
                "{} values for shape {:?} (one draw per step)",
                z.len(),
                [&[steps][..], shape].concat()
            ),
        )),
        None if draws > 0 => Err(rarg(
            "step_noise",
            "this sampler was built to read supplied per-step draws but none were given".into(),
        )),
        None => Ok(None),
    }
}

/// The sampling run every conditioned restorer shares: `program` on `model` with μ (`cond`, f32
/// state) as the process condition, the prior draw (`noise`, from `seed` when `None`) and the
/// checked per-step draws; the final sample read back, any non-finite value an error.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_conditioned(
    gpu: &Gpu,
    program: &Program,
    model: &mut dyn Denoiser,
    cond: &Tensor,
    seed: u64,
    noise: Option<&[f32]>,
    step_noise: Option<&[f32]>,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let exec = Executor::with_condition(gpu, &*model, program, seed, noise.is_some(), Some(cond))?;
    if let Some(z) = noise {
        if z.len() != cond.numel() {
            return Err(Error::HostLength {
                tensor: "noise".into(),
                got: z.len(),
                want: cond.numel(),
                shape: cond.shape().to_vec(),
            });
        }
        exec.set_noise(gpu, z)?;
    }
    if let Some(z) = step_noise {
        exec.set_step_noise(gpu, z)?;
    }
    let x = exec.run(gpu, model, progress)?.to_vec_f32(gpu)?;
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(rarg(
            "output",
            format!("non-finite value at flat index {i}; nothing written"),
        ));
    }
    Ok(x)
}
