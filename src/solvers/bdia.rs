//! BDIA-DDIM (Zhang, Lewis, Kleijn, "Exact Diffusion Inversion via Bi-directional Integration
//! Approximation", ECCV 2024), as the official `BDIADDIMSampler.p_sample_bdiaddim`
//! (guoqiang-zhang-x/BDIA, `text-to-image/stablediffusionV2/ldm/models/diffusion/BDIAddim.py`)
//! on diffusers' DDIM grid: the first step is plain DDIM, then with z_i the state at t_i,
//!
//!   z_{i−1} = γ·z_{i+1} − γ·D_{i→i+1}(z_i) + D_{i→i−1}(z_i),
//!
//! where D_{i→j}(z) = √ᾱ_j·x̂0 + d_j·ε̂ is the DDIM step from t_i to t_j with the model evaluated
//! once at (z_i, t_i): d_{i+1} = √(1 − ᾱ_{i+1}), and towards t_{i−1} the DDIM target ᾱ and
//! direction √(1 − ᾱ_{i−1} − σ²) (σ from η; as in the official code, only the first step draws
//! noise). γ = 0 is DDIM. One NFE per step.
//!
//! **Exact inversion** (the official `bdia_edict_functions.BDIA_stablediffusion(reverse=True)`):
//! the update solved for z_{i+1}, z_{i+1} = (z_{i−1} − D_{i→i−1}(z_i))/γ + D_{i→i+1}(z_i), from
//! the pair (x0, z_0) where z_0 is one DDIM-inversion step from x0 (model at t_0 − T/N, the final
//! ᾱ). Sampling from the resulting pair (z_{N−1}, z_{N−2}) repeats every model evaluation of the
//! inversion on the same inputs, so it reconstructs x0 up to rounding — which inversion
//! multiplies by about 1/γ per step ([`rounding_amplification`]).
//!
//! States alternate between `X` and `Slot(0)` (each update overwrites the state two steps back),
//! so a step is one fused update; `Slot(1)` holds the clipped x̂0 when `clip_sample` is set.

use super::ddim::{self, DdimStep};
use super::program::{combine, lin, Buf, Op, Program};
use crate::error::{Error, Result};
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::BdiaConfig;

const CLIP: Buf = Buf::Slot(1);

/// The slot holding `latents_next` (z_{N−2}) after an [`inversion`] run; X holds z_{N−1}.
pub const NEXT_SLOT: usize = 0;

/// The other state buffer of the pair.
fn other(b: Buf) -> Buf {
    if b == Buf::X {
        Buf::Slot(0)
    } else {
        Buf::X
    }
}

/// ᾱ of the state one step noisier than step `j` of the sampling grid (t_{i+1}).
fn a_next(grid: &[DdimStep], j: usize) -> f64 {
    let t = grid[j - 1].time;
    t.alpha * t.alpha
}

/// One BDIA sampling step j ≥ 1 of `grid`: `cur` holds z_i, the other buffer z_{i+1}, which is
/// overwritten with z_{i−1}.
fn sampling_step(
    cfg: &BdiaConfig,
    train: &TrainingSchedule,
    grid: &[DdimStep],
    j: usize,
    cur: Buf,
) -> Vec<Op> {
    let (s, g) = (grid[j], cfg.gamma);
    let an = a_next(grid, j);
    let (mut ops, x0, eps) =
        ddim::evaluate(cfg.ddim.clip_sample, CLIP, train.prediction, cur, s.time);
    let prev = other(cur);
    let prev_term = [(prev, 1.0)];
    ops.push(lin(
        prev,
        combine(&[
            (g, &prev_term),
            (-g * an.sqrt(), &x0),
            (-g * (1.0 - an).sqrt(), &eps),
            (s.a_prev.sqrt(), &x0),
            (s.dir, &eps),
        ]),
    ));
    ops
}

/// Steps `from..N` of the sampling grid with z_i in `cur` at step `from`; the result in X.
fn sampling_steps(
    cfg: &BdiaConfig,
    train: &TrainingSchedule,
    grid: &[DdimStep],
    from: usize,
    mut cur: Buf,
    prog: &mut Vec<Vec<Op>>,
) {
    for j in from..grid.len() {
        prog.push(sampling_step(cfg, train, grid, j, cur));
        cur = other(cur);
    }
    debug_assert_eq!(
        cur,
        Buf::X,
        "the final state lands in X by the choice of first buffers"
    );
}

fn slots(cfg: &BdiaConfig) -> usize {
    if cfg.ddim.clip_sample.is_some() {
        2
    } else {
        1
    }
}

/// Sampling from x_T = z (init σ 1): a DDIM step, then BDIA steps.
pub fn program(cfg: &BdiaConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    let (grid, _) = ddim::grid(&cfg.ddim, train, steps)?;
    let s = grid[0];
    let (mut ops, x0, eps) =
        ddim::evaluate(cfg.ddim.clip_sample, CLIP, train.prediction, Buf::X, s.time);
    let first = Op::Lin {
        dst: Buf::X,
        terms: combine(&[(s.a_prev.sqrt(), &x0), (s.dir, &eps)]),
        noise: s.std,
        clamp: None,
    };
    // The state after step 0 lands where the final state must: in X when N − 1 is even (x_T
    // then moves to Slot(0)), else in Slot(0).
    let cur = if (steps - 1) % 2 == 0 {
        ops.push(lin(Buf::Slot(0), vec![(Buf::X, 1.0)]));
        ops.push(first);
        Buf::X
    } else {
        let Op::Lin { terms, noise, .. } = first else {
            unreachable!()
        };
        ops.push(Op::Lin {
            dst: Buf::Slot(0),
            terms,
            noise,
            clamp: None,
        });
        Buf::Slot(0)
    };
    let mut prog = vec![ops];
    sampling_steps(cfg, train, &grid, 1, cur, &mut prog);
    Ok(Program::new(1.0, slots(cfg), prog))
}

/// Sampling from an inverted pair: X = `latents` (z_{N−1}, uploaded as x_T with init σ 1) and
/// [`Buf::Cond`] = `latents_next` (z_{N−2}); N − 1 BDIA steps (no first DDIM step).
pub fn from_latents(cfg: &BdiaConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    let (grid, _) = ddim::grid(&cfg.ddim, train, steps)?;
    // z_{N−2} is the state step 1 evaluates; it must sit in X when N − 1 is even.
    let (ops, cur) = if (steps - 1) % 2 == 0 {
        (
            vec![
                lin(Buf::Slot(0), vec![(Buf::X, 1.0)]),
                lin(Buf::X, vec![(Buf::Cond, 1.0)]),
            ],
            Buf::X,
        )
    } else {
        (
            vec![lin(Buf::Slot(0), vec![(Buf::Cond, 1.0)])],
            Buf::Slot(0),
        )
    };
    let mut prog = Vec::new();
    sampling_steps(cfg, train, &grid, 1, cur, &mut prog);
    match prog.first_mut() {
        Some(first) => {
            first.splice(0..0, ops);
        }
        // One step: the pair's second state is the result.
        None => prog.push(vec![lin(Buf::X, vec![(Buf::Cond, 1.0)])]),
    }
    Ok(Program::new(1.0, slots(cfg), prog))
}

/// Exact inversion: X = x0 (uploaded as x_T with init σ 1) → X = z_{N−1} (`latents`) and
/// Slot([`NEXT_SLOT`]) = z_{N−2} (`latents_next`). N NFE. γ = 0 has no inverse (an error).
pub fn inversion(cfg: &BdiaConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    if cfg.gamma <= 0.0 {
        return Err(Error::Argument {
            op: "invert",
            arg: "gamma",
            reason: format!(
                "BDIA inversion divides by γ; γ = {} has no inverse (use a γ in (0, 1], or DDIM \
                 inversion)",
                cfg.gamma
            ),
        });
    }
    let (grid, final_abar) = ddim::grid(&cfg.ddim, train, steps)?;
    let n = grid.len();
    let g = cfg.gamma;
    // z_k lands in X when (N − 1 − k) is even; z_{N−2} then ends in Slot(0).
    let start = ddim::start_time(&grid[n - 1], train, steps, final_abar);
    let (mut ops, x0, eps) =
        ddim::evaluate(cfg.ddim.clip_sample, CLIP, train.prediction, Buf::X, start);
    let a0 = grid[n - 1].time.alpha.powi(2);
    let terms = combine(&[(a0.sqrt(), &x0), ((1.0 - a0).sqrt(), &eps)]);
    let mut cur = if (n - 1) % 2 == 0 {
        ops.push(lin(Buf::Slot(0), vec![(Buf::X, 1.0)]));
        ops.push(lin(Buf::X, terms));
        Buf::X
    } else {
        ops.push(lin(Buf::Slot(0), terms));
        Buf::Slot(0)
    };
    ddim::check_finite(&ops, "BDIA inversion")?;
    let mut prog = vec![ops];
    // Inverse of sampling step j = N − k for k = 1..N−1: cur = z_{k−1}, other = z_{k−2}.
    for k in 1..n {
        let j = n - k;
        let s = grid[j];
        let an = a_next(&grid, j);
        let (mut ops, x0, eps) =
            ddim::evaluate(cfg.ddim.clip_sample, CLIP, train.prediction, cur, s.time);
        let prev = other(cur);
        let prev_term = [(prev, 1.0)];
        ops.push(lin(
            prev,
            combine(&[
                (1.0 / g, &prev_term),
                (-s.a_prev.sqrt() / g, &x0),
                (-s.dir / g, &eps),
                (an.sqrt(), &x0),
                ((1.0 - an).sqrt(), &eps),
            ]),
        ));
        prog.push(ops);
        cur = prev;
    }
    debug_assert_eq!(cur, Buf::X);
    Ok(Program::new(1.0, slots(cfg), prog))
}

/// How much inversion multiplies a rounding error of the states: about 1/γ per step after
/// the first (the recursion z_{i+1} = z_{i−1}/γ + … has a mode growing as (−1/γ)^k).
pub fn rounding_amplification(gamma: f64, steps: usize) -> f64 {
    (1.0 / gamma).powi(steps.saturating_sub(1) as i32)
}
