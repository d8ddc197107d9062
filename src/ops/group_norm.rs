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

/// Workgroup sizes the variants use (256 is [`WG`]).
pub const WORKGROUPS: [u32; 3] = [16, 64, WG];

/// A kernel variant: workgroup size (a power of two; 256, or 64 / 16 — shallower reductions, fewer
/// idle invocations on small groups) and whether the reduction goes through subgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub wg: u32,
    pub subgroup: bool,
}

impl Variant {
    /// The name the tuning cache stores.
    pub fn name(&self) -> &'static str {
        match (self.wg, self.subgroup) {
            (16, false) => "wg16",
            (16, true) => "wg16-sg",
            (64, false) => "wg64",
            (64, true) => "wg64-sg",
            (WG, false) => "wg256",
            (WG, true) => "wg256-sg",
            _ => "other",
        }
    }
}

/// The kernel key for a variant.
pub fn key(dt: DType, silu: bool, v: Variant) -> KernelKey {
    KernelKey::new("group_norm", "main", dt, [v.wg, 1, 1])
        .flag("SILU", silu)
        .flag("SUBGROUP", v.subgroup)
}

/// Whether the adapter can run the subgroup reduction with `wg` invocations (every subgroup
/// full: its largest subgroup size divides the workgroup).
pub fn subgroup_ok(info: &crate::gpu::GpuInfo, wg: u32) -> bool {
    let max = info.subgroup_size.1;
    info.subgroups && max > 0 && max <= wg && wg % max == 0
}

/// The default variant. CPU adapters: 16 invocations through subgroups where the adapter has
/// them (lavapipe, same run, vs 64 without: 1.03–1.7× across Fashion-MNIST and CIFAR shapes —
/// fewer idle lanes and barrier rounds; benches/README.md). Elsewhere 256, through subgroups
/// when available.
pub fn default_variant(info: &crate::gpu::GpuInfo) -> Variant {
    let wg = if info.device_type == wgpu::DeviceType::Cpu {
        16
    } else {
        WG
    };
    Variant {
        wg,
        subgroup: subgroup_ok(info, wg),
    }
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for wg in WORKGROUPS {
        for subgroup in [false, true] {
            for silu in [false, true] {
                v.push(key(dt, silu, Variant { wg, subgroup }));
            }
        }
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
    group_norm_variant(rec, x, gamma, beta, y, groups, eps, silu, None)
}

/// [`group_norm`] with an explicit kernel variant (`None`: [`default_variant`], or the
/// adapter's measured winner when tuning is on).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_variant(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    groups: usize,
    eps: f32,
    silu: bool,
    variant: Option<Variant>,
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
    let info = gpu.info();
    let v = if let Some(v) = variant {
        if !v.wg.is_power_of_two() || v.wg > 1024 {
            return Err(Error::Argument {
                op: OP,
                arg: "workgroup",
                reason: format!("{} is not a power of two ≤ 1024", v.wg),
            });
        }
        if v.subgroup && !subgroup_ok(info, v.wg) {
            return Err(Error::Argument {
                op: OP,
                arg: "subgroup",
                reason: format!(
                    "the adapter cannot reduce through subgroups in {} invocations",
                    v.wg
                ),
            });
        }
        v
    } else if gpu.tuner().enabled() {
        let tkey = format!("group_norm|{dt:?}|{n}x{c}x{hw}|g{groups}|silu{silu}");
        let default = default_variant(info);
        let mut cands = vec![default];
        for wg in WORKGROUPS {
            for subgroup in [false, true] {
                let v = Variant { wg, subgroup };
                if v != default && (!subgroup || subgroup_ok(info, wg)) {
                    cands.push(v);
                }
            }
        }
        let names: Vec<&'static str> = cands.iter().map(|v| v.name()).collect();
        let pick = gpu.tuner().pick(&tkey, &names, &mut |cand| {
            let i = names.iter().position(|n| *n == cand).unwrap_or(0);
            crate::gpu::tuning::time_recorded(gpu, &mut |r| {
                let k = key(dt, silu, cands[i]);
                r.dispatch(&k, bytemuck::bytes_of(&p), binds.clone(), g)
                    .map(|_| ())
            })
        })?;
        cands[names.iter().position(|n| *n == pick).unwrap_or(0)]
    } else {
        default_variant(info)
    };
    rec.dispatch(&key(dt, silu, v), bytemuck::bytes_of(&p), binds, g)?;
    Ok(())
}
