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
    key_wg(dt, silu, WG)
}

/// The default workgroup size: 64 on CPU adapters (1.10× on a [8,128,64,64] GroupNorm+SiLU on
/// lavapipe, benches/README.md: barrier trees are expensive there), 256 elsewhere.
pub fn default_wg(device: wgpu::DeviceType) -> u32 {
    if device == wgpu::DeviceType::Cpu {
        64
    } else {
        WG
    }
}

/// The key with an explicit workgroup size (a power of two; 256 by default, 64 is the other
/// tuning candidate: shallower barrier trees, fewer idle invocations on small groups).
pub fn key_wg(dt: DType, silu: bool, wg: u32) -> KernelKey {
    KernelKey::new("group_norm", "main", dt, [wg, 1, 1]).flag("SILU", silu)
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for wg in [WG, 64] {
        v.push(key_wg(dt, false, wg));
        v.push(key_wg(dt, true, wg));
    }
    v
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
    group_norm_wg(rec, x, gamma, beta, y, groups, eps, silu, None)
}

/// [`group_norm`] with an explicit workgroup size (`None`: [`default_wg`], or the adapter's
/// measured winner of 256 / 64 when tuning is on).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_wg(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
    wg: Option<u32>,
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
    let dt = x.dtype();
    let wg = if let Some(w) = wg {
        if !w.is_power_of_two() || w > 1024 {
            return Err(Error::Argument {
                op: OP,
                arg: "workgroup",
                reason: format!("{w} is not a power of two ≤ 1024"),
            });
        }
        w
    } else if gpu.tuner().enabled() {
        let tkey = format!("group_norm|{dt:?}|{n}x{c}x{hw}|g{groups}|silu{silu}");
        let cands: &[&'static str] = if default_wg(gpu.info().device_type) == 64 {
            &["wg64", "wg256"]
        } else {
            &["wg256", "wg64"]
        };
        let pick = gpu.tuner().pick(&tkey, cands, &mut |cand| {
            let mut r = gpu.recorder();
            let k = key_wg(dt, silu, if cand == "wg64" { 64 } else { WG });
            r.dispatch(&k, bytemuck::bytes_of(&p), binds.clone(), g)?;
            let one = r.finish()?;
            crate::gpu::tuning::time_best(gpu, &|| {
                one.submit(gpu);
                Ok(())
            })
        })?;
        if pick == "wg64" {
            64
        } else {
            WG
        }
    } else {
        default_wg(gpu.info().device_type)
    };
    rec.dispatch(&key_wg(dt, silu, wg), bytemuck::bytes_of(&p), binds, g)?;
    Ok(())
}
