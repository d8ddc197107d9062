//! Decomposed Diffusion Sampling (Chung, Lee, Ye, "Decomposed Diffusion Sampler for
//! Accelerating Large-Scale Inverse Problems", ICLR 2024; official HJ-harry/DDS `solver_2d.py`
//! `Diffusion.dds` and `utils.CG`), as a program on the GPU scalar registers.
//!
//! Per step (t → t′ on the official grid `range(0, T, T/N)` reversed, t′ = −1 after the last):
//! ε̂ = model(x_t, t); Tweedie x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t; M conjugate-gradient steps from
//! x̂0 on (λI + γAᵀA)x = λx̂0 + γAᵀy (σ_y = 0: λ = 0, γ = 1; else λ = 1, γ = the official
//! `gamma`) with per-sample inner products ([`Op::Dot`] over C×H×W; the official code has one
//! image per batch); then x_{t′} = √ᾱ_{t′}·x̂ + √(1−ᾱ_{t′})·(η·z + √(1−η²)·ε̂) while t′ > 0.
//! The official test is `j != 0`: the step to t′ = 0 ends on x̂ itself, and the last step
//! (t = 0 → t′ = −1, ᾱ = 1) re-noises with zero weights, which is x̂ too. Aᵀy is the read-only
//! [`Buf::Cond`].
//!
//! CG stops per sample (step length 0 from then on) when ‖r‖ < 1e-5, the official test, **or**
//! ‖r‖ < 1e-4·‖r₀‖ (added here). Why: AᵀA is singular, and where A is not exact in f32 (the
//! `mri4x` DFT) the residual left after convergence is rounding noise lying mostly in AᵀA's null
//! space, where ⟨p, Ap⟩ ≈ 0, so a further CG step divides by almost nothing and throws x̂ far
//! along the null space. Early x̂0 are large (÷√ᾱ_t), so their rounding noise never falls under
//! the official absolute 1e-5, and DDS on `mri4x` diverged on the shipped model (PSNR 3.5 dB,
//! ‖A x̂ − y‖/‖y‖ ≈ 5) before the relative stop; with it, 20.1 dB at 20 NFE. The mask operators
//! are exact in f32 (r becomes exactly 0 after one step) and take the official path. Quotients
//! are guarded (max(·, 1e-30)) so a stopped sample's registers stay finite.

use super::program::{
    eps_terms, lin, model_input, x0_terms, Buf, ModelTime, Op, Over, Program, Sx,
};
use crate::error::{Error, Result};
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;

/// The official defaults (`main.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdsOptions {
    /// `--eta` (0.85): the share of fresh noise in the re-noising.
    pub eta: f64,
    /// `--CG_iter` (5): conjugate-gradient steps per diffusion step.
    pub cg_iter: usize,
    /// `--gamma` (1.0): the data weight of the noisy (σ_y > 0) system.
    pub gamma: f64,
    /// Whether the measurement is noisy (σ_y > 0), which selects the regularised system.
    pub noisy: bool,
    /// Read the re-noising draw of step k (0-based; steps 0..N−2 draw) from `Buf::StepNoise(k)` (caller-supplied, for
    /// parity with code that draws inside the loop) instead of drawing it.
    pub supplied_noise: bool,
}

impl Default for DdsOptions {
    fn default() -> Self {
        DdsOptions {
            eta: 0.85,
            cg_iter: 5,
            gamma: 1.0,
            noisy: false,
            supplied_noise: false,
        }
    }
}

/// The official default number of steps (`--T_sampling`).
pub const DEFAULT_STEPS: usize = 50;

// Slots: x̂ (CG iterate), r, p, Ap. Registers: ‖r‖², ⟨p, Ap⟩, a, ‖r′‖², β.
const XH: Buf = Buf::Slot(0);
const R: Buf = Buf::Slot(1);
const P: Buf = Buf::Slot(2);
const AP: Buf = Buf::Slot(3);
const TINY: f64 = 1e-30;
/// The official CG tolerance on ‖r‖ (`utils.CG` `eps`).
const CG_EPS: f64 = 1e-5;
/// The relative CG tolerance added here: stop once ‖r‖ < `CG_REL`·‖r₀‖ (see the module doc).
const CG_REL: f64 = 1e-4;

/// The CG instructions: x̂ (in `XH`) ← CG on (λI + γAᵀA)x = λx̂ + γ·Cond from x̂.
fn cg(opts: &DdsOptions) -> Vec<Op> {
    let (lam, g) = if opts.noisy {
        (1.0, opts.gamma)
    } else {
        (0.0, 1.0)
    };
    let mut v = vec![
        // r = b − A_cg x̂ = γ(Aᵀy − AᵀA x̂) (the λ x̂ terms cancel at the start).
        Op::Gram { src: XH, dst: AP },
        lin(R, vec![(Buf::Cond, g), (AP, -g)]),
        lin(P, vec![(R, 1.0)]),
        Op::Dot {
            dst: 0,
            a: R,
            b: R,
            over: Over::Sample,
        },
        // The official loop breaks once ‖r‖ < 1e-5; here a sample that has stopped keeps
        // running with step length 0 (register 5: 1 while running, 0 once stopped).
        Op::Scalar {
            dst: 5,
            code: vec![Sx::Const(1.0)],
        },
        Op::Scalar {
            dst: 6,
            code: vec![Sx::Reg(0)],
        },
    ];
    for _ in 0..opts.cg_iter {
        v.push(Op::Gram { src: P, dst: AP });
        v.push(Op::Combine {
            dst: AP,
            terms: vec![(AP, g, None), (P, lam, None)],
        });
        v.push(Op::Dot {
            dst: 1,
            a: P,
            b: AP,
            over: Over::Sample,
        });
        v.push(Op::Scalar {
            dst: 2,
            code: vec![
                Sx::Reg(0),
                Sx::Reg(1),
                Sx::Const(TINY),
                Sx::Max,
                Sx::Div,
                Sx::Reg(5),
                Sx::Mul,
            ],
        });
        v.push(Op::Combine {
            dst: XH,
            terms: vec![(XH, 1.0, None), (P, 1.0, Some(2))],
        });
        v.push(Op::Combine {
            dst: R,
            terms: vec![(R, 1.0, None), (AP, -1.0, Some(2))],
        });
        v.push(Op::Dot {
            dst: 3,
            a: R,
            b: R,
            over: Over::Sample,
        });
        // running ← running · [√‖r′‖² ≥ ε] (a step made of min/max: 1 when above, 0 below).
        v.push(Op::Scalar {
            dst: 5,
            code: vec![
                Sx::Reg(3),
                Sx::Sqrt,
                Sx::Const(CG_EPS),
                Sx::Reg(6),
                Sx::Sqrt,
                Sx::Const(CG_REL),
                Sx::Mul,
                Sx::Max,
                Sx::Sub,
                Sx::Const(1e30),
                Sx::Mul,
                Sx::Const(0.0),
                Sx::Max,
                Sx::Const(1.0),
                Sx::Min,
                Sx::Reg(5),
                Sx::Mul,
            ],
        });
        v.push(Op::Scalar {
            dst: 4,
            code: vec![Sx::Reg(3), Sx::Reg(0), Sx::Const(TINY), Sx::Max, Sx::Div],
        });
        v.push(Op::Combine {
            dst: P,
            terms: vec![(R, 1.0, None), (P, 1.0, Some(4))],
        });
        v.push(Op::Scalar {
            dst: 0,
            code: vec![Sx::Reg(3)],
        });
    }
    v
}

/// The DDS program for `steps` steps of the model trained with `train` (any prediction type;
/// the official model predicts ε). The run binds Aᵀy as the condition and the operator.
pub fn program(opts: &DdsOptions, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    if !(0.0..=1.0).contains(&opts.eta) || opts.gamma.is_nan() || opts.gamma <= 0.0 {
        return Err(Error::Argument {
            op: "dds",
            arg: "eta",
            reason: format!(
                "eta must lie in [0, 1] and gamma be > 0 (got {}, {})",
                opts.eta, opts.gamma
            ),
        });
    }
    let vp = train.vp()?;
    let t_total = train.num_train_timesteps;
    let skip = t_total / steps;
    let times: Vec<usize> = (0..t_total).step_by(skip).collect();
    let mut out = Vec::new();
    for k in (0..times.len()).rev() {
        let t = times[k];
        let at = vp.abar(t);
        let at_next = if k == 0 { 1.0 } else { vp.abar(times[k - 1]) };
        let time = ModelTime {
            t: t as f64,
            alpha: at.sqrt(),
            sigma: (1.0 - at).sqrt(),
        };
        let mut ops = vec![model_input(Buf::X, 1.0), Op::Model(time)];
        ops.push(lin(XH, x0_terms(train.prediction, Buf::X, 1.0, time)));
        // ε̂ is kept in AP's place only after CG; save it first (X still holds x_t).
        ops.push(lin(
            Buf::Slot(4),
            eps_terms(train.prediction, Buf::X, 1.0, time),
        ));
        ops.extend(cg(opts));
        if k < 2 {
            // t′ ∈ {0, −1}: x̂ (see the module doc).
            ops.push(lin(Buf::X, vec![(XH, 1.0)]));
        } else {
            let s = (1.0 - at_next).sqrt();
            let mut terms = vec![
                (XH, at_next.sqrt()),
                (Buf::Slot(4), s * (1.0 - opts.eta * opts.eta).sqrt()),
            ];
            let mut noise = s * opts.eta;
            if opts.supplied_noise {
                terms.push((Buf::StepNoise(out.len()), noise));
                noise = 0.0;
            }
            ops.push(Op::Lin {
                dst: Buf::X,
                terms,
                noise,
                clamp: None,
            });
        }
        out.push(ops);
    }
    Ok(Program::new(1.0, 5, out))
}
