//! Row softmax over the last dimension with an input scale (`shaders/softmax.wgsl`); with
//! batched [`super::gemm`] it forms unfused attention.

use super::{grid_1d, nonempty, same_dtype, same_shape, u32_param};
use crate::error::Result;
use crate::gpu::{KernelKey, Recorder};
use crate::tensor::{DType, Tensor};
use bytemuck::{Pod, Zeroable};

/// Invocations per workgroup (one workgroup per row).
pub const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    _p: u32,
}

/// The kernel key.
pub fn key(dt: DType) -> KernelKey {
    KernelKey::new("softmax", "main", dt, [WG, 1, 1])
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![key(dt)]
}

/// y = softmax(scale · x) along the last dimension.
pub fn softmax(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor, scale: f32) -> Result<()> {
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
    let g = grid_1d(gpu, OP, rows as u64)?;
    let binds = vec![x.binding(gpu, OP)?, y.binding(gpu, OP)?];
    rec.dispatch(&key(x.dtype()), bytemuck::bytes_of(&p), binds, g)?;
    Ok(())
}
