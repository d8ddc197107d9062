//! Row softmax over the last dimension with an input scale (`shaders/softmax.wgsl`); with
//! batched [`super::gemm`] it forms unfused attention.

use super::{grid_1d, nonempty, same_dtype, same_shape, u32_param};
use crate::error::Result;
use crate::gpu::{KernelKey, Recorder};
use crate::tensor::{DType, Tensor};
use bytemuck::{Pod, Zeroable};

/// Invocations per workgroup (one workgroup per row).
pub const WG: u32 = 256;
/// Rows per workgroup of the row-per-invocation layout.
pub const WG_ROWS: u32 = 64;

/// Which kernel layout computes the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One workgroup per row with tree reductions.
    Workgroup,
    /// One invocation per row, no barriers.
    RowPerThread,
    /// One subgroup per row with subgroup reductions (needs subgroups; see [`subgroup_ok`]).
    Subgroup,
}

impl Layout {
    /// The name the tuning cache stores.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Workgroup => "workgroup",
            Layout::RowPerThread => "row-per-thread",
            Layout::Subgroup => "subgroup",
        }
    }
}

/// Invocations per workgroup of the subgroup layout (a workgroup holds WG_SUBGROUP / subgroup
/// size rows).
pub const WG_SUBGROUP: u32 = 64;

/// Whether the adapter can run the subgroup layout: it has subgroups and a workgroup of
/// [`WG_SUBGROUP`] splits into full ones.
pub fn subgroup_ok(info: &crate::gpu::GpuInfo) -> bool {
    let (min, max) = info.subgroup_size;
    info.subgroups
        && min > 0
        && max <= WG_SUBGROUP
        && WG_SUBGROUP % max == 0
        && WG_SUBGROUP % min == 0
}

/// The layout [`softmax`] picks: rows per invocation on CPU adapters when rows are short
/// (barriers are expensive there: 34× faster on a [6272, 196] attention softmax on lavapipe,
/// see benches/README.md); elsewhere a subgroup per row when the adapter has subgroups and rows
/// are short (≤ 4096), else workgroup reductions.
pub fn default_layout(info: &crate::gpu::GpuInfo, cols: usize) -> Layout {
    if info.device_type == wgpu::DeviceType::Cpu && cols <= 4096 {
        Layout::RowPerThread
    } else if cols <= 4096 && subgroup_ok(info) {
        Layout::Subgroup
    } else {
        Layout::Workgroup
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    _p: u32,
}

/// The kernel key.
pub fn key(dt: DType, layout: Layout) -> KernelKey {
    match layout {
        Layout::Workgroup => KernelKey::new("softmax", "main", dt, [WG, 1, 1]),
        Layout::RowPerThread => {
            KernelKey::new("softmax", "main", dt, [WG_ROWS, 1, 1]).flag("ROW_PER_THREAD", true)
        }
        Layout::Subgroup => {
            KernelKey::new("softmax", "main", dt, [WG_SUBGROUP, 1, 1]).flag("SUBGROUP", true)
        }
    }
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![
        key(dt, Layout::Workgroup),
        key(dt, Layout::RowPerThread),
        key(dt, Layout::Subgroup),
    ]
}

/// y = softmax(scale · x) along the last dimension, in the adapter's default layout.
pub fn softmax(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor, scale: f32) -> Result<()> {
    let cols = *x.shape().last().unwrap_or(&1);
    let gpu = rec.gpu();
    let default = default_layout(gpu.info(), cols);
    let layout = if gpu.tuner().enabled() {
        let mut candidates = vec![default.name()];
        for l in [Layout::RowPerThread, Layout::Workgroup, Layout::Subgroup] {
            if l != default && (l != Layout::Subgroup || subgroup_ok(gpu.info())) {
                candidates.push(l.name());
            }
        }
        let as_layout = |c: &str| match c {
            "workgroup" => Layout::Workgroup,
            "subgroup" => Layout::Subgroup,
            _ => Layout::RowPerThread,
        };
        let key = format!("softmax|{:?}|{}x{cols}", x.dtype(), x.numel() / cols.max(1));
        let pick = gpu.tuner().pick(&key, &candidates, &mut |c| {
            crate::gpu::tuning::time_recorded(gpu, &mut |r| {
                softmax_with(r, x, y, scale, as_layout(c))
            })
        })?;
        as_layout(pick)
    } else {
        default
    };
    softmax_with(rec, x, y, scale, layout)
}

/// [`softmax`] in an explicit layout.
pub fn softmax_with(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    scale: f32,
    layout: Layout,
) -> Result<()> {
    const OP: &str = "softmax";
    nonempty(OP, x)?;
    same_dtype(OP, x, y)?;
    same_shape(OP, x, y)?;
    let cols = *x.shape().last().unwrap_or(&1);
    let rows = x.numel() / cols;
    let gpu = rec.gpu();
    let p = Params {
        rows: u32_param(OP, "rows", rows)?,
        cols: u32_param(OP, "cols", cols)?,
        scale,
        _p: 0,
    };
    let groups = match layout {
        Layout::Workgroup => rows as u64,
        Layout::RowPerThread => (rows as u64).div_ceil(WG_ROWS as u64),
        Layout::Subgroup => {
            if !subgroup_ok(gpu.info()) {
                return Err(crate::error::Error::Argument {
                    op: OP,
                    arg: "layout",
                    reason: "the adapter has no usable subgroups".into(),
                });
            }
            // Rows per workgroup at the largest subgroup size (the fewest rows per group).
            let per = (WG_SUBGROUP / gpu.info().subgroup_size.1) as u64;
            (rows as u64).div_ceil(per)
        }
    };
    let g = grid_1d(gpu, OP, groups)?;
    let binds = vec![x.binding(gpu, OP)?, y.binding(gpu, OP)?];
    rec.dispatch(&key(x.dtype(), layout), bytemuck::bytes_of(&p), binds, g)?;
    Ok(())
}
