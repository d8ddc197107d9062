//! Row-window copies between NCHW tensors (`shaders/rows.wgsl`), with optional nearest
//! upsampling on the way: what a tensor held as row bands needs to cut, join and refresh the
//! halo rows of its bands (`nn::vae_bands`).

use super::{grid_1d, nonempty, rank, same_dtype, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/rows.wgsl`.
    struct Params {
        /// written elements
        n: u32,
        /// rows of x
        hs: u32,
        /// columns of x
        ws: u32,
        /// rows of y
        hd: u32,
        /// columns of y (ws · factor)
        wd: u32,
        /// rows written
        rows: u32,
        /// first row of y written
        dst_row0: u32,
        /// nearest upsampling factor of x
        factor: u32,
        /// row of the upsampled x copied to dst_row0 (rows outside it read as zero)
        src_row0: i32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

fn key(dt: DType, zero: bool) -> KernelKey {
    KernelKey::new::<Params>("rows", "main", dt, [WG_1D, 1, 1]).flag("ZERO", zero)
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![key(dt, false), key(dt, true)]
}

fn window(op: &'static str, y: &Tensor, dst_row0: usize, rows: usize) -> Result<()> {
    nonempty(op, y)?;
    rank(op, y, 4, "[N, C, H, W]")?;
    if rows == 0 || dst_row0 + rows > y.shape()[2] {
        return Err(Error::Argument {
            op,
            arg: "rows",
            reason: format!(
                "rows {dst_row0}..{} do not lie in `{}` {:?}",
                dst_row0 + rows,
                y.name(),
                y.shape()
            ),
        });
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn launch(
    rec: &mut Recorder<'_>,
    op: &'static str,
    x: Option<&Tensor>,
    src_row0: isize,
    factor: usize,
    y: &Tensor,
    dst_row0: usize,
    rows: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let s = y.shape();
    let (hs, ws) = x.map_or((0, s[3]), |x| (x.shape()[2], x.shape()[3]));
    let n = s[0] * s[1] * rows * s[3];
    let p = Params {
        n: u32_param(op, "written elements", n)?,
        hs: u32_param(op, "rows of x", hs)?,
        ws: ws as u32,
        hd: u32_param(op, "rows of y", s[2])?,
        wd: u32_param(op, "columns of y", s[3])?,
        rows: rows as u32,
        dst_row0: dst_row0 as u32,
        factor: factor as u32,
        src_row0: i32::try_from(src_row0).map_err(|_| Error::TooLarge {
            op,
            what: "source row".into(),
            got: src_row0.unsigned_abs() as u64,
            limit: i32::MAX as u64,
        })?,
        _p0: 0,
        _p1: 0,
        _p2: 0,
    };
    let g = grid_1d(gpu, op, (n as u64).div_ceil(WG_1D as u64))?;
    let yb = ("y", y.binding(gpu, op)?);
    match x {
        Some(x) => {
            let binds = [("x", x.binding(gpu, op)?), yb];
            rec.dispatch(&key(y.dtype(), false), &p, &binds, g)?;
        }
        None => {
            rec.dispatch(&key(y.dtype(), true), &p, &[yb], g)?;
        }
    }
    Ok(())
}

/// y[:, :, dst_row0 + r] = up(x)[:, :, src_row0 + r] for r < rows, where up(x) is x upsampled
/// ×`factor` (nearest, both axes; 1: x itself) and rows outside up(x) (negative `src_row0`
/// included) read as zeros. x and y share N and C, and y is `factor` times as wide.
pub fn copy_rows(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    src_row0: isize,
    factor: usize,
    y: &Tensor,
    dst_row0: usize,
    rows: usize,
) -> Result<()> {
    const OP: &str = "copy_rows";
    nonempty(OP, x)?;
    rank(OP, x, 4, "[N, C, H, W]")?;
    window(OP, y, dst_row0, rows)?;
    same_dtype(OP, x, y)?;
    let (sx, sy) = (x.shape(), y.shape());
    if factor == 0 || sx[0] != sy[0] || sx[1] != sy[1] || sx[3] * factor != sy[3] {
        return Err(shape_err(
            OP,
            y,
            format!(
                "cannot take rows of `{}` {sx:?} upsampled ×{factor}",
                x.name()
            ),
        ));
    }
    launch(rec, OP, Some(x), src_row0, factor, y, dst_row0, rows)
}

/// y[:, :, dst_row0 .. dst_row0 + rows] = 0.
pub fn zero_rows(rec: &mut Recorder<'_>, y: &Tensor, dst_row0: usize, rows: usize) -> Result<()> {
    const OP: &str = "zero_rows";
    window(OP, y, dst_row0, rows)?;
    launch(rec, OP, None, 0, 1, y, dst_row0, rows)
}
