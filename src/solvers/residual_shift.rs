//! Residual-shift restoration samplers on conditioned models (the degraded input y0 is the
//! condition `Cond`):
//! - ResShift (Yue, Wang, Loy, NeurIPS 2023; zsyOAOA/ResShift `gaussian_diffusion.py`):
//!   x_t = x0 + η_t(y0 − x0) + κ√η_t·ε; x_T = y0 + κ√η_T·z; the posterior
//!   q(x_{t−1} | x_t, x̂0) = N((η_{t−1}/η_t)x_t + (α_t/η_t)x̂0, κ²(η_{t−1}/η_t)α_t), α_t = η_t − η_{t−1};
//!   the network sees x_t/√(κ²η_t + 1) (latent normalisation) and predicts x0, ε or the residual.
//! - Resfusion (Shi et al., NeurIPS 2024; nkicsl/Resfusion `resfusion_restore.py`):
//!   x_t = √ᾱ_t x0 + (1 − √ᾱ_t)R + √(1 − ᾱ_t)ε with R = y0 − x0, started at the truncation
//!   point x_{T'} = √ᾱ·y0 + √(1 − ᾱ)·z; ε-mode reverse step
//!   x_{t−1} = (x_t − β_t/√(1 − ᾱ_t)·ε̂_r)/√α_t + √β̃_t·z.

use super::program::{combine, lin, Buf, ModelTime, Op, Program};
use crate::error::{Error, Result};

/// ResShift's network parameterisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResShiftPrediction {
    XStart,
    Epsilon,
    Residual,
}

/// ResShift sampling over all T steps of `sqrt_eta` (√η_1..√η_T) with κ.
pub fn resshift_program(sqrt_eta: &[f64], kappa: f64, pred: ResShiftPrediction) -> Result<Program> {
    let t_max = sqrt_eta.len();
    if t_max == 0 || sqrt_eta.iter().any(|e| !(*e > 0.0 && *e < 1.0)) {
        return Err(Error::Argument {
            op: "ResShift",
            arg: "schedule",
            reason: "√η must lie in (0, 1)".into(),
        });
    }
    let eta = |t: usize| if t == 0 { 0.0 } else { sqrt_eta[t - 1].powi(2) };
    let mut prog = Vec::new();
    for (i, t) in (1..=t_max).rev().enumerate() {
        let (e_t, e_p) = (eta(t), eta(t - 1));
        let a_t = e_t - e_p;
        let c_in = 1.0 / (kappa * kappa * e_t + 1.0).sqrt();
        let mut ops = Vec::new();
        if i == 0 {
            ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Cond, 1.0)]));
        }
        ops.push(lin(Buf::ModelIn, vec![(Buf::X, c_in)]));
        // The marginal coefficients are informational for ResShift models (they take t).
        ops.push(Op::Model(ModelTime {
            t: (t - 1) as f64,
            alpha: 1.0 - e_t,
            sigma: kappa * e_t.sqrt(),
        }));
        let out = [(Buf::ModelOut, 1.0)];
        let x0 = match pred {
            ResShiftPrediction::XStart => out.to_vec(),
            // x̂0 = (x_t − κ√η_t ε̂ − η_t y0)/(1 − η_t)
            ResShiftPrediction::Epsilon => combine(&[
                (1.0 / (1.0 - e_t), &[(Buf::X, 1.0)]),
                (-kappa * e_t.sqrt() / (1.0 - e_t), &out),
                (-e_t / (1.0 - e_t), &[(Buf::Cond, 1.0)]),
            ]),
            ResShiftPrediction::Residual => combine(&[(1.0, &[(Buf::Cond, 1.0)]), (-1.0, &out)]),
        };
        let terms = combine(&[(e_p / e_t, &[(Buf::X, 1.0)]), (a_t / e_t, &x0)]);
        let std = kappa * (e_p / e_t * a_t).max(0.0).sqrt();
        ops.push(Op::Lin {
            dst: Buf::X,
            terms,
            noise: if t > 1 { std } else { 0.0 },
            clamp: None,
        });
        prog.push(ops);
    }
    Ok(Program::new(kappa * sqrt_eta[t_max - 1], 0, prog))
}

/// Resfusion's ε-mode reverse process from the truncation point: `betas` of the full schedule
/// (T values) and `sqrt_abar` truncated (its last entry is the start, ½).
pub fn resfusion_program(betas: &[f64], sqrt_abar: &[f64]) -> Result<Program> {
    let start = sqrt_abar.len();
    if start == 0 || start > betas.len() {
        return Err(Error::Argument {
            op: "Resfusion",
            arg: "schedule",
            reason: "empty or longer than the β schedule".into(),
        });
    }
    let abar = |t: usize| {
        if t == 0 {
            1.0
        } else {
            sqrt_abar[t - 1].powi(2)
        }
    };
    let s0 = sqrt_abar[start - 1];
    let mut prog = Vec::new();
    for (i, t) in (1..=start).rev().enumerate() {
        let (ab_t, ab_p) = (abar(t), abar(t - 1));
        // With the truncated last ᾱ the step's α_t is ᾱ_t/ᾱ_{t−1}.
        let alpha_t = ab_t / ab_p;
        let beta_t = 1.0 - alpha_t;
        let mut ops = Vec::new();
        if i == 0 {
            // x_{T'} = √ᾱ·y0 + √(1 − ᾱ)·z: the executor draws √(1 − ᾱ)·z.
            ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Cond, s0)]));
        }
        ops.push(lin(Buf::ModelIn, vec![(Buf::X, 1.0)]));
        ops.push(Op::Model(ModelTime {
            t: (t - 1) as f64,
            alpha: ab_t.sqrt(),
            sigma: (1.0 - ab_t).sqrt(),
        }));
        let terms = combine(&[
            (1.0 / alpha_t.sqrt(), &[(Buf::X, 1.0)]),
            (
                -beta_t / ((1.0 - ab_t).sqrt() * alpha_t.sqrt()),
                &[(Buf::ModelOut, 1.0)],
            ),
        ]);
        let var = (1.0 - ab_p) / (1.0 - ab_t) * beta_t;
        ops.push(Op::Lin {
            dst: Buf::X,
            terms,
            noise: if t > 1 { var.max(0.0).sqrt() } else { 0.0 },
            clamp: None,
        });
        prog.push(ops);
    }
    let _ = betas;
    Ok(Program::new((1.0 - s0 * s0).sqrt(), 0, prog))
}

/// RDDM's sampler (η = 0, the conditional setting) over `steps` of a T-step schedule
/// (ᾱ, β̄ for t = 1..=T): I_T = I_in + β̄_T·z; t → s: I_s = I_t − (ᾱ_t − ᾱ_s)·Î_res −
/// (β̄_t − β̄_s)·ε̂, which at s = 0 is Î_0 = I_t − ᾱ_t·Î_res − β̄_t·ε̂. The two heads are the
/// model's outputs: residual (`ModelOut`) and noise (`ModelAux`). Times follow RDDM:
/// int(linspace(−1, T − 1, steps + 1)) reversed, −1 being the clean state.
pub fn rddm_program(abar: &[f64], bbar: &[f64], steps: usize) -> Result<Program> {
    let t_max = abar.len();
    if steps == 0 || steps > t_max || bbar.len() != t_max {
        return Err(Error::Argument {
            op: "RDDM",
            arg: "steps",
            reason: format!("{steps} steps for a {t_max}-step schedule"),
        });
    }
    let idx: Vec<i64> = crate::schedule::linspace(-1.0, (t_max - 1) as f64, steps + 1)
        .into_iter()
        .map(|v| v.trunc() as i64)
        .rev()
        .collect();
    let at = |k: i64| {
        if k < 0 {
            (0.0, 0.0)
        } else {
            (abar[k as usize], bbar[k as usize])
        }
    };
    let mut prog = Vec::new();
    for (i, w) in idx.windows(2).enumerate() {
        let ((a_t, b_t), (a_s, b_s)) = (at(w[0]), at(w[1]));
        let mut ops = Vec::new();
        if i == 0 {
            ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Cond, 1.0)]));
        }
        ops.push(lin(Buf::ModelIn, vec![(Buf::X, 1.0)]));
        ops.push(Op::Model(ModelTime {
            t: w[0] as f64,
            alpha: 1.0,
            sigma: b_t,
        }));
        let terms = combine(&[
            (1.0, &[(Buf::X, 1.0)]),
            (-(a_t - a_s), &[(Buf::ModelOut, 1.0)]),
            (-(b_t - b_s), &[(Buf::ModelAux, 1.0)]),
        ]);
        ops.push(lin(Buf::X, terms));
        prog.push(ops);
    }
    Ok(Program::new(bbar[t_max - 1], 0, prog))
}
