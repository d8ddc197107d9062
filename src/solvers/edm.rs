//! EDM's stochastic Heun sampler (Karras, Aittala, Aila, Laine, "Elucidating the Design Space of
//! Diffusion-Based Generative Models", NeurIPS 2022, Alg. 2): per step, optional "churn" raises
//! σ_i to σ̂ = σ_i(1 + γ) by adding noise, then a Heun step from σ̂ to σ_{i+1} (Euler when
//! σ_{i+1} = 0). γ = min(S_churn/N, √2 − 1) for S_min ≤ σ_i ≤ S_max. State x/α (σ-space).

use super::program::{combine, lin, model_input, x0_terms, Buf, ModelTime, Op, Program};
use super::Grid;
use crate::error::Result;
use crate::models::Prediction;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::EdmConfig;

pub use crate::schedule::options::Churn;

/// `EDMHeunScheduler`: a Karras grid (ρ = 7) of `steps` points between the configured σ bounds
/// (default: the training schedule's), then σ = 0; x_T = σ_max·z.
pub fn program(cfg: &EdmConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let vp = train.vp()?;
    let all = vp.sigmas();
    let (lo, hi) = cfg.sigma_bounds.unwrap_or((all[0], all[all.len() - 1]));
    let mut grid = Grid::karras(&vp, lo, hi, steps - 1);
    grid.sigma.push(0.0);
    grid.t.push(0.0);
    let t_of = |s: f64| vp.t_from_sigma(s);
    Ok(on_grid(train.prediction, &grid, cfg.churn, &t_of, hi))
}

/// EDM sampling over `grid` (σ descending, last 0); `t_of_sigma` gives the network time at the
/// churned σ̂; x_T = init_sigma·z.
pub fn on_grid(
    prediction: Prediction,
    grid: &Grid,
    churn: Churn,
    t_of_sigma: &dyn Fn(f64) -> f64,
    init_sigma: f64,
) -> Program {
    let n = grid.steps();
    let time = |t: f64, s: f64| {
        let a = 1.0 / (s * s + 1.0).sqrt();
        ModelTime {
            t,
            alpha: a,
            sigma: s * a,
        }
    };
    let mut prog = Vec::new();
    for i in 0..n {
        let (s, s_next) = (grid.sigma[i], grid.sigma[i + 1]);
        let gamma = if churn.s_churn > 0.0 && (churn.s_min..=churn.s_max).contains(&s) {
            (churn.s_churn / n as f64).min(std::f64::consts::SQRT_2 - 1.0)
        } else {
            0.0
        };
        let s_hat = s * (1.0 + gamma);
        let mut ops = Vec::new();
        if gamma > 0.0 {
            ops.push(Op::Lin {
                dst: Buf::X,
                terms: vec![(Buf::X, 1.0)],
                noise: (s_hat * s_hat - s * s).sqrt() * churn.s_noise,
                clamp: None,
            });
        }
        let t1 = time(
            if gamma > 0.0 {
                t_of_sigma(s_hat)
            } else {
                grid.t[i]
            },
            s_hat,
        );
        let x0 = x0_terms(prediction, Buf::X, t1.alpha, t1);
        ops.push(model_input(Buf::X, t1.alpha));
        ops.push(Op::Model(t1));
        let dt = s_next - s_hat;
        let d1 = combine(&[(1.0 / s_hat, &[(Buf::X, 1.0)]), (-1.0 / s_hat, &x0)]);
        if s_next == 0.0 {
            ops.push(lin(Buf::X, combine(&[(1.0, &[(Buf::X, 1.0)]), (dt, &d1)])));
        } else {
            ops.push(lin(Buf::Slot(1), d1));
            ops.push(lin(Buf::Slot(0), vec![(Buf::X, 1.0)]));
            ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Slot(1), dt)]));
            let t2 = time(grid.t[i + 1], s_next);
            let x0b = x0_terms(prediction, Buf::X, t2.alpha, t2);
            ops.push(model_input(Buf::X, t2.alpha));
            ops.push(Op::Model(t2));
            let d2 = combine(&[(1.0 / s_next, &[(Buf::X, 1.0)]), (-1.0 / s_next, &x0b)]);
            ops.push(lin(
                Buf::X,
                combine(&[
                    (1.0, &[(Buf::Slot(0), 1.0)]),
                    (0.5 * dt, &[(Buf::Slot(1), 1.0)]),
                    (0.5 * dt, &d2),
                ]),
            ));
        }
        prog.push(ops);
    }
    Program::new(init_sigma, 2, prog)
}
