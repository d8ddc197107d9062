//! Channel concatenation of NCHW tensors (`shaders/concat.wgsl`): `torch.cat([a, b], dim=1)`.

use super::{grid_1d, nonempty, rank, same_dtype, shape_err, u32_param, WG_1D};
use crate::error::Result;
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/concat.wgsl`.
    struct Params {
        /// output elements
        n: u32,
        /// channels of a
        ca: u32,
        /// channels of b
        cb: u32,
        /// H·W
        hw: u32,
    }
}

fn key(dt: DType) -> KernelKey {
    KernelKey::new::<Params>("concat", "main", dt, [WG_1D, 1, 1])
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![
        key(dt),
        KernelKey::new::<SliceParams>("slice", "main", dt, [WG_1D, 1, 1]),
    ]
}

params! {
    /// `#uniform Params` of `shaders/slice.wgsl`.
    struct SliceParams {
        /// output elements
        n: u32,
        /// channels of x
        cx: u32,
        /// channels of y
        cy: u32,
        /// H·W
        hw: u32,
        /// first channel taken
        c0: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

/// y = x[:, c0 : c0 + Cy] for NCHW tensors (the inverse of [`concat_channels`]).
pub fn slice_channels(rec: &mut Recorder<'_>, x: &Tensor, c0: usize, y: &Tensor) -> Result<()> {
    const OP: &str = "slice_channels";
    nonempty(OP, x)?;
    rank(OP, x, 4, "[N, C, H, W]")?;
    rank(OP, y, 4, "[N, C, H, W]")?;
    same_dtype(OP, x, y)?;
    let (sx, sy) = (x.shape(), y.shape());
    if sx[0] != sy[0] || sx[2..] != sy[2..] || c0 + sy[1] > sx[1] {
        return Err(shape_err(
            OP,
            y,
            format!(
                "cannot take channels {c0}..{} of `{}` {:?}",
                c0 + sy[1],
                x.name(),
                sx
            ),
        ));
    }
    let gpu = rec.gpu();
    let p = SliceParams {
        n: u32_param(OP, "output elements", y.numel())?,
        cx: sx[1] as u32,
        cy: sy[1] as u32,
        hw: (sx[2] * sx[3]) as u32,
        c0: c0 as u32,
        _p0: 0,
        _p1: 0,
        _p2: 0,
    };
    let g = grid_1d(gpu, OP, (y.numel() as u64).div_ceil(WG_1D as u64))?;
    let binds = [("x", x.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)];
    rec.dispatch(
        &KernelKey::new::<SliceParams>("slice", "main", x.dtype(), [WG_1D, 1, 1]),
        &p,
        &binds,
        g,
    )?;
    Ok(())
}

/// y = cat([a, b], dim=1): a [N, Ca, H, W], b [N, Cb, H, W] → y [N, Ca + Cb, H, W].
pub fn concat_channels(rec: &mut Recorder<'_>, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<()> {
    const OP: &str = "concat_channels";
    nonempty(OP, a)?;
    nonempty(OP, b)?;
    for t in [a, b, y] {
        rank(OP, t, 4, "[N, C, H, W]")?;
    }
    same_dtype(OP, a, b)?;
    same_dtype(OP, a, y)?;
    let (sa, sb) = (a.shape(), b.shape());
    if sa[0] != sb[0] || sa[2..] != sb[2..] {
        return Err(shape_err(
            OP,
            b,
            format!(
                "must match `{}` {:?} in every dim but channels",
                a.name(),
                sa
            ),
        ));
    }
    let want = [sa[0], sa[1] + sb[1], sa[2], sa[3]];
    if y.shape() != want {
        return Err(shape_err(OP, y, format!("expected {want:?}")));
    }
    let gpu = rec.gpu();
    let p = Params {
        n: u32_param(OP, "output elements", y.numel())?,
        ca: sa[1] as u32,
        cb: sb[1] as u32,
        hw: (sa[2] * sa[3]) as u32,
    };
    let g = grid_1d(gpu, OP, (y.numel() as u64).div_ceil(WG_1D as u64))?;
    let binds = [
        ("a", a.binding(gpu, OP)?),
        ("b", b.binding(gpu, OP)?),
        ("y", y.binding(gpu, OP)?),
    ];
    rec.dispatch(&key(a.dtype()), &p, &binds, g)?;
    Ok(())
}
