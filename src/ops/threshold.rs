//! Dynamic thresholding (Saharia et al., "Photorealistic Text-to-Image Diffusion Models with
//! Deep Language Understanding" (Imagen), NeurIPS 2022; the MR Sampler's data solver), in place
//! with an exact torch.quantile-style quantile per sample (`shaders/threshold.wgsl`).

use super::{dtype_is, grid_1d, same_shape, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/threshold.wgsl`.
    struct Params {
        /// D
        per_sample: u32,
        /// floor(ratio·(D − 1))
        rank: u32,
        /// ratio·(D − 1) − rank
        frac: f32,
        max_value: f32,
    }
}

fn key(shift: bool) -> KernelKey {
    KernelKey::new::<Params>("threshold", "main", DType::F32, [WG_1D, 1, 1]).flag("SHIFT", shift)
}

/// Both variants (f32 only; other dtypes request none).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    match dt {
        DType::F32 => vec![key(false), key(true)],
        DType::F16 | DType::I8 => vec![],
    }
}

/// Per sample of `buf` [N, ...] (f32): v = buf (+ shift), s = clamp(quantile(|v|, ratio), 1,
/// max), buf = clamp(v, −s, s)/s (− shift).
pub fn dynamic_threshold(
    rec: &mut Recorder<'_>,
    buf: &Tensor,
    shift: Option<&Tensor>,
    ratio: f64,
    max: f64,
) -> Result<()> {
    const OP: &str = "dynamic thresholding";
    super::nonempty(OP, buf)?;
    dtype_is(
        OP,
        buf,
        DType::F32,
        "thresholding runs on f32 state buffers",
    )?;
    if let Some(s) = shift {
        same_shape(OP, buf, s)?;
        dtype_is(OP, s, DType::F32, "thresholding runs on f32 state buffers")?;
    }
    if !(0.0..=1.0).contains(&ratio) || max.is_nan() || max < 1.0 {
        return Err(Error::Argument {
            op: OP,
            arg: "ratio",
            reason: format!("ratio {ratio} must lie in [0, 1] and max {max} be ≥ 1"),
        });
    }
    let n = buf.shape()[0];
    let d = buf.numel() / n;
    let pos = ratio * (d - 1) as f64;
    let p = Params {
        per_sample: u32_param(OP, "elements per sample", d)?,
        rank: pos.floor() as u32,
        frac: (pos - pos.floor()) as f32,
        max_value: max as f32,
    };
    let gpu = rec.gpu();
    let mut binds = vec![("buf", buf.binding(gpu, OP)?)];
    if let Some(s) = shift {
        binds.push(("shift", s.binding(gpu, OP)?));
    }
    let grid = grid_1d(gpu, OP, n as u64)?;
    rec.dispatch(&key(shift.is_some()), &p, &binds, grid)?;
    Ok(())
}
