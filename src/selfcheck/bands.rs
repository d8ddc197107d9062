//! Kernel checks of the row-band ops against the f64 CPU reference: [`crate::ops::rows`]
//! (row windows with zero fill and nearest upsampling) and [`crate::ops::group_norm_banded`]
//! (GroupNorm with statistics merged over bands), which together must equal GroupNorm of the
//! whole tensor. Tolerances as GroupNorm's (2e-5, plus the f16 output rounding); copies exact.

use super::{check, group_norm_inputs, group_norm_want, out_rtol, upload, widen, Check, TestRng};
use crate::error::Result;
use crate::nn::vae_bands::partition;
use crate::ops;
use crate::{DType, Gpu, Tensor};

/// `copy_rows(x, src_row0, factor, y, dst_row0, rows)` on random x [N, C, H, W] into a random
/// y [N, C, hd, W·factor] (rows of y outside the window keep their values), or `zero_rows`
/// when `src_row0` is None.
#[allow(clippy::too_many_arguments)]
pub fn copy_rows(
    gpu: &Gpu,
    xs: [usize; 4],
    src_row0: Option<isize>,
    factor: usize,
    hd: usize,
    dst_row0: usize,
    rows: usize,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let [n, c, h, w] = xs;
    let wd = w * factor;
    let xv = rng.values(n * c * h * w, -2.0, 2.0, dt);
    let yv = rng.values(n * c * hd * wd, -2.0, 2.0, dt);
    let x = upload(gpu, "x", &xs, &xv, dt)?;
    let y = upload(gpu, "y", &[n, c, hd, wd], &yv, dt)?;
    gpu.run(|rec| match src_row0 {
        Some(s) => ops::rows::copy_rows(rec, &x, s, factor, &y, dst_row0, rows),
        None => ops::rows::zero_rows(rec, &y, dst_row0, rows),
    })?;
    let mut want = widen(&yv);
    for nc in 0..n * c {
        for rr in 0..rows {
            for ox in 0..wd {
                let v = match src_row0 {
                    Some(s) => {
                        let sr = s + rr as isize;
                        if sr >= 0 && (sr as usize) < h * factor {
                            xv[(nc * h + sr as usize / factor) * w + ox / factor] as f64
                        } else {
                            0.0
                        }
                    }
                    None => 0.0,
                };
                want[(nc * hd + dst_row0 + rr) * wd + ox] = v;
            }
        }
    }
    Ok(check(
        format!("copy_rows {xs:?} from {src_row0:?} ×{factor} into {hd} rows at {dst_row0}, {rows} rows {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        0.0,
        0.0,
    ))
}

/// Random x [N, C, H, W] (3·U(−1, 1) + `offset`) cut into `bands` row bands with halos
/// (`copy_rows`), each band normalised by [`ops::group_norm_banded`] with the merged
/// statistics, the interiors joined: against `torch.nn.GroupNorm` of the whole x.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_banded(
    gpu: &Gpu,
    xs: [usize; 4],
    groups: usize,
    bands: usize,
    silu: bool,
    offset: f32,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let [n, c, h, w] = xs;
    let (xv, gv, bv) = group_norm_inputs(&mut TestRng(seed), xs, dt, offset);
    let x = upload(gpu, "x", &xs, &xv, dt)?;
    let gamma = upload(gpu, "gamma", &[c], &gv, dt)?;
    let beta = upload(gpu, "beta", &[c], &bv, dt)?;
    let y = Tensor::empty(gpu, "y", &xs, dt)?;
    let rows = partition(h, bands);
    let band = |name: &str, r: usize| Tensor::empty(gpu, name, &[n, c, r + 2, w], dt);
    let xb = rows
        .iter()
        .map(|&r| band("x_band", r))
        .collect::<Result<Vec<_>>>()?;
    let yb = rows
        .iter()
        .map(|&r| band("y_band", r))
        .collect::<Result<Vec<_>>>()?;
    let stats = Tensor::empty(gpu, "stats", &[bands, n * groups, 4], DType::F32)?;
    let eps = 1e-5;
    gpu.run(|rec| {
        let mut y0 = 0;
        for (t, &r) in rows.iter().enumerate() {
            ops::rows::copy_rows(rec, &x, y0 as isize - 1, 1, &xb[t], 0, r + 2)?;
            ops::group_norm_banded::group_norm_stats(rec, &xb[t], 1, r, &stats, t, groups)?;
            y0 += r;
        }
        y0 = 0;
        for (t, &r) in rows.iter().enumerate() {
            ops::group_norm_banded::group_norm_shared(
                rec, &xb[t], &gamma, &beta, &yb[t], &stats, groups, eps, silu,
            )?;
            ops::rows::copy_rows(rec, &yb[t], 1, 1, &y, y0, r)?;
            y0 += r;
        }
        Ok(())
    })?;
    let want = group_norm_want(xs, &xv, &gv, &bv, groups, eps, silu);
    Ok(check(
        format!("group_norm_banded {xs:?} G={groups} in {bands} bands silu={silu} offset {offset} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-5,
        out_rtol(dt, 2e-5),
    ))
}
