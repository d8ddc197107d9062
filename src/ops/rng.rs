//! Counter-based random numbers on the GPU (`shaders/rng.wgsl`): Philox4x32-10 (Salmon, Moraes,
//! Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011). Element `e` of a draw
//! with (seed, stream) is a pure function of `offset + position`, so results are bit-identical
//! however the work is split into dispatches, chunks or workgroups.

use super::{dtype_is, grid_1d, nonempty, WG_1D};
use crate::error::Result;
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// What to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Standard normal (Box–Muller on word pairs).
    Normal,
    /// Uniform on [0, 1) with 24 random bits.
    Uniform,
    /// The raw 32-bit words bit-cast into an f32 tensor (for testing the generator).
    Bits,
}

/// A generator identity: seed (the Philox key) and stream (counter word 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Philox {
    pub seed: u64,
    pub stream: u32,
}

params! {
    /// `#uniform Params` of `shaders/rng.wgsl`.
    struct Params {
        /// elements in this dispatch
        n: u32,
        /// global index of the dispatch's first element (low word)
        base_lo: u32,
        /// (high word)
        base_hi: u32,
        /// counter word 2: independent streams under one seed
        stream: u32,
        seed_lo: u32,
        seed_hi: u32,
        _p0: u32,
        _p1: u32,
    }
}

/// The kernel key for a distribution and workgroup size.
pub fn key(dt: DType, dist: Distribution, wg: u32) -> KernelKey {
    KernelKey::new::<Params>("rng", "main", dt, [wg, 1, 1]).flag(
        match dist {
            Distribution::Normal => "DIST_NORMAL",
            Distribution::Uniform => "DIST_UNIFORM",
            Distribution::Bits => "DIST_BITS",
        },
        true,
    )
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = vec![
        key(dt, Distribution::Normal, WG_1D),
        key(dt, Distribution::Uniform, WG_1D),
    ];
    if dt == DType::F32 {
        v.push(key(dt, Distribution::Bits, WG_1D));
    }
    v
}

/// Fills `y` with draws number `offset .. offset + y.numel()` of generator `rng`.
pub fn fill(
    rec: &mut Recorder<'_>,
    dist: Distribution,
    rng: Philox,
    offset: u64,
    y: &Tensor,
) -> Result<()> {
    fill_with_workgroup(rec, dist, rng, offset, y, WG_1D)
}

/// [`fill`] with an explicit workgroup size (results do not depend on it; tests check so).
pub fn fill_with_workgroup(
    rec: &mut Recorder<'_>,
    dist: Distribution,
    rng: Philox,
    offset: u64,
    y: &Tensor,
    wg: u32,
) -> Result<()> {
    const OP: &str = "rng";
    nonempty(OP, y)?;
    if dist == Distribution::Bits {
        dtype_is(OP, y, DType::F32, "raw bits need 32-bit storage")?;
    }
    let gpu = rec.gpu();
    let k = key(y.dtype(), dist, wg);
    for (start, n, yb) in y.chunk_bindings(gpu) {
        let base = offset.wrapping_add(start as u64);
        let p = Params {
            n: n as u32,
            base_lo: base as u32,
            base_hi: (base >> 32) as u32,
            stream: rng.stream,
            seed_lo: rng.seed as u32,
            seed_hi: (rng.seed >> 32) as u32,
            _p0: 0,
            _p1: 0,
        };
        let g = grid_1d(gpu, OP, (n as u64).div_ceil(wg as u64))?;
        rec.dispatch(&k, &p, &[("y", yb)], g)?;
    }
    Ok(())
}
