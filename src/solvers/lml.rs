//! The Levenberg–Marquardt–Langevin corrector (Wang et al., "Unleashing High-Quality Image
//! Generation in Diffusion Sampling Using Second-Order Levenberg-Marquardt-Langevin", ICCV 2025;
//! the official `DDIMLMScheduler`, `DPMSolverMultistepLMScheduler` and
//! `FlowMatchEulerDiscreteLMScheduler` of zituitui/LML-diffusion-sampler).
//!
//! Each step's vector u — DDIM's ε̂ in the direction term, DPM-Solver(++)'s whole model-dependent
//! increment, flow Euler's velocity — is replaced by
//!
//!   w = u − v·⟨u, v⟩/(λ + ‖v‖²),  v = κ·u_prev + (1 − κ)·u,  then  w ← w·‖u‖/‖w‖,
//!
//! per sample (u_prev is the previous step's u; the first step has none, v = u). The official
//! code subtracts the two terms as written; at λ ≪ ‖u‖² they are nearly equal, and in f32 the
//! difference is rounding. With d = u_prev − u the same vector is, exactly,
//!
//!   w ∝ A·u + B·d,  A = (λ + κ⟨u, d⟩ + κ²‖d‖²)/D,  B = −κ(‖u‖² + κ⟨u, d⟩)/D,  D = λ + ‖v‖²
//!
//! (the numerator of A is λ + ‖v‖² − ⟨u, v⟩), which subtracts nothing large: at κ = 0 it is u
//! itself, and the program is the base sampler's. The engine computes that form on the device:
//! three compensated per-sample inner products (`Op::Dot`), the scalar coefficients
//! (`Op::Scalar`), w into a slot, ‖w‖² by a fourth inner product, and the update reads w scaled
//! by √(‖u‖²/‖w‖²) — nothing is read back.

use super::program::{combine, lin, model_input, Buf, Op, Over, Program, Sx};
use crate::error::Error;
use crate::error::Result;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::{DpmAlgorithm, DpmSolverConfig, LmlBase, LmlConfig};

/// Scalar registers: ‖u‖², ⟨u, d⟩, ‖d‖², D, A, B, ‖w‖², the final scale.
const R_UU: usize = 0;
const R_UD: usize = 1;
const R_DD: usize = 2;
const R_DEN: usize = 3;
const R_A: usize = 4;
const R_B: usize = 5;
const R_WW: usize = 6;
const R_S: usize = 7;

/// Where a corrected solver keeps u (two slots, alternating: this step's and the previous
/// one's) and d / w (one slot), after the base solver's own `first` slots.
#[derive(Clone, Copy)]
struct Slots {
    first: usize,
}

impl Slots {
    fn u(self, step: usize) -> Buf {
        Buf::Slot(self.first + step % 2)
    }
    fn prev(self, step: usize) -> Buf {
        Buf::Slot(self.first + (step + 1) % 2)
    }
    fn w(self) -> Buf {
        Buf::Slot(self.first + 2)
    }
    fn count(self) -> usize {
        self.first + 3
    }
}

/// The instructions that leave the corrected, renormalised w of step `step` in `slots.w()`
/// (u already in `slots.u(step)`, the previous u in `slots.prev(step)`) with its scale
/// √(‖u‖²/‖w‖²) in register [`R_S`]: the update then reads `(w, c, Some(R_S))`.
fn correct(lamb: f64, kappa: f64, slots: Slots, step: usize) -> Vec<Op> {
    let (u, w) = (slots.u(step), slots.w());
    let dot = |dst, a, b| Op::Dot {
        dst,
        a,
        b,
        over: Over::Sample,
    };
    let (k, l) = (kappa, lamb);
    use Sx::{Add, Const, Div, Mul, Neg, Reg, Sqrt};
    vec![
        // d = u_prev − u
        lin(w, vec![(slots.prev(step), 1.0), (u, -1.0)]),
        dot(R_UU, u, u),
        dot(R_UD, u, w),
        dot(R_DD, w, w),
        // D = λ + ‖u‖² + κ(2⟨u, d⟩ + κ‖d‖²) = λ + ‖v‖²
        Op::Scalar {
            dst: R_DEN,
            code: vec![
                Const(l),
                Reg(R_UU),
                Add,
                Const(2.0),
                Reg(R_UD),
                Mul,
                Const(k),
                Reg(R_DD),
                Mul,
                Add,
                Const(k),
                Mul,
                Add,
            ],
        },
        // A = (λ + κ(⟨u, d⟩ + κ‖d‖²)) / D
        Op::Scalar {
            dst: R_A,
            code: vec![
                Const(l),
                Reg(R_UD),
                Const(k),
                Reg(R_DD),
                Mul,
                Add,
                Const(k),
                Mul,
                Add,
                Reg(R_DEN),
                Div,
            ],
        },
        // B = −κ(‖u‖² + κ⟨u, d⟩) / D
        Op::Scalar {
            dst: R_B,
            code: vec![
                Reg(R_UU),
                Const(k),
                Reg(R_UD),
                Mul,
                Add,
                Const(k),
                Mul,
                Neg,
                Reg(R_DEN),
                Div,
            ],
        },
        // w = A·u + B·d (in place over d)
        Op::Combine {
            dst: w,
            terms: vec![(u, 1.0, Some(R_A)), (w, 1.0, Some(R_B))],
        },
        dot(R_WW, w, w),
        // s = √(‖u‖² / ‖w‖²)
        Op::Scalar {
            dst: R_S,
            code: vec![Reg(R_UU), Reg(R_WW), Div, Sqrt],
        },
    ]
}

/// One step's tail: u into its slot, then either the plain update `rest + c·u` or, when
/// `corrected`, the correction and `rest + c·s·w`; `noise` (DDIM's η) is added after.
fn step_tail(
    u_terms: Vec<(Buf, f64)>,
    rest: Vec<(Buf, f64)>,
    c: f64,
    noise: f64,
    corrected: Option<(f64, f64)>,
    slots: Slots,
    step: usize,
) -> Vec<Op> {
    let u = slots.u(step);
    let mut ops = vec![lin(u, u_terms)];
    match corrected {
        None => ops.push(lin(Buf::X, combine(&[(1.0, &rest), (c, &[(u, 1.0)])]))),
        Some((lamb, kappa)) => {
            ops.extend(correct(lamb, kappa, slots, step));
            let mut terms: Vec<(Buf, f64, Option<usize>)> =
                rest.into_iter().map(|(b, k)| (b, k, None)).collect();
            terms.push((slots.w(), c, Some(R_S)));
            ops.push(Op::Combine { dst: Buf::X, terms });
        }
    }
    if noise != 0.0 {
        ops.push(Op::Lin {
            dst: Buf::X,
            terms: vec![(Buf::X, 1.0)],
            noise,
            clamp: None,
        });
    }
    ops
}

pub fn program(cfg: &LmlConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    // κ = 0 (the official default): w = u exactly; the program is the base sampler's.
    if !(cfg.lm && cfg.kappa > 0.0) {
        return match &cfg.base {
            LmlBase::Ddim(c) => super::ddim::program(c, train, steps),
            LmlBase::DpmSolver(c) => dpm(c, cfg, train, steps, false),
            LmlBase::FlowEuler(c) => super::flow::program(c, train, steps),
        };
    }
    let corr = |step: usize, gate: bool| (step > 0 && gate).then_some((cfg.lamb, cfg.kappa));
    match &cfg.base {
        LmlBase::Ddim(c) => {
            let (grid, _) = super::ddim::grid(c, train, steps)?;
            let slots = Slots { first: 1 };
            let mut prog = Vec::new();
            for (i, s) in grid.iter().enumerate() {
                let (mut ops, x0, eps) = super::ddim::evaluate(
                    c.clip_sample,
                    Buf::Slot(0),
                    train.prediction,
                    Buf::X,
                    s.time,
                );
                // The official gate: `timestep < 1000 − 1000·freeze` (1000, not T).
                let gate = s.time.t < 1000.0 - 1000.0 * cfg.freeze;
                let rest = combine(&[(s.a_prev.sqrt(), &x0)]);
                ops.extend(step_tail(eps, rest, s.dir, s.std, corr(i, gate), slots, i));
                prog.push(ops);
            }
            Ok(Program::new(1.0, slots.count(), prog))
        }
        LmlBase::DpmSolver(c) => dpm(c, cfg, train, steps, true),
        LmlBase::FlowEuler(c) => {
            check_steps(steps, train.num_train_timesteps)?;
            let sig = super::flow::sigmas(c, train, steps);
            let slots = Slots { first: 0 };
            let mut prog = Vec::new();
            for i in 0..steps {
                let time = super::flow::flow_time(train, sig[i]);
                let v = super::flow::velocity(train.prediction, time);
                let mut ops = vec![model_input(Buf::X, 1.0), Op::Model(time)];
                let dt = sig[i + 1] - sig[i];
                ops.extend(step_tail(
                    v,
                    vec![(Buf::X, 1.0)],
                    dt,
                    0.0,
                    corr(i, true),
                    slots,
                    i,
                ));
                prog.push(ops);
            }
            Ok(Program::new(1.0, slots.count(), prog))
        }
    }
}

/// DPM-Solver(++) with the correction on each step's increment: the base program's final
/// update `X = r·X + Σ c·slot` is split into u = Σ c·slot and `X = r·X + u` (corrected). The SDE
/// variants are not corrected (the official file corrects `dpmsolver` and `dpmsolver++` only).
/// (Karras and Lu σ grids are refused with `lm` by the config: their last step is 0/0.)
fn dpm(
    c: &DpmSolverConfig,
    cfg: &LmlConfig,
    train: &TrainingSchedule,
    steps: usize,
    on: bool,
) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let base = super::dpm_solver::program(c, train, steps)?;
    let sde = matches!(
        c.algorithm,
        DpmAlgorithm::SdeDpmSolver | DpmAlgorithm::SdeDpmSolverPlusPlus
    );
    if sde || !on {
        return Ok(base);
    }
    let slots = Slots { first: base.slots };
    let mut prog = Vec::new();
    for (i, mut ops) in base.steps.into_iter().enumerate() {
        let Some(Op::Lin {
            dst: Buf::X, terms, ..
        }) = ops.pop()
        else {
            return Err(Error::Argument {
                op: "DPMSolverMultistepLMScheduler",
                arg: "program",
                reason: format!("step {i} of the base program does not end with its update of X"),
            });
        };
        let (x, u): (Vec<_>, Vec<_>) = terms.into_iter().partition(|(b, _)| *b == Buf::X);
        ops.extend(step_tail(
            u,
            x,
            1.0,
            0.0,
            (i > 0).then_some((cfg.lamb, cfg.kappa)),
            slots,
            i,
        ));
        prog.push(ops);
    }
    Ok(Program::new(1.0, slots.count(), prog))
}
