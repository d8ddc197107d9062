//! Batched 2-D transpose (`shaders/transpose.wgsl`): [B, R, C] → [B, C, R], e.g. NCHW
//! activations to token-major for attention and back.

use super::{grid_1d, nonempty, same_dtype, shape_err, u32_param, WG_1D};
use crate::error::Result;
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/transpose.wgsl`.
    struct Params {
        /// output elements (B · R · C)
        n: u32,
        /// R (rows of x)
        rows: u32,
        /// C (columns of x)
        cols: u32,
        _p0: u32,
    }
}

fn key(dt: DType) -> KernelKey {
    KernelKey::new::<Params>("transpose", "main", dt, [WG_1D, 1, 1])
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![key(dt)]
}

/// y [B, C, R] = x [B, R, C] transposed per batch (x may be any shape of B·R·C elements
/// whose first dim is B; y is checked to hold the same count).
pub fn transpose(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    batch: usize,
    rows: usize,
    cols: usize,
) -> Result<()> {
    const OP: &str = "transpose";
    nonempty(OP, x)?;
    same_dtype(OP, x, y)?;
    if x.numel() != batch * rows * cols {
        return Err(shape_err(
            OP,
            x,
            format!("expected {batch}·{rows}·{cols} elements"),
        ));
    }
    if y.numel() != x.numel() {
        return Err(shape_err(OP, y, format!("expected {} elements", x.numel())));
    }
    let gpu = rec.gpu();
    let p = Params {
        n: u32_param(OP, "elements", x.numel())?,
        rows: rows as u32,
        cols: cols as u32,
        _p0: 0,
    };
    let g = grid_1d(gpu, OP, (x.numel() as u64).div_ceil(WG_1D as u64))?;
    let binds = [("x", x.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)];
    rec.dispatch(&key(x.dtype()), &p, &binds, g)?;
    Ok(())
}
