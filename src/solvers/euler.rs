//! Euler and Euler-ancestral samplers in σ-space (Karras et al., "Elucidating the Design Space
//! of Diffusion-Based Generative Models", 2022, Alg. 1 with γ = 0; ancestral step as in
//! k-diffusion), as diffusers' `EulerDiscreteScheduler` / `EulerAncestralDiscreteScheduler`.
//! The state is x/α; the model sees x/√(σ²+1).

use super::program::{combine, model_input, x0_terms, Buf, Op, Program};
use super::Grid;
use crate::error::Result;
use crate::models::Prediction;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::EulerConfig;

pub fn program(cfg: &EulerConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let (t, sigma) = super::sigma_timesteps(&cfg.grid, train, steps)?;
    let init = super::euler_init_sigma(cfg.grid.spacing, &sigma);
    let grid = Grid { t, sigma };
    Ok(on_grid(train.prediction, &grid, cfg.ancestral, init))
}

/// Euler (or Euler-ancestral) over `grid`; the state is x/α, x_T = init_sigma·z.
pub fn on_grid(prediction: Prediction, grid: &Grid, ancestral: bool, init_sigma: f64) -> Program {
    let (ts, sigmas) = (&grid.t, &grid.sigma);
    let mut prog = Vec::new();
    for i in 0..grid.steps() {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let time = super::sigma_time(ts[i], s);
        let c_in = time.alpha;
        let x0 = x0_terms(prediction, Buf::X, c_in, time);
        // x' = x + (x − x̂0)/σ · (σ_target − σ) [+ σ_up z]
        let (target, up) = if ancestral {
            let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s))
                .max(0.0)
                .sqrt();
            ((s_next * s_next - up * up).max(0.0).sqrt(), up)
        } else {
            (s_next, 0.0)
        };
        let k = (target - s) / s;
        let terms = combine(&[(1.0 + k, &[(Buf::X, 1.0)]), (-k, &x0)]);
        prog.push(vec![
            model_input(Buf::X, c_in),
            Op::Model(time),
            Op::Lin {
                dst: Buf::X,
                terms,
                noise: up,
                clamp: None,
            },
        ]);
    }
    Program::new(init_sigma, 0, prog)
}
