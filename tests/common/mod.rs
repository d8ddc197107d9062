//! Shared test setup: one GPU context per f16 storage mode, created once per test binary, and
//! an assertion that the backend is the one the environment asked for (so a silent fallback to
//! GL cannot pass as green).
#![allow(dead_code)]

pub mod fixed;

use diffuse::models::analytic::{AnalyticDenoiser, GaussianMixture, HostMixture};
use diffuse::models::{HostDenoiser, Prediction};
#[cfg(feature = "selfcheck")]
use diffuse::selfcheck::Check;
use diffuse::solvers::executor::Executor;
use diffuse::solvers::interpreter::{self, HostRun};
use diffuse::solvers::program::Program;
use diffuse::{DType, Gpu, GpuOptions, Tensor};
use std::sync::OnceLock;

/// The backend named by WGPU_BACKEND, if any.
pub fn requested_backend() -> Option<wgpu::Backend> {
    let v = std::env::var("WGPU_BACKEND").ok()?.to_lowercase();
    Some(match v.as_str() {
        "vulkan" | "vk" => wgpu::Backend::Vulkan,
        "metal" | "mtl" => wgpu::Backend::Metal,
        "dx12" | "d3d12" => wgpu::Backend::Dx12,
        "gl" | "gles" | "opengl" => wgpu::Backend::Gl,
        other => panic!("WGPU_BACKEND={other} is not a backend these tests know"),
    })
}

fn open(opts: GpuOptions) -> Gpu {
    // Tests pin the launchers' default kernel variants: tuning only where a test asks for it.
    let opts = GpuOptions {
        tuning: match opts.tuning {
            diffuse::gpu::Tuning::FromEnv => diffuse::gpu::Tuning::Off,
            t => t,
        },
        ..opts
    };
    let gpu = Gpu::new(&opts).unwrap_or_else(|e| panic!("no GPU for the tests: {e}"));
    let info = gpu.info();
    match requested_backend() {
        Some(b) => assert_eq!(
            info.backend, b,
            "adapter {} is not on the requested backend",
            info.name
        ),
        None => assert_ne!(
            info.backend,
            wgpu::Backend::Gl,
            "tests fell back to GL; install a Vulkan driver or set WGPU_BACKEND=gl explicitly"
        ),
    }
    gpu
}

/// A context of the test's own (counters of a shared context move with other tests' work).
pub fn private_gpu() -> Gpu {
    open(GpuOptions::default())
}

/// A context of the test's own with the given options (tuning off unless set).
pub fn private_gpu_with(opts: GpuOptions) -> Gpu {
    open(opts)
}

/// The default context (native f16 where the adapter has SHADER_F16).
pub fn gpu() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| open(GpuOptions::default()))
}

/// A context without SHADER_F16: f16 tensors use the packed-u32 fallback.
pub fn gpu_packed() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| {
        open(GpuOptions {
            disable_f16: true,
            ..Default::default()
        })
    })
}

/// A context whose storage bindings are capped at 4 KiB, so tensors above 1024 f32 elements
/// take the split path.
pub fn gpu_small_bindings() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| {
        open(GpuOptions {
            max_binding_override: Some(4096),
            ..Default::default()
        })
    })
}

/// Both f16 storage modes.
pub fn gpus() -> [&'static Gpu; 2] {
    [gpu(), gpu_packed()]
}

/// Asserts every check passed, printing each (the worst index is in the message).
#[cfg(feature = "selfcheck")]
pub fn assert_checks(checks: &[Check]) {
    let mut failed = Vec::new();
    for c in checks {
        println!("{c}");
        if !c.ok() {
            failed.push(c.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} checks failed:\n{}",
        failed.len(),
        checks.len(),
        failed.join("\n")
    );
}

/// The exact probability-flow ODE solution for a Gaussian-mixture data distribution, in EDM
/// form: y = x/α (or (x − μ)/m) obeys dy/ds = y − D(y, σ_E) with s = ln σ_E; RK4 in s with
/// 4000 steps (f64) from σ_E = `se_from` to `se_to`. The reference for convergence tests.
pub fn exact_pf_ode(
    mix: &diffuse::models::analytic::GaussianMixture,
    y0: &[f64],
    se_from: f64,
    se_to: f64,
) -> Vec<f64> {
    let d = mix.dim();
    let f = |y: &[f64], s: f64| -> Vec<f64> {
        let se = s.exp();
        let mut out = Vec::with_capacity(y.len());
        for chunk in y.chunks(d) {
            let x0 = mix.x0_f64(chunk, 1.0, se);
            out.extend(chunk.iter().zip(&x0).map(|(yi, di)| yi - di));
        }
        out
    };
    let n = 4000;
    let (s0, s1) = (se_from.ln(), se_to.ln());
    let h = (s1 - s0) / n as f64;
    let mut y = y0.to_vec();
    let mut s = s0;
    for _ in 0..n {
        let k1 = f(&y, s);
        let y2: Vec<f64> = y.iter().zip(&k1).map(|(a, b)| a + 0.5 * h * b).collect();
        let k2 = f(&y2, s + 0.5 * h);
        let y3: Vec<f64> = y.iter().zip(&k2).map(|(a, b)| a + 0.5 * h * b).collect();
        let k3 = f(&y3, s + 0.5 * h);
        let y4: Vec<f64> = y.iter().zip(&k3).map(|(a, b)| a + h * b).collect();
        let k4 = f(&y4, s + h);
        for i in 0..y.len() {
            y[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
        }
        s += h;
    }
    y
}

/// f64 n × n matrix product (row-major).
pub fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                c[i * n + j] += a[i * n + k] * b[k * n + j];
            }
        }
    }
    c
}

/// Gauss–Jordan inverse with partial pivoting.
pub fn inverse(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| m[x * n + c].abs().total_cmp(&m[y * n + c].abs()))
            .unwrap();
        for k in 0..n {
            m.swap(c * n + k, p * n + k);
            inv.swap(c * n + k, p * n + k);
        }
        let d = m[c * n + c];
        for k in 0..n {
            m[c * n + k] /= d;
            inv[c * n + k] /= d;
        }
        for r in 0..n {
            if r != c {
                let f = m[r * n + c];
                for k in 0..n {
                    m[r * n + k] -= f * m[c * n + k];
                    inv[r * n + k] -= f * inv[c * n + k];
                }
            }
        }
    }
    inv
}

/// tr √M of a matrix with positive real spectrum (Denman–Beavers: Y → √M, Z → M^{-1/2}).
pub fn trace_sqrt_db(m: &[f64], n: usize) -> f64 {
    let mut y = m.to_vec();
    let mut z = vec![0.0; n * n];
    for i in 0..n {
        z[i * n + i] = 1.0;
    }
    for _ in 0..60 {
        let (yi, zi) = (inverse(&y, n), inverse(&z, n));
        let ny: Vec<f64> = y.iter().zip(&zi).map(|(a, b)| 0.5 * (a + b)).collect();
        let nz: Vec<f64> = z.iter().zip(&yi).map(|(a, b)| 0.5 * (a + b)).collect();
        y = ny;
        z = nz;
    }
    (0..n).map(|i| y[i * n + i]).sum()
}

/// The fitted global order of a method: minus the least-squares slope of ln(error) against
/// ln(N).
pub fn fitted_order(ns: &[usize], errs: &[f64]) -> f64 {
    let xs: Vec<f64> = ns.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = errs.iter().map(|e| e.ln()).collect();
    let (mx, my) = (
        xs.iter().sum::<f64>() / xs.len() as f64,
        ys.iter().sum::<f64>() / ys.len() as f64,
    );
    let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    -num / den
}

/// A smooth two-mode mixture in 1×4×4 (broad components, moderate separation) that keeps a
/// probability-flow ODE in its asymptotic regime for convergence-order measurements.
pub fn smooth_mixture() -> diffuse::models::analytic::GaussianMixture {
    diffuse::models::analytic::GaussianMixture {
        shape: [1, 4, 4],
        weights: vec![0.6, 0.4],
        means: vec![
            (0..16)
                .map(|i| if i % 2 == 0 { 0.5 } else { -0.3 })
                .collect(),
            (0..16).map(|i| if i < 8 { -0.4 } else { 0.6 }).collect(),
        ],
        variances: vec![0.3, 0.2],
    }
}

/// Where a solver test runs its program: the GPU executor (needs an adapter) or the f64 host
/// interpreter (`solvers::interpreter`, runs anywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gpu,
    Host,
}

/// Runs `program` on the closed-form model `mix` (parameterisation `pred`, f32 on the GPU) for
/// `batch` samples: x_T = init_sigma·`noise`, or drawn from `seed` (stream 0) when `None`;
/// `cond` is μ for programs that read it. Returns the final state.
#[allow(clippy::too_many_arguments)]
pub fn run_analytic(
    backend: Backend,
    mix: &GaussianMixture,
    pred: Prediction,
    batch: usize,
    program: &Program,
    seed: u64,
    noise: Option<&[f32]>,
    cond: Option<&[f32]>,
) -> Vec<f64> {
    let [c, h, w] = mix.shape;
    let shape = [batch, c, h, w];
    match backend {
        Backend::Gpu => {
            let gpu = gpu();
            let mut model =
                AnalyticDenoiser::new(gpu, mix.clone(), pred, batch, DType::F32).unwrap();
            let mu = cond.map(|m| Tensor::from_f32(gpu, "mu", &shape, m, DType::F32).unwrap());
            let exec =
                Executor::with_condition(gpu, &model, program, seed, noise.is_some(), mu.as_ref())
                    .unwrap();
            if let Some(z) = noise {
                exec.set_noise(gpu, z).unwrap();
            }
            let x = exec.run(gpu, &mut model, |_, _| {}).unwrap();
            x.to_vec_f32(gpu)
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect()
        }
        Backend::Host => {
            let mut model = HostMixture {
                mixture: mix.clone(),
                prediction: pred,
            };
            run_host(&mut model, &shape, program, seed, noise, cond)
        }
    }
}

/// Runs `program` through the host interpreter on `model` (state `shape`), x_T and μ as in
/// [`run_analytic`].
pub fn run_host(
    model: &mut dyn HostDenoiser,
    shape: &[usize],
    program: &Program,
    seed: u64,
    noise: Option<&[f32]>,
    cond: Option<&[f32]>,
) -> Vec<f64> {
    let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let (noise, cond) = (noise.map(f64s), cond.map(f64s));
    let opts = HostRun {
        shape,
        seed,
        noise: noise.as_deref(),
        cond: cond.as_deref(),
        step_noise: None,
    };
    interpreter::run(program, model, &opts, |_, _| {}).unwrap()
}

/// The committed goldens (`tests/golden`).
pub fn golden_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The closed-form Gaussian-mixture model of the solver goldens (`solvers/toy.safetensors`,
/// written by `tools/gen_solver_golden.py`), on [1, 8, 8].
pub fn golden_toy() -> GaussianMixture {
    let w = diffuse::load::Weights::open(&golden_dir().join("solvers/toy.safetensors")).unwrap();
    let f64s = |n: &str| -> Vec<f64> {
        let t = w.read_f32(n, None).unwrap();
        t.data.iter().map(|&v| v as f64).collect()
    };
    let means = f64s("means");
    let weights = f64s("weights");
    let d = means.len() / weights.len();
    GaussianMixture {
        shape: [1, 8, 8],
        means: means.chunks(d).map(|c| c.to_vec()).collect(),
        weights,
        variances: f64s("variances"),
    }
}
