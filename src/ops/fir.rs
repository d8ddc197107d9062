//! FIR up/down-sampling (`shaders/fir.wgsl`), diffusers' `upfirdn2d_native` with the
//! `upsample_2d` / `downsample_2d` conventions used by NCSN++ (Song et al., Score SDE, 2021):
//! a separable kernel k (default [1, 3, 3, 1]) normalised to sum 1 (× factor² when upsampling).

use super::{grid_1d, nonempty, rank, same_dtype, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/fir.wgsl`.
    struct Params {
        /// output elements
        n: u32,
        /// input H
        h: u32,
        /// input W
        w: u32,
        /// output H
        ho: u32,
        /// output W
        wo: u32,
        up: u32,
        down: u32,
        /// zero padding before (rows and columns, after upsampling)
        pad0: u32,
        kh: u32,
        kw: u32,
        _p0: u32,
        _p1: u32,
        /// kernel[ky][kx] (not flipped), row ky in taps[ky]
        taps: [[f32; 4]; 4],
    }
}

fn key(dt: DType) -> KernelKey {
    KernelKey::new::<Params>("fir", "main", dt, [WG_1D, 1, 1])
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![key(dt)]
}

/// The 2-D kernel outer(k, k) / sum · gain for a 1-D kernel `k` (≤ 4 taps).
pub fn make_kernel(k: &[f64], gain: f64) -> Vec<Vec<f64>> {
    let s: f64 = k.iter().sum::<f64>().powi(2);
    k.iter()
        .map(|a| k.iter().map(|b| a * b / s * gain).collect())
        .collect()
}

/// Geometry of one upfirdn2d call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpFirDn {
    pub up: usize,
    pub down: usize,
    pub pad0: usize,
    pub pad1: usize,
}

impl UpFirDn {
    /// `upsample_2d(x, k, factor)`: pad ((p + 1) / 2 + factor − 1, p / 2), p = taps − factor.
    pub fn upsample(taps: usize, factor: usize) -> Self {
        let p = taps - factor;
        UpFirDn {
            up: factor,
            down: 1,
            pad0: p.div_ceil(2) + factor - 1,
            pad1: p / 2,
        }
    }
    /// `downsample_2d(x, k, factor)`: pad ((p + 1) / 2, p / 2), p = taps − factor.
    pub fn downsample(taps: usize, factor: usize) -> Self {
        let p = taps - factor;
        UpFirDn {
            up: 1,
            down: factor,
            pad0: p.div_ceil(2),
            pad1: p / 2,
        }
    }
    /// Output size for an input of `h`×`w` and a kh×kw kernel.
    pub fn output(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let hp = h * self.up + self.pad0 + self.pad1;
        let wp = w * self.up + self.pad0 + self.pad1;
        (hp >= kh && wp >= kw).then(|| ((hp - kh) / self.down + 1, (wp - kw) / self.down + 1))
    }
}

/// y = upfirdn2d(x, kernel) over every plane of x [N, C, H, W].
pub fn upfirdn2d(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    kernel: &[Vec<f64>],
    g: UpFirDn,
) -> Result<()> {
    const OP: &str = "upfirdn2d";
    nonempty(OP, x)?;
    rank(OP, x, 4, "[N, C, H, W]")?;
    rank(OP, y, 4, "[N, C, Ho, Wo]")?;
    same_dtype(OP, x, y)?;
    let (kh, kw) = (kernel.len(), kernel.first().map_or(0, |r| r.len()));
    if kh == 0
        || kh > 4
        || kw == 0
        || kw > 4
        || kernel.iter().any(|r| r.len() != kw)
        || g.up == 0
        || g.down == 0
    {
        return Err(Error::Argument {
            op: OP,
            arg: "kernel",
            reason: format!("a rectangular kernel of at most 4×4 and positive factors are required (got {kh}×{kw}, {g:?})"),
        });
    }
    let s = x.shape();
    let (ho, wo) = g
        .output(s[2], s[3], kh, kw)
        .ok_or_else(|| shape_err(OP, x, format!("is smaller than the {kh}×{kw} kernel")))?;
    if y.shape() != [s[0], s[1], ho, wo] {
        return Err(shape_err(
            OP,
            y,
            format!("expected {:?}", [s[0], s[1], ho, wo]),
        ));
    }
    let mut taps = [[0f32; 4]; 4];
    for (a, row) in kernel.iter().enumerate() {
        for (b, v) in row.iter().enumerate() {
            taps[a][b] = *v as f32;
        }
    }
    let gpu = rec.gpu();
    let p = Params {
        n: u32_param(OP, "output elements", y.numel())?,
        h: s[2] as u32,
        w: s[3] as u32,
        ho: ho as u32,
        wo: wo as u32,
        up: g.up as u32,
        down: g.down as u32,
        pad0: g.pad0 as u32,
        kh: kh as u32,
        kw: kw as u32,
        _p0: 0,
        _p1: 0,
        taps,
    };
    let grid = grid_1d(gpu, OP, (y.numel() as u64).div_ceil(WG_1D as u64))?;
    let binds = [("x", x.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)];
    rec.dispatch(&key(x.dtype()), &p, &binds, grid)?;
    Ok(())
}
