//! The kernel cache: each `.wgsl` family is preprocessed and compiled once per key
//! (family, entry point, dtype, workgroup size, defines) and kept for the life of the context.

use super::params::{ParamsLayout, Uniform};
use super::shader::{preprocess, BindingDecl, BindingKind, F16Mode, Processed};
use crate::error::{Error, Result};
use crate::tensor::DType;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The WGSL families shipped in `shaders/`, compiled into the binary.
pub const SHADERS: &[(&str, &str)] = &[
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("gemm", include_str!("../../shaders/gemm.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    ("conv2d_a8", include_str!("../../shaders/conv2d_a8.wgsl")),
    ("gemm_a8", include_str!("../../shaders/gemm_a8.wgsl")),
    ("conv_pack", include_str!("../../shaders/conv_pack.wgsl")),
    ("group_norm", include_str!("../../shaders/group_norm.wgsl")),
    ("layer_norm", include_str!("../../shaders/layer_norm.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("resample", include_str!("../../shaders/resample.wgsl")),
    ("rows", include_str!("../../shaders/rows.wgsl")),
    ("concat", include_str!("../../shaders/concat.wgsl")),
    ("slice", include_str!("../../shaders/slice.wgsl")),
    ("transpose", include_str!("../../shaders/transpose.wgsl")),
    ("fir", include_str!("../../shaders/fir.wgsl")),
    ("degrade", include_str!("../../shaders/degrade.wgsl")),
    ("adam", include_str!("../../shaders/adam.wgsl")),
    ("analytic", include_str!("../../shaders/analytic.wgsl")),
    (
        "solver_step",
        include_str!("../../shaders/solver_step.wgsl"),
    ),
    ("langevin", include_str!("../../shaders/langevin.wgsl")),
    ("threshold", include_str!("../../shaders/threshold.wgsl")),
    ("coef", include_str!("../../shaders/coef.wgsl")),
    ("embedding", include_str!("../../shaders/embedding.wgsl")),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("rng", include_str!("../../shaders/rng.wgsl")),
    ("philox", include_str!("../../shaders/philox.wgsl")),
];

/// Source of one family by name.
pub fn shader_source(family: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == family).map(|(_, s)| *s)
}

/// Everything that selects one compiled variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelKey {
    /// Shader family (file stem in `shaders/`).
    pub family: &'static str,
    /// Entry point.
    pub entry: &'static str,
    /// Storage dtype of the kernel's tensors (unless a binding overrides it).
    pub dtype: DType,
    /// Workgroup size; exposed to WGSL as `${WG_X}`, `${WG_Y}`, `${WG_Z}` and `${WG}` (product).
    pub workgroup: [u32; 3],
    /// Specialisation defines (`#if NAME`, `${NAME}`).
    pub defines: BTreeMap<String, String>,
    /// The parameter struct: `#uniform` declares it in WGSL, and a dispatch must pass it.
    pub params: &'static ParamsLayout,
}

impl KernelKey {
    /// A key with no defines whose parameters are `P` (declared with `gpu::params!`).
    pub fn new<P: Uniform>(
        family: &'static str,
        entry: &'static str,
        dtype: DType,
        workgroup: [u32; 3],
    ) -> Self {
        KernelKey {
            family,
            entry,
            dtype,
            workgroup,
            defines: BTreeMap::new(),
            params: P::LAYOUT,
        }
    }

    /// Adds a define (builder style).
    pub fn define(mut self, name: &str, value: impl ToString) -> Self {
        self.defines.insert(name.to_string(), value.to_string());
        self
    }

    /// Adds a flag define (`NAME = 1`) when `on`.
    pub fn flag(mut self, name: &str, on: bool) -> Self {
        if on {
            self.defines.insert(name.to_string(), "1".into());
        }
        self
    }

    /// Invocations per workgroup.
    pub fn invocations(&self) -> u32 {
        self.workgroup.iter().product()
    }

    /// A short human label, e.g. `gemm/main<f16,8x8x1,TRANS_B=1>`.
    pub fn label(&self) -> String {
        let d: Vec<String> = self
            .defines
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let w = self.workgroup;
        format!(
            "{}/{}<{:?},{}x{}x{}{}{}>",
            self.family,
            self.entry,
            self.dtype,
            w[0],
            w[1],
            w[2],
            if d.is_empty() { "" } else { "," },
            d.join(",")
        )
    }

    /// Preprocesses this variant's source for the given f16 storage mode.
    pub fn preprocess(&self, f16: F16Mode) -> Result<Processed> {
        let src = shader_source(self.family).ok_or_else(|| Error::Compile {
            kernel: self.label(),
            reason: format!("no shader family `{}`", self.family),
        })?;
        let mut defs = self.defines.clone();
        let w = self.workgroup;
        defs.insert("WG_X".into(), w[0].to_string());
        defs.insert("WG_Y".into(), w[1].to_string());
        defs.insert("WG_Z".into(), w[2].to_string());
        defs.insert("WG".into(), self.invocations().to_string());
        defs.insert("ENTRY".into(), self.entry.to_string());
        let src = expand_includes(self.family, src)?;
        preprocess(self.family, &src, &defs, self.dtype, f16, Some(self.params))
    }
}

/// Replaces `#include NAME` lines by the source of shader family NAME (one level: libraries
/// such as `philox` include nothing themselves).
fn expand_includes(family: &str, src: &str) -> Result<String> {
    let mut out = String::with_capacity(src.len());
    for (i, line) in src.lines().enumerate() {
        if let Some(name) = line.trim().strip_prefix("#include ") {
            let name = name.trim();
            let inc = shader_source(name).ok_or_else(|| Error::Preprocess {
                shader: family.to_string(),
                line: i + 1,
                reason: format!("#include of unknown shader `{name}`"),
            })?;
            if inc.lines().any(|l| l.trim_start().starts_with("#include")) {
                return Err(Error::Preprocess {
                    shader: family.to_string(),
                    line: i + 1,
                    reason: format!("`{name}` includes another file; only one level is supported"),
                });
            }
            out.push_str(inc);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// A compiled kernel.
pub struct Kernel {
    pub key: KernelKey,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub bindings: Vec<BindingDecl>,
}

/// Compiled kernels by key.
pub struct KernelCache {
    f16: F16Mode,
    map: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
}

impl KernelCache {
    pub(crate) fn new(f16: F16Mode) -> Self {
        KernelCache {
            f16,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Number of compiled variants (tests assert no compilation happens on replay).
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when nothing has been compiled yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The compiled kernel for `key`, compiling it on first use.
    pub fn get(&self, device: &wgpu::Device, key: &KernelKey) -> Result<Arc<Kernel>> {
        if let Some(k) = self.map.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(k);
        }
        let k = Arc::new(self.compile(device, key)?);
        if let Ok(mut m) = self.map.lock() {
            m.insert(key.clone(), k.clone());
        }
        Ok(k)
    }

    fn compile(&self, device: &wgpu::Device, key: &KernelKey) -> Result<Kernel> {
        let processed = key.preprocess(self.f16)?;
        let label = key.label();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(processed.source.clone().into()),
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = processed
            .bindings
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.kind {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::StorageRead => {
                            wgpu::BufferBindingType::Storage { read_only: true }
                        }
                        BindingKind::StorageReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Compile {
                kernel: label,
                reason: e.to_string(),
            });
        }
        log::debug!("compiled {label}");
        Ok(Kernel {
            key: key.clone(),
            pipeline,
            layout,
            bindings: processed.bindings,
        })
    }
}
