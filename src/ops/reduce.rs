//! Per-sample reductions (`shaders/reduce.wgsl`): sum, mean and L2 norm of each sample of an
//! [N, ...] tensor into an f32 [N] tensor (used by Langevin correctors and metrics), and the
//! per-sample max |x| that activation calibration (`pipeline::calibrate`) records.

use super::{dtype_is, grid_1d, nonempty, shape_err, u32_param};
use crate::error::Result;
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Invocations per workgroup (one workgroup per sample).
pub const WG: u32 = 256;

/// Which reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
    /// sqrt(Σ x²).
    L2Norm,
    /// max |x| (0 for an all-zero sample; NaN propagates as the larger value is kept).
    AbsMax,
}

params! {
    /// `#uniform Params` of `shaders/reduce.wgsl`.
    struct Params {
        /// samples
        n: u32,
        /// elements per sample
        len: u32,
        _p0: u32,
        _p1: u32,
    }
}

/// Workgroup size for `len` elements per sample (one workgroup per sample: short rows must not
/// idle 256 invocations each).
fn workgroup(len: usize) -> u32 {
    match len {
        0..=8 => 8,
        9..=64 => 64,
        _ => WG,
    }
}

fn key(dt: DType, op: Reduce, wg: u32) -> KernelKey {
    KernelKey::new::<Params>("reduce", "main", dt, [wg, 1, 1]).flag(
        match op {
            Reduce::Sum => "OP_SUM",
            Reduce::Mean => "OP_MEAN",
            Reduce::L2Norm => "OP_L2",
            Reduce::AbsMax => "OP_ABSMAX",
        },
        true,
    )
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for o in [Reduce::Sum, Reduce::Mean, Reduce::L2Norm, Reduce::AbsMax] {
        for wg in [8, 64, WG] {
            v.push(key(dt, o, wg));
        }
    }
    v
}

/// y[n] = reduction over x[n, ...]; y is f32 [N].
pub fn reduce(rec: &mut Recorder<'_>, op: Reduce, x: &Tensor, y: &Tensor) -> Result<()> {
    const OP: &str = "reduce";
    nonempty(OP, x)?;
    dtype_is(OP, y, DType::F32, "reductions are written in f32")?;
    let n = x.shape()[0];
    if y.shape() != [n] {
        return Err(shape_err(
            OP,
            y,
            format!("expected [{n}] (one value per sample of `{}`)", x.name()),
        ));
    }
    let len = x.numel() / n;
    let gpu = rec.gpu();
    let p = Params {
        n: u32_param(OP, "samples", n)?,
        len: u32_param(OP, "elements per sample", len)?,
        _p0: 0,
        _p1: 0,
    };
    let g = grid_1d(gpu, OP, n as u64)?;
    let binds = [("x", x.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)];
    rec.dispatch(&key(x.dtype(), op, workgroup(len)), &p, &binds, g)?;
    Ok(())
}
