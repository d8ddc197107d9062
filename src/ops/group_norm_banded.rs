//! GroupNorm over a tensor held as row bands (`shaders/group_norm.wgsl` with STATS / SHARED):
//! each band `[N, C, 1 + rows + 1, W]` carries one halo row above and below its interior rows.
//! [`group_norm_stats`] writes a band's partial statistics of its interior into one slot of a
//! `[T, N·G, 4]` f32 tensor; [`group_norm_shared`] normalises a band with the statistics of
//! all T slots merged (Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for
//! computing sample variances", 1979), so the bands together equal `torch.nn.GroupNorm` of the
//! whole tensor to rounding. Used where one activation exceeds the adapter's binding limit
//! (`nn::vae_bands`).

use super::group_norm::{default_variant, key, Params};
use super::{dtype_is, grid_1d, nonempty, rank, same_dtype, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::tensor::{DType, Tensor};

fn groups_ok(op: &'static str, x: &Tensor, groups: usize) -> Result<(usize, usize, usize)> {
    nonempty(op, x)?;
    rank(op, x, 4, "[N, C, H, W]")?;
    let (n, c) = (x.shape()[0], x.shape()[1]);
    if groups == 0 || c % groups != 0 {
        return Err(Error::Argument {
            op,
            arg: "num_groups",
            reason: format!(
                "{groups} groups do not divide the {c} channels of `{}`",
                x.name()
            ),
        });
    }
    Ok((n, c, x.shape()[2] * x.shape()[3]))
}

fn check_stats(op: &'static str, stats: &Tensor, count: usize) -> Result<usize> {
    dtype_is(op, stats, DType::F32, "statistics are f32")?;
    let s = stats.shape();
    if s.len() != 3 || s[1] != count || s[2] != 4 || s[0] == 0 {
        return Err(shape_err(
            op,
            stats,
            format!("expected [bands, {count}, 4]"),
        ));
    }
    Ok(s[0])
}

/// Writes slot `slot` of `stats` [T, N·G, 4]: per (sample, group), the (mean, M2, count) of
/// the rows `row0 .. row0 + rows` of `x` [N, C, H, W] (the band's interior).
pub fn group_norm_stats(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    row0: usize,
    rows: usize,
    stats: &Tensor,
    slot: usize,
    groups: usize,
) -> Result<()> {
    const OP: &str = "group_norm_stats";
    let (n, c, hw) = groups_ok(OP, x, groups)?;
    let count = n * groups;
    let slots = check_stats(OP, stats, count)?;
    let (h, w) = (x.shape()[2], x.shape()[3]);
    if rows == 0 || row0 + rows > h || slot >= slots {
        return Err(Error::Argument {
            op: OP,
            arg: "interior",
            reason: format!(
                "rows {row0}..{} of `{}` (height {h}) into slot {slot} of {slots}",
                row0 + rows,
                x.name()
            ),
        });
    }
    let gpu = rec.gpu();
    let p = Params::new(
        c as u32,
        u32_param(OP, "H·W", hw)?,
        groups as u32,
        u32_param(OP, "N·groups", count)?,
        0.0,
        [
            (row0 * w) as u32,
            (rows * w) as u32,
            slot as u32,
            slots as u32,
        ],
    );
    let binds = [
        ("x", x.binding(gpu, OP)?),
        ("stats", stats.binding(gpu, OP)?),
    ];
    let g = grid_1d(gpu, OP, count as u64)?;
    let k = key(x.dtype(), false, default_variant(gpu.info())).flag("STATS", true);
    rec.dispatch(&k, &p, &binds, g)?;
    Ok(())
}

/// y = GroupNorm(x) · gamma + beta (then SiLU if `silu`) over every row of the band `x`, with
/// the mean and variance of all bands' slots in `stats` (as [`group_norm_stats`] wrote them).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_shared(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    stats: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Result<()> {
    const OP: &str = "group_norm_shared";
    let (n, c, hw) = groups_ok(OP, x, groups)?;
    for t in [gamma, beta, y] {
        same_dtype(OP, x, t)?;
    }
    if y.shape() != x.shape() {
        return Err(shape_err(OP, y, format!("expected {:?}", x.shape())));
    }
    for t in [gamma, beta] {
        if t.numel() != c {
            return Err(shape_err(OP, t, format!("expected [{c}]")));
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Argument {
            op: OP,
            arg: "eps",
            reason: format!("{eps} is not a finite non-negative number"),
        });
    }
    let count = n * groups;
    let slots = check_stats(OP, stats, count)?;
    let gpu = rec.gpu();
    let p = Params::new(
        c as u32,
        u32_param(OP, "H·W", hw)?,
        groups as u32,
        u32_param(OP, "N·groups", count)?,
        eps,
        [0, 0, 0, slots as u32],
    );
    let binds = [
        ("x", x.binding(gpu, OP)?),
        ("gamma", gamma.binding(gpu, OP)?),
        ("beta", beta.binding(gpu, OP)?),
        ("y", y.binding(gpu, OP)?),
        ("stats", stats.binding(gpu, OP)?),
    ];
    let g = grid_1d(gpu, OP, count as u64)?;
    let k = key(x.dtype(), silu, default_variant(gpu.info())).flag("SHARED", true);
    rec.dispatch(&k, &p, &binds, g)?;
    Ok(())
}
