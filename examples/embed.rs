//! Embedding diffuse in an application, with the library alone: `default-features = false`
//! plus `png` for the image file — no clap, indicatif or env_logger. A worker thread loads the
//! shipped Fashion-MNIST DDPM (`assets/fmnist-ddpm`), samples a batch with DPM-Solver++ while
//! reporting progress over a channel, stops early when the app sets its cancel flag, and writes
//! a PNG grid.
//!
//! ```text
//! cargo run --release --no-default-features --features png --example embed -- \
//!     [--model DIR] [--steps 20] [--batch 4] [--seed 0] [--cancel-after K] [--out embed.png]
//! ```

use diffuse::pipeline::generate::{self, LoadedModel, ModelRequest};
use diffuse::pipeline::{self, SampleOptions};
use diffuse::{image_io, DType, Error, Gpu, GpuOptions};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// One sampling job, as an app's UI would fill it in.
#[derive(Debug, Clone)]
pub struct Job {
    /// A diffusers model folder (config.json, weights, scheduler_config.json).
    pub model: PathBuf,
    /// A sampler name built on the folder's training schedule.
    pub scheduler: String,
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    /// The PNG grid to write.
    pub out: PathBuf,
}

impl Job {
    /// The shipped unconditional Fashion-MNIST model with DPM-Solver++.
    pub fn shipped(out: PathBuf) -> Job {
        Job {
            model: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fmnist-ddpm"),
            scheduler: "dpm-solver++".into(),
            steps: 20,
            batch: 4,
            seed: 0,
            out,
        }
    }
}

/// Runs `job` on the calling thread through the library: scheduler, GPU, model, sampling,
/// PNG. `progress(step, total)` is called after each step and returns `Break` to cancel, in
/// which case the result is `Error::Cancelled` and nothing is written.
pub fn run_job(
    job: &Job,
    progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<PathBuf, Error> {
    let model = job.model.to_string_lossy().into_owned();
    let cfg = generate::resolve_scheduler(&model, Some(&job.scheduler), None)?;
    let gpu = Gpu::new(&GpuOptions::default())?;
    let loaded = LoadedModel::load(&gpu, &model, DType::F32)?;
    let req = ModelRequest {
        model,
        batch: job.batch,
        guidance: None,
        labels: None,
        dtype: DType::F32,
    };
    let mut denoiser = loaded.denoiser(&gpu, &cfg, &req)?;
    let shape = denoiser.input().shape().to_vec();
    let opts = SampleOptions {
        steps: job.steps,
        seed: job.seed,
        noise: None,
    };
    let x = pipeline::sample_controlled(&gpu, denoiser.as_mut(), &cfg, &opts, progress)?;
    image_io::write_grid(&job.out, &x, [shape[0], shape[1], shape[2], shape[3]], None)?;
    Ok(job.out.clone())
}

/// A progress report from the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
}

/// A job running on its own thread: progress arrives on `progress` (the channel closes when the
/// job ends), `cancel` asks it to stop after the current step, `join` returns its result.
pub struct Worker {
    pub progress: mpsc::Receiver<Progress>,
    cancel: Arc<AtomicBool>,
    handle: JoinHandle<Result<PathBuf, Error>>,
}

impl Worker {
    pub fn spawn(job: Job) -> Worker {
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let handle = std::thread::spawn(move || {
            run_job(&job, |step, total| {
                // The app may have stopped listening; the job goes on until cancelled.
                let _ = tx.send(Progress { step, total });
                if flag.load(Ordering::Relaxed) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        });
        Worker {
            progress: rx,
            cancel,
            handle,
        }
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the job (a panic on the worker is a bug and is passed on).
    pub fn join(self) -> Result<PathBuf, Error> {
        self.handle
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

fn parse_args() -> Result<(Job, Option<usize>), String> {
    let mut job = Job::shipped(PathBuf::from("embed.png"));
    let mut cancel_after = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--model" => job.model = PathBuf::from(value()?),
            "--out" => job.out = PathBuf::from(value()?),
            "--steps" => job.steps = number(value()?)? as usize,
            "--batch" => job.batch = number(value()?)? as usize,
            "--seed" => job.seed = number(value()?)?,
            "--cancel-after" => cancel_after = Some(number(value()?)? as usize),
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    Ok((job, cancel_after))
}

fn main() -> ExitCode {
    let (job, cancel_after) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let worker = Worker::spawn(job);
    // The app's UI loop: show progress, cancel on request.
    for p in worker.progress.iter() {
        eprint!("\rstep {}/{}", p.step, p.total);
        if cancel_after.is_some_and(|k| p.step >= k) {
            worker.cancel();
        }
    }
    eprintln!();
    match worker.join() {
        Ok(path) => {
            eprintln!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(Error::Cancelled { step, total, .. }) => {
            eprintln!("cancelled after step {step} of {total}; nothing written");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
