//! Sinusoidal timestep embedding (`shaders/embedding.wgsl`), as diffusers'
//! `get_timestep_embedding` (Ho et al., "Denoising Diffusion Probabilistic Models", 2020,
//! after Vaswani et al.'s positional encoding).

use super::{dtype_is, grid_1d, nonempty, rank, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// The embedding's options, named as in diffusers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimestepEmbedding {
    /// Put cos before sin.
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` (diffusers' `freq_shift`).
    pub downscale_freq_shift: f32,
    /// Multiplier on the arguments.
    pub scale: f32,
    /// Longest period (10000 in diffusers).
    pub max_period: f32,
}

impl Default for TimestepEmbedding {
    fn default() -> Self {
        TimestepEmbedding {
            flip_sin_to_cos: false,
            downscale_freq_shift: 1.0,
            scale: 1.0,
            max_period: 10000.0,
        }
    }
}

params! {
    /// `#uniform Params` of `shaders/embedding.wgsl`.
    struct Params {
        /// output elements (N · dim)
        n: u32,
        /// embedding width
        dim: u32,
        /// dim / 2
        half: u32,
        /// 1: cos first (flip_sin_to_cos)
        flip: u32,
        /// −ln(max_period) rounded to f32
        neg_log_max_period: f32,
        /// downscale_freq_shift
        shift: f32,
        scale: f32,
        /// LOOKUP: the first table row in this dispatch's binding
        row0: u32,
        /// LOOKUP: rows in this dispatch's binding (labels outside are left to another)
        rows: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

fn key(dt: DType) -> KernelKey {
    KernelKey::new::<Params>("embedding", "main", dt, [WG_1D, 1, 1])
}

fn fourier_key(dt: DType, log: bool) -> KernelKey {
    key(dt).flag("FOURIER", true).flag("LOG", log)
}

fn lookup_key(dt: DType) -> KernelKey {
    key(dt).flag("LOOKUP", true)
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![
        key(dt),
        fourier_key(dt, false),
        fourier_key(dt, true),
        lookup_key(dt),
    ]
}

/// y [N, dim] = embedding of the f32 timesteps t [N].
pub fn timestep_embedding(
    rec: &mut Recorder<'_>,
    t: &Tensor,
    y: &Tensor,
    e: TimestepEmbedding,
) -> Result<()> {
    const OP: &str = "timestep_embedding";
    nonempty(OP, t)?;
    rank(OP, t, 1, "[N] timesteps")?;
    rank(OP, y, 2, "[N, dim]")?;
    dtype_is(
        OP,
        t,
        DType::F32,
        "timesteps are f32 (fractional times must survive)",
    )?;
    if y.shape()[0] != t.shape()[0] {
        return Err(shape_err(
            OP,
            y,
            format!("expected {} rows (one per timestep)", t.shape()[0]),
        ));
    }
    let dim = y.shape()[1];
    let half = dim / 2;
    if half == 0 || (half as f32 - e.downscale_freq_shift) == 0.0 {
        return Err(Error::Argument {
            op: OP,
            arg: "dim",
            reason: format!(
                "embedding width {dim} with downscale_freq_shift {} divides by zero",
                e.downscale_freq_shift
            ),
        });
    }
    let gpu = rec.gpu();
    let p = Params {
        n: u32_param(OP, "output elements", y.numel())?,
        dim: dim as u32,
        half: half as u32,
        flip: e.flip_sin_to_cos as u32,
        neg_log_max_period: -(e.max_period as f64).ln() as f32,
        shift: e.downscale_freq_shift,
        scale: e.scale,
        row0: 0,
        rows: 0,
        _p0: 0,
        _p1: 0,
        _p2: 0,
    };
    let g = grid_1d(gpu, OP, (y.numel() as u64).div_ceil(WG_1D as u64))?;
    let binds = [("t", t.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)];
    rec.dispatch(&key(y.dtype()), &p, &binds, g)?;
    Ok(())
}

/// Gaussian Fourier features (diffusers `GaussianFourierProjection`): y [N, 2·half] =
/// [sin(2π·t'·w), cos(2π·t'·w)] (cos first with `flip_sin_to_cos`), t' = ln t when `log`.
/// t is f32 [N], w [half].
pub fn fourier_projection(
    rec: &mut Recorder<'_>,
    t: &Tensor,
    w: &Tensor,
    y: &Tensor,
    log: bool,
    flip_sin_to_cos: bool,
) -> Result<()> {
    const OP: &str = "fourier_projection";
    nonempty(OP, t)?;
    rank(OP, t, 1, "[N] noise levels")?;
    rank(OP, y, 2, "[N, 2·embedding_size]")?;
    dtype_is(OP, t, DType::F32, "noise levels are f32")?;
    super::same_dtype(OP, y, w)?;
    let half = w.numel();
    if y.shape() != [t.shape()[0], 2 * half] {
        return Err(shape_err(
            OP,
            y,
            format!("expected {:?}", [t.shape()[0], 2 * half]),
        ));
    }
    let gpu = rec.gpu();
    let p = Params {
        n: u32_param(OP, "output elements", y.numel())?,
        dim: (2 * half) as u32,
        half: half as u32,
        flip: flip_sin_to_cos as u32,
        neg_log_max_period: 0.0,
        shift: 0.0,
        scale: 1.0,
        row0: 0,
        rows: 0,
        _p0: 0,
        _p1: 0,
        _p2: 0,
    };
    let g = grid_1d(gpu, OP, (y.numel() as u64).div_ceil(WG_1D as u64))?;
    let binds = [
        ("t", t.binding(gpu, OP)?),
        ("y", y.binding(gpu, OP)?),
        ("w", w.binding(gpu, OP)?),
    ];
    rec.dispatch(&fourier_key(y.dtype(), log), &p, &binds, g)?;
    Ok(())
}

/// Embedding lookup (`nn.Embedding`): y[n, :] = table[label[n], :]. `labels` is f32 [N] holding
/// small integers; the caller validates them against the table's rows before writing. A table
/// larger than one storage binding (CLIP's f32 token embedding, 49408 × 768 = 145 MiB) is bound
/// in row ranges, one dispatch each; every dispatch writes the rows whose label it holds.
pub fn embedding_lookup(
    rec: &mut Recorder<'_>,
    labels: &Tensor,
    table: &Tensor,
    y: &Tensor,
) -> Result<()> {
    const OP: &str = "embedding_lookup";
    nonempty(OP, labels)?;
    rank(OP, labels, 1, "[N] class labels")?;
    rank(OP, table, 2, "[num_embeddings, dim]")?;
    dtype_is(OP, labels, DType::F32, "labels are stored as f32 integers")?;
    super::same_dtype(OP, table, y)?;
    let dim = table.shape()[1];
    if y.shape() != [labels.shape()[0], dim] {
        return Err(shape_err(
            OP,
            y,
            format!("expected {:?}", [labels.shape()[0], dim]),
        ));
    }
    let gpu = rec.gpu();
    let g = grid_1d(gpu, OP, (y.numel() as u64).div_ceil(WG_1D as u64))?;
    let chunks = table.row_chunk_bindings(gpu, OP)?;
    let lb = labels.binding(gpu, OP)?;
    let yb = y.binding(gpu, OP)?;
    for (row0, rows, tb) in chunks {
        let p = Params {
            n: u32_param(OP, "output elements", y.numel())?,
            dim: dim as u32,
            half: 0,
            flip: 0,
            neg_log_max_period: 0.0,
            shift: 0.0,
            scale: 0.0,
            row0: u32_param(OP, "table rows", row0)?,
            rows: u32_param(OP, "table rows", rows)?,
            _p0: 0,
            _p1: 0,
            _p2: 0,
        };
        let binds = [("label", lb.clone()), ("table", tb), ("y", yb.clone())];
        rec.dispatch(&lookup_key(y.dtype()), &p, &binds, g)?;
    }
    Ok(())
}
