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
}

/// The layout [`softmax`] picks: rows per invocation on CPU adapters when rows are short
/// (barriers are expensive there: 34× faster on a [6272, 196] attention softmax on lavapipe,
/// see benches/README.md), workgroup reductions elsewhere.
pub fn default_layout(device: wgpu::DeviceType, cols: usize) -> Layout {
    if device == wgpu::DeviceType::Cpu && cols <= 4096 {
        Layout::RowPerThread
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
    }
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![key(dt, Layout::Workgroup), key(dt, Layout::RowPerThread)]
}

/// y = softmax(scale · x) along the last dimension, in the adapter's default layout.
pub fn softmax(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor, scale: f32) -> Result<()> {
    let cols = *x.shape().last().unwrap_or(&1);
    let gpu = rec.gpu();
    let default = default_layout(gpu.info().device_type, cols);
    let layout = if gpu.tuner().enabled() {
        let candidates: &[&'static str] = match default {
            Layout::Workgroup => &["workgroup", "row-per-thread"],
            Layout::RowPerThread => &["row-per-thread", "workgroup"],
        };
        let as_layout = |c: &str| {
            if c == "workgroup" {
                Layout::Workgroup
            } else {
                Layout::RowPerThread
            }
        };
        let key = format!("softmax|{:?}|{}x{cols}", x.dtype(), x.numel() / cols.max(1));
        let pick = gpu.tuner().pick(&key, candidates, &mut |c| {
            let mut r = gpu.recorder();
            softmax_with(&mut r, x, y, scale, as_layout(c))?;
            let one = r.finish()?;
            crate::gpu::tuning::time_best(gpu, &|| {
                one.submit(gpu);
                Ok(())
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
    };
    let g = grid_1d(gpu, OP, groups)?;
    let binds = vec![x.binding(gpu, OP)?, y.binding(gpu, OP)?];
    rec.dispatch(&key(x.dtype(), layout), bytemuck::bytes_of(&p), binds, g)?;
    Ok(())
}
