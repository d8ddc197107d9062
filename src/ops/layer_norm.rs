//! LayerNorm over the last dimension (`shaders/layer_norm.wgsl`), as `torch.nn.LayerNorm`
//! (Ba, Kiros & Hinton, 2016): population variance, eps inside the square root, optional
//! per-feature weight and bias (`elementwise_affine=False` has neither). f32 statistics.

use super::{grid_1d, nonempty, same_dtype, same_shape, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Rows per workgroup (one invocation per row).
pub const WG: u32 = 64;

params! {
    /// `#uniform Params` of `shaders/layer_norm.wgsl`.
    struct Params {
        /// rows (product of all dims but the last)
        rows: u32,
        /// features (the last dim)
        cols: u32,
        eps: f32,
        _p0: u32,
    }
}

/// The kernel key (`weight`, `bias`: whether the affine terms are bound).
pub fn key(dt: DType, weight: bool, bias: bool) -> KernelKey {
    KernelKey::new::<Params>("layer_norm", "main", dt, [WG, 1, 1])
        .flag("WEIGHT", weight)
        .flag("BIAS", bias)
}

/// All kernel keys (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for w in [false, true] {
        for b in [false, true] {
            v.push(key(dt, w, b));
        }
    }
    v
}

/// y = (x − mean) / √(var + eps) · weight + bias over the last dimension of x (any rank);
/// weight and bias [F] are optional.
pub fn layer_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    y: &Tensor,
    eps: f32,
) -> Result<()> {
    const OP: &str = "layer_norm";
    nonempty(OP, x)?;
    same_dtype(OP, x, y)?;
    same_shape(OP, x, y)?;
    let cols = *x.shape().last().unwrap_or(&1);
    let rows = x.numel() / cols;
    for t in [weight, bias].into_iter().flatten() {
        same_dtype(OP, x, t)?;
        if t.shape() != [cols] {
            return Err(shape_err(
                OP,
                t,
                format!("expected [{cols}] (one per feature of `{}`)", x.name()),
            ));
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Argument {
            op: OP,
            arg: "eps",
            reason: format!("{eps} is not a finite non-negative number"),
        });
    }
    if x.shares_storage(y) {
        return Err(Error::Argument {
            op: OP,
            arg: "y",
            reason: format!("`{}` shares storage with the input", y.name()),
        });
    }
    let gpu = rec.gpu();
    let p = Params {
        rows: u32_param(OP, "rows", rows)?,
        cols: u32_param(OP, "features", cols)?,
        eps,
        _p0: 0,
    };
    let mut binds = vec![("x", x.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)];
    if let Some(w) = weight {
        binds.push(("weight", w.binding(gpu, OP)?));
    }
    if let Some(b) = bias {
        binds.push(("bias", b.binding(gpu, OP)?));
    }
    let g = grid_1d(gpu, OP, (rows as u64).div_ceil(WG as u64))?;
    let k = key(x.dtype(), weight.is_some(), bias.is_some());
    rec.dispatch(&k, &p, &binds, g)?;
    Ok(())
}
