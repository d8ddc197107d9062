//! Floor 6: the headless benchmarks behind `diffuse bench` and `cargo bench` — per-kernel
//! GFLOP/s and GB/s, UNet2DModel forward latency, end-to-end sampling throughput, memory
//! high-water marks, and a per-kernel GPU-timestamp profile of one forward. Each figure is the
//! best of several timed submissions after a warm-up that compiles the pipelines; the clock is
//! read after the device is idle. Machines are noisy: compare ratios within one run.

mod model;

pub use model::{forward_rows, profile_forward, sampling_rows, ProfileRow};

use crate::error::Result;
use crate::gpu::tuning::runnable;
use crate::gpu::{Gpu, GpuInfo, Recorder};
use crate::ops::conv2d::Conv2dArgs;
use crate::ops::elementwise::Unary;
use crate::ops::{self, rng::Philox};
use crate::tensor::{DType, Tensor};
use std::time::Instant;

/// google/ddpm-cifar10-32's published `config.json` (35.7 M parameters), the CIFAR-size UNet of
/// the performance targets; benchmarked with synthetic weights ([`crate::load::RandomWeights`]).
pub const DDPM_CIFAR10_CONFIG: &str = r#"{
  "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": null,
  "block_out_channels": [128, 256, 256, 256], "center_input_sample": false,
  "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
  "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1, "in_channels": 3,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
  "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
  "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
}"#;

/// The ddpm-cifar10-32 architecture with synthetic weights.
pub fn cifar10_model(gpu: &Gpu, dt: DType) -> Result<crate::nn::unet_2d::UNet2DModel> {
    let v: serde_json::Value =
        serde_json::from_str(DDPM_CIFAR10_CONFIG).map_err(|e| crate::error::Error::Config {
            file: "ddpm-cifar10-32".into(),
            field: "(root)".into(),
            reason: e.to_string(),
        })?;
    let cfg = crate::nn::config::UNet2DConfig::from_json(&v, "ddpm-cifar10-32")?;
    crate::nn::unet_2d::UNet2DModel::load(gpu, cfg, &crate::load::RandomWeights { seed: 1 }, dt)
}

const REPS: usize = 8;
const TRIES: usize = 5;

type RecordFn<'a> = Box<dyn Fn(&mut Recorder<'_>) -> Result<()> + 'a>;

/// One benchmark figure.
#[derive(Debug, Clone)]
pub struct Row {
    pub kind: &'static str,
    pub name: String,
    pub dtype: DType,
    pub ms: f64,
    pub rate: f64,
    pub unit: &'static str,
    pub note: String,
}

impl Row {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"kind": self.kind, "name": self.name, "dtype": format!("{:?}", self.dtype),
            "ms": self.ms, "rate": self.rate, "unit": self.unit, "note": self.note})
    }
}

/// Seconds per op: the best of `TRIES` submissions of a recording repeating the op `REPS` times.
pub fn time_op(gpu: &Gpu, f: &dyn Fn(&mut Recorder<'_>) -> Result<()>) -> Result<f64> {
    let mut rec = gpu.recorder();
    for _ in 0..REPS {
        f(&mut rec)?;
    }
    let recording = rec.finish()?;
    recording.submit(gpu);
    gpu.wait()?;
    let mut best = f64::INFINITY;
    for _ in 0..TRIES {
        let t = Instant::now();
        recording.submit(gpu);
        gpu.wait()?;
        best = best.min(t.elapsed().as_secs_f64() / REPS as f64);
    }
    Ok(best)
}

fn rand_tensor(gpu: &Gpu, name: &str, shape: &[usize], dt: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_f32(gpu, name, shape, &v, dt)
}

/// GFLOP/s of a 1024³ GEMM, the best of its variants (the reference rate the model figures are
/// compared with).
pub fn gemm_rate(gpu: &Gpu, dt: DType) -> Result<f64> {
    let n = 1024;
    let a = rand_tensor(gpu, "a", &[n, n], dt)?;
    let b = rand_tensor(gpu, "b", &[n, n], dt)?;
    let c = Tensor::empty(gpu, "c", &[n, n], dt)?;
    let d = ops::gemm::GemmDesc::single(n, n, n, false);
    // The best of the variants, whatever the default: the honest denominator. (On CPU adapters
    // the shared-memory tile runs at ~0.3× — the kernel table shows it — and would add ~16 s.)
    let cpu = gpu.info().device_type == wgpu::DeviceType::Cpu;
    let mut best = f64::INFINITY;
    for v in ops::gemm::GemmKernel::ALL {
        if cpu && v == ops::gemm::GemmKernel::Tile64 {
            continue;
        }
        best = best.min(time_op(gpu, &|rec| {
            ops::gemm::gemm_variant(rec, &d, &a, &b, None, &c, Some(v))
        })?);
    }
    Ok(2.0 * (n * n * n) as f64 / best / 1e9)
}

/// GEMM and conv2d GFLOP/s on UNet-like shapes (each conv beside a GEMM of the same M·N·K)
/// and GB/s of the memory-bound kernels, for one dtype.
pub fn kernel_rows(gpu: &Gpu, dt: DType) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // GEMM: (batch, M, N, K, trans_b)
    for (b, m, n, k, tb) in [
        (1, 1024, 1024, 1024, false),
        (1, 4096, 128, 128, true),
        (1, 1024, 512, 512, true),
        (4, 1024, 1024, 32, true),
    ] {
        let a = rand_tensor(gpu, "a", &[b, m, k], dt)?;
        let bt = rand_tensor(gpu, "b", &if tb { [n, k] } else { [k, n] }, dt)?;
        let c = Tensor::empty(gpu, "c", &[b, m, n], dt)?;
        let s = time_op(gpu, &|rec| {
            ops::gemm::matmul(rec, &a, &bt, None, &c, tb, 1.0)
        })?;
        let flops = 2.0 * (b * m * n * k) as f64;
        rows.push(Row {
            kind: "gemm",
            name: format!("b{b} {m}x{n}x{k}{}", if tb { " Bᵀ" } else { "" }),
            dtype: dt,
            ms: s * 1e3,
            rate: flops / s / 1e9,
            unit: "GFLOP/s",
            note: String::new(),
        });
    }
    // The other GEMM variants (tuning candidates) beside the default, 1024³.
    {
        let n = 1024;
        let a = rand_tensor(gpu, "a", &[n, n], dt)?;
        let b = rand_tensor(gpu, "b", &[n, n], dt)?;
        let c = Tensor::empty(gpu, "c", &[n, n], dt)?;
        let d = ops::gemm::GemmDesc::single(n, n, n, false);
        let time = |v: ops::gemm::GemmKernel| {
            time_op(gpu, &|rec| {
                ops::gemm::gemm_variant(rec, &d, &a, &b, None, &c, Some(v))
            })
        };
        let flops = 2.0 * (n * n * n) as f64;
        let base = ops::gemm::GemmKernel::ALL[0];
        let sb = time(base)?;
        for (i, v) in ops::gemm::GemmKernel::ALL.into_iter().enumerate() {
            let sv = if i == 0 { sb } else { time(v)? };
            let name = format!("b1 1024x1024x1024 {v}");
            let mut row = relative_row("gemm", name, dt, flops, sv, (&base.to_string(), sb));
            if i == 0 {
                row.note.clear();
            }
            rows.push(row);
        }
    }
    // conv2d (the default path) beside a GEMM of the same M = Cout, N = batch·Ho·Wo, K = Cin·9.
    for (nb, cin, hw, cout, stride) in [
        (8, 64, 32, 64, 1),
        (8, 128, 16, 128, 1),
        (4, 32, 64, 32, 1),
        (8, 64, 32, 64, 2),
    ] {
        let x = rand_tensor(gpu, "x", &[nb, cin, hw, hw], dt)?;
        let w = rand_tensor(gpu, "w", &[cout, cin, 3, 3], dt)?;
        let bias = rand_tensor(gpu, "bias", &[cout], dt)?;
        let ho = (hw + 2 - 3) / stride + 1;
        let y = Tensor::empty(gpu, "y", &[nb, cout, ho, ho], dt)?;
        let args = Conv2dArgs {
            stride,
            padding: 1,
            extra_end: 0,
        };
        // As a model runs it: with the packed weights on CPU adapters (see nn::layers::Loader).
        let cpu = gpu.info().device_type == wgpu::DeviceType::Cpu;
        let packed = if cpu {
            let pk = Tensor::empty(gpu, "pk", &ops::conv_pack::packed_shape(w.shape()), dt)?;
            gpu.run(|rec| ops::conv_pack::pack_weights(rec, &w, &pk))?;
            Some(pk)
        } else {
            None
        };
        let d = ops::conv2d::Conv2dDesc::new(&x, &w, Some(&bias), &y, args)
            .with_packed(packed.as_ref());
        let s = time_op(gpu, &|rec| ops::conv2d::conv2d(rec, &d))?;
        let (m, n, k) = (cout, nb * ho * ho, cin * 9);
        let flops = 2.0 * (m * n * k) as f64;
        let ga = rand_tensor(gpu, "ga", &[m, k], dt)?;
        let gb = rand_tensor(gpu, "gb", &[n, k], dt)?;
        let gc = Tensor::empty(gpu, "gc", &[m, n], dt)?;
        let sg = time_op(gpu, &|rec| {
            ops::gemm::matmul(rec, &ga, &gb, None, &gc, true, 1.0)
        })?;
        rows.push(Row {
            kind: "conv2d",
            name: format!("[{nb},{cin},{hw},{hw}]→{cout} 3x3 s{stride}"),
            dtype: dt,
            ms: s * 1e3,
            rate: flops / s / 1e9,
            unit: "GFLOP/s",
            note: format!(
                "{:.0}% of GEMM {m}x{n}x{k} ({:.2} GFLOP/s)",
                100.0 * sg / s,
                flops / sg / 1e9
            ),
        });
    }
    // Memory-bound kernels on a [8, 128, 64, 64] activation (4 Mi elements).
    let shape = [8, 128, 64, 64];
    let n: usize = shape.iter().product();
    let esz = dt.size() as f64;
    let x = rand_tensor(gpu, "x", &shape, dt)?;
    let y = rand_tensor(gpu, "y", &shape, dt)?;
    let gamma = rand_tensor(gpu, "gamma", &[128], dt)?;
    let beta = rand_tensor(gpu, "beta", &[128], dt)?;
    let half = rand_tensor(gpu, "half", &[8, 64, 64, 64], dt)?;
    let up_in = rand_tensor(gpu, "up_in", &[8, 128, 32, 32], dt)?;
    let bcast = rand_tensor(gpu, "bcast", &[8, 128, 1, 1], dt)?;
    // GroupNorm's other variants beside the default (subgroups only where the adapter has them).
    let gn_default = ops::group_norm::default_variant(gpu.info());
    let gn_others: Vec<(String, ops::group_norm::GroupNormKernel)> =
        runnable::<ops::group_norm::GroupNormKernel>(gpu.info(), &())
            .into_iter()
            .filter(|&v| v != gn_default)
            .map(|v| (format!("group_norm+silu (32 groups) {v}"), v))
            .collect();
    let mut mem: Vec<(&str, f64, RecordFn)> = vec![
        (
            "silu",
            2.0,
            Box::new(|rec| ops::elementwise::unary(rec, Unary::Silu, &x, &y)),
        ),
        (
            "add (same shape)",
            3.0,
            Box::new(|rec| {
                ops::elementwise::binary(rec, ops::elementwise::Binary::Add, &x, &x, &y)
            }),
        ),
        (
            "add (+[N,C,1,1] broadcast)",
            2.0,
            Box::new(|rec| {
                ops::elementwise::binary(rec, ops::elementwise::Binary::Add, &x, &bcast, &y)
            }),
        ),
        (
            "axpby",
            3.0,
            Box::new(|rec| ops::elementwise::axpby(rec, 0.5, &x, 0.5, &y)),
        ),
        (
            "group_norm+silu (32 groups)",
            3.0,
            Box::new(|rec| ops::group_norm::group_norm(rec, &x, &gamma, &beta, &y, 32, 1e-5, true)),
        ),
        (
            "concat channels",
            2.0,
            Box::new(|rec| ops::concat::concat_channels(rec, &half, &half, &y)),
        ),
        (
            "upsample nearest 2x",
            1.25,
            Box::new(|rec| ops::resample::upsample_nearest(rec, &up_in, &y, 2)),
        ),
        (
            "philox normal",
            1.0,
            Box::new(|rec| {
                ops::rng::fill(
                    rec,
                    ops::rng::Distribution::Normal,
                    Philox { seed: 1, stream: 0 },
                    0,
                    &y,
                )
            }),
        ),
    ];
    // The 3×3 stride-1 row kernel and the shared-memory tile kernel against the general kernel
    // (each with its default register block), side by side: row widths that are and are not a
    // multiple of 4.
    for (nb, cin, hw, cout) in [(8, 64, 32, 64), (8, 64, 14, 64), (8, 32, 28, 32)] {
        let x = rand_tensor(gpu, "x", &[nb, cin, hw, hw], dt)?;
        let w = rand_tensor(gpu, "w", &[cout, cin, 3, 3], dt)?;
        let bias = rand_tensor(gpu, "bias", &[cout], dt)?;
        let y = Tensor::empty(gpu, "y", &[nb, cout, hw, hw], dt)?;
        let args = Conv2dArgs {
            stride: 1,
            padding: 1,
            extra_end: 0,
        };
        let cb = ops::conv2d::default_variant(dt, false, true, false);
        let row = ops::conv2d::default_variant(dt, true, true, false);
        let d = ops::conv2d::Conv2dDesc::new(&x, &w, Some(&bias), &y, args);
        let time = |v: ops::conv2d::ConvKernel| {
            time_op(gpu, &|rec| ops::conv2d::conv2d_variant(rec, &d, Some(v)))
        };
        let tile = ops::conv2d::ConvKernel::Tile64;
        let (sg, sr, st) = (time(cb)?, time(row)?, time(tile)?);
        // The row kernel on packed weights (ops::conv_pack), as models on CPU adapters run it.
        let pk = Tensor::empty(gpu, "pk", &ops::conv_pack::packed_shape(w.shape()), dt)?;
        gpu.run(|rec| ops::conv_pack::pack_weights(rec, &w, &pk))?;
        let row_pk = ops::conv2d::default_variant(dt, true, true, true);
        let dp = d.with_packed(Some(&pk));
        let sp = time_op(gpu, &|rec| {
            ops::conv2d::conv2d_variant(rec, &dp, Some(row_pk))
        })?;
        let flops = 2.0 * (cout * nb * hw * hw * cin * 9) as f64;
        let prefix = format!("[{nb},{cin},{hw},{hw}]→{cout} 3x3 s1");
        let (cb, row) = (cb.to_string(), row.to_string());
        push_pair(
            &mut rows,
            "conv2d",
            &prefix,
            dt,
            flops,
            (&cb, sg),
            (&row, sr),
        );
        let name = format!("{prefix} {row_pk} packed");
        rows.push(relative_row("conv2d", name, dt, flops, sp, (&cb, sg)));
        // The shared-memory tile kernel (the GPU-style candidate) against the same baseline.
        let name = format!("{prefix} {tile}");
        rows.push(relative_row("conv2d", name, dt, flops, st, (&cb, sg)));
    }
    // A ResnetBlock2D conv with its time-embedding and residual adds: three dispatches vs the
    // fused epilogue, side by side ([8, 64, 32, 32], 3×3).
    {
        let x = rand_tensor(gpu, "x", &[8, 64, 32, 32], dt)?;
        let w = rand_tensor(gpu, "w", &[64, 64, 3, 3], dt)?;
        let bias = rand_tensor(gpu, "bias", &[64], dt)?;
        let t = rand_tensor(gpu, "t", &[8, 64], dt)?;
        let r = rand_tensor(gpu, "r", &[8, 64, 32, 32], dt)?;
        let y = Tensor::empty(gpu, "y", &[8, 64, 32, 32], dt)?;
        let y2 = Tensor::empty(gpu, "y2", &[8, 64, 32, 32], dt)?;
        let args = Conv2dArgs {
            stride: 1,
            padding: 1,
            extra_end: 0,
        };
        let t4 = t.reshape(&[8, 64, 1, 1])?;
        let add = ops::elementwise::Binary::Add;
        let unfused = time_op(gpu, &|rec| {
            ops::conv2d::conv2d(
                rec,
                &ops::conv2d::Conv2dDesc::new(&x, &w, Some(&bias), &y, args),
            )?;
            ops::elementwise::binary(rec, add, &y, &t4, &y2)?;
            ops::elementwise::binary(rec, add, &y2, &r, &y)
        })?;
        let epi = ops::conv2d::Epilogue {
            add_nc: Some(&t),
            residual: Some(&r),
            scale: 1.0,
        };
        let d = ops::conv2d::Conv2dDesc::new(&x, &w, Some(&bias), &y, args).with_epilogue(epi);
        let fused = time_op(gpu, &|rec| ops::conv2d::conv2d(rec, &d))?;
        let flops = 2.0 * (64 * 8 * 32 * 32 * 64 * 9) as f64;
        push_pair(
            &mut rows,
            "conv2d",
            "[8,64,32,32]→64 3x3",
            dt,
            flops,
            ("conv + temb add + residual add (3 dispatches)", unfused),
            ("conv with fused epilogue", fused),
        );
    }
    // Attention over 196 tokens, 4 heads of 16 (the Fashion-MNIST UNets' 14×14 level, batch
    // 8): the fused online-softmax kernel vs GEMM → softmax → GEMM, side by side.
    {
        let (b, l, h, d) = (8usize, 196usize, 4usize, 16usize);
        let inner = h * d;
        let q = rand_tensor(gpu, "q", &[b, l, inner], dt)?;
        let k = rand_tensor(gpu, "k", &[b, l, inner], dt)?;
        let v = rand_tensor(gpu, "v", &[b, l, inner], dt)?;
        let o = Tensor::empty(gpu, "o", &[b, l, inner], dt)?;
        let scores = Tensor::empty(gpu, "scores", &[b * h, l, l], dt)?;
        let probs = Tensor::empty(gpu, "probs", &[b * h, l, l], dt)?;
        let alpha = 0.25f32;
        let unfused = time_op(gpu, &|rec| {
            ops::attention::attention_gemm(rec, &q, &k, &v, &o, &scores, &probs, h, alpha)
        })?;
        let fused = time_op(gpu, &|rec| {
            ops::attention::attention_fused(rec, &q, &k, &v, &o, h, alpha)
        })?;
        let flops = 4.0 * (b * h * l * l * d) as f64;
        let prefix = format!("[{b}, {l}, {h}x{d}]");
        push_pair(
            &mut rows,
            "attn",
            &prefix,
            dt,
            flops,
            ("GEMM + softmax + GEMM", unfused),
            ("fused online softmax", fused),
        );
    }
    // Attention softmax (4 heads × 196 tokens, the shipped Fashion-MNIST UNets' 14×14 level,
    // batch 8) in every kernel layout the adapter runs, side by side.
    let scores = rand_tensor(gpu, "scores", &[8 * 4 * 196, 196], dt)?;
    let probs = Tensor::empty(gpu, "probs", &[8 * 4 * 196, 196], dt)?;
    for layout in runnable::<ops::softmax::SoftmaxKernel>(gpu.info(), &196) {
        let s = time_op(gpu, &|rec| {
            ops::softmax::softmax_variant(rec, &scores, &probs, 0.25, Some(layout))
        })?;
        rows.push(Row {
            kind: "memory",
            name: format!("softmax {layout:?} [6272, 196]"),
            dtype: dt,
            ms: s * 1e3,
            rate: 2.0 * scores.numel() as f64 * esz / s / 1e9,
            unit: "GB/s",
            note: "2 passes over the tensor".into(),
        });
    }
    for (name, v) in &gn_others {
        let (x, gamma, beta, y, v) = (&x, &gamma, &beta, &y, *v);
        mem.push((
            name,
            3.0,
            Box::new(move |rec| {
                ops::group_norm::group_norm_variant(rec, x, gamma, beta, y, 32, 1e-5, true, Some(v))
            }),
        ));
    }
    for (name, passes, f) in &mem {
        let s = time_op(gpu, f.as_ref())?;
        rows.push(Row {
            kind: "memory",
            name: format!("{name} {shape:?}"),
            dtype: dt,
            ms: s * 1e3,
            rate: passes * n as f64 * esz / s / 1e9,
            unit: "GB/s",
            note: format!("{passes} passes over the tensor"),
        });
    }

    Ok(rows)
}

/// A GFLOP/s row for `sec` per op, its note giving the speed relative to `base` (name, seconds)
/// measured in the same run.
fn relative_row(
    kind: &'static str,
    name: String,
    dt: DType,
    flops: f64,
    sec: f64,
    base: (&str, f64),
) -> Row {
    Row {
        kind,
        name,
        dtype: dt,
        ms: sec * 1e3,
        rate: flops / sec / 1e9,
        unit: "GFLOP/s",
        note: format!("{:.2}x the speed of `{}`", base.1 / sec, base.0),
    }
}

/// Two GFLOP/s rows measured side by side: a baseline and a variant, the variant's note giving
/// its speed relative to the baseline.
#[allow(clippy::too_many_arguments)]
fn push_pair(
    rows: &mut Vec<Row>,
    kind: &'static str,
    prefix: &str,
    dt: DType,
    flops: f64,
    base: (&str, f64),
    variant: (&str, f64),
) {
    let mut first = relative_row(
        kind,
        format!("{prefix} {}", base.0),
        dt,
        flops,
        base.1,
        base,
    );
    first.note.clear();
    rows.push(first);
    let name = format!("{prefix} {}", variant.0);
    rows.push(relative_row(kind, name, dt, flops, variant.1, base));
}

/// Prints a forward profile (most expensive kernel variant first) as an aligned table.
pub fn print_profile(rows: &[ProfileRow]) {
    println!("{:>9} {:>6} {:>5}  kernel", "ms", "share", "count");
    for r in rows {
        println!(
            "{:>9.3} {:>5.1}% {:>5}  {}",
            r.seconds * 1e3,
            100.0 * r.share,
            r.dispatches,
            r.label
        );
    }
}

/// Prints rows as an aligned table.
pub fn print_rows(rows: &[Row]) {
    println!(
        "{:<8} {:<44} {:<4} {:>10} {:>10}  note",
        "kind", "what", "dt", "ms", "rate"
    );
    for r in rows {
        println!(
            "{:<8} {:<44} {:<4} {:>10.3} {:>8.2} {:<9} {}",
            r.kind,
            r.name,
            format!("{:?}", r.dtype),
            r.ms,
            r.rate,
            r.unit,
            r.note
        );
    }
}

/// The JSON report: adapter, backend, driver, and every row.
pub fn report_json(info: &GpuInfo, rows: &[Row], profile: &[ProfileRow]) -> serde_json::Value {
    serde_json::json!({
        "adapter": info.name,
        "backend": format!("{:?}", info.backend),
        "driver": format!("{} {}", info.driver, info.driver_info),
        "results": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "profile": profile.iter().map(ProfileRow::json).collect::<Vec<_>>(),
    })
}
