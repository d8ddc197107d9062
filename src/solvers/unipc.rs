//! UniPC (Zhao, Bai, Rao, Zhou, Lu, "UniPC: A Unified Predictor-Corrector Framework for Fast
//! Sampling of Diffusion Models", NeurIPS 2023), as diffusers' `UniPCMultistepScheduler`:
//! UniP predictor of order ≤ 3 and the UniC corrector, which refines each sample with the model
//! output already computed at it (no extra NFE; none after the final step). B(h) = h (bh1) or
//! e^h − 1 (bh2); data (predict_x0) or noise prediction.

use super::program::{combine, eps_terms, lin, model_input, x0_terms, Buf, ModelTime, Op, Program};
use super::Grid;
use crate::error::Result;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::UniPcConfig;
use crate::schedule::Prediction;

/// (α, σ, λ) of σ_E.
fn alpha_sigma(s: f64) -> (f64, f64, f64) {
    let a = 1.0 / (s * s + 1.0).sqrt();
    (a, s * a, -s.ln())
}

/// Solves the small dense system R·x = b (Gaussian elimination with partial pivoting).
fn solve(mut r: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| r[i][c].abs().total_cmp(&r[j][c].abs()))
            .unwrap_or(c);
        r.swap(c, p);
        b.swap(c, p);
        for i in c + 1..n {
            let f = r[i][c] / r[c][c];
            let pivot = r[c].clone();
            for (rik, pk) in r[i].iter_mut().zip(&pivot).skip(c) {
                *rik -= f * pk;
            }
            b[i] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (b[i] - (i + 1..n).map(|k| r[i][k] * x[k]).sum::<f64>()) / r[i][i];
    }
    x
}

/// B(h) and the b vector for `order` (hh = −h for data prediction, h otherwise).
fn coefficients(hh: f64, order: usize, bh1: bool) -> (f64, f64, Vec<f64>) {
    let h_phi_1 = hh.exp_m1();
    let b_h = if bh1 { hh } else { hh.exp_m1() };
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut fact = 1.0;
    let mut b = Vec::new();
    for i in 1..=order {
        b.push(h_phi_k * fact / b_h);
        fact *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / fact;
    }
    (h_phi_1, b_h, b)
}

pub fn program(cfg: &UniPcConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    program_from(cfg, train, steps, 0)
}

/// [`program`] started at step `begin` (diffusers' `set_begin_index`, for img2img): the history
/// starts empty there and the first step has no corrector (`last_sample` is None), while
/// `lower_order_final` still counts the whole grid.
pub fn program_from(
    cfg: &UniPcConfig,
    train: &TrainingSchedule,
    steps: usize,
    begin: usize,
) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let vp = train.vp()?;
    let t_train = train.num_train_timesteps;
    let ts: Vec<f64> = match cfg.spacing {
        crate::schedule::Spacing::Linspace => {
            crate::schedule::linspace(0.0, (t_train - 1) as f64, steps + 1)
                .iter()
                .rev()
                .take(steps)
                .map(|x| x.round_ties_even())
                .collect()
        }
        crate::schedule::Spacing::Leading => {
            let r = t_train / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * r + train.steps_offset) as f64)
                .collect()
        }
        crate::schedule::Spacing::Trailing => {
            let r = t_train as f64 / steps as f64;
            (0..)
                .map(|i| t_train as f64 - i as f64 * r)
                .take_while(|x| *x > 0.0)
                .map(|x| x.round_ties_even() - 1.0)
                .collect()
        }
    };
    let mut sigma: Vec<f64> = ts.iter().map(|&t| vp.sigma_at(t)).collect();
    let mut t = ts;
    if cfg.use_karras_sigmas {
        let all = vp.sigmas();
        sigma = crate::schedule::karras_sigmas(all[0], all[all.len() - 1], steps, 7.0);
        t = sigma
            .iter()
            .map(|&s| vp.t_from_sigma(s).round_ties_even())
            .collect();
    }
    sigma.push(0.0);
    t.push(0.0);
    Ok(on_grid_from(
        cfg,
        train.prediction,
        &Grid { t, sigma },
        begin,
    ))
}

/// UniPC over `grid` for a network predicting `prediction`; the state is VP, x_T = z.
/// Slots 0–3: history ring; slot 4: last sample.
pub fn on_grid(cfg: &UniPcConfig, prediction: Prediction, grid: &Grid) -> Program {
    on_grid_from(cfg, prediction, grid, 0)
}

/// [`on_grid`] from step `begin` on.
fn on_grid_from(cfg: &UniPcConfig, prediction: Prediction, grid: &Grid, begin: usize) -> Program {
    let n = grid.steps();
    let order = cfg.solver_order;
    let x0 = cfg.predict_x0;
    let hist = |k: usize| Buf::Slot(k % 4);
    let last = Buf::Slot(4);
    let lam = |i: usize| alpha_sigma(grid.sigma[i]).2;
    let mut prog = Vec::new();
    let mut lower_order_nums = 0usize;
    let mut prev_order = 0usize;
    for i in begin..n {
        let (a_s, s_s, _) = alpha_sigma(grid.sigma[i]);
        let time = ModelTime {
            t: grid.t[i],
            alpha: a_s,
            sigma: s_s,
        };
        let conv = if x0 {
            x0_terms(prediction, Buf::X, 1.0, time)
        } else {
            eps_terms(prediction, Buf::X, 1.0, time)
        };
        let mut ops = vec![
            model_input(Buf::X, 1.0),
            Op::Model(time),
            lin(hist(i), conv),
        ];
        // UniC: x_i ← corrected from x_{i−1} (slot 4) with m_i, using the previous step's order.
        if i > begin && !cfg.disable_corrector.contains(&(i - 1)) {
            let (a_t, s_t, l_t) = alpha_sigma(grid.sigma[i]);
            let (a_0, s_0, l_0) = alpha_sigma(grid.sigma[i - 1]);
            let h = l_t - l_0;
            let hh = if x0 { -h } else { h };
            let ord = prev_order;
            let mut rks = Vec::new();
            let mut d1s: Vec<Vec<(Buf, f64)>> = Vec::new();
            for k in 1..ord {
                let rk = (lam(i - 1 - k) - l_0) / h;
                rks.push(rk);
                d1s.push(vec![(hist(i - 1 - k), 1.0 / rk), (hist(i - 1), -1.0 / rk)]);
            }
            rks.push(1.0);
            let (h_phi_1, b_h, b) = coefficients(hh, ord, cfg.bh1);
            let rhos = if ord == 1 {
                vec![0.5]
            } else {
                let r: Vec<Vec<f64>> = (0..ord)
                    .map(|p| rks.iter().map(|rk| rk.powi(p as i32)).collect())
                    .collect();
                solve(r, b)
            };
            let (c_x, c_m0, scale) = if x0 {
                (s_t / s_0, -a_t * h_phi_1, -a_t * b_h)
            } else {
                (a_t / a_0, -s_t * h_phi_1, -s_t * b_h)
            };
            let m0 = [(hist(i - 1), 1.0)];
            let d1_t = [(hist(i), 1.0), (hist(i - 1), -1.0)];
            let base = [(last, 1.0)];
            let mut parts: Vec<(f64, &[(Buf, f64)])> = vec![(c_x, &base), (c_m0, &m0)];
            for (k, d) in d1s.iter().enumerate() {
                parts.push((scale * rhos[k], d));
            }
            parts.push((scale * rhos[ord - 1], &d1_t));
            ops.push(lin(Buf::X, combine(&parts)));
        }
        let this_order = if cfg.lower_order_final {
            order.min(n - i)
        } else {
            order
        };
        let this_order = this_order.min(lower_order_nums + 1);
        ops.push(lin(last, vec![(Buf::X, 1.0)]));
        // UniP: x_{i+1} from x_i.
        let (a_t, s_t, l_t) = alpha_sigma(grid.sigma[i + 1]);
        let (a_0, s_0, l_0) = (a_s, s_s, lam(i));
        let h = l_t - l_0;
        let hh = if x0 { -h } else { h };
        let mut rks = Vec::new();
        let mut d1s: Vec<Vec<(Buf, f64)>> = Vec::new();
        for k in 1..this_order {
            let rk = (lam(i - k) - l_0) / h;
            rks.push(rk);
            d1s.push(vec![(hist(i - k), 1.0 / rk), (hist(i), -1.0 / rk)]);
        }
        rks.push(1.0);
        let (h_phi_1, b_h, b) = coefficients(hh, this_order, cfg.bh1);
        let rhos_p: Vec<f64> = match this_order {
            1 => vec![],
            2 => vec![0.5],
            k => {
                let r: Vec<Vec<f64>> = (0..k - 1)
                    .map(|p| rks[..k - 1].iter().map(|rk| rk.powi(p as i32)).collect())
                    .collect();
                solve(r, b[..k - 1].to_vec())
            }
        };
        let (c_x, c_m0, scale) = if x0 {
            (
                if s_0 > 0.0 { s_t / s_0 } else { 0.0 },
                -a_t * h_phi_1,
                -a_t * b_h,
            )
        } else {
            (a_t / a_0, -s_t * h_phi_1, -s_t * b_h)
        };
        let m0 = [(hist(i), 1.0)];
        let base = [(Buf::X, 1.0)];
        let mut parts: Vec<(f64, &[(Buf, f64)])> = vec![(c_x, &base), (c_m0, &m0)];
        for (k, d) in d1s.iter().enumerate() {
            parts.push((scale * rhos_p[k], d));
        }
        ops.push(lin(Buf::X, combine(&parts)));
        prog.push(ops);
        prev_order = this_order;
        if lower_order_nums < order {
            lower_order_nums += 1;
        }
    }
    Program::new(1.0, 5, prog)
}
