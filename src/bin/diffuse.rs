//! The `diffuse` command-line tool (floor 6).

use clap::{Parser, Subcommand};
use diffuse::load::{write_f32_tensors, HostTensor, Weights};
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::{DType, Error, Gpu, GpuOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "diffuse",
    version,
    about = "Sample diffusion models on any GPU (wgpu + WGSL)"
)]
struct Cli {
    /// Only use an adapter whose name contains this text (also: DIFFUSE_ADAPTER).
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter, backend, driver, features and limits.
    Info {
        /// Also run every kernel family against its CPU reference and report the errors.
        #[arg(long)]
        self_check: bool,
    },
    /// Sample images with a diffusers model folder or an analytic model.
    Sample {
        /// diffusers model folder (or pipeline folder with unet/), or `analytic:gaussian`,
        /// `analytic:mixture`.
        #[arg(long)]
        model: String,
        /// Sampler by name (ddpm, ddim, euler, euler-ancestral, heun, dpm-solver++,
        /// dpm-solver++-3m, dpm-solver++-1, sde-dpm-solver++, dpm-solver); the training
        /// schedule comes from the model folder's scheduler_config.json.
        #[arg(long, conflicts_with = "scheduler_config")]
        scheduler: Option<String>,
        /// A diffusers scheduler_config.json to use as is.
        #[arg(long)]
        scheduler_config: Option<PathBuf>,
        /// Inference steps.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Classifier-free guidance scale (class-conditional models; the last class index is
        /// the null label).
        #[arg(long)]
        guidance: Option<f32>,
        /// Class label for every sample (class-conditional models; default: cycle the classes).
        #[arg(long)]
        class_label: Option<i64>,
        /// safetensors holding `sample`, the standard-normal draw x_T is built from.
        #[arg(long)]
        noise: Option<PathBuf>,
        /// Also write the final sample (f32, before conversion to pixels) as `sample`.
        #[arg(long)]
        raw: Option<PathBuf>,
        /// Output PNG grid.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "f32")]
        dtype: DType,
    },
    /// Restore a degraded image with a mean-reverting (MR) diffusion model.
    Restore {
        /// Model folder: UNet2DModel with in_channels = 2·C (x and μ concatenated) and a
        /// scheduler_config.json with `_class_name` MeanRevertingScheduler.
        #[arg(long)]
        model: PathBuf,
        /// The degraded image μ: a PNG, or safetensors holding `sample` (f32 [N,C,H,W], model scale).
        #[arg(long)]
        input: PathBuf,
        /// mrs (MR Sampler), mr-posterior (optimal reverse step), mr-euler (IR-SDE
        /// Euler–Maruyama), resshift, rddm (two-head model), resfusion.
        #[arg(long, default_value = "mrs")]
        sampler: String,
        /// MR Sampler: ode or sde.
        #[arg(long, default_value = "sde")]
        solver: String,
        /// MR Sampler order (ODE 1–3, SDE 1–2).
        #[arg(long, default_value_t = 2)]
        order: usize,
        /// Steps (MRS: linear-λ schedule, λ_min = −5; posterior: must divide T; Euler: T).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// safetensors holding `sample`, the standard-normal draw the prior μ + λ_s·z is built from.
        #[arg(long)]
        noise: Option<PathBuf>,
        /// Also write the final sample (f32) as `sample`.
        #[arg(long)]
        raw: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "f32")]
        dtype: DType,
    },
    /// Run one UNet2DModel forward pass (parity checks against PyTorch/diffusers).
    Forward {
        /// diffusers model folder (config.json + diffusion_pytorch_model.safetensors), or a
        /// pipeline folder with a unet/ subfolder.
        #[arg(long)]
        model: PathBuf,
        /// safetensors with `sample` (f32 [N,C,H,W]) and, for class-conditional models,
        /// `class_labels` (i64 [N]).
        #[arg(long)]
        input: PathBuf,
        /// The timestep (or noise level for Fourier-embedding models), the same for every sample.
        #[arg(long, allow_hyphen_values = true)]
        timestep: f32,
        /// Output safetensors; receives `output` (f32 [N,C_out,H,W]), the model's `.sample`.
        #[arg(long)]
        out: PathBuf,
        /// Weights and activations dtype (accumulation is f32 either way).
        #[arg(long, default_value = "f32")]
        dtype: DType,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, diffuse::Error> {
    let opts = GpuOptions {
        adapter_filter: cli.adapter,
        ..Default::default()
    };
    match cli.command {
        Command::Sample {
            model,
            scheduler,
            scheduler_config,
            steps,
            seed,
            batch,
            guidance,
            class_label,
            noise,
            raw,
            out,
            dtype,
        } => {
            let req = SampleArgs {
                model,
                scheduler,
                scheduler_config,
                steps,
                seed,
                batch,
                guidance,
                class_label,
                noise,
                raw,
                out,
                dtype,
            };
            sample(&opts, req)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            model,
            input,
            sampler,
            solver,
            order,
            steps,
            seed,
            noise,
            raw,
            out,
            dtype,
        } => {
            let a = RestoreArgs {
                model,
                input,
                sampler,
                solver,
                order,
                steps,
                seed,
                noise,
                raw,
                out,
                dtype,
            };
            restore(&opts, a)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Forward {
            model,
            input,
            timestep,
            out,
            dtype,
        } => {
            forward(&opts, &model, &input, timestep, &out, dtype)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { self_check } => {
            let gpu = Gpu::new(&opts)?;
            println!("{}", gpu.info());
            if !self_check {
                return Ok(ExitCode::SUCCESS);
            }
            println!("\nkernel self-check against f64 CPU references:");
            let t0 = std::time::Instant::now();
            let checks = diffuse::selfcheck::battery(&gpu)?;
            let failed = checks.iter().filter(|c| !c.ok()).count();
            for c in &checks {
                println!("  {c}");
            }
            println!(
                "{} checks, {} failed, {:.1} s",
                checks.len(),
                failed,
                t0.elapsed().as_secs_f64()
            );
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn input_error(input: &Path, reason: String) -> Error {
    Error::Load {
        file: input.display().to_string(),
        reason,
    }
}

/// `diffuse forward`: validates everything before computing, writes the output atomically.
fn forward(
    opts: &GpuOptions,
    model_dir: &Path,
    input: &Path,
    timestep: f32,
    out: &Path,
    dtype: DType,
) -> Result<(), Error> {
    if !timestep.is_finite() {
        return Err(Error::Argument {
            op: "forward",
            arg: "--timestep",
            reason: format!("{timestep} is not finite"),
        });
    }
    let io = Weights::open(input)?;
    let sample = io.read_f32("sample", None)?;
    if sample.shape.len() != 4 {
        return Err(input_error(
            input,
            format!(
                "`sample` has shape {:?}; expected [N, C, H, W]",
                sample.shape
            ),
        ));
    }
    if let Some(i) = sample.data.iter().position(|v| !v.is_finite()) {
        return Err(input_error(
            input,
            format!("`sample` holds a non-finite value at flat index {i}"),
        ));
    }
    let gpu = Gpu::new(opts)?;
    let model = UNet2DModel::from_dir(&gpu, model_dir, dtype)?;
    let (n, c, h, w) = (
        sample.shape[0],
        sample.shape[1],
        sample.shape[2],
        sample.shape[3],
    );
    if c != model.config.in_channels {
        return Err(input_error(
            input,
            format!(
                "`sample` has {c} channels but the model's in_channels is {}",
                model.config.in_channels
            ),
        ));
    }
    let labels: Option<Vec<i64>> = if model.is_class_conditional() {
        if !io.contains("class_labels") {
            return Err(input_error(
                input,
                "missing tensor `class_labels` (the model is class-conditional)".into(),
            ));
        }
        let dt = io.stored_dtype("class_labels").unwrap_or_default();
        if dt != "I64" {
            return Err(input_error(
                input,
                format!("`class_labels` is {dt}; expected I64"),
            ));
        }
        let l = io.read_f32("class_labels", Some(&[n]))?;
        Some(l.data.iter().map(|&v| v as i64).collect())
    } else {
        if io.contains("class_labels") {
            return Err(input_error(
                input,
                "`class_labels` given but the model is not class-conditional".into(),
            ));
        }
        None
    };
    let fwd = model.prepare(&gpu, n, h, w)?;
    let y = fwd.forward_host(&gpu, &sample.data, &vec![timestep; n], labels.as_deref())?;
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return Err(Error::Argument {
            op: "forward",
            arg: "output",
            reason: format!(
                "the model produced a non-finite value at flat index {i}; nothing written"
            ),
        });
    }
    let output = HostTensor {
        shape: fwd.output.shape().to_vec(),
        data: y,
    };
    write_f32_tensors(out, &[("output", &output)])?;
    eprintln!(
        "wrote {} ({:?}) — {} on {}",
        out.display(),
        output.shape,
        model_dir.display(),
        gpu.info().name
    );
    Ok(())
}

struct SampleArgs {
    model: String,
    scheduler: Option<String>,
    scheduler_config: Option<PathBuf>,
    steps: usize,
    seed: u64,
    batch: usize,
    guidance: Option<f32>,
    class_label: Option<i64>,
    noise: Option<PathBuf>,
    raw: Option<PathBuf>,
    out: PathBuf,
    dtype: DType,
}

fn arg_error(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "sample",
        arg,
        reason,
    }
}

/// `diffuse sample`: everything is validated before the first model evaluation; outputs are
/// written atomically at the end.
fn sample(opts: &GpuOptions, a: SampleArgs) -> Result<(), Error> {
    use diffuse::models::analytic::{AnalyticDenoiser, GaussianMixture};
    use diffuse::models::guided::GuidedUNet;
    use diffuse::models::unet::UNetDenoiser;
    use diffuse::models::Denoiser;
    use diffuse::schedule::config::SchedulerConfig;

    if a.batch == 0 {
        return Err(arg_error("--batch", "must be at least 1".into()));
    }
    let explicit = a
        .scheduler_config
        .as_deref()
        .map(SchedulerConfig::from_file)
        .transpose()?;
    let gpu = Gpu::new(opts)?;
    let analytic = a.model.strip_prefix("analytic:");
    // The model folder's own scheduler config (folder or pipeline layout).
    let folder_cfg = match analytic {
        Some(_) => None,
        None => {
            let dir = diffuse::load::resolve_model_dir(Path::new(&a.model), "unet")?;
            let candidates = [
                dir.join(diffuse::load::SCHEDULER_CONFIG),
                dir.parent()
                    .map(|p| p.join("scheduler").join(diffuse::load::SCHEDULER_CONFIG))
                    .unwrap_or_default(),
            ];
            candidates
                .iter()
                .find(|p| p.is_file())
                .map(|p| SchedulerConfig::from_file(p))
                .transpose()?
        }
    };
    let cfg = match (explicit, &a.scheduler) {
        (Some(c), _) => c,
        (None, Some(name)) => SchedulerConfig::named(name, folder_cfg.as_ref())?,
        (None, None) => folder_cfg.clone().ok_or_else(|| {
            arg_error("--scheduler", "the model has no scheduler_config.json; pass --scheduler NAME or --scheduler-config FILE".into())
        })?,
    };
    diffuse::schedule::check_steps(a.steps, cfg.num_train_timesteps)?;
    let mut model: Box<dyn Denoiser> = match analytic {
        Some(name) => {
            if a.guidance.is_some() || a.class_label.is_some() {
                return Err(arg_error(
                    "--guidance",
                    "analytic models are unconditional".into(),
                ));
            }
            let mix = GaussianMixture::named(name)?;
            Box::new(AnalyticDenoiser::new(
                &gpu,
                mix,
                cfg.prediction,
                a.batch,
                a.dtype,
            )?)
        }
        None => {
            let unet = UNet2DModel::from_dir(&gpu, Path::new(&a.model), a.dtype)?;
            let (h, w) = unet.config.sample_size.ok_or_else(|| {
                arg_error(
                    "--model",
                    "config.json has no sample_size to sample at".into(),
                )
            })?;
            if unet.config.in_channels != unet.config.out_channels {
                return Err(arg_error(
                    "--model",
                    format!(
                        "in_channels {} ≠ out_channels {}: a conditioned model needs `diffuse restore`",
                        unet.config.in_channels, unet.config.out_channels
                    ),
                ));
            }
            let classes = unet.num_classes();
            match (classes, a.guidance, a.class_label) {
                (None, Some(_), _) | (None, _, Some(_)) => {
                    return Err(arg_error(
                        "--guidance",
                        "guidance and class labels need a class-conditional model".into(),
                    ))
                }
                (Some(k), g, l) => {
                    let usable = if g.is_some() { k - 1 } else { k };
                    if let Some(l) = l {
                        if l < 0 || l as usize >= usable {
                            return Err(arg_error(
                                "--class-label",
                                format!("{l} is outside 0..{usable}"),
                            ));
                        }
                    }
                    let labels: Vec<i64> = (0..a.batch)
                        .map(|i| l.unwrap_or((i % usable.max(1)) as i64))
                        .collect();
                    match g {
                        Some(scale) => {
                            let fwd = unet.prepare(&gpu, 2 * a.batch, h, w)?;
                            Box::new(GuidedUNet::new(
                                &gpu,
                                fwd,
                                cfg.prediction,
                                &labels,
                                (k - 1) as i64,
                                scale,
                            )?)
                        }
                        None => Box::new(UNetDenoiser {
                            forward: unet.prepare(&gpu, a.batch, h, w)?,
                            prediction: cfg.prediction,
                            labels: Some(labels),
                        }),
                    }
                }
                (None, None, None) => Box::new(UNetDenoiser {
                    forward: unet.prepare(&gpu, a.batch, h, w)?,
                    prediction: cfg.prediction,
                    labels: None,
                }),
            }
        }
    };
    let shape: Vec<usize> = model.input().shape().to_vec();
    let noise = match &a.noise {
        Some(p) => {
            let t = Weights::open(p)?.read_f32("sample", Some(&shape))?;
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(input_error(
                    p,
                    format!("`sample` holds a non-finite value at flat index {i}"),
                ));
            }
            Some(t.data)
        }
        None => None,
    };
    let bar = indicatif::ProgressBar::new(a.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(cfg.kind.class_name());
    let t0 = std::time::Instant::now();
    let opts = diffuse::pipeline::SampleOptions {
        steps: a.steps,
        seed: a.seed,
        noise,
    };
    let x = diffuse::pipeline::sample(&gpu, model.as_mut(), &cfg, &opts, |i, _| {
        bar.set_position(i as u64)
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let shape4 = [shape[0], shape[1], shape[2], shape[3]];
    if let Some(r) = &a.raw {
        write_f32_tensors(
            r,
            &[(
                "sample",
                &HostTensor {
                    shape: shape.clone(),
                    data: x.clone(),
                },
            )],
        )?;
    }
    diffuse::image_io::write_grid(&a.out, &x, shape4, None)?;
    eprintln!(
        "wrote {} ({} samples, {} steps of {} in {secs:.1} s on {})",
        a.out.display(),
        shape[0],
        a.steps,
        cfg.kind.class_name(),
        gpu.info().name
    );
    Ok(())
}

struct RestoreArgs {
    model: PathBuf,
    input: PathBuf,
    sampler: String,
    solver: String,
    order: usize,
    steps: usize,
    seed: u64,
    noise: Option<PathBuf>,
    raw: Option<PathBuf>,
    out: PathBuf,
    dtype: DType,
}

/// `diffuse restore`: everything is validated before the first model evaluation.
fn restore(opts: &GpuOptions, a: RestoreArgs) -> Result<(), Error> {
    use diffuse::models::conditioned::ConditionedUNet;
    use diffuse::schedule::restoration::MrConfig;
    use diffuse::solvers::mr_sampler::{self, MrPrediction};
    use diffuse::solvers::program::Buf;
    let rarg = |arg: &'static str, reason: String| Error::Argument {
        op: "restore",
        arg,
        reason,
    };
    let dir = diffuse::load::resolve_model_dir(&a.model, "unet")?;
    let cfg_path = dir.join(diffuse::load::SCHEDULER_CONFIG);
    if !cfg_path.is_file() {
        return Err(Error::Load {
            file: cfg_path.display().to_string(),
            reason:
                "missing: an MR model folder needs a MeanRevertingScheduler scheduler_config.json"
                    .into(),
        });
    }
    let residual = matches!(a.sampler.as_str(), "resshift" | "resfusion" | "rddm");
    let (mr, res) = if residual {
        (
            None,
            Some(diffuse::schedule::restoration::ResidualConfig::from_file(
                &cfg_path,
            )?),
        )
    } else {
        (Some(MrConfig::from_file(&cfg_path)?), None)
    };
    // The degraded image μ.
    let (mu, shape) = if a
        .input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        let (v, s) = diffuse::image_io::read_png(&a.input)?;
        (v, s.to_vec())
    } else {
        let t = Weights::open(&a.input)?.read_f32("sample", None)?;
        if t.shape.len() != 4 {
            return Err(input_error(
                &a.input,
                format!("`sample` has shape {:?}; expected [N, C, H, W]", t.shape),
            ));
        }
        (t.data, t.shape)
    };
    if let Some(i) = mu.iter().position(|v| !v.is_finite()) {
        return Err(input_error(
            &a.input,
            format!("non-finite value at flat index {i}"),
        ));
    }
    let yin = [(Buf::X, 1.0)];
    let prediction = mr
        .as_ref()
        .map_or(diffuse::models::Prediction::Sample, |m| m.prediction);
    let program = match (a.sampler.as_str(), &mr, &res) {
        (
            "resshift",
            _,
            Some(diffuse::schedule::restoration::ResidualConfig::ResShift {
                sqrt_eta,
                kappa,
                prediction,
            }),
        ) => {
            use diffuse::solvers::residual_shift::{resshift_program, ResShiftPrediction};
            let p = match prediction.as_str() {
                "epsilon" => ResShiftPrediction::Epsilon,
                "residual" => ResShiftPrediction::Residual,
                _ => ResShiftPrediction::XStart,
            };
            resshift_program(sqrt_eta, *kappa, p)?
        }
        (
            "resfusion",
            _,
            Some(diffuse::schedule::restoration::ResidualConfig::Resfusion { betas, sqrt_abar }),
        ) => diffuse::solvers::residual_shift::resfusion_program(betas, sqrt_abar)?,
        ("rddm", _, Some(diffuse::schedule::restoration::ResidualConfig::Rddm { abar, bbar })) => {
            diffuse::solvers::residual_shift::rddm_program(abar, bbar, a.steps)?
        }
        ("resshift" | "resfusion" | "rddm", _, _) => {
            return Err(rarg(
                "--sampler",
                format!(
                    "`{}` does not match the model's scheduler_config.json process",
                    a.sampler
                ),
            ))
        }
        (_, Some(mr), _) => {
            let sched = &mr.schedule;
            match a.sampler.as_str() {
        "mrs" => {
            let solve = MrPrediction::Data;
            let ts = sched.linear_lambda_times(a.steps.max(1), -5.0);
            match a.solver.as_str() {
                "ode" => mr_sampler::ode_program(sched, &ts, a.order, solve, mr.prediction, &yin)?,
                "sde" => mr_sampler::sde_program(sched, &ts, a.order, solve, mr.prediction, &yin)?,
                o => return Err(rarg("--solver", format!("`{o}` (ode, sde)"))),
            }
        }
        "mr-posterior" => mr_sampler::posterior_program(sched, a.steps, mr.prediction, &yin)?,
        "mr-euler" => mr_sampler::euler_program(sched, mr.prediction, &yin)?,
        o => {
            return Err(rarg(
                "--sampler",
                format!("unknown sampler `{o}` (mrs, mr-posterior, mr-euler, resshift, rddm, resfusion)"),
            ))
        }
            }
        }
        _ => return Err(rarg("--sampler", "no process configuration".into())),
    };
    if a.steps == 0 {
        return Err(rarg("--steps", "must be at least 1".into()));
    }
    let gpu = Gpu::new(opts)?;
    let unet = UNet2DModel::from_dir(&gpu, &a.model, a.dtype)?;
    let c_in = unet.config.in_channels;
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let heads = if a.sampler == "rddm" { 2 } else { 1 };
    if c_in != 2 * c || unet.config.out_channels != heads * c {
        return Err(input_error(
            &a.input,
            format!(
                "{c}-channel condition for a model with in_channels {c_in} and out_channels {} (conditioned models take x and μ: in = 2·C, out = C, or 2·C for RDDM's two heads)",
                unet.config.out_channels
            ),
        ));
    }
    let fwd = unet.prepare(&gpu, n, h, w)?;
    let cond_model = diffuse::Tensor::from_f32(&gpu, "condition", &[n, c, h, w], &mu, a.dtype)?;
    let cond_state = diffuse::Tensor::from_f32(&gpu, "mu", &[n, c, h, w], &mu, DType::F32)?;
    let mut model = ConditionedUNet::new(&gpu, fwd, prediction, &cond_model)?;
    if a.sampler == "rddm" {
        model = model.two_heads(&gpu)?;
    }
    let exec = diffuse::solvers::executor::Executor::with_condition(
        &gpu,
        &model,
        &program,
        a.seed,
        a.noise.is_some(),
        Some(&cond_state),
    )?;
    if let Some(p) = &a.noise {
        let z = Weights::open(p)?.read_f32("sample", Some(&shape))?;
        exec.set_noise(&gpu, &z.data)?;
    }
    let bar = indicatif::ProgressBar::new(program.steps.len() as u64);
    let x = exec
        .run(&gpu, &mut model, |i, _| bar.set_position(i as u64))?
        .to_vec_f32(&gpu)?;
    bar.finish_and_clear();
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(rarg(
            "output",
            format!("non-finite value at flat index {i}; nothing written"),
        ));
    }
    if let Some(r) = &a.raw {
        write_f32_tensors(
            r,
            &[(
                "sample",
                &HostTensor {
                    shape: shape.clone(),
                    data: x.clone(),
                },
            )],
        )?;
    }
    diffuse::image_io::write_grid(&a.out, &x, [n, c, h, w], None)?;
    eprintln!(
        "wrote {} ({} NFE of {} on {})",
        a.out.display(),
        program.nfe,
        a.sampler,
        gpu.info().name
    );
    Ok(())
}
