//! UNet2DModel forward latency: google/ddpm-cifar10-32's published config with synthetic
//! weights, and the small golden configs, at batch 1/8/32 in f32 and f16, with GFLOP/s
//! (convolutions and GEMMs, 2 per multiply-add) beside the best GEMM rate measured in the same
//! run. `cargo bench --bench unet` (`-- --quick` skips batch 32 of the CIFAR model).

use diffuse::load::RandomWeights;
use diffuse::nn::config::UNet2DConfig;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::{ops, DType, Gpu, GpuOptions, Tensor};
use std::path::PathBuf;
use std::time::Instant;

const CIFAR10_CONFIG: &str = r#"{
  "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": null,
  "block_out_channels": [128, 256, 256, 256], "center_input_sample": false,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
  "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1, "in_channels": 3,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
  "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
  "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
}"#;

fn gemm_rate(gpu: &Gpu, dt: DType) -> f64 {
    let n = 1024;
    let v: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let a = Tensor::from_f32(gpu, "a", &[n, n], &v, dt).unwrap();
    let b = Tensor::from_f32(gpu, "b", &[n, n], &v, dt).unwrap();
    let c = Tensor::empty(gpu, "c", &[n, n], dt).unwrap();
    let mut rec = gpu.recorder();
    ops::gemm::matmul(&mut rec, &a, &b, None, &c, true, 1.0).unwrap();
    let r = rec.finish().unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        r.submit(gpu);
        gpu.wait().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let gpu = Gpu::new(&GpuOptions::default()).expect("GPU");
    println!("{}\n", gpu.info());
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    println!(
        "{:<22} {:<4} {:>5} {:>10} {:>9} {:>8} {:>10}",
        "model", "dt", "batch", "ms/forward", "img/s", "GFLOP/s", "% of GEMM"
    );
    for dt in [DType::F32, DType::F16] {
        let best_gemm = gemm_rate(&gpu, dt);
        println!("(GEMM 1024³ best: {best_gemm:.2} GFLOP/s {dt:?})");
        let cifar_cfg = UNet2DConfig::from_json(
            &serde_json::from_str(CIFAR10_CONFIG).unwrap(),
            "ddpm-cifar10-32",
        )
        .unwrap();
        let mut models = vec![(
            "ddpm-cifar10-32".to_string(),
            UNet2DModel::load(&gpu, cifar_cfg, &RandomWeights { seed: 1 }, dt).unwrap(),
        )];
        for name in ["unet_ddpm_like", "unet_class_cond", "unet_ncsnpp_like"] {
            models.push((
                name.to_string(),
                UNet2DModel::from_dir(&gpu, &golden.join(name), dt).unwrap(),
            ));
        }
        for (name, model) in &models {
            let (h, w) = model.config.sample_size.unwrap_or((32, 32));
            for batch in [1usize, 8, 32] {
                if quick && batch == 32 && name == "ddpm-cifar10-32" {
                    continue;
                }
                let fwd = model.prepare(&gpu, batch, h, w).unwrap();
                let x: Vec<f32> = (0..fwd.sample.numel())
                    .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                    .collect();
                fwd.sample.write_f32(&gpu, &x).unwrap();
                let t = vec![500.0f32; batch];
                let labels = model.is_class_conditional().then(|| vec![3i64; batch]);
                let tries = if batch == 32 && name == "ddpm-cifar10-32" {
                    2
                } else {
                    4
                };
                let mut best = f64::INFINITY;
                for i in 0..=tries {
                    let t0 = Instant::now();
                    fwd.run(&gpu, &t, labels.as_deref()).unwrap();
                    gpu.wait().unwrap();
                    if i > 0 {
                        best = best.min(t0.elapsed().as_secs_f64());
                    }
                }
                let gflops = fwd.flops as f64 / best / 1e9;
                println!(
                    "{:<22} {:<4} {:>5} {:>10.2} {:>9.2} {:>8.2} {:>9.0}%",
                    name,
                    format!("{dt:?}"),
                    batch,
                    best * 1e3,
                    batch as f64 / best,
                    gflops,
                    100.0 * gflops / best_gemm
                );
            }
        }
    }
}
