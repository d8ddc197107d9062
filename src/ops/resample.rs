//! Nearest-neighbour upsampling, 2×2 average pooling and reflect padding/cropping over NCHW
//! (`shaders/resample.wgsl`), as diffusers' `Upsample2D` (interpolate, nearest) and
//! `Downsample2D` without conv, and `F.pad(.., mode="reflect")` on the right/bottom edges.

use super::{grid_1d, nonempty, rank, same_dtype, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/resample.wgsl`.
    struct Params {
        /// output elements
        n: u32,
        /// input H
        h: u32,
        /// input W
        w: u32,
        /// UPSAMPLE_NEAREST factor
        factor: u32,
        /// output H
        ho: u32,
        /// output W
        wo: u32,
        _p0: u32,
        _p1: u32,
    }
}

fn key(dt: DType, define: &str) -> KernelKey {
    KernelKey::new::<Params>("resample", "main", dt, [WG_1D, 1, 1]).flag(define, true)
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![
        key(dt, "UPSAMPLE_NEAREST"),
        key(dt, "AVG_POOL"),
        key(dt, "REFLECT"),
    ]
}

fn launch(
    rec: &mut Recorder<'_>,
    op: &'static str,
    define: &str,
    x: &Tensor,
    y: &Tensor,
    factor: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let (ho, wo) = (y.shape()[2], y.shape()[3]);
    let p = Params {
        n: u32_param(op, "output elements", y.numel())?,
        h: h as u32,
        w: w as u32,
        factor: factor as u32,
        ho: ho as u32,
        wo: wo as u32,
        _p0: 0,
        _p1: 0,
    };
    let g = grid_1d(gpu, op, (y.numel() as u64).div_ceil(WG_1D as u64))?;
    let binds = [("x", x.binding(gpu, op)?), ("y", y.binding(gpu, op)?)];
    rec.dispatch(&key(x.dtype(), define), &p, &binds, g)?;
    Ok(())
}

fn check(op: &'static str, x: &Tensor, y: &Tensor) -> Result<()> {
    nonempty(op, x)?;
    rank(op, x, 4, "[N, C, H, W]")?;
    rank(op, y, 4, "[N, C, Ho, Wo]")?;
    same_dtype(op, x, y)
}

/// y[n, c, oy, ox] = x[n, c, oy / factor, ox / factor]; y is [N, C, H·factor, W·factor].
pub fn upsample_nearest(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    factor: usize,
) -> Result<()> {
    const OP: &str = "upsample_nearest";
    check(OP, x, y)?;
    if factor == 0 {
        return Err(Error::Argument {
            op: OP,
            arg: "factor",
            reason: "must be at least 1".into(),
        });
    }
    let s = x.shape();
    let want = [s[0], s[1], s[2] * factor, s[3] * factor];
    if y.shape() != want {
        return Err(shape_err(OP, y, format!("expected {want:?}")));
    }
    launch(rec, OP, "UPSAMPLE_NEAREST", x, y, factor)
}

/// 2×2 average pooling with stride 2; x [N, C, H, W] with H, W even, y [N, C, H/2, W/2].
pub fn avg_pool2x(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor) -> Result<()> {
    const OP: &str = "avg_pool2x";
    check(OP, x, y)?;
    let s = x.shape();
    if s[2] % 2 != 0 || s[3] % 2 != 0 {
        return Err(shape_err(OP, x, "expected even H and W".into()));
    }
    let want = [s[0], s[1], s[2] / 2, s[3] / 2];
    if y.shape() != want {
        return Err(shape_err(OP, y, format!("expected {want:?}")));
    }
    launch(rec, OP, "AVG_POOL", x, y, 2)
}

/// y [N, C, Ho, Wo] = x [N, C, H, W] reflected past its right and bottom edges
/// (`F.pad(x, (0, Wo − W, 0, Ho − H), "reflect")`, the edge row/column not repeated) or, where
/// Ho ≤ H and Wo ≤ W, cropped to its top-left `x[.., :Ho, :Wo]`. As torch, a padding must be
/// smaller than the dimension it reflects (Ho < 2H, Wo < 2W).
pub fn reflect_pad(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor) -> Result<()> {
    const OP: &str = "reflect_pad";
    check(OP, x, y)?;
    let (s, ys) = (x.shape(), y.shape());
    if ys[0] != s[0] || ys[1] != s[1] {
        return Err(shape_err(
            OP,
            y,
            format!(
                "expected [{}, {}, Ho, Wo] (the batch and channels of `{}`)",
                s[0],
                s[1],
                x.name()
            ),
        ));
    }
    for (i, dim) in [(2, "height"), (3, "width")] {
        if ys[i] == 0 || ys[i] >= 2 * s[i] || (ys[i] > s[i] && s[i] < 2) {
            return Err(shape_err(
                OP,
                y,
                format!(
                    "{dim} {} cannot be reflected from {} (padding must be smaller than the input {dim})",
                    ys[i], s[i]
                ),
            ));
        }
    }
    if x.shares_storage(y) {
        return Err(Error::Argument {
            op: OP,
            arg: "y",
            reason: format!("`{}` shares storage with the input", y.name()),
        });
    }
    launch(rec, OP, "REFLECT", x, y, 1)
}
