//! Shared test setup: one GPU context per f16 storage mode, created once per test binary, and
//! an assertion that the backend is the one the environment asked for (so a silent fallback to
//! GL cannot pass as green).
#![allow(dead_code)]

use diffuse::selfcheck::Check;
use diffuse::{Gpu, GpuOptions};
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
