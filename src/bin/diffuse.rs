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
