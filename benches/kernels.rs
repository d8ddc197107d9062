//! Headless kernel benchmark: GEMM and conv2d GFLOP/s on UNet-like shapes (each conv beside a
//! GEMM of the same M·N·K, as a ratio measured in the same run) and GB/s of the memory-bound
//! kernels. Run with `cargo bench --bench kernels` (add `-- --json` for machine output).
//! Each figure is the best of several timed submissions of a recording that repeats the op,
//! after a warm-up that compiles the pipeline; the clock is read after the device is idle.

use diffuse::ops::conv2d::Conv2dArgs;
use diffuse::ops::elementwise::Unary;
use diffuse::ops::{self, rng::Philox};
use diffuse::{DType, Gpu, GpuOptions, Recorder, Tensor};
use std::time::Instant;

const REPS: usize = 8;

type RecordFn<'a> = Box<dyn Fn(&mut Recorder<'_>) -> diffuse::Result<()> + 'a>;
const TRIES: usize = 5;

fn time_op(gpu: &Gpu, f: &dyn Fn(&mut Recorder<'_>) -> diffuse::Result<()>) -> f64 {
    let mut rec = gpu.recorder();
    for _ in 0..REPS {
        f(&mut rec).expect("record");
    }
    let recording = rec.finish().expect("finish");
    recording.submit(gpu);
    gpu.wait().expect("wait");
    let mut best = f64::INFINITY;
    for _ in 0..TRIES {
        let t = Instant::now();
        recording.submit(gpu);
        gpu.wait().expect("wait");
        best = best.min(t.elapsed().as_secs_f64() / REPS as f64);
    }
    best
}

fn rand_tensor(gpu: &Gpu, name: &str, shape: &[usize], dt: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_f32(gpu, name, shape, &v, dt).expect("upload")
}

struct Row {
    kind: &'static str,
    name: String,
    dtype: DType,
    ms: f64,
    rate: f64,
    unit: &'static str,
    note: String,
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let gpu = Gpu::new(&GpuOptions::default()).expect("GPU");
    let info = gpu.info().clone();
    let mut rows: Vec<Row> = Vec::new();
    for dt in [DType::F32, DType::F16] {
        // GEMM: (batch, M, N, K, trans_b)
        for (b, m, n, k, tb) in [
            (1, 1024, 1024, 1024, false),
            (1, 4096, 128, 128, true),
            (1, 1024, 512, 512, true),
            (4, 1024, 1024, 32, true),
        ] {
            let a = rand_tensor(&gpu, "a", &[b, m, k], dt);
            let bt = rand_tensor(&gpu, "b", &if tb { [n, k] } else { [k, n] }, dt);
            let c = Tensor::empty(&gpu, "c", &[b, m, n], dt).unwrap();
            let s = time_op(&gpu, &|rec| {
                ops::gemm::matmul(rec, &a, &bt, None, &c, tb, 1.0)
            });
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
        // conv2d beside a GEMM of the same M = Cout, N = batch·Ho·Wo, K = Cin·9.
        for (nb, cin, hw, cout, stride) in [
            (8, 64, 32, 64, 1),
            (8, 128, 16, 128, 1),
            (4, 32, 64, 32, 1),
            (8, 64, 32, 64, 2),
        ] {
            let x = rand_tensor(&gpu, "x", &[nb, cin, hw, hw], dt);
            let w = rand_tensor(&gpu, "w", &[cout, cin, 3, 3], dt);
            let bias = rand_tensor(&gpu, "bias", &[cout], dt);
            let ho = (hw + 2 - 3) / stride + 1;
            let y = Tensor::empty(&gpu, "y", &[nb, cout, ho, ho], dt).unwrap();
            let args = Conv2dArgs {
                stride,
                padding: 1,
                extra_end: 0,
            };
            let s = time_op(&gpu, &|rec| {
                ops::conv2d::conv2d(rec, &x, &w, Some(&bias), &y, args)
            });
            let (m, n, k) = (cout, nb * ho * ho, cin * 9);
            let flops = 2.0 * (m * n * k) as f64;
            let ga = rand_tensor(&gpu, "ga", &[m, k], dt);
            let gb = rand_tensor(&gpu, "gb", &[n, k], dt);
            let gc = Tensor::empty(&gpu, "gc", &[m, n], dt).unwrap();
            let sg = time_op(&gpu, &|rec| {
                ops::gemm::matmul(rec, &ga, &gb, None, &gc, true, 1.0)
            });
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
        let x = rand_tensor(&gpu, "x", &shape, dt);
        let y = rand_tensor(&gpu, "y", &shape, dt);
        let gamma = rand_tensor(&gpu, "gamma", &[128], dt);
        let beta = rand_tensor(&gpu, "beta", &[128], dt);
        let half = rand_tensor(&gpu, "half", &[8, 64, 64, 64], dt);
        let up_in = rand_tensor(&gpu, "up_in", &[8, 128, 32, 32], dt);
        let mem: Vec<(&str, f64, RecordFn)> = vec![
            (
                "silu",
                2.0,
                Box::new(|rec| ops::elementwise::unary(rec, Unary::Silu, &x, &y)),
            ),
            (
                "axpby",
                3.0,
                Box::new(|rec| ops::elementwise::axpby(rec, 0.5, &x, 0.5, &y)),
            ),
            (
                "group_norm+silu (32 groups)",
                4.0,
                Box::new(|rec| {
                    ops::group_norm::group_norm(rec, &x, &gamma, &beta, &y, 32, 1e-5, true)
                }),
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
        for (name, passes, f) in &mem {
            let s = time_op(&gpu, f.as_ref());
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
    }
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"kind": r.kind, "name": r.name, "dtype": format!("{:?}", r.dtype),
                    "ms": r.ms, "rate": r.rate, "unit": r.unit, "note": r.note})
            })
            .collect();
        let out = serde_json::json!({"adapter": info.name, "backend": format!("{:?}", info.backend),
            "driver": format!("{} {}", info.driver, info.driver_info), "results": items});
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    println!("{info}\n");
    println!(
        "{:<8} {:<36} {:<4} {:>9} {:>10}  note",
        "kind", "shape", "dt", "ms", "rate"
    );
    for r in &rows {
        println!(
            "{:<8} {:<36} {:<4} {:>9.3} {:>6.2} {:<7} {}",
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
