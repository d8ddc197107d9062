//! Linear multistep sampling in σ-space (k-diffusion's `sample_lms`, after Karras et al. 2022's
//! ODE dx/dσ = (x − x̂0)/σ), as diffusers' `LMSDiscreteScheduler`: x_{i+1} = x_i + Σ_j c_j·d_{i−j}
//! over the last `order` = min(i + 1, 4) derivatives, where c_j integrates the Lagrange basis
//! polynomial of node σ_{i−j} over [σ_i, σ_{i+1}]. diffusers integrates with scipy's adaptive
//! `quad`; the integrand is a polynomial of degree ≤ 3, so the 4-point Gauss–Legendre rule used
//! here (in f64, when the program is built) is exact. The σ grid and `init_noise_sigma` are the
//! Euler family's (linspace / leading / trailing, optional Karras σ, final σ 0).

use super::program::{combine, lin, model_input, x0_terms, Buf, Op, Program};
use super::Grid;
use crate::error::{Error, Result};
use crate::models::Prediction;
use crate::schedule::check_steps;
use crate::schedule::config::{SolverConfig, TrainingSchedule};
use crate::schedule::options::{LmsConfig, SigmaGrid};

/// The order diffusers' pipelines step with (`step(…, order=4)`).
pub const ORDER: usize = 4;

pub fn program(cfg: &LmsConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    program_from(cfg, train, steps, 0)
}

/// [`program`] started at step `begin` (diffusers' `set_begin_index`, for img2img). diffusers
/// keeps its order rule on the step index, `order = min(step_index + 1, 4)`, while the
/// derivative list starts empty at the cut, and `zip` pairs the first coefficients of that
/// order with the derivatives there are: so step i uses the Lagrange coefficients of order
/// min(i + 1, 4) for its min(i − begin + 1, 4) newest derivatives (not a lower-order rule).
pub fn program_from(
    cfg: &LmsConfig,
    train: &TrainingSchedule,
    steps: usize,
    begin: usize,
) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    SolverConfig::Lms(*cfg)
        .check_prediction(train.prediction)
        .map_err(|reason| Error::Argument {
            op: "LMSDiscreteScheduler",
            arg: "prediction_type",
            reason,
        })?;
    let grid = SigmaGrid {
        spacing: cfg.spacing,
        use_karras_sigmas: cfg.use_karras_sigmas,
        final_sigma_zero: true,
    };
    let (t, sigma) = super::sigma_timesteps(&grid, train, steps)?;
    let init = super::euler_init_sigma(cfg.spacing, &sigma);
    Ok(on_grid_from(
        train.prediction,
        &Grid { t, sigma },
        init,
        begin,
    ))
}

/// ∫ over [σ_i, σ_{i+1}] of the Lagrange basis polynomial that is 1 at σ_{i−j} and 0 at the
/// other nodes σ_{i−k}, k < order (diffusers' `get_lms_coefficient(order, i, j)`).
pub fn coefficient(sigmas: &[f64], order: usize, i: usize, j: usize) -> f64 {
    let basis = |tau: f64| {
        (0..order)
            .filter(|&k| k != j)
            .map(|k| (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k]))
            .product::<f64>()
    };
    // 4-point Gauss–Legendre on [−1, 1], mapped to [σ_i, σ_{i+1}].
    let (x1, x2) = (
        (3.0 / 7.0 - 2.0 / 7.0 * (6.0f64 / 5.0).sqrt()).sqrt(),
        (3.0 / 7.0 + 2.0 / 7.0 * (6.0f64 / 5.0).sqrt()).sqrt(),
    );
    let (w1, w2) = (
        (18.0 + 30.0f64.sqrt()) / 36.0,
        (18.0 - 30.0f64.sqrt()) / 36.0,
    );
    let (a, b) = (sigmas[i], sigmas[i + 1]);
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    half * [(x1, w1), (-x1, w1), (x2, w2), (-x2, w2)]
        .iter()
        .map(|&(x, w)| w * basis(mid + half * x))
        .sum::<f64>()
}

/// LMS over `grid`; the state is x/α, x_T = init_sigma·z. Slots 0..4 hold the derivatives as a
/// ring.
pub fn on_grid(prediction: Prediction, grid: &Grid, init_sigma: f64) -> Program {
    on_grid_from(prediction, grid, init_sigma, 0)
}

/// [`on_grid`] from step `begin` on (see [`program_from`]).
fn on_grid_from(prediction: Prediction, grid: &Grid, init_sigma: f64, begin: usize) -> Program {
    let (ts, sigmas) = (&grid.t, &grid.sigma);
    let mut prog = Vec::new();
    for i in begin..grid.steps() {
        let s = sigmas[i];
        let time = super::sigma_time(ts[i], s);
        let x0 = x0_terms(prediction, Buf::X, time.alpha, time);
        let slot = |k: usize| Buf::Slot(k % ORDER);
        // d_i = (x − x̂0)/σ_i
        let d = combine(&[(1.0 / s, &[(Buf::X, 1.0)]), (-1.0 / s, &x0)]);
        let order = (i + 1).min(ORDER);
        let mut update = vec![(Buf::X, 1.0)];
        let have = (i - begin + 1).min(ORDER);
        update
            .extend((0..order.min(have)).map(|j| (slot(i - j), coefficient(sigmas, order, i, j))));
        prog.push(vec![
            model_input(Buf::X, time.alpha),
            Op::Model(time),
            lin(slot(i), d),
            lin(Buf::X, update),
        ]);
    }
    Program::new(init_sigma, ORDER, prog)
}
