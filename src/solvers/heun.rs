//! Heun's second-order method in σ-space (Karras et al. 2022, Alg. 1, deterministic), as
//! diffusers' `HeunDiscreteScheduler` — without duplicated timesteps: each step is one Euler
//! predictor and, while σ_next > 0, one trapezoidal corrector (2 NFE; the last step is Euler).

use super::program::{combine, lin, model_input, x0_terms, Buf, Op, Program};
use super::Grid;
use crate::error::Result;
use crate::models::Prediction;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::{HeunConfig, SigmaGrid};

pub fn program(cfg: &HeunConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let grid = SigmaGrid {
        spacing: cfg.spacing,
        use_karras_sigmas: cfg.use_karras_sigmas,
        final_sigma_zero: true,
    };
    let (t, sigma) = super::sigma_timesteps(&grid, train, steps)?;
    let init = super::euler_init_sigma(cfg.spacing, &sigma);
    Ok(on_grid(train.prediction, &Grid { t, sigma }, init))
}

/// Heun over `grid`; the state is x/α, x_T = init_sigma·z.
pub fn on_grid(prediction: Prediction, grid: &Grid, init_sigma: f64) -> Program {
    let (ts, sigmas) = (&grid.t, &grid.sigma);
    let steps = grid.steps();
    let mut prog = Vec::new();
    // Slot 0: x at the start of the step; slot 1: the first derivative d = (x − x̂0)/σ.
    for i in 0..steps {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let time = super::sigma_time(ts[i], s);
        let x0 = x0_terms(prediction, Buf::X, time.alpha, time);
        let mut ops = vec![model_input(Buf::X, time.alpha), Op::Model(time)];
        let dt = s_next - s;
        if s_next == 0.0 {
            let k = dt / s;
            ops.push(lin(
                Buf::X,
                combine(&[(1.0 + k, &[(Buf::X, 1.0)]), (-k, &x0)]),
            ));
            prog.push(ops);
            continue;
        }
        // d1 = (x − x̂0)/σ; keep x; x ← x + dt·d1.
        ops.push(lin(
            Buf::Slot(1),
            combine(&[(1.0 / s, &[(Buf::X, 1.0)]), (-1.0 / s, &x0)]),
        ));
        ops.push(lin(Buf::Slot(0), vec![(Buf::X, 1.0)]));
        ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (Buf::Slot(1), dt)]));
        // Corrector at σ_next: d2 = (x̃ − x̂0(x̃))/σ_next; x = x_start + dt·(d1 + d2)/2.
        let t2 = super::sigma_time(ts[i + 1], s_next);
        let x0b = x0_terms(prediction, Buf::X, t2.alpha, t2);
        ops.push(model_input(Buf::X, t2.alpha));
        ops.push(Op::Model(t2));
        let d2 = combine(&[(1.0 / s_next, &[(Buf::X, 1.0)]), (-1.0 / s_next, &x0b)]);
        let terms = combine(&[
            (1.0, &[(Buf::Slot(0), 1.0)]),
            (0.5 * dt, &[(Buf::Slot(1), 1.0)]),
            (0.5 * dt, &d2),
        ]);
        ops.push(lin(Buf::X, terms));
        prog.push(ops);
    }
    Program::new(init_sigma, 2, prog)
}
