//! GroupNorm with optional fused SiLU (`shaders/group_norm.wgsl`), as `torch.nn.GroupNorm`
//! (biased variance, eps inside the square root) followed by `F.silu` when asked.

use super::{grid_1d, nonempty, same_dtype, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::tuning::{parse_variant, select, time_recorded, Variant};
use crate::gpu::{params, GpuInfo, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Invocations per workgroup (one workgroup per sample and group).
pub const WG: u32 = 256;

params! {
    /// `#uniform Params` of `shaders/group_norm.wgsl`.
    pub(crate) struct Params {
        /// channels
        c: u32,
        /// H·W
        hw: u32,
        /// G (C % G == 0, host checked)
        groups: u32,
        /// N·G workgroups that do work
        count: u32,
        eps: f32,
        /// STATS: first element of the band's interior in each channel's H·W
        win0: u32,
        /// STATS: elements of that interior per channel
        winlen: u32,
        /// STATS: the band's slot in `stats`
        slot: u32,
        /// SHARED: bands in `stats`
        slots: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

impl Params {
    /// The parameters; `[win0, winlen, slot, slots]` are read only by the banded passes
    /// (`ops::group_norm_banded`: STATS / SHARED), zeros otherwise.
    pub(crate) fn new(
        c: u32,
        hw: u32,
        groups: u32,
        count: u32,
        eps: f32,
        [win0, winlen, slot, slots]: [u32; 4],
    ) -> Self {
        Params {
            c,
            hw,
            groups,
            count,
            eps,
            win0,
            winlen,
            slot,
            slots,
            _p0: 0,
            _p1: 0,
            _p2: 0,
        }
    }
}

/// Workgroup sizes the variants use (256 is [`WG`]).
pub const WORKGROUPS: [u32; 3] = [16, 64, WG];

/// A kernel variant: workgroup size (one of [`WORKGROUPS`]: 256, or 64 / 16 — shallower
/// reductions, fewer idle invocations on small groups) and whether the reduction goes through
/// subgroups. Its `Display` is the name the tuning cache stores: "wg16", "wg16-sg", … "wg256-sg".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupNormKernel {
    pub wg: u32,
    pub subgroup: bool,
}

impl std::fmt::Display for GroupNormKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sg = if self.subgroup { "-sg" } else { "" };
        write!(f, "wg{}{sg}", self.wg)
    }
}

impl std::str::FromStr for GroupNormKernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_variant(s)
    }
}

impl Variant for GroupNormKernel {
    const OP: &'static str = "group_norm";
    type Ctx = ();
    /// Every workgroup size, each without and with subgroups.
    fn all() -> Vec<Self> {
        WORKGROUPS
            .iter()
            .flat_map(|&wg| [false, true].map(|subgroup| GroupNormKernel { wg, subgroup }))
            .collect()
    }
    fn default_for(info: &GpuInfo, _: &()) -> Self {
        default_variant(info)
    }
    fn unsupported(self, info: &GpuInfo, _: &()) -> Option<String> {
        if !WORKGROUPS.contains(&self.wg) {
            Some(format!("has a workgroup size not in {WORKGROUPS:?}"))
        } else if self.subgroup && !subgroup_ok(info, self.wg) {
            Some(format!(
                "needs subgroups that split {} invocations, which the adapter does not have",
                self.wg
            ))
        } else {
            None
        }
    }
}

/// The kernel key for a variant.
pub fn key(dt: DType, silu: bool, v: GroupNormKernel) -> KernelKey {
    KernelKey::new::<Params>("group_norm", "main", dt, [v.wg, 1, 1])
        .flag("SILU", silu)
        .flag("SUBGROUP", v.subgroup)
}

/// Whether the adapter can run the subgroup reduction with `wg` invocations (every subgroup
/// full: its largest subgroup size divides the workgroup).
pub fn subgroup_ok(info: &GpuInfo, wg: u32) -> bool {
    let max = info.subgroup_size.1;
    info.subgroups && max > 0 && max <= wg && wg % max == 0
}

/// The default variant. CPU adapters: 16 invocations through subgroups where the adapter has
/// them (lavapipe, same run, vs 64 without: 1.03–1.7× across Fashion-MNIST and CIFAR shapes —
/// fewer idle lanes and barrier rounds; benches/README.md). Elsewhere 256, through subgroups
/// when available.
pub fn default_variant(info: &GpuInfo) -> GroupNormKernel {
    let wg = if info.device_type == wgpu::DeviceType::Cpu {
        16
    } else {
        WG
    };
    GroupNormKernel {
        wg,
        subgroup: subgroup_ok(info, wg),
    }
}

/// All kernel keys (for validation): every [`GroupNormKernel`], with and without SiLU, and
/// the banded ones (`ops::group_norm_banded`).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for k in GroupNormKernel::all() {
        for silu in [false, true] {
            v.push(key(dt, silu, k));
            v.push(key(dt, silu, k).flag("SHARED", true));
        }
        v.push(key(dt, false, k).flag("STATS", true));
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

/// [`group_norm`] with an explicit kernel variant (an error when the adapter cannot run it;
/// `None`: [`default_variant`], or the adapter's measured winner when tuning is on).
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
    variant: Option<GroupNormKernel>,
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
    let p = Params::new(
        c as u32,
        u32_param(OP, "H·W", hw)?,
        groups as u32,
        u32_param(OP, "N·groups", count)?,
        eps,
        [0; 4],
    );
    let binds = [
        ("x", x.binding(gpu, OP)?),
        ("gamma", gamma.binding(gpu, OP)?),
        ("beta", beta.binding(gpu, OP)?),
        ("y", y.binding(gpu, OP)?),
    ];
    let g = grid_1d(gpu, OP, count as u64)?;
    let dt = x.dtype();
    let tuning_key = || format!("{dt:?}|{n}x{c}x{hw}|g{groups}|silu{silu}");
    let v = select(gpu, variant, &(), tuning_key, &mut |cand| {
        time_recorded(gpu, &mut |r| {
            let k = key(dt, silu, cand);
            r.dispatch(&k, &p, &binds, g).map(|_| ())
        })
    })?;
    rec.dispatch(&key(dt, silu, v), &p, &binds, g)?;
    Ok(())
}
