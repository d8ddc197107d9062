//! UNet2DModel forward latency: google/ddpm-cifar10-32's published config with synthetic
//! weights, and the small golden configs, at batch 1/8/32 in f32 and f16, with GFLOP/s
//! (convolutions and GEMMs, 2 per multiply-add) beside the best GEMM rate measured in the same
//! run — `diffuse::bench::forward_rows`, as `diffuse bench`. `cargo bench --bench unet`
//! (`-- --quick` skips batch 32 of the CIFAR model).

use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::{bench, DType, Gpu, GpuOptions};
use std::path::PathBuf;

fn main() -> diffuse::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("{}\n", gpu.info());
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut rows = Vec::new();
    for dt in [DType::F32, DType::F16] {
        let gemm = bench::gemm_rate(&gpu, dt)?;
        println!("GEMM 1024³ {dt:?}: {gemm:.2} GFLOP/s");
        let cifar = bench::cifar10_model(&gpu, dt)?;
        let batches: &[usize] = if quick { &[1, 8] } else { &[1, 8, 32] };
        rows.extend(bench::forward_rows(
            &gpu,
            "ddpm-cifar10-32",
            &cifar,
            batches,
            gemm,
            2,
        )?);
        for name in ["unet_ddpm_like", "unet_class_cond", "unet_ncsnpp_like"] {
            let m = UNet2DModel::from_dir(&gpu, &golden.join(name), dt)?;
            rows.extend(bench::forward_rows(&gpu, name, &m, &[1, 8, 32], gemm, 4)?);
        }
    }
    bench::print_rows(&rows);
    Ok(())
}
