//! One element-wise Adam step (Kingma & Ba, "Adam: A Method for Stochastic Optimization",
//! ICLR 2015) as torch.optim.Adam (no weight decay, no amsgrad), `shaders/adam.wgsl`: the
//! optimiser of RED-diff (Mardani et al. 2023), whose moments stay on the GPU.

use super::{dtype_is, grid_1d, nonempty, same_shape, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/adam.wgsl`.
    struct Params {
        n: u32,
        /// lr / (1 − β1^k)
        step: f32,
        beta1: f32,
        beta2: f32,
        /// 1 / √(1 − β2^k)
        inv_sqrt_bc2: f32,
        eps: f32,
        _p0: u32,
        _p1: u32,
    }
}

/// The hyper-parameters of one step k (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// k, from 1.
    pub k: u32,
}

impl AdamStep {
    /// (lr / (1 − β1^k), 1 / √(1 − β2^k)).
    pub fn corrections(&self) -> (f64, f64) {
        let k = self.k as i32;
        (
            self.lr / (1.0 - self.beta1.powi(k)),
            1.0 / (1.0 - self.beta2.powi(k)).sqrt(),
        )
    }

    /// The step in f64 on host slices (the kernel's semantics).
    pub fn eval(&self, p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]) {
        let (step, ib) = self.corrections();
        for i in 0..p.len() {
            m[i] = self.beta1 * m[i] + (1.0 - self.beta1) * g[i];
            v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * g[i] * g[i];
            p[i] -= step * m[i] / (v[i].sqrt() * ib + self.eps);
        }
    }

    fn check(&self) -> Result<()> {
        let ok = self.k >= 1
            && self.lr.is_finite()
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2)
            && self.eps > 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::Argument {
                op: "adam",
                arg: "hyper-parameters",
                reason: format!(
                    "β in [0, 1), eps > 0, k ≥ 1 and a finite lr are required ({self:?})"
                ),
            })
        }
    }
}

fn key() -> KernelKey {
    KernelKey::new::<Params>("adam", "main", DType::F32, [WG_1D, 1, 1])
}

/// All variants (for validation); f32 only.
pub fn variants(dt: DType) -> Vec<KernelKey> {
    if dt == DType::F32 {
        vec![key()]
    } else {
        Vec::new()
    }
}

/// Records one Adam step on `p` with gradient `g` and moments `m`, `v` (all f32, one shape).
pub fn step(
    rec: &mut Recorder<'_>,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &AdamStep,
) -> Result<()> {
    const OP: &str = "adam";
    s.check()?;
    nonempty(OP, p)?;
    for t in [p, g, m, v] {
        dtype_is(OP, t, DType::F32, "Adam runs in f32")?;
        same_shape(OP, p, t)?;
    }
    let (st, ib) = s.corrections();
    let prm = Params {
        n: u32_param(OP, "elements", p.numel())?,
        step: st as f32,
        beta1: s.beta1 as f32,
        beta2: s.beta2 as f32,
        inv_sqrt_bc2: ib as f32,
        eps: s.eps as f32,
        _p0: 0,
        _p1: 0,
    };
    let gpu = rec.gpu();
    let grid = grid_1d(gpu, OP, (p.numel() as u64).div_ceil(WG_1D as u64))?;
    let binds = [
        ("theta", p.binding(gpu, OP)?),
        ("grad", g.binding(gpu, OP)?),
        ("mom1", m.binding(gpu, OP)?),
        ("mom2", v.binding(gpu, OP)?),
    ];
    rec.dispatch(&key(), &prm, &binds, grid)?;
    Ok(())
}
