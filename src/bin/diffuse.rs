//! The `diffuse` command-line tool (floor 7): argument parsing, progress bars and files; the
//! work is done by the library's pipeline and eval floors.

use clap::{Args, Parser, Subcommand};
#[path = "diffuse/checks.rs"]
mod checks;
#[path = "diffuse/eval_inverse.rs"]
mod eval_inverse;
#[path = "diffuse/img2img.rs"]
mod img2img;
#[path = "diffuse/tokenize.rs"]
mod tokenize;
#[path = "diffuse/txt2img.rs"]
mod txt2img;

use checks::{
    check_nchw, commit_json, finite_f32, is_png, json_plan, lambda_min_f64, png_channels,
    positive_f64, SampleOutputs,
};
use diffuse::load::{HostTensor, Weights};
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::output::OutputPlan;
use diffuse::pipeline::generate::{self, LoadedModel, ModelRequest};
use diffuse::pipeline::invert;
use diffuse::pipeline::restore::{MrsFlags, RestoreOptions, Restorer};
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
    Sample(SampleArgs),
    /// Print a prompt's CLIP input ids (padded to 77, as Stable Diffusion's text encoder takes
    /// them) as one JSON array.
    Tokenize(tokenize::TokenizeArgs),
    /// Stable Diffusion 1.x/2.x text-to-image from a diffusers pipeline folder: CLIP text
    /// encoder, UNet2DConditionModel with classifier-free guidance, any scheduler, VAE decode.
    Txt2img(txt2img::Txt2ImgArgs),
    /// Stable Diffusion 1.x/2.x image-to-image (SDEdit, as diffusers'
    /// StableDiffusionImg2ImgPipeline): the input picture is VAE-encoded, noised to the
    /// --strength point of the schedule and denoised from there with the prompt.
    Img2img(img2img::Img2ImgArgs),
    /// Run a sampler backwards from images to the states sampling starts from: BDIA-DDIM
    /// (exact: `latents` and `latents_next`) or DDIM (approximate: `latents`). `diffuse sample
    /// --latents` with the same scheduler, steps and model reconstructs the images; another
    /// --class-label there edits them.
    Invert(InvertArgs),
    /// Restore a degraded image with a mean-reverting (MR) or residual-shift diffusion model.
    Restore(RestoreArgs),
    /// Solve an inverse problem (super-resolution, inpainting, deblurring) with an
    /// unconditional model and no retraining: pinv, DDS or RED-diff.
    Inverse(InverseArgs),
    /// Score a sampler on a generation model: FID-FMNIST (and class accuracy for
    /// class-conditional models) with the shipped Fashion-MNIST classifier.
    Eval(EvalArgs),
    /// Score a restoration sampler on a test set of (degraded, clean) pairs: PSNR and SSIM.
    EvalRestore(EvalRestoreArgs),
    /// Score a training-free inverse-problem method on a test set's clean images: mean
    /// PSNR/SSIM beside `pinv` on the same simulated measurements.
    EvalInverse(eval_inverse::EvalInverseArgs),
    /// Headless benchmarks: kernel GFLOP/s and GB/s, UNet forward latency and memory,
    /// sampling images/s, and (--profile) a per-kernel GPU-timestamp table of one forward.
    Bench(BenchArgs),
    /// Post-training quantization (PTQ4DM): write a copy of a model folder with int8 conv and
    /// linear weights (per-output-channel scales, MSE-chosen clipping); it loads wherever a
    /// model folder is accepted.
    Quantize(QuantizeArgs),
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
        #[arg(long, allow_hyphen_values = true, value_parser = finite_f32)]
        timestep: f32,
        /// Output safetensors; receives `output` (f32 [N,C_out,H,W]), the model's `.sample`.
        #[arg(long)]
        out: PathBuf,
        /// Weights and activations dtype (accumulation is f32 either way).
        #[arg(long, default_value = "f32")]
        dtype: DType,
    },
}

/// The model and sampler flags shared by `sample` and `eval`.
#[derive(Args)]
struct SamplerArgs {
    /// diffusers model folder (or pipeline folder with unet/), or `analytic:gaussian`,
    /// `analytic:mixture`.
    #[arg(long)]
    model: String,
    /// Sampler by name (ddpm, ddim, euler, euler-ancestral, heun, dpm-solver++,
    /// dpm-solver++-3m, dpm-solver++-1, sde-dpm-solver++, dpm-solver, unipc, …); the training
    /// schedule comes from the model folder's scheduler_config.json.
    #[arg(long, conflicts_with = "scheduler_config")]
    scheduler: Option<String>,
    /// A diffusers scheduler_config.json to use as is.
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Inference steps.
    #[arg(long, allow_negative_numbers = true, default_value_t = 20)]
    steps: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
    /// Classifier-free guidance scale (class-conditional models; the last class index is
    /// the null label).
    #[arg(long, allow_hyphen_values = true, value_parser = finite_f32)]
    guidance: Option<f32>,
    #[arg(long, default_value = "f32")]
    dtype: DType,
}

#[derive(Args)]
struct SampleArgs {
    #[command(flatten)]
    s: SamplerArgs,
    /// Samples (default 16; with --latents, the states' batch).
    #[arg(long, allow_negative_numbers = true)]
    batch: Option<usize>,
    /// Class label for every sample (class-conditional models; default: cycle the classes).
    #[arg(long, allow_negative_numbers = true)]
    class_label: Option<i64>,
    /// safetensors holding `sample`, the standard-normal draw x_T is built from.
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Start from the states `diffuse invert` wrote (`latents`, and `latents_next` for BDIA),
    /// exactly as stored (no scaling); DDIM and BDIA schedulers only.
    #[arg(long, conflicts_with = "noise")]
    latents: Option<PathBuf>,
    /// Also write the final sample (f32, before conversion to pixels) as `sample`.
    #[arg(long)]
    raw: Option<PathBuf>,
    /// Output PNG grid.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct InvertArgs {
    /// diffusers model folder (or pipeline folder with unet/).
    #[arg(long)]
    model: String,
    /// The images x0: a PNG, or safetensors holding `sample` (f32 [N,C,H,W], model scale).
    #[arg(long)]
    input: PathBuf,
    /// `bdia` (exact) or `ddim` (approximate); the training schedule comes from the model
    /// folder's scheduler_config.json.
    #[arg(long, conflicts_with = "scheduler_config")]
    scheduler: Option<String>,
    /// A scheduler_config.json (`BDIAScheduler` with `gamma`, or `DDIMScheduler`).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    #[arg(long, allow_negative_numbers = true, default_value_t = 20)]
    steps: usize,
    /// Class label of every image (class-conditional models).
    #[arg(long, allow_negative_numbers = true)]
    class_label: Option<i64>,
    /// Classifier-free guidance scale (class-conditional models).
    #[arg(long, allow_hyphen_values = true, value_parser = finite_f32)]
    guidance: Option<f32>,
    /// Output safetensors: `latents` (x_T, f32 [N,C,H,W]) and, for BDIA, `latents_next`.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "f32")]
    dtype: DType,
}

#[derive(Args)]
struct RestoreSamplerArgs {
    /// Model folder: UNet2DModel with in_channels = 2·C (x and μ concatenated) and a
    /// scheduler_config.json (MeanRevertingScheduler, ResShiftScheduler, RDDMScheduler,
    /// ResfusionScheduler).
    #[arg(long)]
    model: PathBuf,
    /// mrs (MR Sampler), mr-posterior (optimal reverse step), mr-euler (IR-SDE
    /// Euler–Maruyama), resshift, rddm (two-head model), resfusion.
    #[arg(long, default_value = "mrs")]
    sampler: String,
    /// MR Sampler: ode or sde (default: the config's `solver_type`, else ode); mr-euler: sde
    /// (Euler–Maruyama, the default) or ode (probability-flow ODE).
    #[arg(long)]
    solver: Option<String>,
    /// MR Sampler order, ODE 1–3, SDE 1–2 (default: the config's `solver_order`, else 2).
    #[arg(long, allow_negative_numbers = true)]
    order: Option<usize>,
    /// Steps (MRS: of the time schedule; posterior: must divide T; Euler: T).
    #[arg(long, allow_negative_numbers = true, default_value_t = 20)]
    steps: usize,
    /// MR Sampler form: data or noise (the official `parameterization`; default: the config's
    /// `solver_form`, else data).
    #[arg(long)]
    form: Option<String>,
    /// MR Sampler time schedule: linspace, linear-lambda, trailing, leading, karras-n or
    /// karras-t (default: the config's `time_schedule`, else linspace).
    #[arg(long)]
    time_schedule: Option<String>,
    /// MR Sampler λ clip: the first time has λ ≥ L (default: the config's `lambda_min`, else −5;
    /// -inf disables it; unused by karras-n/karras-t, as in the official code).
    #[arg(long, allow_hyphen_values = true, value_parser = lambda_min_f64)]
    lambda_min: Option<f64>,
    /// MR Sampler: the final x̂0 from the last model output instead of a last solver step
    /// (default: the config's `denoise_last`, else false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    denoise_last: Option<bool>,
    /// MR Sampler α, σ, λ at fractional t: official (each discrete array interpolated
    /// linearly, as the official code) or consistent (λ = ln(α/σ)) (default: the config's
    /// `interpolation`, else official).
    #[arg(long)]
    interpolation: Option<String>,
    /// MR Sampler Karras exponent ρ of karras-n/karras-t (default: the config's `rho`, else 7).
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64)]
    rho: Option<f64>,
    /// MR Sampler offset added to the leading schedule's times (default: the config's
    /// `timestep_offset`, else 0).
    #[arg(long, allow_hyphen_values = true)]
    timestep_offset: Option<i64>,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "f32")]
    dtype: DType,
}

impl RestoreSamplerArgs {
    fn options(&self) -> RestoreOptions {
        RestoreOptions {
            sampler: self.sampler.clone(),
            solver: self.solver.clone(),
            order: self.order,
            steps: self.steps,
            dtype: self.dtype,
            mrs: MrsFlags {
                form: self.form.clone(),
                time_schedule: self.time_schedule.clone(),
                lambda_min: self.lambda_min,
                denoise_last: self.denoise_last,
                interpolation: self.interpolation.clone(),
                rho: self.rho,
                timestep_offset: self.timestep_offset,
                step_noise: false,
            },
        }
    }
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    r: RestoreSamplerArgs,
    /// The degraded image μ: a PNG, or safetensors holding `sample` (f32 [N,C,H,W], model scale).
    #[arg(long)]
    input: PathBuf,
    /// safetensors holding `sample`, the standard-normal draw the prior μ + λ_s·z is built from.
    #[arg(long)]
    noise: Option<PathBuf>,
    /// MR Sampler SDE: safetensors holding `sample` (f32 [steps, N, C, H, W]), the
    /// standard-normal draw of each step (draw k is the one the official code takes at step k).
    #[arg(long)]
    step_noise: Option<PathBuf>,
    /// Also write the final sample (f32) as `sample`.
    #[arg(long)]
    raw: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    s: SamplerArgs,
    /// Number of generated images scored.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1000)]
    num_samples: usize,
    /// Images sampled per batch.
    #[arg(long, allow_negative_numbers = true, default_value_t = 100)]
    batch: usize,
    /// FmnistClassifier folder (config.json, model.safetensors, fid_stats.safetensors).
    #[arg(long, default_value = "assets/fmnist-classifier")]
    classifier: PathBuf,
    /// Also compute the FID floor at the same sample count: the first K Fashion-MNIST train
    /// images (an IDX file, gzipped or not) against the same test statistics.
    #[arg(long)]
    real_images: Option<PathBuf>,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// A diffusers model folder, or `ddpm-cifar10-32` (that published architecture with
    /// synthetic weights).
    #[arg(long, default_value = "ddpm-cifar10-32")]
    model: String,
    /// f32, f16 or both.
    #[arg(long, default_value = "both")]
    dtype: String,
    /// Batch sizes of the forward and sampling figures.
    #[arg(
        long,
        allow_negative_numbers = true,
        value_delimiter = ',',
        default_value = "1,8,32"
    )]
    batches: Vec<usize>,
    /// Sampler and steps of the end-to-end figure (0 skips it).
    #[arg(long, default_value = "dpm-solver++")]
    scheduler: String,
    #[arg(long, allow_negative_numbers = true, default_value_t = 20)]
    steps: usize,
    /// Skip the per-kernel GEMM/conv/memory table.
    #[arg(long)]
    skip_kernels: bool,
    /// Print a per-kernel GPU-timestamp table of one forward at the first batch size.
    #[arg(long)]
    profile: bool,
    /// Also write everything as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct QuantizeArgs {
    /// diffusers model folder (or pipeline folder with unet/).
    #[arg(long)]
    model: PathBuf,
    /// The new folder (must not exist; written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Weight scheme: int8 (symmetric, per output channel).
    #[arg(long, default_value = "int8")]
    weights: String,
    /// Activation quantization: none (W8A32) or int8 (W8A8: per-tensor input ranges calibrated
    /// on the model's own sampling trajectories; needs a GPU).
    #[arg(long, default_value = "none")]
    activations: String,
    /// Timesteps of the activation calibration: nd (PTQ4DM's NDTC) or uniform.
    #[arg(long, default_value = "nd")]
    calibration: String,
    /// Calibration inputs (at least 1; one per sampler trajectory).
    #[arg(long, allow_negative_numbers = true, default_value_t = 256)]
    calibration_samples: usize,
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
    /// The sampler whose trajectories are recorded for the calibration (a --scheduler name on
    /// the model's training schedule): calibrate on the sampler you will run.
    #[arg(long, default_value = "dpm-solver++")]
    calibration_scheduler: String,
    /// Steps of that sampler (at least 1).
    #[arg(long, allow_negative_numbers = true, default_value_t = 20)]
    calibration_steps: usize,
    /// How each layer's int8 input range is fitted to the calibration inputs: absmax (their
    /// max |x|) or mse (the clipping range of least squared quantization error).
    #[arg(long, default_value = "absmax")]
    activation_range: String,
}

#[derive(Args)]
struct EvalRestoreArgs {
    #[command(flatten)]
    r: RestoreSamplerArgs,
    /// safetensors with `degraded` and `clean` (f32 [N,C,H,W], model scale); default: the
    /// model folder's testset.safetensors.
    #[arg(long)]
    testset: Option<PathBuf>,
    /// Score only the first K pairs.
    #[arg(long, allow_negative_numbers = true)]
    num_samples: Option<usize>,
    #[arg(long, allow_negative_numbers = true, default_value_t = 64)]
    batch: usize,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // A command line clap cannot take is refused like any other bad input: exit 1 (help and
    // version requests print and exit 0).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli).map_err(flag_context) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The library names the arguments of its pipeline calls (`batch`, `steps`); the CLI names the
/// flags that set them.
fn flag_context(e: Error) -> Error {
    match e {
        Error::Argument { op, arg, reason }
            if matches!(
                op,
                "sample"
                    | "invert"
                    | "restore"
                    | "eval"
                    | "eval-restore"
                    | "inverse"
                    | "eval-inverse"
                    | "set_timesteps"
            ) =>
        {
            let flag = match arg {
                "batch" => "--batch",
                "steps" => "--steps",
                "guidance" => "--guidance",
                "model" => "--model",
                "labels" => "--class-label",
                "scheduler" => "--scheduler",
                "sampler" => "--sampler",
                "solver" => "--solver",
                "condition" => "--input",
                "num_samples" => "--num-samples",
                "latents" => "--latents",
                "x0" => "--input",
                "order" => "--order",
                "form" => "--form",
                "time_schedule" => "--time-schedule",
                "lambda_min" => "--lambda-min",
                "interpolation" => "--interpolation",
                "rho" => "--rho",
                "timestep_offset" => "--timestep-offset",
                "step_noise" => "--step-noise",
                "operator" => "--operator",
                "method" => "--method",
                "sigma_y" => "--sigma-y",
                "measurement" => "--measurement",
                other => other,
            };
            Error::Argument {
                op,
                arg: flag,
                reason,
            }
        }
        e => e,
    }
}

fn run(cli: Cli) -> Result<ExitCode, diffuse::Error> {
    let opts = GpuOptions {
        adapter_filter: cli.adapter,
        ..Default::default()
    };
    match cli.command {
        Command::Sample(a) => sample(&opts, a)?,
        Command::Tokenize(a) => tokenize::tokenize(a)?,
        Command::Txt2img(a) => txt2img::txt2img(&opts, a)?,
        Command::Img2img(a) => img2img::img2img(&opts, a)?,
        Command::Invert(a) => invert(&opts, a)?,
        Command::Restore(a) => restore(&opts, a)?,
        Command::Eval(a) => eval(&opts, a)?,
        Command::EvalRestore(a) => eval_restore(&opts, a)?,
        Command::EvalInverse(a) => eval_inverse::eval_inverse(&opts, a)?,
        Command::Bench(a) => bench(&opts, a)?,
        Command::Quantize(a) => quantize(&opts, a)?,
        Command::Inverse(a) => inverse(&opts, a)?,
        Command::Forward {
            model,
            input,
            timestep,
            out,
            dtype,
        } => forward(&opts, &model, &input, timestep, &out, dtype)?,
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
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn input_error(input: &Path, reason: String) -> Error {
    Error::Load {
        file: input.display().to_string(),
        reason,
    }
}

/// `diffuse forward`: validates everything before computing, writes the output atomically.
fn quantize(opts: &GpuOptions, a: QuantizeArgs) -> Result<(), Error> {
    use diffuse::load::quant::Activations;
    use diffuse::pipeline::calibrate::RangeMethod;
    use diffuse::pipeline::quantize::{quantize_folder, Calibration, QuantizeOptions};
    let bad = |arg: &'static str, reason: String| Error::Argument {
        op: "quantize",
        arg,
        reason,
    };
    let activations = match a.activations.as_str() {
        "none" => Activations::None,
        "int8" => Activations::Int8,
        o => return Err(bad("--activations", format!("unknown `{o}` (none|int8)"))),
    };
    let calibration = match a.calibration.as_str() {
        "nd" => Calibration::Nd,
        "uniform" => Calibration::Uniform,
        o => return Err(bad("--calibration", format!("unknown `{o}` (nd|uniform)"))),
    };
    let activation_range = match a.activation_range.as_str() {
        "absmax" => RangeMethod::AbsMax,
        "mse" => RangeMethod::Mse,
        o => {
            return Err(bad(
                "--activation-range",
                format!("unknown `{o}` (absmax|mse)"),
            ))
        }
    };
    let o = QuantizeOptions {
        weights: a.weights,
        activation_range,
        activations,
        calibration,
        calibration_samples: a.calibration_samples,
        seed: a.seed,
        calibration_scheduler: a.calibration_scheduler.clone(),
        calibration_steps: a.calibration_steps,
    };
    // Int8 activations are calibrated on the GPU; refuse bad input before opening it.
    if o.calibration_samples < 1 {
        return Err(bad("--calibration-samples", "must be at least 1".into()));
    }
    if o.calibration_steps < 1 {
        return Err(bad("--calibration-steps", "must be at least 1".into()));
    }
    if activations == Activations::Int8 {
        diffuse::pipeline::generate::resolve_scheduler(
            &a.model.to_string_lossy(),
            Some(&a.calibration_scheduler),
            None,
        )
        .map_err(|e| bad("--calibration-scheduler", e.to_string()))?;
    }
    let gpu = match activations {
        Activations::Int8 if !a.out.exists() => Some(Gpu::new(opts)?),
        _ => None,
    };
    let r = quantize_folder(&a.model, &a.out, &o, gpu.as_ref()).map_err(|e| match e {
        Error::Argument { op, arg, reason } => Error::Argument {
            op,
            arg: match arg {
                "weights" => "--weights",
                "activations" => "--activations",
                "calibration_samples" => "--calibration-samples",
                "calibration_steps" => "--calibration-steps",
                "out" => "--out",
                o => o,
            },
            reason,
        },
        e => e,
    })?;
    println!(
        "{}: {} conv/linear weights int8 (per-channel scales, MSE clipping; mean relative RMS \
         error {:.4}), {} tensors copied; weights {:.2} MiB -> {:.2} MiB on disk ({:.3}x)",
        a.out.display(),
        r.quantized,
        r.mean_rel_rms,
        r.copied,
        r.bytes_in as f64 / 1048576.0,
        r.bytes_out as f64 / 1048576.0,
        r.bytes_out as f64 / r.bytes_in.max(1) as f64
    );
    if activations == Activations::Int8 {
        println!(
            "int8 activations: {} layer input ranges ({}) calibrated on {} inputs ({} time steps \
             of {} {} steps, seed {})",
            r.input_ranges.len(),
            a.activation_range,
            a.calibration_samples,
            a.calibration,
            a.calibration_scheduler,
            a.calibration_steps,
            a.seed
        );
    }
    Ok(())
}

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
    let sample = io.read_input("sample", None)?;
    check_nchw(input, "sample", &sample.shape)?;
    if let Some(i) = sample.data.iter().position(|v| !v.is_finite()) {
        return Err(input_error(
            input,
            format!("`sample` holds a non-finite value at flat index {i}"),
        ));
    }
    let mut plan = OutputPlan::new();
    let out_id = plan.file("--out", out)?;
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
    plan.write(
        out_id,
        &diffuse::load::f32_tensors_bytes(&[("output", &output)])?,
    )?;
    plan.commit()?;
    eprintln!(
        "wrote {} ({:?}) — {} on {}",
        out.display(),
        output.shape,
        model_dir.display(),
        gpu.info().name
    );
    Ok(())
}

fn progress_bar(len: u64, prefix: &str, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {what} {{elapsed_precise}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

fn arg_error(op: &'static str, arg: &'static str, reason: String) -> Error {
    Error::Argument { op, arg, reason }
}

/// `--class-label` for every sample of the batch; an error on a model without classes.
fn class_labels(
    op: &'static str,
    label: Option<i64>,
    loaded: &LoadedModel,
    guidance: Option<f32>,
    batch: usize,
) -> Result<Option<Vec<i64>>, Error> {
    match (label, loaded.classes(guidance.is_some())) {
        (Some(l), Some(_)) => Ok(Some(vec![l; batch])),
        (Some(_), None) => Err(arg_error(
            op,
            "--class-label",
            "class labels need a class-conditional model".into(),
        )),
        (None, _) => Ok(None),
    }
}

/// `diffuse sample`: everything is validated before the first model evaluation; outputs are
/// written atomically at the end.
fn sample(opts: &GpuOptions, a: SampleArgs) -> Result<(), Error> {
    let cfg = generate::resolve_scheduler(
        &a.s.model,
        a.s.scheduler.as_deref(),
        a.s.scheduler_config.as_deref(),
    )?;
    diffuse::schedule::check_steps(a.s.steps, cfg.train.num_train_timesteps)?;
    let start = match &a.latents {
        Some(p) => {
            let l = invert::read_latents(p)?;
            // Refuse a scheduler without a from-latents program before loading anything.
            diffuse::solvers::from_latents(&cfg, a.s.steps)?;
            if a.batch.is_some_and(|b| b != l.shape[0]) {
                return Err(arg_error(
                    "sample",
                    "--batch",
                    format!("--latents holds {} samples", l.shape[0]),
                ));
            }
            Some(l)
        }
        None => None,
    };
    let batch = match &start {
        Some(l) => l.shape[0],
        None => a.batch.unwrap_or(16),
    };
    if batch == 0 {
        return Err(arg_error("sample", "--batch", "must be at least 1".into()));
    }
    LoadedModel::check(&a.s.model)?;
    let outputs = SampleOutputs::plan(&a.out, a.raw.as_deref())?;
    let gpu = Gpu::new(opts)?;
    let loaded = LoadedModel::load(&gpu, &a.s.model, a.s.dtype)?;
    let labels = class_labels("sample", a.class_label, &loaded, a.s.guidance, batch)?;
    let req = ModelRequest {
        model: a.s.model.clone(),
        batch,
        guidance: a.s.guidance,
        labels,
        dtype: a.s.dtype,
    };
    let mut model = loaded.denoiser(&gpu, &cfg, &req)?;
    let shape: Vec<usize> = model.input().shape().to_vec();
    let noise = a
        .noise
        .as_ref()
        .map(|p| generate::read_noise(p, &shape))
        .transpose()?;
    let bar = progress_bar(a.s.steps as u64, cfg.kind().class_name(), "steps");
    let t0 = std::time::Instant::now();
    let x = match &start {
        Some(l) => {
            invert::sample_from_latents(&gpu, model.as_mut(), &cfg, l, a.s.steps, |i, _| {
                bar.set_position(i as u64)
            })?
        }
        None => {
            let sopts = diffuse::pipeline::SampleOptions {
                steps: a.s.steps,
                seed: a.s.seed,
                noise,
            };
            diffuse::pipeline::sample(&gpu, model.as_mut(), &cfg, &sopts, |i, _| {
                bar.set_position(i as u64)
            })?
        }
    };
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    outputs.commit(&x, &shape)?;
    eprintln!(
        "wrote {} ({} samples, {} steps of {} in {secs:.1} s on {})",
        a.out.display(),
        shape[0],
        a.s.steps,
        cfg.kind().class_name(),
        gpu.info().name
    );
    Ok(())
}

/// `diffuse invert`: everything is validated before the first model evaluation; the states are
/// written atomically at the end.
fn invert(opts: &GpuOptions, a: InvertArgs) -> Result<(), Error> {
    let cfg = generate::resolve_scheduler(
        &a.model,
        a.scheduler.as_deref(),
        a.scheduler_config.as_deref(),
    )?;
    diffuse::schedule::check_steps(a.steps, cfg.train.num_train_timesteps)?;
    // Refuses schedulers without an inversion, and γ = 0, before loading anything.
    diffuse::solvers::inversion(&cfg, a.steps)?;
    let (x0, shape) = read_condition(&a.input)?;
    LoadedModel::check(&a.model)?;
    let mut plan = OutputPlan::new();
    let out_id = plan.file("--out", &a.out)?;
    if let Some(w) = invert::rounding_warning(&cfg, a.steps) {
        eprintln!("warning: {w}");
    }
    let gpu = Gpu::new(opts)?;
    let loaded = LoadedModel::load(&gpu, &a.model, a.dtype)?;
    let labels = class_labels("invert", a.class_label, &loaded, a.guidance, shape[0])?;
    let req = ModelRequest {
        model: a.model.clone(),
        batch: shape[0],
        guidance: a.guidance,
        labels,
        dtype: a.dtype,
    };
    let mut model = loaded.denoiser(&gpu, &cfg, &req).map_err(|e| match e {
        Error::Argument { arg, reason, .. } => Error::Argument {
            op: "invert",
            arg,
            reason,
        },
        e => e,
    })?;
    let (x0, shape) = png_channels(&a.input, x0, shape, model.input().shape()[1])?;
    if model.input().shape() != shape.as_slice() {
        return Err(input_error(
            &a.input,
            format!(
                "the images have shape {shape:?} but the model takes {:?}",
                model.input().shape()
            ),
        ));
    }
    let bar = progress_bar(a.steps as u64, cfg.kind().class_name(), "steps");
    let t0 = std::time::Instant::now();
    let l = invert::invert(&gpu, model.as_mut(), &cfg, &x0, a.steps, |i, _| {
        bar.set_position(i as u64)
    })?;
    bar.finish_and_clear();
    plan.write(out_id, &invert::latents_bytes(&l)?)?;
    plan.commit()?;
    let max = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!(
        "wrote {} ({}{}; max|latents| {:.3}, max|x0| {:.3}) — {} steps of {} inverted in {:.1} s on {}",
        a.out.display(),
        if l.next.is_some() { "latents, latents_next" } else { "latents" },
        format_args!(" {:?}", l.shape),
        max(&l.latents),
        max(&x0),
        a.steps,
        cfg.kind().class_name(),
        t0.elapsed().as_secs_f64(),
        gpu.info().name
    );
    Ok(())
}

/// Reads the degraded batch μ from a PNG or a safetensors `sample`.
fn read_condition(input: &Path) -> Result<(Vec<f32>, Vec<usize>), Error> {
    if is_png(input) {
        let (v, s) = diffuse::image_io::read_png(input)?;
        return Ok((v, s.to_vec()));
    }
    let t = Weights::open(input)?.read_input("sample", None)?;
    check_nchw(input, "sample", &t.shape)?;
    if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
        return Err(input_error(
            input,
            format!("non-finite value at flat index {i}"),
        ));
    }
    Ok((t.data, t.shape))
}

/// `diffuse restore`: everything is validated before the first model evaluation.
fn restore(opts: &GpuOptions, a: RestoreArgs) -> Result<(), Error> {
    if diffuse::pipeline::daclip_folder::is_daclip_folder(&a.r.model) {
        return restore_daclip(opts, a);
    }
    let (mu, shape) = read_condition(&a.input)?;
    let outputs = SampleOutputs::plan(&a.out, a.raw.as_deref())?;
    let mut o = a.r.options();
    o.mrs.step_noise = a.step_noise.is_some();
    Restorer::check(&a.r.model, &o)?;
    let gpu = Gpu::new(opts)?;
    let restorer = Restorer::load(&gpu, &a.r.model, &o)?;
    let (mu, shape) = png_channels(&a.input, mu, shape, restorer.channels())?;
    restorer
        .check_condition(&shape)
        .map_err(|e| input_error(&a.input, e.to_string()))?;
    let noise = a
        .noise
        .as_ref()
        .map(|p| generate::read_noise(p, &shape))
        .transpose()?;
    let step_noise = a
        .step_noise
        .as_ref()
        .map(|p| restorer.read_step_noise(p, &shape))
        .transpose()?;
    let bar = progress_bar(restorer.steps() as u64, &a.r.sampler, "steps");
    let x = restorer.restore_with_step_noise(
        &gpu,
        &mu,
        &shape,
        a.r.seed,
        noise.as_deref(),
        step_noise.as_deref(),
        |i, _| bar.set_position(i as u64),
    )?;
    bar.finish_and_clear();
    outputs.commit(&x, &shape)?;
    eprintln!(
        "wrote {} ({} NFE of {} on {})",
        a.out.display(),
        restorer.nfe(),
        a.r.sampler,
        gpu.info().name
    );
    Ok(())
}

/// `diffuse restore` on a converted DA-CLIP folder (`model_index.json`
/// `DaclipRestorationPipeline`): the folder, its tensors, the sampler options, the input (an
/// 8-bit RGB PNG, or safetensors `sample` [N, 3, H, W] on the folder's `sample_range`) and the
/// outputs are checked before the GPU starts; the two DA-CLIP contexts are computed once; the
/// PNG maps `sample_range` to [0, 255] (clamped), `--raw` holds the unclipped final sample.
fn restore_daclip(opts: &GpuOptions, a: RestoreArgs) -> Result<(), Error> {
    use diffuse::pipeline::daclip_restore::DaclipRestorer;
    let mut o = a.r.options();
    o.mrs.step_noise = a.step_noise.is_some();
    let folder = DaclipRestorer::check(&a.r.model, &o)?;
    let (lo, hi) = folder.sample_range;
    let (mu, shape) = if is_png(&a.input) {
        let (bytes, h, w) = diffuse::image_io::read_rgb8_png(&a.input)?;
        let mut mu = vec![0f32; 3 * h * w];
        for (p, px) in bytes.chunks_exact(3).enumerate() {
            for c in 0..3 {
                mu[c * h * w + p] = (lo + (hi - lo) * px[c] as f64 / 255.0) as f32;
            }
        }
        (mu, vec![1, 3, h, w])
    } else {
        read_condition(&a.input)?
    };
    if shape[1] != folder.unet.in_nc || shape[1] != 3 {
        return Err(input_error(
            &a.input,
            format!(
                "{} channels; this DA-CLIP model restores RGB images ({} channels)",
                shape[1], folder.unet.in_nc
            ),
        ));
    }
    let outputs = SampleOutputs::plan(&a.out, a.raw.as_deref())?;
    let noise = a
        .noise
        .as_ref()
        .map(|p| generate::read_noise(p, &shape))
        .transpose()?;
    let gpu = Gpu::new(opts)?;
    let r = DaclipRestorer::load(&gpu, &a.r.model, &o)?;
    let step_noise = a
        .step_noise
        .as_ref()
        .map(|p| {
            let want = [&[r.steps()][..], &shape[..]].concat();
            generate::read_noise(p, &want).map_err(|e| Error::Argument {
                op: "restore",
                arg: "step_noise",
                reason: format!(
                    "{}: {e} (expected `sample` of shape {want:?}: one draw per step)",
                    p.display()
                ),
            })
        })
        .transpose()?;
    let contexts = r.contexts(&gpu, &mu, &shape)?;
    let bar = progress_bar(r.steps() as u64, &a.r.sampler, "steps");
    let x = r.restore(
        &gpu,
        &mu,
        &shape,
        &contexts,
        a.r.seed,
        noise.as_deref(),
        step_noise.as_deref(),
        |i, _| bar.set_position(i as u64),
    )?;
    bar.finish_and_clear();
    let png: Vec<f32> = x
        .iter()
        .map(|v| (2.0 * (*v as f64 - lo) / (hi - lo) - 1.0) as f32)
        .collect();
    outputs.commit_images(&x, &png, &shape)?;
    eprintln!(
        "wrote {} ({} NFE of {} on {}, DA-CLIP)",
        a.out.display(),
        r.nfe(),
        a.r.sampler,
        gpu.info().name
    );
    Ok(())
}

/// `diffuse eval`: FID-FMNIST (and class accuracy) of `--num-samples` generated images.
fn eval(opts: &GpuOptions, a: EvalArgs) -> Result<(), Error> {
    use diffuse::eval;
    use diffuse::nn::classifier::FmnistClassifier;
    let cfg = generate::resolve_scheduler(
        &a.s.model,
        a.s.scheduler.as_deref(),
        a.s.scheduler_config.as_deref(),
    )?;
    diffuse::schedule::check_steps(a.s.steps, cfg.train.num_train_timesteps)?;
    let o = eval::GenerationOptions {
        steps: a.s.steps,
        num_samples: a.num_samples,
        batch: a.batch,
        seed: a.s.seed,
        guidance: a.s.guidance,
        dtype: a.s.dtype,
    };
    o.validate()?;
    let (test, train) = eval::read_reference_stats(&a.classifier)?;
    let real = a
        .real_images
        .as_ref()
        .map(|p| eval::read_idx_images(p, a.num_samples))
        .transpose()?;
    LoadedModel::check(&a.s.model)?;
    let (plan, json) = json_plan(a.json.as_deref())?;
    let gpu = Gpu::new(opts)?;
    let classifier = FmnistClassifier::from_dir(&gpu, &a.classifier, DType::F32)?;
    let loaded = LoadedModel::load(&gpu, &a.s.model, a.s.dtype)?;
    let bar = progress_bar(1000, cfg.kind().class_name(), "‰");
    let rep = eval::evaluate_generation(
        &gpu,
        &loaded,
        &a.s.model,
        &cfg,
        &o,
        &classifier,
        &test,
        |i, n| bar.set_position((1000 * i / n.max(1)) as u64),
    )?;
    bar.finish_and_clear();
    let floor_full = diffuse::metrics::frechet_distance(&train, &test)?;
    let floor_k = match &real {
        Some((imgs, n, _, _)) => {
            let fwd = classifier.prepare(&gpu, a.batch.min(*n).max(1))?;
            let (f, _) = eval::classify(&gpu, &fwd, imgs, classifier.config.num_classes)?;
            let s = diffuse::metrics::FeatureStats::from_rows(&f, test.dim)?;
            Some((*n, diffuse::metrics::frechet_distance(&s, &test)?))
        }
        None => None,
    };
    let info = gpu.info();
    println!(
        "{} {} steps ({} NFE), {} samples: FID-FMNIST {:.3}{}",
        cfg.kind().class_name(),
        a.s.steps,
        rep.nfe,
        rep.num_samples,
        rep.fid,
        rep.accuracy.map_or(String::new(), |acc| format!(
            ", class accuracy {:.1} %",
            100.0 * acc
        ))
    );
    println!("FID floor: train vs test (60000 vs 10000) {floor_full:.3}");
    if let Some((n, f)) = floor_k {
        println!("FID floor at this sample count: {n} train images vs test {f:.3}");
    }
    println!("{:.1} s on {} ({:?})", rep.seconds, info.name, info.backend);
    {
        let v = serde_json::json!({
            "model": a.s.model, "scheduler": cfg.kind().class_name(),
            "sampler": a.s.scheduler, "steps": a.s.steps, "nfe": rep.nfe,
            "num_samples": rep.num_samples, "guidance": a.s.guidance, "seed": a.s.seed,
            "fid_fmnist": rep.fid, "class_accuracy": rep.accuracy,
            "fid_floor_train_vs_test": floor_full,
            "fid_floor_at_num_samples": floor_k.map(|(_, f)| f),
            "seconds": rep.seconds, "adapter": info.name, "backend": format!("{:?}", info.backend),
            "driver": format!("{} {}", info.driver, info.driver_info),
        });
        commit_json(plan, json, &v)?;
    }
    Ok(())
}

/// `diffuse eval-restore`: PSNR/SSIM of restorations of a test set against the clean images.
fn eval_restore(opts: &GpuOptions, a: EvalRestoreArgs) -> Result<(), Error> {
    let path = a
        .testset
        .clone()
        .unwrap_or_else(|| a.r.model.join("testset.safetensors"));
    if a.batch == 0 {
        return Err(arg_error(
            "eval-restore",
            "--batch",
            "must be at least 1".into(),
        ));
    }
    let (degraded, clean, shape) = diffuse::eval::read_testset(&path, a.num_samples)?;
    let (plan, json) = json_plan(a.json.as_deref())?;
    Restorer::check(&a.r.model, &a.r.options())?;
    let gpu = Gpu::new(opts)?;
    let restorer = Restorer::load(&gpu, &a.r.model, &a.r.options())?;
    restorer
        .check_condition(&shape)
        .map_err(|e| input_error(&path, e.to_string()))?;
    let bar = progress_bar(1000, &a.r.sampler, "‰");
    let rep = diffuse::eval::evaluate_restoration(
        &gpu,
        &restorer,
        &degraded,
        &clean,
        &shape,
        a.batch,
        a.r.seed,
        |i, t| bar.set_position((1000 * i / t.max(1)) as u64),
    )?;
    bar.finish_and_clear();
    let info = gpu.info();
    let m = restorer.mrs_options();
    println!(
        "{}{} {} NFE, {} pairs: PSNR {:.2} dB, SSIM {:.4} (degraded input: {:.2} dB, {:.4})",
        a.r.sampler,
        m.map_or(String::new(), |m| format!(
            " ({} order {}, {} form, {}, λ_min {}, {} interpolation{})",
            m.solver_type,
            m.order,
            m.form,
            m.time_schedule,
            m.lambda_min,
            m.interpolation,
            if m.denoise_last { ", denoise-last" } else { "" }
        )),
        rep.nfe,
        rep.pairs,
        rep.psnr,
        rep.ssim,
        rep.psnr_input,
        rep.ssim_input
    );
    println!("{:.1} s on {} ({:?})", rep.seconds, info.name, info.backend);
    {
        let v = serde_json::json!({
            "model": a.r.model, "sampler": a.r.sampler,
            "solver": m.map(|m| m.solver_type.name()).or(a.r.solver.as_deref()),
            "order": m.map(|m| m.order).or(a.r.order),
            "form": m.map(|m| m.form.name()),
            "time_schedule": m.map(|m| m.time_schedule.name()),
            "lambda_min": m.map(|m| m.lambda_min),
            "interpolation": m.map(|m| m.interpolation.name()),
            "denoise_last": m.map(|m| m.denoise_last),
            "steps": a.r.steps, "nfe": rep.nfe, "pairs": rep.pairs, "seed": a.r.seed,
            "psnr": rep.psnr, "ssim": rep.ssim, "psnr_input": rep.psnr_input,
            "ssim_input": rep.ssim_input, "seconds": rep.seconds, "adapter": info.name,
            "backend": format!("{:?}", info.backend), "driver": format!("{} {}", info.driver, info.driver_info),
        });
        commit_json(plan, json, &v)?;
    }
    Ok(())
}

/// `diffuse bench`: headless benchmark tables (and JSON), adapter and driver first.
fn bench(opts: &GpuOptions, a: BenchArgs) -> Result<(), Error> {
    use diffuse::bench;
    let dtypes = match a.dtype.as_str() {
        "f32" => vec![DType::F32],
        "f16" => vec![DType::F16],
        "both" => vec![DType::F32, DType::F16],
        o => {
            return Err(arg_error(
                "bench",
                "--dtype",
                format!("`{o}` (f32, f16, both)"),
            ))
        }
    };
    if a.batches.is_empty() || a.batches.contains(&0) {
        return Err(arg_error(
            "bench",
            "--batches",
            "batch sizes must be positive".into(),
        ));
    }
    let folder = a.model != "ddpm-cifar10-32";
    let cfg = if a.steps > 0 {
        let base = if folder {
            let p = diffuse::load::resolve_model_dir(Path::new(&a.model), "unet")?
                .join(diffuse::load::SCHEDULER_CONFIG);
            p.is_file()
                .then(|| diffuse::schedule::config::SchedulerConfig::from_file(&p))
                .transpose()?
        } else {
            None
        };
        Some(diffuse::schedule::config::SchedulerConfig::named(
            &a.scheduler,
            base.as_ref(),
        )?)
    } else {
        None
    };
    if folder {
        LoadedModel::check(&a.model)?;
    }
    let (plan, json) = json_plan(a.json.as_deref())?;
    let gpu = Gpu::new(opts)?;
    let info = gpu.info().clone();
    println!("{info}");
    let mut rows = Vec::new();
    let mut profile = Vec::new();
    for &dt in &dtypes {
        let gemm = bench::gemm_rate(&gpu, dt)?;
        println!("GEMM 1024³ {dt:?}: {gemm:.2} GFLOP/s");
        rows.push(bench::Row {
            kind: "gemm",
            name: "b1 1024x1024x1024 best variant".into(),
            dtype: dt,
            ms: 2.0 * 1024f64.powi(3) / gemm / 1e6,
            rate: gemm,
            unit: "GFLOP/s",
            note: "the reference rate of the forward rows' % of GEMM".into(),
        });
        if !a.skip_kernels {
            rows.extend(bench::kernel_rows(&gpu, dt)?);
        }
        let model = if folder {
            UNet2DModel::from_dir(&gpu, Path::new(&a.model), dt)?
        } else {
            bench::cifar10_model(&gpu, dt)?
        };
        let name = if folder {
            Path::new(&a.model)
                .file_name()
                .map_or(a.model.clone(), |f| f.to_string_lossy().to_string())
        } else {
            a.model.clone()
        };
        rows.extend(bench::forward_rows(
            &gpu, &name, &model, &a.batches, gemm, 3,
        )?);
        if let Some(cfg) = &cfg {
            rows.extend(bench::sampling_rows(
                &gpu, &name, &model, cfg, &a.batches, a.steps,
            )?);
        }
        if a.profile {
            let p = bench::profile_forward(&gpu, &model, a.batches[0])?;
            println!(
                "\nprofile of one {name} forward, batch {}, {dt:?} (GPU timestamps per dispatch):",
                a.batches[0]
            );
            bench::print_profile(&p);
            profile.extend(p);
        }
    }
    println!();
    bench::print_rows(&rows);
    commit_json(plan, json, &bench::report_json(&info, &rows, &profile))?;
    Ok(())
}

// ---- `diffuse inverse` (kept in one block: the output writing is being reworked elsewhere) ----

#[derive(Args)]
struct InverseArgs {
    /// An unconditional diffusers UNet2DModel folder (ε-prediction for dds and red-diff).
    #[arg(long)]
    model: PathBuf,
    /// sr2, sr4, inpaint-box, inpaint-random, blur-gauss, blur-box or mri4x.
    #[arg(long)]
    operator: String,
    /// pinv, dds, red-diff or flowchef (rectified-flow models only).
    #[arg(long)]
    method: String,
    /// Clean images (PNG, or safetensors holding `sample`, f32 [N,C,H,W], model scale); the
    /// measurement y = A(x) + σ_y·n is simulated from them.
    #[arg(
        long,
        conflicts_with = "measurement",
        required_unless_present = "measurement"
    )]
    clean: Option<PathBuf>,
    /// safetensors holding `measurement` in the operator's output shape.
    #[arg(long)]
    measurement: Option<PathBuf>,
    /// Measurement noise σ_y (simulated with --clean; DDS solves the regularised system when > 0).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    sigma_y: f64,
    /// Seed of the inpaint-random and mri4x masks.
    #[arg(long, default_value_t = 0)]
    operator_seed: u64,
    /// Model evaluations (default: the method's official default; pinv takes none).
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write `sample` (the restored images, f32 [N,C,H,W], model scale) and `measurement`.
    #[arg(long)]
    raw: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Weights and activations dtype.
    #[arg(long, default_value = "f32")]
    dtype: DType,
}

/// `diffuse inverse`: everything is validated before the first model evaluation; outputs are
/// written (atomically) only after the run.
fn inverse(opts: &GpuOptions, a: InverseArgs) -> Result<(), Error> {
    use diffuse::ops::degrade::Operator;
    use diffuse::pipeline::inverse::{self as inv, InverseModel, InverseOptions, Method};
    let operator = Operator::parse(&a.operator, a.operator_seed)?;
    let method = Method::parse(&a.method)?;
    if a.sigma_y.is_nan() || a.sigma_y < 0.0 {
        return Err(arg_error(
            "inverse",
            "--sigma-y",
            format!("must be ≥ 0 (got {})", a.sigma_y),
        ));
    }
    let clean = a.clean.as_ref().map(|p| read_condition(p)).transpose()?;
    let meas = match &a.measurement {
        Some(p) => {
            // Float tensors only, every value finite (named by tensor and file).
            Some(Weights::open(p)?.read_input("measurement", None)?)
        }
        None => None,
    };
    let outputs = SampleOutputs::plan(&a.out, a.raw.as_deref())?;
    let gpu = Gpu::new(opts)?;
    let model = InverseModel::load(&gpu, &a.model, a.dtype)?;
    // A PNG `--clean` takes the model's channel count, as `restore` and `invert` inputs do.
    let clean = match (clean, &a.clean) {
        (Some((x, s)), Some(p)) => Some(png_channels(p, x, s, model.image_shape(1)?[1])?),
        _ => None,
    };
    let (y, shape) = match (&clean, meas) {
        (Some((x, shape)), _) => {
            model.check_image(shape, "clean")?;
            (
                inv::simulate(&gpu, operator, x, shape, a.sigma_y, a.seed)?,
                shape.clone(),
            )
        }
        (None, Some(t)) => {
            let n = t.shape.first().copied().unwrap_or(0);
            let shape = model.image_shape(n.max(1))?;
            let want = operator.measurement_shape(&shape, "measurement")?;
            if t.shape != want {
                return Err(Error::Shape {
                    op: "inverse",
                    tensor: "measurement".into(),
                    got: t.shape,
                    expected: format!(
                        "{want:?} (operator `{}` on the model's {}×{} images)",
                        operator.name(),
                        shape[2],
                        shape[3]
                    ),
                });
            }
            (t.data, shape)
        }
        (None, None) => unreachable!("clap requires --clean or --measurement"),
    };
    let o = InverseOptions {
        operator,
        method,
        steps: a.steps,
        sigma_y: a.sigma_y,
        seed: a.seed,
        dtype: a.dtype,
    };
    let total = a.steps.unwrap_or(method.default_steps()).max(1);
    let bar = progress_bar(total as u64, &a.method, "steps");
    let x = model.restore(&gpu, &o, &y, &shape, |i, _| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    let ys = HostTensor {
        shape: operator.measurement_shape(&shape, "measurement")?,
        data: y,
    };
    outputs.commit_with(&x, &shape, &[("measurement", &ys)])?;
    if let Some((cx, _)) = &clean {
        let mse = cx
            .iter()
            .zip(&x)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        // PSNR on the [−1, 1] model scale (peak-to-peak 2).
        eprintln!(
            "PSNR {:.2} dB against --clean",
            10.0 * (4.0 / mse.max(1e-30)).log10()
        );
    }
    eprintln!(
        "wrote {} ({} on {})",
        a.out.display(),
        a.method,
        gpu.info().name
    );
    Ok(())
}
