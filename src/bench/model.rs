//! Model-level benchmarks: UNet2DModel forward latency and memory, end-to-end sampling
//! throughput with the solver's own share of a step, and the per-kernel forward profile.

use super::Row;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::models::{Denoiser, Prediction};
use crate::nn::unet_2d::UNet2DModel;
use crate::pipeline::{sample, SampleOptions};
use crate::schedule::config::SchedulerConfig;
use crate::solvers::executor::Executor;
use crate::solvers::program::{ModelTime, Program};
use crate::tensor::{DType, Tensor};
use std::time::Instant;

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Forward latency (best of `tries` after a warm-up) per batch size, with GFLOP/s (convs and
/// GEMMs, 2 per multiply-add) as a share of `gemm_best`, and the activation bytes of the
/// recording and the buffer pool's high-water mark.
pub fn forward_rows(
    gpu: &Gpu,
    name: &str,
    model: &UNet2DModel,
    batches: &[usize],
    gemm_best: f64,
    tries: usize,
) -> Result<Vec<Row>> {
    let (h, w) = model.config.sample_size.unwrap_or((32, 32));
    let mut rows = Vec::new();
    // Images/s at the first batch size, for the scaling note of the later ones.
    let mut first: Option<(usize, f64)> = None;
    for &batch in batches {
        let fwd = model.prepare(gpu, batch, h, w)?;
        let x: Vec<f32> = (0..fwd.sample.numel())
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        fwd.sample.write_f32(gpu, &x)?;
        let t = vec![500.0f32; batch];
        let labels = model.is_class_conditional().then(|| vec![0i64; batch]);
        let mut best = f64::INFINITY;
        for i in 0..=tries.max(1) {
            let t0 = Instant::now();
            fwd.run(gpu, &t, labels.as_deref())?;
            gpu.wait()?;
            if i > 0 {
                best = best.min(t0.elapsed().as_secs_f64());
            }
        }
        let gflops = fwd.flops as f64 / best / 1e9;
        let rate = batch as f64 / best;
        // Throughput growth against linear (the issue's ≥ 0.8× until the device saturates;
        // the GEMM share beside it says how saturated the smaller batch already was).
        let scaling = match first {
            Some((b0, r0)) if batch != b0 => format!(
                "; img/s ×{:.2} vs batch {b0} (linear ×{:.2})",
                rate / r0,
                batch as f64 / b0 as f64
            ),
            _ => String::new(),
        };
        first.get_or_insert((batch, rate));
        rows.push(Row {
            kind: "forward",
            name: format!("{name} b{batch} {h}x{w}"),
            dtype: model.dtype,
            ms: best * 1e3,
            rate,
            unit: "img/s",
            note: format!(
                "{gflops:.2} GFLOP/s = {:.0}% of GEMM; {} dispatches; weights {:.2} MiB, activations {:.1} MiB, pool peak {:.1} MiB{scaling}",
                100.0 * gflops / gemm_best,
                fwd.dispatches(),
                mib(model.weight_bytes),
                mib(fwd.activation_bytes),
                mib(gpu.pool().stats().bytes_peak)
            ),
        });
    }
    Ok(rows)
}

/// A stand-in model with the right buffers whose evaluation costs nothing: times the solver.
struct Null {
    input: Tensor,
    output: Tensor,
}

impl Denoiser for Null {
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn output(&self) -> &Tensor {
        &self.output
    }
    fn prediction(&self) -> Prediction {
        Prediction::Epsilon
    }
    fn run(&mut self, _: &Gpu, _: ModelTime) -> Result<()> {
        Ok(())
    }
}

/// Seconds per step of `program`'s update kernels alone (with in-kernel RNG).
fn solver_seconds_per_step(gpu: &Gpu, program: &Program, shape: &[usize]) -> Result<f64> {
    let mut m = Null {
        input: Tensor::zeros(gpu, "in", shape, DType::F32)?,
        output: Tensor::zeros(gpu, "out", shape, DType::F32)?,
    };
    let exec = Executor::new(gpu, &m, program, 1, false)?;
    exec.run(gpu, &mut m, |_, _| {})?;
    gpu.wait()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        exec.run(gpu, &mut m, |_, _| {})?;
        gpu.wait()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best / program.steps.len().max(1) as f64)
}

/// End-to-end sampling: images/s of `steps` steps of `cfg` per batch size, and the solver's
/// share of a step (its update kernels alone vs the whole step).
pub fn sampling_rows(
    gpu: &Gpu,
    name: &str,
    model: &UNet2DModel,
    cfg: &SchedulerConfig,
    batches: &[usize],
    steps: usize,
) -> Result<Vec<Row>> {
    let (h, w) = model.config.sample_size.unwrap_or((32, 32));
    let program = crate::solvers::build(cfg, steps)?;
    let mut rows = Vec::new();
    for &batch in batches {
        let mut den = crate::models::unet::UNetDenoiser {
            forward: model.prepare(gpu, batch, h, w)?,
            prediction: cfg.train.prediction,
            labels: model
                .num_classes()
                .map(|k| (0..batch).map(|i| (i % k) as i64).collect()),
        };
        let opts = SampleOptions {
            steps,
            seed: 1,
            noise: None,
        };
        sample(gpu, &mut den, cfg, &opts, |_, _| {})?; // warm-up
        let before = gpu.pool().stats();
        let t0 = Instant::now();
        sample(gpu, &mut den, cfg, &opts, |_, _| {})?;
        let secs = t0.elapsed().as_secs_f64();
        let after = gpu.pool().stats();
        let shape = den.input().shape().to_vec();
        let solver = solver_seconds_per_step(gpu, &program, &shape)?;
        let per_step = secs / program.steps.len().max(1) as f64;
        rows.push(Row {
            kind: "sampling",
            name: format!("{name} b{batch} {} {steps} steps", cfg.kind().class_name()),
            dtype: model.dtype,
            ms: secs * 1e3,
            rate: batch as f64 / secs,
            unit: "img/s",
            note: format!(
                "{} NFE; solver {:.3} ms/step = {:.3}% of a step; {} buffers created in the timed run",
                program.nfe,
                solver * 1e3,
                100.0 * solver / per_step,
                after.created - before.created
            ),
        });
    }
    Ok(rows)
}

/// GPU time of one forward, summed per kernel variant.
#[derive(Debug, Clone)]
pub struct ProfileRow {
    pub label: String,
    pub dispatches: usize,
    pub seconds: f64,
    pub share: f64,
}

impl ProfileRow {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"kernel": self.label, "dispatches": self.dispatches,
            "ms": self.seconds * 1e3, "share": self.share})
    }
}

/// Profiles one forward with timestamp queries: per kernel variant, dispatches and GPU time,
/// most expensive first.
pub fn profile_forward(gpu: &Gpu, model: &UNet2DModel, batch: usize) -> Result<Vec<ProfileRow>> {
    let (h, w) = model.config.sample_size.unwrap_or((32, 32));
    let fwd = model.prepare(gpu, batch, h, w)?;
    let labels = model.is_class_conditional().then(|| vec![0i64; batch]);
    fwd.run(gpu, &vec![500.0; batch], labels.as_deref())?; // warm-up
    gpu.wait()?;
    let times = fwd.profile(gpu)?;
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    let mut rows: Vec<ProfileRow> = Vec::new();
    for t in times {
        match rows.iter_mut().find(|r| r.label == t.label) {
            Some(r) => {
                r.dispatches += 1;
                r.seconds += t.seconds;
            }
            None => rows.push(ProfileRow {
                label: t.label,
                dispatches: 1,
                seconds: t.seconds,
                share: 0.0,
            }),
        }
    }
    for r in &mut rows {
        r.share = r.seconds / total.max(f64::MIN_POSITIVE);
    }
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    Ok(rows)
}
