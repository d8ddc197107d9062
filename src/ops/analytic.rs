//! The closed-form denoiser of an isotropic Gaussian mixture (`shaders/analytic.wgsl`): data
//! x0 ~ Σ_k w_k N(μ_k, s_k² I), model input x = α·x0 + σ·ε; writes E[x0 | x] in the requested
//! parameterisation. The analytic models the solver tests converge against run on it.

use super::{dtype_is, grid_1d, rank, same_dtype, same_shape, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Components the kernel holds.
pub const MAX_COMPONENTS: usize = 8;

/// What the kernel writes (a model's parameterisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// ε.
    Epsilon,
    /// x0.
    Sample,
    /// v = α ε − σ x0.
    V,
    /// ε − x0 (rectified flow velocity).
    Flow,
    /// ∇ log p = −ε/σ.
    Score,
}

impl Output {
    const ALL: [Output; 5] = [
        Output::Epsilon,
        Output::Sample,
        Output::V,
        Output::Flow,
        Output::Score,
    ];

    fn flag(self) -> &'static str {
        match self {
            Output::Epsilon => "PRED_EPS",
            Output::Sample => "PRED_X0",
            Output::V => "PRED_V",
            Output::Flow => "PRED_FLOW",
            Output::Score => "PRED_SCORE",
        }
    }
}

/// The mixture's scalar parameters at one time.
#[derive(Debug, Clone, Copy)]
pub struct Mixture<'a> {
    /// Mixture weights w_k (positive).
    pub weights: &'a [f64],
    /// Component variances s_k².
    pub variances: &'a [f64],
    pub alpha: f64,
    pub sigma: f64,
}

params! {
    /// `#uniform Params` of `shaders/analytic.wgsl`.
    struct Params {
        /// samples
        n: u32,
        /// dimensions per sample
        d: u32,
        /// components (≤ 8)
        k: u32,
        _p0: u32,
        alpha: f32,
        sigma: f32,
        _p1: u32,
        _p2: u32,
        /// log w_k
        logw: [[f32; 4]; 2],
        /// s_k²
        s2: [[f32; 4]; 2],
    }
}

/// Workgroup size for `d` dimensions per sample: a power of two from 8 to 256 (one workgroup per
/// sample, so small samples must not idle 256 invocations each).
fn workgroup(d: usize) -> u32 {
    (d.next_power_of_two() as u32).clamp(8, WG_1D)
}

fn key(dt: DType, out: Output, wg: u32) -> KernelKey {
    KernelKey::new::<Params>("analytic", "main", dt, [wg, 1, 1]).flag(out.flag(), true)
}

/// Every variant.
pub fn variants(dt: DType) -> Vec<KernelKey> {
    Output::ALL
        .iter()
        .flat_map(|&o| [8, WG_1D].map(|wg| key(dt, o, wg)))
        .collect()
}

/// Records the denoiser on `x` [N, ...] with component means `means` [K, D] (f32), writing `y`
/// (x's shape and dtype).
pub fn gaussian_mixture(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    means: &Tensor,
    y: &Tensor,
    out: Output,
    m: &Mixture<'_>,
) -> Result<()> {
    const OP: &str = "analytic model";
    super::nonempty(OP, x)?;
    same_shape(OP, x, y)?;
    same_dtype(OP, x, y)?;
    rank(OP, means, 2, "[components, dimensions]")?;
    dtype_is(OP, means, DType::F32, "component means are f32")?;
    let k = m.weights.len();
    if k == 0 || k > MAX_COMPONENTS || m.variances.len() != k {
        return Err(Error::Argument {
            op: OP,
            arg: "components",
            reason: format!(
                "{k} weights and {} variances (1..={MAX_COMPONENTS} components, one of each)",
                m.variances.len()
            ),
        });
    }
    let n = x.shape()[0];
    let d = x.numel() / n;
    if means.shape() != [k, d] {
        return Err(shape_err(
            OP,
            means,
            format!("[{k}, {d}] (components × dimensions)"),
        ));
    }
    let mut p = Params {
        n: u32_param(OP, "samples", n)?,
        d: u32_param(OP, "dimensions", d)?,
        k: k as u32,
        _p0: 0,
        alpha: m.alpha as f32,
        sigma: m.sigma as f32,
        _p1: 0,
        _p2: 0,
        logw: [[0.0; 4]; 2],
        s2: [[0.0; 4]; 2],
    };
    for i in 0..k {
        p.logw[i / 4][i % 4] = m.weights[i].ln() as f32;
        p.s2[i / 4][i % 4] = m.variances[i] as f32;
    }
    let gpu = rec.gpu();
    let grid = grid_1d(gpu, OP, n as u64)?;
    let binds = [
        ("x", x.binding(gpu, OP)?),
        ("mu", means.binding(gpu, OP)?),
        ("y", y.binding(gpu, OP)?),
    ];
    rec.dispatch(&key(x.dtype(), out, workgroup(d)), &p, &binds, grid)?;
    Ok(())
}
