//! GroupNorm with optional fused SiLU (`shaders/group_norm.wgsl`), as `torch.nn.GroupNorm`
//! (biased variance, eps inside the square root) followed by `F.silu` when asked.

use super::{grid_1d, nonempty, same_dtype, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder};
use crate::tensor::{DType, Tensor};
use bytemuck::{Pod, Zeroable};

/// Invocations per workgroup (one workgroup per sample and group).
pub const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    c: u32,
    hw: u32,
    groups: u32,
    count: u32,
    eps: f32,
    _p: [u32; 3],
}

/// The kernel key for a variant.
pub fn key(dt: DType, silu: bool) -> KernelKey {
    KernelKey::new("group_norm", "main", dt, [WG, 1, 1]).flag("SILU", silu)
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![key(dt, false), key(dt, true)]
}

/// y = GroupNorm(x) · gamma + beta (then SiLU if `silu`). x, y [N, C, ...]; gamma, beta [C].
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Result<()> {
    const OP: &str = "group_norm";
    nonempty(OP, x)?;
    for t in [gamma, beta, y] {
        same_dtype(OP, x, t)?;
    }
    if x.shape().len() < 2 {
        return Err(shape_err(OP, x, "expected [N, C, ...]".into()));
    }
    if y.shape() != x.shape() {
        return Err(shape_err(OP, y, format!("expected {:?}", x.shape())));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let hw: usize = x.shape()[2..].iter().product();
    if groups == 0 || c % groups != 0 {
        return Err(Error::Argument {
            op: OP,
            arg: "num_groups",
            reason: format!(
                "{groups} groups do not divide the {c} channels of `{}`",
                x.name()
            ),
        });
    }
    for t in [gamma, beta] {
        if t.numel() != c {
            return Err(shape_err(
                OP,
                t,
                format!("expected [{c}] (one per channel of `{}`)", x.name()),
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
    let gpu = rec.gpu();
    let count = n * groups;
    let p = Params {
        c: c as u32,
        hw: u32_param(OP, "H·W", hw)?,
        groups: groups as u32,
        count: u32_param(OP, "N·groups", count)?,
        eps,
        _p: [0; 3],
    };
    let binds = vec![
        x.binding(gpu, OP)?,
        gamma.binding(gpu, OP)?,
        beta.binding(gpu, OP)?,
        y.binding(gpu, OP)?,
    ];
    let g = grid_1d(gpu, OP, count as u64)?;
    rec.dispatch(&key(x.dtype(), silu), bytemuck::bytes_of(&p), binds, g)?;
    Ok(())
}
