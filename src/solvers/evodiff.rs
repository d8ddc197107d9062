//! EVODiff (Li et al., "EVODiff: Entropy-aware Variance Optimized Diffusion Inference",
//! NeurIPS 2025): a data-prediction multistep solver whose second-order term is balanced by
//! per-(sample, channel) projection coefficients, with a variance-controlled r_i, a probe step
//! that carries the step's one model evaluation, and a final-step heuristic — as the official
//! `EVODiff_edm.sample(method="multistep", order=2)` on DPM-Solver's discrete-time VP wrapping
//! (`NoiseScheduleVP('discrete')`: t ∈ [1/N, 1], log α piecewise linear in t, the model called
//! at (t − 1/N)·1000). The projections are computed on the device through scalar registers
//! (`Op::Dot`, `Op::Scalar`, `Op::Combine`); nothing is read back inside the loop.

use super::program::{lin, model_input, x0_terms, Buf, ModelTime, Op, Over, Program, Sx};
use crate::error::{Error, Result};
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::{EvoDiffConfig, SkipType};
use crate::schedule::{check_steps, linspace, Prediction};

fn err(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "EVODiffScheduler",
        arg,
        reason,
    }
}

/// DPM-Solver's `NoiseScheduleVP('discrete', alphas_cumprod)`: log α_n = ½ log ᾱ_n at
/// t_n = (n + 1)/N, the high-noise end clipped where λ < −5.1 (`numerical_clip_alpha`).
pub struct VpContinuous {
    log_alpha: Vec<f64>,
    t: Vec<f64>,
}

/// Linear interpolation through (xp, yp) (xp ascending), extrapolating with the outermost
/// segments (`interpolate_fn`).
fn interp(x: f64, xp: &[f64], yp: &[f64]) -> f64 {
    let k = xp.partition_point(|&v| v < x);
    let j = k.saturating_sub(1).min(xp.len() - 2);
    yp[j] + (x - xp[j]) * (yp[j + 1] - yp[j]) / (xp[j + 1] - xp[j])
}

impl VpContinuous {
    pub fn new(alphas_cumprod: &[f64]) -> Self {
        let mut log_alpha: Vec<f64> = alphas_cumprod.iter().map(|a| 0.5 * a.ln()).collect();
        let clipped = log_alpha
            .iter()
            .filter(|&&la| la - 0.5 * (1.0 - (2.0 * la).exp()).ln() < -5.1)
            .count();
        log_alpha.truncate(log_alpha.len() - clipped);
        let n = log_alpha.len();
        let t = (1..=n).map(|i| i as f64 / n as f64).collect();
        VpContinuous { log_alpha, t }
    }

    /// N after clipping (`total_N`).
    pub fn total_n(&self) -> usize {
        self.log_alpha.len()
    }

    pub fn log_alpha(&self, t: f64) -> f64 {
        interp(t, &self.t, &self.log_alpha)
    }

    /// (α, σ, λ) at t.
    pub fn point(&self, t: f64) -> (f64, f64, f64) {
        let la = self.log_alpha(t);
        let log_sigma = 0.5 * (1.0 - (2.0 * la).exp()).ln();
        (la.exp(), (1.0 - (2.0 * la).exp()).sqrt(), la - log_sigma)
    }

    pub fn inverse_lambda(&self, lambda: f64) -> f64 {
        // log α = −½ log(1 + e^{−2λ}), computed as logaddexp(0, −2λ).
        let x = -2.0 * lambda;
        let lae = x.max(0.0) + (-x.abs()).exp().ln_1p();
        let la = -0.5 * lae;
        let rev_la: Vec<f64> = self.log_alpha.iter().rev().copied().collect();
        let rev_t: Vec<f64> = self.t.iter().rev().copied().collect();
        interp(la, &rev_la, &rev_t)
    }
}

/// The official `get_time_steps(skip_type, t_T, t_0, N)`.
pub fn time_steps(
    ns: &VpContinuous,
    skip: SkipType,
    t_start: f64,
    t_end: f64,
    n: usize,
) -> Vec<f64> {
    match skip {
        SkipType::LogSnr => {
            let (l_start, l_end) = (ns.point(t_start).2, ns.point(t_end).2);
            linspace(l_start, l_end, n + 1)
                .into_iter()
                .map(|l| ns.inverse_lambda(l))
                .collect()
        }
        SkipType::TimeUniform => linspace(t_start, t_end, n + 1),
        SkipType::TimeQuadratic => linspace(t_start.sqrt(), t_end.sqrt(), n + 1)
            .into_iter()
            .map(|v| v * v)
            .collect(),
        SkipType::Edm => {
            // t_0, t_T read as σ_min, σ_max of a Karras ρ = 7 ramp, then λ = −log σ.
            let rho = 7.0;
            let (lo, hi) = (t_end.powf(1.0 / rho), t_start.powf(1.0 / rho));
            linspace(0.0, 1.0, n + 1)
                .into_iter()
                .map(|r| ns.inverse_lambda(-(hi + r * (lo - hi)).powf(rho).ln()))
                .collect()
        }
    }
}

// Slots: model outputs rotate through 0..3; the rest are the step's scratch.
fn m(k: usize) -> Buf {
    Buf::Slot(k % 3)
}
const XE: Buf = Buf::Slot(3);
const D1: Buf = Buf::Slot(4);
const D2: Buf = Buf::Slot(5);
const BT: Buf = Buf::Slot(6);
/// Bn + Bp, then P.
const S7: Buf = Buf::Slot(7);
/// Bn − Bp, then (m0 − m1)/h.
const S8: Buf = Buf::Slot(8);

fn dot(dst: usize, a: Buf, b: Buf) -> Op {
    Op::Dot {
        dst,
        a,
        b,
        over: Over::Channel,
    }
}

fn scalar(dst: usize, code: Vec<Sx>) -> Op {
    Op::Scalar { dst, code }
}

fn combine(dst: Buf, terms: Vec<(Buf, f64, Option<usize>)>) -> Op {
    Op::Combine { dst, terms }
}

/// clamp(Reg(a)/Reg(b), −2, 2): the official `projection_coefficient`.
fn projection(a: usize, b: usize) -> Vec<Sx> {
    vec![
        Sx::Reg(a),
        Sx::Reg(b),
        Sx::Div,
        Sx::Const(-2.0),
        Sx::Max,
        Sx::Const(2.0),
        Sx::Min,
    ]
}

/// (1 − w)·b + w·projection(a, b_reg): the balanced ratio r1 / r2.
fn balance(w: f64, base: f64, a: usize, b: usize) -> Vec<Sx> {
    let mut c = vec![Sx::Const((1.0 - w) * base), Sx::Const(w)];
    c.extend(projection(a, b));
    c.extend([Sx::Mul, Sx::Add]);
    c
}

pub fn program(cfg: &EvoDiffConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    if steps < cfg.order {
        return Err(err(
            "steps",
            format!("{steps} steps are fewer than the order {}", cfg.order),
        ));
    }
    let pred = train.prediction;
    if !matches!(
        pred,
        Prediction::Epsilon | Prediction::Sample | Prediction::VPrediction
    ) {
        return Err(err(
            "prediction_type",
            format!("{pred:?} is not a VP parameterisation (epsilon, sample, v_prediction)"),
        ));
    }
    let ns = VpContinuous::new(&train.vp()?.alphas_cumprod);
    let n_train = ns.total_n();
    let t_end = cfg.t_end.unwrap_or(1.0 / n_train as f64);
    let t_start = cfg.t_start.unwrap_or(1.0);
    for (name, v) in [("t_start", t_start), ("t_end", t_end)] {
        if !(v > 0.0 && v <= 1.0) {
            return Err(err(name, format!("{v} is outside (0, 1]")));
        }
    }
    if t_end >= t_start {
        return Err(err(
            "t_end",
            format!("{t_end} is not below t_start {t_start}"),
        ));
    }
    let ts = time_steps(&ns, cfg.skip_type, t_start, t_end, steps);
    let pts: Vec<(f64, f64, f64)> = ts.iter().map(|&t| ns.point(t)).collect();
    let time = |i: usize| ModelTime {
        t: (ts[i] - 1.0 / n_train as f64) * 1000.0,
        alpha: pts[i].0,
        sigma: pts[i].1,
    };
    let time_of = |i: usize| ts[i];
    let sigma = |i: usize| pts[i].1;
    let kappa = |i: usize| pts[i].1 / pts[i].0;
    // Evaluate the model on X at grid point i into the history slot of i.
    let evaluate = |i: usize| {
        vec![
            model_input(Buf::X, 1.0),
            Op::Model(time(i)),
            lin(m(i), x0_terms(pred, Buf::X, 1.0, time(i))),
        ]
    };
    let mut prog = Vec::new();
    // Step 1: the model at t_T, one DDIM step, the model at t_1.
    let mut first = evaluate(0);
    let h = 1.0 / kappa(1) - 1.0 / kappa(0);
    first.push(lin(
        Buf::X,
        vec![(Buf::X, sigma(1) / sigma(0)), (m(0), sigma(1) * h)],
    ));
    first.extend(evaluate(1));
    prog.push(first);
    for step in 2..=steps {
        let order = if cfg.lower_order_final {
            cfg.order.min(steps + 1 - step)
        } else {
            cfg.order
        };
        let (p0, p1) = (step - 1, step - 2);
        let (s_t, s0, s1) = (sigma(step), sigma(p0), sigma(p1));
        let h = 1.0 / kappa(step) - 1.0 / kappa(p0);
        let (m0, m1) = (m(p0), m(p1));
        let mut ops = Vec::new();
        if order == 1 {
            // The final-step heuristic.
            let rho = s_t / s0;
            let sf = 1.0 - (s_t * s0).sqrt();
            let rd = if rho < 0.5 {
                1.0 - 0.5 * rho.sqrt()
            } else {
                1.0 - 0.5 * (rho - 0.5).sqrt()
            };
            ops.push(lin(
                Buf::X,
                vec![
                    (Buf::X, sf * rho),
                    (m0, sf * s_t * h + 0.5 * s_t * h),
                    (m1, -0.5 * s_t * h * rd),
                ],
            ));
            prog.push(ops);
            continue;
        }
        let (rho0, rho01) = (s_t / s0, s0 / s1);
        let r_logh = (kappa(p1) / kappa(p0)).ln() / (kappa(p0) / kappa(step)).ln();
        let tn = (time_of(step) + t_end) / (t_start + t_end);
        let w = 0.5 * (1.0 - tn * tn);
        let base = (rho0 / rho01).sqrt();
        let half = 0.5 * s_t * h;
        ops.push(lin(XE, vec![(Buf::X, rho0), (m0, s_t * h)]));
        // r1 (reg 2), D1, r_i (reg 3), 0.5σh/r_i (reg 4), the probe.
        ops.extend([
            dot(0, m0, m1),
            dot(1, m1, m1),
            scalar(2, balance(w, base, 0, 1)),
        ]);
        ops.push(combine(D1, vec![(m0, 1.0, None), (m1, -1.0, Some(2))]));
        ops.push(scalar(
            3,
            vec![
                Sx::Reg(2),
                Sx::Abs,
                Sx::Const(0.25),
                Sx::Mul,
                Sx::Sigmoid,
                Sx::Const(r_logh),
                Sx::Mul,
                Sx::Const(0.25 * r_logh),
                Sx::Max,
                Sx::Const(1.5 * r_logh),
                Sx::Min,
            ],
        ));
        ops.push(scalar(4, vec![Sx::Const(half), Sx::Reg(3), Sx::Div]));
        ops.push(combine(Buf::X, vec![(XE, 1.0, None), (D1, 1.0, Some(4))]));
        // The step's model evaluation, at the probe; its output is the next step's m0.
        ops.extend(evaluate(step));
        let mt = m(step);
        ops.extend([
            dot(5, mt, m0),
            dot(6, m0, m0),
            scalar(7, balance(w, base, 5, 6)),
        ]);
        ops.push(combine(D2, vec![(mt, 1.0, None), (m0, -1.0, Some(7))]));
        // η from the projection of Bn + Bp on Bn − Bp (Bp = D1/(r h), Bn = r D2/h).
        let (cn, cp) = (r_logh / h, 1.0 / r_logh / h);
        ops.push(lin(S7, vec![(D2, cn), (D1, cp)]));
        ops.push(lin(S8, vec![(D2, cn), (D1, -cp)]));
        ops.extend([dot(8, S7, S8), dot(9, S8, S8)]);
        let mut eta = vec![Sx::Const(0.5)];
        eta.extend(projection(8, 9));
        eta.extend([Sx::Const(0.5), Sx::Mul, Sx::Abs, Sx::Sigmoid, Sx::Mul]);
        ops.push(scalar(10, eta));
        ops.push(scalar(11, vec![Sx::Const(1.0), Sx::Reg(10), Sx::Sub]));
        ops.push(combine(
            BT,
            vec![(D1, -1.0 / r_logh, Some(10)), (D2, r_logh, Some(11))],
        ));
        // ζ from the projection of P = x − x_E − ½σh/r_i·B on D1.
        ops.push(combine(
            S7,
            vec![(Buf::X, 1.0, None), (XE, -1.0, None), (BT, -1.0, Some(4))],
        ));
        ops.extend([dot(12, S7, D1), dot(13, D1, D1)]);
        let mut zeta = projection(12, 13);
        zeta.extend([
            Sx::Const(s_t * h),
            Sx::Div,
            Sx::Abs,
            Sx::Const(0.5),
            Sx::Sub,
        ]);
        if steps > 20 {
            ops.push(lin(S8, vec![(m0, 1.0 / h), (m1, -1.0 / h)]));
            ops.extend([dot(16, m0, S8), dot(17, S8, S8)]);
            zeta.push(Sx::Neg);
            zeta.extend(projection(16, 17));
            zeta.extend([Sx::Const(2.0 - rho0 * rho0), Sx::Mul, Sx::Sigmoid, Sx::Mul]);
        }
        zeta.push(Sx::Sigmoid);
        ops.push(scalar(14, zeta));
        ops.push(scalar(15, vec![Sx::Const(half), Sx::Reg(14), Sx::Div]));
        ops.push(combine(Buf::X, vec![(XE, 1.0, None), (BT, 1.0, Some(15))]));
        prog.push(ops);
    }
    Ok(Program::new(1.0, 9, prog))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_extrapolates_with_the_outer_segments() {
        let (xp, yp) = ([0.0, 1.0, 3.0], [0.0, 2.0, 3.0]);
        assert_eq!(interp(0.5, &xp, &yp), 1.0);
        assert_eq!(interp(2.0, &xp, &yp), 2.5);
        assert_eq!(interp(-1.0, &xp, &yp), -2.0);
        assert_eq!(interp(5.0, &xp, &yp), 4.0);
    }

    #[test]
    fn inverse_lambda_inverts_lambda_inside_the_grid() {
        let abar: Vec<f64> = (1..=1000)
            .map(|i| (1.0 - i as f64 / 1001.0).powi(2))
            .collect();
        let ns = VpContinuous::new(&abar);
        for t in [0.01, 0.3, 0.77] {
            let l = ns.point(t).2;
            assert!((ns.inverse_lambda(l) - t).abs() < 1e-9, "{t}");
        }
    }
}
