//! Sampling throughput and solver overhead — `diffuse::bench::sampling_rows`, as `diffuse
//! bench`: DPM-Solver++ 2M at 20 NFE on the `unet_ddpm_like` golden UNet for batch 1/8/32
//! (images/s), with the solver's own per-step cost (the fused update kernels and in-kernel RNG,
//! measured alone) as a fraction of a step. `cargo bench --bench sampling`.

use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::schedule::config::SchedulerConfig;
use diffuse::{bench, DType, Gpu, GpuOptions};
use std::path::PathBuf;

fn main() -> diffuse::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("{}\n", gpu.info());
    let cfg = SchedulerConfig::named("dpm-solver++", None)?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/unet_ddpm_like");
    let model = UNet2DModel::from_dir(&gpu, &dir, DType::F32)?;
    let rows = bench::sampling_rows(&gpu, "unet_ddpm_like", &model, &cfg, &[1, 8, 32], 20)?;
    bench::print_rows(&rows);
    Ok(())
}
