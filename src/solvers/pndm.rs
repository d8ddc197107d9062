//! PNDM (Liu, Ren, Lin, Zhao, "Pseudo Numerical Methods for Diffusion Models on Manifolds",
//! ICLR 2022), as diffusers' `PNDMScheduler`: the transfer x_{t′} = √(ᾱ′/ᾱ)·x − (ᾱ′ − ᾱ)·ε /
//! (ᾱ√(1 − ᾱ′) + √(ᾱ(1 − ᾱ)ᾱ′)) (the paper's eq. 9, `_get_prev_sample`) driven by a linear
//! multistep combination of past ε̂ (PLMS, orders 1–4), started either by three pseudo
//! Runge–Kutta steps (PRK, 4 evaluations each) or, with `skip_prk_steps` (Stable Diffusion
//! 1.x), by diffusers' two-evaluation first step (Euler to t − T/N, then the mean of both
//! evaluations from the start: the second timestep is evaluated twice). Every rule is
//! diffusers' (its `step_prk`/`step_plms` state machine, replayed here when the program is
//! built): the second evaluation of the skip-PRK start is not kept in the history, v̂ is
//! combined before it is converted to ε̂ (with the sample and ᾱ the transfer starts from), PRK's
//! intermediate transfers start from the Runge–Kutta step's first sample and time, and the
//! time step is always T/N whatever the spacing.

use super::program::{combine, lin, model_input, Buf, ModelTime, Op, Program};
use crate::error::{Error, Result};
use crate::schedule::config::TrainingSchedule;
use crate::schedule::options::PndmConfig;
use crate::schedule::{check_steps, DiscreteVp, Prediction};

/// History slots 0..4 hold the last four model outputs (`ets`), as a ring.
const ETS: usize = 4;
/// The sample a step's later evaluations transfer from (`cur_sample`).
const CUR: Buf = Buf::Slot(ETS);
/// PRK's running Runge–Kutta sum (`cur_model_output`).
const ACC: Buf = Buf::Slot(ETS + 1);

type Terms = Vec<(Buf, f64)>;

struct Pndm {
    vp: DiscreteVp,
    final_abar: f64,
    prediction: Prediction,
    /// The model outputs in the history (oldest first) and how many were ever appended.
    ets: Vec<Buf>,
    appended: usize,
}

impl Pndm {
    /// ᾱ at a timestep the transfer starts from (diffusers indexes `alphas_cumprod` with it).
    fn abar(&self, t: i64) -> Result<f64> {
        let n = self.vp.num_train_timesteps() as i64;
        if !(0..n).contains(&t) {
            return Err(Error::Argument {
                op: "set_timesteps",
                arg: "steps",
                reason: format!(
                    "PNDM reaches timestep {t}, outside the training timesteps 0..{n} (an \
                     IndexError in diffusers); use fewer steps or another spacing"
                ),
            });
        }
        Ok(self.vp.abar(t as usize))
    }

    /// ᾱ at the timestep a transfer ends at (`final_alpha_cumprod` below 0).
    fn abar_prev(&self, t: i64) -> Result<f64> {
        if t >= 0 {
            self.abar(t)
        } else {
            Ok(self.final_abar)
        }
    }

    /// Evaluates the model at timestep `t` on X.
    fn evaluate(&self, t: i64) -> Result<Vec<Op>> {
        let a = self.abar(t)?;
        Ok(vec![
            model_input(Buf::X, 1.0),
            Op::Model(ModelTime {
                t: t as f64,
                alpha: a.sqrt(),
                sigma: (1.0 - a).sqrt(),
            }),
        ])
    }

    /// Appends the model output to the history (`ets.append`), keeping at most four.
    fn push_ets(&mut self, ops: &mut Vec<Op>) {
        if self.ets.len() == ETS {
            self.ets.remove(0);
        }
        let slot = Buf::Slot(self.appended % ETS);
        self.appended += 1;
        ops.push(lin(slot, vec![(Buf::ModelOut, 1.0)]));
        self.ets.push(slot);
    }

    /// `_get_prev_sample(sample, t, prev, m)` as the update of X, where `m` is the (combined)
    /// raw model output.
    fn transfer(&self, sample: Buf, t: i64, prev: i64, m: &[(Buf, f64)]) -> Result<Op> {
        let (at, ap) = (self.abar(t)?, self.abar_prev(prev)?);
        let eps: Terms = match self.prediction {
            Prediction::Epsilon => m.to_vec(),
            // ε̂ = √ᾱ·v̂ + √(1 − ᾱ)·x
            Prediction::VPrediction => {
                combine(&[(at.sqrt(), m), ((1.0 - at).sqrt(), &[(sample, 1.0)])])
            }
            p => {
                return Err(Error::Argument {
                    op: "PNDMScheduler",
                    arg: "prediction_type",
                    reason: format!("{p:?} is not supported (epsilon, v_prediction)"),
                })
            }
        };
        let den = at * (1.0 - ap).sqrt() + (at * (1.0 - at) * ap).sqrt();
        Ok(lin(
            Buf::X,
            combine(&[
                ((ap / at).sqrt(), &[(sample, 1.0)]),
                (-(ap - at) / den, &eps),
            ]),
        ))
    }
}

/// diffusers' `_timesteps` (ascending, integers) for a spacing.
fn timesteps(cfg: &PndmConfig, train: &TrainingSchedule, steps: usize) -> Result<Vec<i64>> {
    let mut ts: Vec<i64> = super::indexed_timesteps(cfg.spacing, train, steps)?
        .into_iter()
        .map(|t| t as i64)
        .collect();
    ts.reverse();
    Ok(ts)
}

pub fn program(cfg: &PndmConfig, train: &TrainingSchedule, steps: usize) -> Result<Program> {
    program_from(cfg, train, steps, 0)
}

/// [`program`] over diffusers' `timesteps` list (`prk_timesteps` + `plms_timesteps`) cut at
/// entry `begin`, as img2img runs it: a fresh scheduler (counter 0, empty history) stepped over
/// the remaining entries. The machine is counter-driven, so the cut entries are treated as the
/// start: the first 12 evaluations are PRK steps (whose transfers start from `prk_timesteps`
/// by counter), and with `skip_prk_steps` the first two are the two-evaluation start (the
/// second entry standing for the first one's second evaluation).
pub fn program_from(
    cfg: &PndmConfig,
    train: &TrainingSchedule,
    steps: usize,
    begin: usize,
) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    let solver = crate::schedule::config::SolverConfig::Pndm(*cfg);
    solver
        .check_prediction(train.prediction)
        .map_err(|reason| Error::Argument {
            op: "PNDMScheduler",
            arg: "prediction_type",
            reason,
        })?;
    if !cfg.skip_prk_steps && steps < 4 {
        return Err(Error::Argument {
            op: "set_timesteps",
            arg: "steps",
            reason: format!(
                "{steps} inference steps: PNDM's Runge–Kutta start takes the last 4 timesteps \
                 (at least 4 steps; or set skip_prk_steps, `--scheduler plms`)"
            ),
        });
    }
    let vp = train.vp()?;
    let final_abar = if cfg.set_alpha_to_one {
        1.0
    } else {
        vp.abar(0)
    };
    let mut s = Pndm {
        vp,
        final_abar,
        prediction: train.prediction,
        ets: Vec::new(),
        appended: 0,
    };
    let ts = timesteps(cfg, train, steps)?;
    let n = ts.len();
    let t_train = train.num_train_timesteps as i64;
    let stride = t_train / steps as i64;
    let h = stride / 2;
    let (prk_ts, plms): (Vec<i64>, Vec<i64>) = if cfg.skip_prk_steps {
        // t_{n−1}, t_{n−2}, t_{n−2}, t_{n−3}, …, t_0.
        let mut p: Vec<i64> = ts[..n - 1].to_vec();
        if n >= 2 {
            p.push(ts[n - 2]);
        }
        p.push(ts[n - 1]);
        p.reverse();
        (Vec::new(), p)
    } else {
        (
            prk_timesteps(&ts, h),
            ts[..n - 3].iter().rev().copied().collect(),
        )
    };
    let all: Vec<i64> = prk_ts.iter().chain(&plms).copied().collect();
    let evals = all.get(begin..).unwrap_or(&[]);
    let mut prog: Vec<Vec<Op>> = Vec::new();
    let mut group = Vec::new();
    for (counter, &t) in evals.iter().enumerate() {
        if counter < prk_ts.len() {
            prk_step(&mut s, counter, t, &prk_ts, h, &mut group)?;
            if counter % 4 == 3 {
                prog.push(std::mem::take(&mut group));
            }
            continue;
        }
        let mut ops = s.evaluate(t)?;
        let (mut tt, mut prev) = (t, t - stride);
        if counter != 1 {
            s.push_ets(&mut ops);
        } else {
            (tt, prev) = (t + stride, t);
        }
        let e = &s.ets;
        let (sample, m): (Buf, Terms) = match (e.len(), counter) {
            (1, 0) => {
                ops.push(lin(CUR, vec![(Buf::X, 1.0)]));
                (Buf::X, vec![(e[0], 1.0)])
            }
            (1, 1) => (CUR, vec![(Buf::ModelOut, 0.5), (e[0], 0.5)]),
            (2, _) => (Buf::X, vec![(e[1], 1.5), (e[0], -0.5)]),
            (3, _) => (
                Buf::X,
                vec![
                    (e[2], 23.0 / 12.0),
                    (e[1], -16.0 / 12.0),
                    (e[0], 5.0 / 12.0),
                ],
            ),
            _ => (
                Buf::X,
                vec![
                    (e[3], 55.0 / 24.0),
                    (e[2], -59.0 / 24.0),
                    (e[1], 37.0 / 24.0),
                    (e[0], -9.0 / 24.0),
                ],
            ),
        };
        ops.push(s.transfer(sample, tt, prev, &m)?);
        group.extend(ops);
        // The skip-PRK start's two evaluations make one step (t_{n−1} → t_{n−2}).
        if !(counter == 0 && cfg.skip_prk_steps && evals.len() >= 2) {
            prog.push(std::mem::take(&mut group));
        }
    }
    if !group.is_empty() {
        prog.push(group);
    }
    Ok(Program::new(1.0, ETS + 2, prog))
}

/// diffusers' `prk_timesteps` over the last four timesteps, as it lays them out: d, c+h, c+h,
/// c; c, b+h, b+h, b; b, a+h, a+h, a (h = T/N/2).
fn prk_timesteps(ts: &[i64], h: i64) -> Vec<i64> {
    let last4 = &ts[ts.len() - 4..];
    let mut tiled: Vec<i64> = last4.iter().flat_map(|&t| [t, t + h]).collect();
    tiled.pop();
    let doubled: Vec<i64> = tiled.iter().flat_map(|&t| [t, t]).collect();
    doubled[1..doubled.len() - 1]
        .iter()
        .rev()
        .copied()
        .collect()
}

/// One pseudo Runge–Kutta evaluation (`step_prk`) at timestep `t`, the `counter`-th of the run:
/// the transfer starts from the Runge–Kutta step's first sample at `prk_timesteps[counter/4·4]`.
fn prk_step(
    s: &mut Pndm,
    counter: usize,
    t: i64,
    prk: &[i64],
    h: i64,
    group: &mut Vec<Op>,
) -> Result<()> {
    let mut ops = s.evaluate(t)?;
    let prev = if counter % 2 == 1 { t } else { t - h };
    let start = prk[counter / 4 * 4];
    let m: Terms = match counter % 4 {
        0 => {
            ops.push(lin(ACC, vec![(Buf::ModelOut, 1.0 / 6.0)]));
            s.push_ets(&mut ops);
            ops.push(lin(CUR, vec![(Buf::X, 1.0)]));
            vec![(Buf::ModelOut, 1.0)]
        }
        1 | 2 => {
            ops.push(lin(ACC, vec![(ACC, 1.0), (Buf::ModelOut, 1.0 / 3.0)]));
            vec![(Buf::ModelOut, 1.0)]
        }
        _ => vec![(ACC, 1.0), (Buf::ModelOut, 1.0 / 6.0)],
    };
    ops.push(s.transfer(CUR, start, prev, &m)?);
    group.extend(ops);
    Ok(())
}
