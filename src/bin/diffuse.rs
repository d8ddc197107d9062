//! The `diffuse` command-line tool (floor 6).

use clap::{Parser, Subcommand};
use diffuse::{Gpu, GpuOptions};
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
