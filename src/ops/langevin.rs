//! The Langevin corrector step (Song et al., "Score-Based Generative Modeling through SDEs",
//! ICLR 2021, Alg. 4/5): z fresh, per-sample L2 norms of the score and z, then
//! x ← x + ε·g + √(2ε)·z with ε = 2·alpha·(snr·mean‖z‖ / mean‖g‖)² (`shaders/langevin.wgsl`).

use super::reduce::{self, Reduce};
use super::rng::{self, Distribution, Philox};
use super::{dtype_is, grid_1d, same_shape, u32_param, WG_1D};
use crate::error::Result;
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/langevin.wgsl`.
    struct Params {
        /// elements
        n: u32,
        /// N
        samples: u32,
        snr: f32,
        alpha: f32,
    }
}

fn key() -> KernelKey {
    KernelKey::new::<Params>("langevin", "main", DType::F32, [WG_1D, 1, 1])
}

/// The update kernel (f32 only; other dtypes request none).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    match dt {
        DType::F32 => vec![key()],
        DType::F16 | DType::I8 => vec![],
    }
}

/// The scratch a step needs beside x, the score and z: per-sample norms [N] of each.
pub struct Norms<'a> {
    pub grad: &'a Tensor,
    pub noise: &'a Tensor,
}

/// Records one corrector step on `x` [N, ...] (f32) with the score `grad`; `z` receives the
/// draw of `philox`.
#[allow(clippy::too_many_arguments)]
pub fn langevin(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    grad: &Tensor,
    z: &Tensor,
    norms: &Norms<'_>,
    philox: Philox,
    snr: f64,
    alpha: f64,
) -> Result<()> {
    const OP: &str = "langevin";
    super::nonempty(OP, x)?;
    dtype_is(OP, x, DType::F32, "the corrector updates an f32 state")?;
    same_shape(OP, x, grad)?;
    same_shape(OP, x, z)?;
    dtype_is(OP, grad, DType::F32, "the corrector reads an f32 score")?;
    dtype_is(OP, z, DType::F32, "the corrector draws z in f32")?;
    rng::fill(rec, Distribution::Normal, philox, 0, z)?;
    reduce::reduce(rec, Reduce::L2Norm, grad, norms.grad)?;
    reduce::reduce(rec, Reduce::L2Norm, z, norms.noise)?;
    let p = Params {
        n: u32_param(OP, "elements", x.numel())?,
        samples: u32_param(OP, "samples", x.shape()[0])?,
        snr: snr as f32,
        alpha: alpha as f32,
    };
    let gpu = rec.gpu();
    let binds = [
        ("x", x.binding(gpu, OP)?),
        ("g", grad.binding(gpu, OP)?),
        ("z", z.binding(gpu, OP)?),
        ("gn", norms.grad.binding(gpu, OP)?),
        ("zn", norms.noise.binding(gpu, OP)?),
    ];
    let grid = grid_1d(gpu, OP, (x.numel() as u64).div_ceil(WG_1D as u64))?;
    rec.dispatch(&key(), &p, &binds, grid)?;
    Ok(())
}
