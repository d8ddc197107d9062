//! Floor 1: the headless GPU context. Adapter selection, device with the adapter's real limits,
//! optional features, the buffer pool, the kernel cache and command recording.

mod kernels;
pub mod params;
pub mod plan;
pub mod pool;
mod record;
pub mod shader;
pub mod tuning;

pub use kernels::{KernelCache, KernelKey};
pub(crate) use params::params;
pub use params::{ParamField, ParamsLayout, Uniform, WgslField, WgslType};
pub use pool::{Allocation, Pool, PoolStats};
pub use record::{Binding, DispatchTime, Recorder, Recording};
pub use shader::{F16Mode, Processed};
pub use tuning::{Tuner, Tuning};

use crate::error::{Error, Result};
use std::sync::Arc;

/// How to pick and configure the adapter.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Backends to consider. `None` reads `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`, `gl`)
    /// and otherwise tries all primary backends.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring the adapter name must contain. `None` reads
    /// `DIFFUSE_ADAPTER`; an empty filter takes the first adapter by preference.
    pub adapter_filter: Option<String>,
    /// Do not request SHADER_F16 even when present: f16 tensors are then stored packed two per
    /// `u32` (the fallback path, also used to test it on adapters that do have f16).
    pub disable_f16: bool,
    /// Cap the storage-binding size below the adapter's limit (tests use this to exercise the
    /// split path for large tensors without allocating hundreds of MiB).
    pub max_binding_override: Option<u64>,
    /// Per-adapter kernel tuning (see [`tuning`]); off unless `DIFFUSE_TUNE` asks for it.
    pub tuning: Tuning,
}

/// What the adapter is, for `diffuse info`, benchmarks and test assertions.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    pub f16: F16Mode,
    pub timestamps: bool,
    pub subgroups: bool,
    pub subgroup_size: (u32, u32),
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub max_workgroup_invocations: u32,
    pub max_workgroup_storage: u32,
    pub max_storage_buffers_per_stage: u32,
    pub max_workgroups_per_dim: u32,
    /// WGSL's `packed_4x8_integer_dot_product` language feature (`dot4I8Packed`,
    /// `pack4xI8`) is available: the W8A8 kernels accumulate in i32 with it.
    pub dot4_i8: bool,
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "adapter:   {} ({:?})", self.name, self.device_type)?;
        writeln!(f, "backend:   {:?}", self.backend)?;
        writeln!(f, "driver:    {} {}", self.driver, self.driver_info)?;
        writeln!(
            f,
            "features:  f16 {}, timestamps {}, subgroups {} (size {}..{}), dot4I8Packed {}",
            match self.f16 {
                F16Mode::Native => "native",
                F16Mode::Packed => "packed-u32 fallback",
            },
            yes(self.timestamps),
            yes(self.subgroups),
            self.subgroup_size.0,
            self.subgroup_size.1,
            yes(self.dot4_i8)
        )?;
        writeln!(
            f,
            "limits:    storage binding {} MiB, buffer {} MiB, {} storage buffers/stage",
            self.max_storage_binding >> 20,
            self.max_buffer_size >> 20,
            self.max_storage_buffers_per_stage
        )?;
        write!(
            f,
            "           workgroup {} invocations, {} KiB shared, {} groups/dim",
            self.max_workgroup_invocations,
            self.max_workgroup_storage >> 10,
            self.max_workgroups_per_dim
        )
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The GPU context: device, queue, pool and kernel cache. Cheap to share by reference; all
/// methods take `&self`.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: GpuInfo,
    pool: Arc<Pool>,
    kernels: KernelCache,
    tuner: Tuner,
    min_storage_offset_alignment: u64,
}

impl Gpu {
    /// Opens the adapter chosen by `opts` (and the environment) with its real limits.
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new_async(opts))
    }

    async fn new_async(opts: &GpuOptions) -> Result<Gpu> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if let Some(b) = opts.backends {
            desc.backends = b;
        }
        let wanted_backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let filter = opts
            .adapter_filter
            .clone()
            .or_else(|| std::env::var("DIFFUSE_ADAPTER").ok())
            .unwrap_or_default()
            .to_lowercase();
        let adapters = instance.enumerate_adapters(wanted_backends).await;
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        let rank = |t: wgpu::DeviceType| match t {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        let backend_rank = |b: wgpu::Backend| match b {
            wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
            _ => 1,
        };
        let adapter = adapters
            .into_iter()
            .filter(|a| a.get_info().name.to_lowercase().contains(&filter))
            .min_by_key(|a| {
                let i = a.get_info();
                (backend_rank(i.backend), rank(i.device_type))
            })
            .ok_or_else(|| Error::NoAdapter {
                wanted: format!(
                    "backends {:?}{}",
                    wanted_backends,
                    if filter.is_empty() {
                        String::new()
                    } else {
                        format!(", name containing `{filter}`")
                    }
                ),
                seen: if seen.is_empty() {
                    "none".into()
                } else {
                    seen.join(", ")
                },
            })?;
        let ainfo = adapter.get_info();
        let afeat = adapter.features();
        let mut want = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            | wgpu::Features::SUBGROUP;
        if !opts.disable_f16 {
            want |= wgpu::Features::SHADER_F16;
        }
        let features = afeat & want;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("diffuse"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Device {
                adapter: ainfo.name.clone(),
                reason: e.to_string(),
            })?;
        let mut max_binding = limits.max_storage_buffer_binding_size as u64;
        if let Some(cap) = opts.max_binding_override {
            max_binding = max_binding.min(cap.max(1024));
        }
        let info = GpuInfo {
            name: ainfo.name.clone(),
            backend: ainfo.backend,
            device_type: ainfo.device_type,
            driver: ainfo.driver.clone(),
            driver_info: ainfo.driver_info.clone(),
            f16: if features.contains(wgpu::Features::SHADER_F16) {
                F16Mode::Native
            } else {
                F16Mode::Packed
            },
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_size: (ainfo.subgroup_min_size, ainfo.subgroup_max_size),
            max_storage_binding: max_binding,
            max_buffer_size: limits.max_buffer_size,
            max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            dot4_i8: instance
                .wgsl_language_features()
                .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct),
        };
        log::info!("diffuse: using {} ({:?})", info.name, info.backend);
        let pool = Arc::new(Pool::new(device.clone(), queue.clone()));
        let kernels = KernelCache::new(info.f16);
        let tuner = Tuner::new(&opts.tuning, &format!("{} {}", info.name, info.driver_info));
        Ok(Gpu {
            device,
            queue,
            info,
            pool,
            kernels,
            tuner,
            min_storage_offset_alignment: limits.min_storage_buffer_offset_alignment as u64,
        })
    }

    /// Adapter, backend, driver, features and limits.
    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// The buffer pool every tensor comes from.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The per-adapter tuning table ops consult through [`tuning::select`].
    pub fn tuner(&self) -> &Tuner {
        &self.tuner
    }

    /// The compiled-kernel cache.
    pub fn kernels(&self) -> &KernelCache {
        &self.kernels
    }

    /// Largest range one storage binding may cover.
    pub fn max_binding(&self) -> u64 {
        self.info.max_storage_binding
    }

    /// Alignment of storage-binding offsets (bytes).
    pub fn storage_offset_alignment(&self) -> u64 {
        self.min_storage_offset_alignment
    }

    /// Starts recording a batch of dispatches.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder::new(self)
    }

    /// Records with `f`, then submits and waits. The convenience path for one-off work; a
    /// sampling loop keeps a [`Recording`] and replays it instead.
    pub fn run<T>(&self, f: impl FnOnce(&mut Recorder<'_>) -> Result<T>) -> Result<T> {
        let mut rec = self.recorder();
        let out = f(&mut rec)?;
        let recording = rec.finish()?;
        recording.submit(self);
        Ok(out)
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Device {
                adapter: self.info.name.clone(),
                reason: e.to_string(),
            })
    }

    /// The wgpu device, for embedding applications that add their own work.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
}
