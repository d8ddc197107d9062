//! Headless kernel benchmark: GEMM and conv2d GFLOP/s on UNet-like shapes (each conv beside a
//! GEMM of the same M·N·K, as a ratio measured in the same run) and GB/s of the memory-bound
//! kernels — `diffuse::bench::kernel_rows`, the same table as `diffuse bench`. Run with
//! `cargo bench --bench kernels` (add `-- --json` for machine output).

use diffuse::{bench, DType, Gpu, GpuOptions};

fn main() -> diffuse::Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let gpu = Gpu::new(&GpuOptions::default())?;
    let mut rows = bench::kernel_rows(&gpu, DType::F32)?;
    rows.extend(bench::kernel_rows(&gpu, DType::F16)?);
    if json {
        println!("{:#}", bench::report_json(gpu.info(), &rows, &[]));
    } else {
        println!("{}\n", gpu.info());
        bench::print_rows(&rows);
    }
    Ok(())
}
