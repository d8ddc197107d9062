//! Row softmax over the last dimension with an input scale (`shaders/softmax.wgsl`); with
//! batched [`super::gemm`] it forms unfused attention.

use super::{grid_1d, nonempty, same_dtype, same_shape, u32_param};
use crate::error::{Error, Result};
use crate::gpu::tuning::{parse_variant, select, time_recorded, Variant};
use crate::gpu::{params, GpuInfo, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Invocations per workgroup (one workgroup per row).
pub const WG: u32 = 256;
/// Rows per workgroup of the row-per-invocation layout.
pub const WG_ROWS: u32 = 64;

/// Which kernel layout computes the rows; its `Display` is the name the tuning cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxKernel {
    /// One workgroup per row with tree reductions: "workgroup".
    Workgroup,
    /// One invocation per row, no barriers: "row-per-thread".
    RowPerThread,
    /// One subgroup per row with subgroup reductions (needs subgroups; see [`subgroup_ok`]):
    /// "subgroup".
    Subgroup,
}

impl SoftmaxKernel {
    /// Every layout.
    pub const ALL: [SoftmaxKernel; 3] = [
        SoftmaxKernel::Workgroup,
        SoftmaxKernel::RowPerThread,
        SoftmaxKernel::Subgroup,
    ];
}

impl std::fmt::Display for SoftmaxKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SoftmaxKernel::Workgroup => "workgroup",
            SoftmaxKernel::RowPerThread => "row-per-thread",
            SoftmaxKernel::Subgroup => "subgroup",
        })
    }
}

impl std::str::FromStr for SoftmaxKernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_variant(s)
    }
}

impl Variant for SoftmaxKernel {
    const OP: &'static str = "softmax";
    /// The row length.
    type Ctx = usize;
    fn all() -> Vec<Self> {
        Self::ALL.to_vec()
    }
    fn default_for(info: &GpuInfo, cols: &usize) -> Self {
        default_variant(info, *cols)
    }
    fn unsupported(self, info: &GpuInfo, _: &usize) -> Option<String> {
        (self == SoftmaxKernel::Subgroup && !subgroup_ok(info))
            .then(|| "needs subgroups the adapter does not have".into())
    }
}

/// Invocations per workgroup of the subgroup layout (a workgroup holds WG_SUBGROUP / subgroup
/// size rows).
pub const WG_SUBGROUP: u32 = 64;

/// Whether the adapter can run the subgroup layout: it has subgroups and a workgroup of
/// [`WG_SUBGROUP`] splits into full ones.
pub fn subgroup_ok(info: &GpuInfo) -> bool {
    let (min, max) = info.subgroup_size;
    info.subgroups
        && min > 0
        && max <= WG_SUBGROUP
        && WG_SUBGROUP % max == 0
        && WG_SUBGROUP % min == 0
}

/// The default layout: rows per invocation on CPU adapters when rows are short
/// (barriers are expensive there: 34× faster on a [6272, 196] attention softmax on lavapipe,
/// see benches/README.md); elsewhere a subgroup per row when the adapter has subgroups and rows
/// are short (≤ 4096), else workgroup reductions.
pub fn default_variant(info: &GpuInfo, cols: usize) -> SoftmaxKernel {
    if info.device_type == wgpu::DeviceType::Cpu && cols <= 4096 {
        SoftmaxKernel::RowPerThread
    } else if cols <= 4096 && subgroup_ok(info) {
        SoftmaxKernel::Subgroup
    } else {
        SoftmaxKernel::Workgroup
    }
}

params! {
    /// `#uniform Params` of `shaders/softmax.wgsl`.
    struct Params {
        rows: u32,
        cols: u32,
        scale: f32,
        /// causal mask: 0 = none; else row r keeps columns j ≤ r % causal_rows + causal_off
        causal_rows: u32,
        causal_off: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

/// A causal mask over the rows of a softmax: the rows are blocks of `rows` consecutive
/// queries (one block per batch and head) whose first query has index `offset`; query i keeps
/// the keys j ≤ i (masked entries are written as 0), as CLIP's text encoder masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Causal {
    pub rows: usize,
    pub offset: usize,
}

/// The kernel key.
pub fn key(dt: DType, kernel: SoftmaxKernel) -> KernelKey {
    match kernel {
        SoftmaxKernel::Workgroup => KernelKey::new::<Params>("softmax", "main", dt, [WG, 1, 1]),
        SoftmaxKernel::RowPerThread => {
            KernelKey::new::<Params>("softmax", "main", dt, [WG_ROWS, 1, 1])
                .flag("ROW_PER_THREAD", true)
        }
        SoftmaxKernel::Subgroup => {
            KernelKey::new::<Params>("softmax", "main", dt, [WG_SUBGROUP, 1, 1])
                .flag("SUBGROUP", true)
        }
    }
}

/// All kernel keys (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    SoftmaxKernel::ALL.iter().map(|&k| key(dt, k)).collect()
}

/// y = softmax(scale · x) along the last dimension, in the adapter's default layout (or, with
/// tuning on, its measured winner).
pub fn softmax(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor, scale: f32) -> Result<()> {
    softmax_variant(rec, x, y, scale, None)
}

/// [`softmax`] with an optional causal mask ([`Causal`]) and an explicit layout (`None`: the
/// default or tuned one).
pub fn softmax_masked(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    scale: f32,
    causal: Option<Causal>,
    variant: Option<SoftmaxKernel>,
) -> Result<()> {
    softmax_impl(rec, x, y, scale, causal, variant)
}

/// [`softmax`] in an explicit layout (an error when the adapter cannot run it); `None` as
/// [`softmax`].
pub fn softmax_variant(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    scale: f32,
    variant: Option<SoftmaxKernel>,
) -> Result<()> {
    softmax_impl(rec, x, y, scale, None, variant)
}

fn softmax_impl(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    scale: f32,
    causal: Option<Causal>,
    variant: Option<SoftmaxKernel>,
) -> Result<()> {
    const OP: &str = "softmax";
    nonempty(OP, x)?;
    same_dtype(OP, x, y)?;
    same_shape(OP, x, y)?;
    let cols = *x.shape().last().unwrap_or(&1);
    let rows = x.numel() / cols;
    if let Some(c) = causal {
        if c.rows == 0 || rows % c.rows != 0 {
            return Err(Error::Argument {
                op: OP,
                arg: "causal",
                reason: format!(
                    "blocks of {} query rows do not divide the {rows} rows of `{}`",
                    c.rows,
                    x.name()
                ),
            });
        }
    }
    let gpu = rec.gpu();
    let tuning_key = || format!("{:?}|{rows}x{cols}", x.dtype());
    let kernel = select(gpu, variant, &cols, tuning_key, &mut |c| {
        time_recorded(gpu, &mut |r| softmax_impl(r, x, y, scale, causal, Some(c)))
    })?;
    let (causal_rows, causal_off) = causal.map_or((0, 0), |c| (c.rows, c.offset));
    let p = Params {
        rows: u32_param(OP, "rows", rows)?,
        cols: u32_param(OP, "cols", cols)?,
        scale,
        causal_rows: u32_param(OP, "causal rows", causal_rows)?,
        causal_off: u32_param(OP, "causal offset", causal_off)?,
        _p0: 0,
        _p1: 0,
        _p2: 0,
    };
    let groups = match kernel {
        SoftmaxKernel::Workgroup => rows as u64,
        SoftmaxKernel::RowPerThread => (rows as u64).div_ceil(WG_ROWS as u64),
        SoftmaxKernel::Subgroup => {
            // Rows per workgroup at the largest subgroup size (the fewest rows per group).
            let per = (WG_SUBGROUP / gpu.info().subgroup_size.1) as u64;
            (rows as u64).div_ceil(per)
        }
    };
    let g = grid_1d(gpu, OP, groups)?;
    let binds = [("x", x.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)];
    rec.dispatch(&key(x.dtype(), kernel), &p, &binds, g)?;
    Ok(())
}
