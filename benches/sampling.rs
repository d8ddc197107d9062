//! Sampling throughput and solver overhead: DPM-Solver++ 2M at 20 NFE on the `unet_ddpm_like`
//! golden UNet for batch 1/8/32 (images/s), and the solver's own per-step cost (the fused update
//! kernels and in-kernel RNG, measured alone) as a fraction of a step, for that UNet and for the
//! ddpm-cifar10-32 config's sample size. `cargo bench --bench sampling`.

use diffuse::models::unet::UNetDenoiser;
use diffuse::models::{Denoiser, Prediction};
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::pipeline::{sample, SampleOptions};
use diffuse::schedule::config::SchedulerConfig;
use diffuse::solvers::program::{Buf, Op, Program};
use diffuse::solvers::{self, executor::Executor};
use diffuse::{DType, Gpu, GpuOptions, Tensor};
use std::path::PathBuf;
use std::time::Instant;

/// A stand-in model with the right buffers whose evaluation costs nothing: times the solver alone.
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
    fn run(&mut self, _: &Gpu, _: diffuse::solvers::program::ModelTime) -> diffuse::Result<()> {
        Ok(())
    }
}

fn solver_only(gpu: &Gpu, program: &Program, shape: &[usize]) -> f64 {
    let mut m = Null {
        input: Tensor::zeros(gpu, "in", shape, DType::F32).unwrap(),
        output: Tensor::zeros(gpu, "out", shape, DType::F32).unwrap(),
    };
    let exec = Executor::new(gpu, &m, program, 1, false).unwrap();
    exec.run(gpu, &mut m, |_, _| {}).unwrap();
    gpu.wait().unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        exec.run(gpu, &mut m, |_, _| {}).unwrap();
        gpu.wait().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best / program.steps.len() as f64
}

fn main() {
    let gpu = Gpu::new(&GpuOptions::default()).expect("GPU");
    println!("{}\n", gpu.info());
    let cfg = SchedulerConfig::named("dpm-solver++", None).unwrap();
    let program = solvers::build(&cfg, 20).unwrap();
    let lins = program.steps[1]
        .iter()
        .filter(|o| matches!(o, Op::Lin { .. }))
        .count();
    let _ = Buf::X;
    println!("DPM-Solver++ 2M, 20 NFE: {lins} update instructions per step\n");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/unet_ddpm_like");
    let model = UNet2DModel::from_dir(&gpu, &dir, DType::F32).unwrap();
    println!(
        "{:<28} {:>5} {:>12} {:>10} {:>14} {:>10}",
        "model", "batch", "s / batch", "img/s", "solver ms/step", "% of step"
    );
    for batch in [1usize, 8, 32] {
        let mut den = UNetDenoiser {
            forward: model.prepare(&gpu, batch, 16, 16).unwrap(),
            prediction: Prediction::Epsilon,
            labels: None,
        };
        let opts = SampleOptions {
            steps: 20,
            seed: 1,
            noise: None,
        };
        sample(&gpu, &mut den, &cfg, &opts, |_, _| {}).unwrap();
        let t = Instant::now();
        sample(&gpu, &mut den, &cfg, &opts, |_, _| {}).unwrap();
        let total = t.elapsed().as_secs_f64();
        let step = total / 20.0;
        let solver = solver_only(&gpu, &program, &[batch, 3, 16, 16]);
        println!(
            "{:<28} {:>5} {:>12.3} {:>10.2} {:>14.3} {:>9.2}%",
            "unet_ddpm_like 16×16",
            batch,
            total,
            batch as f64 / total,
            solver * 1e3,
            100.0 * solver / step
        );
    }
    // The CIFAR-size sample: solver cost per step against the forward measured in
    // benches/unet.rs (1150 ms at batch 1, 35.0 s at batch 32, f32, same machine).
    for (batch, fwd_s) in [(1usize, 1.150), (32, 35.0)] {
        let solver = solver_only(&gpu, &program, &[batch, 3, 32, 32]);
        println!(
            "{:<28} {:>5} {:>12} {:>10} {:>14.3} {:>9.3}%",
            "ddpm-cifar10-32 (solver)",
            batch,
            "-",
            "-",
            solver * 1e3,
            100.0 * solver / (fwd_s + solver)
        );
    }
}
