//! A solver's run as a program of two instructions — evaluate the model, and a fused linear
//! update `dst = Σ cᵢ·srcᵢ + c_z·z` (optionally clamped) — with every coefficient computed on
//! the host in f64 when the program is built. Immutable: one program serves any number of
//! concurrent runs (cf. diffusers#5749), and second-order steps and correctors need no
//! duplicated timesteps: they are just more instructions. Data-dependent coefficients (EVODiff's
//! projections, LML's corrections) are computed on the device into per-(sample, channel) scalar
//! registers (`Dot`, `Scalar`) that a `Combine` update reads.

use crate::error::{Error, Result};
pub use crate::ops::adam::AdamStep;
pub use crate::ops::coef::{Over, Sx};
use crate::schedule::Prediction;

/// A buffer of the run. All are [N, C, H, W]; `X` and slots are f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Buf {
    /// The sample being denoised (in the solver's own scaling).
    X,
    /// The model's input (VP scaling, the model's dtype).
    ModelIn,
    /// The model's raw prediction (its parameterisation, the model's dtype).
    ModelOut,
    /// A history / scratch slot.
    Slot(usize),
    /// The condition image μ of a conditioned process (f32, read-only).
    Cond,
    /// The model's second head (two-head models), like `ModelOut`.
    ModelAux,
    /// Draw k of caller-supplied per-step noise (f32, read-only; e.g. the MR Sampler's SDE
    /// with `--step-noise`, for parity with code that draws inside each step).
    StepNoise(usize),
}

pub use crate::schedule::ModelTime;

/// One instruction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// dst = Σ c·src + noise·z, then clamped to ±clamp when given. z is a fresh standard
    /// normal draw (a new Philox stream per instruction that draws).
    Lin {
        dst: Buf,
        terms: Vec<(Buf, f64)>,
        noise: f64,
        clamp: Option<f64>,
    },
    /// Run the model on `ModelIn`, writing `ModelOut`.
    Model(ModelTime),
    /// Langevin corrector update (Song et al. 2021, Alg. 4/5) with the score in `grad`:
    /// z fresh into `noise`; ε = 2·alpha·(snr·mean‖z‖ / mean‖grad‖)² over the batch (per-sample
    /// L2 norms, reduced on the GPU); X ← X + ε·grad + √(2ε)·z.
    Langevin {
        grad: Buf,
        noise: Buf,
        snr: f64,
        alpha: f64,
    },
    /// Dynamic thresholding (Imagen; the MR Sampler's data solver), in place on `buf`:
    /// per sample v = buf (+ shift), s = clamp(quantile(|v|, ratio), 1, max),
    /// buf = clamp(v, −s, s)/s (− shift).
    Threshold {
        buf: Buf,
        shift: Option<Buf>,
        ratio: f64,
        max: f64,
    },
    /// Scalar register `dst` (one value per (sample, channel), see [`Program::scalars`]) =
    /// ⟨a, b⟩ summed over H×W per (n, c) or over C×H×W per sample (`over`).
    Dot {
        dst: usize,
        a: Buf,
        b: Buf,
        over: Over,
    },
    /// Register `dst` = the reverse-Polish program `code` on each (n, c) entry (registers and
    /// constants in, one value out).
    Scalar { dst: usize, code: Vec<Sx> },
    /// dst = Σ c·r·src, where r is register `reg`'s entry of the element's (n, c), or 1 for
    /// `None` (a term may read dst itself).
    Combine {
        dst: Buf,
        terms: Vec<(Buf, f64, Option<usize>)>,
    },
    /// dst = AᵀA src with the run's degradation operator A (`ops::degrade`, bound by
    /// `Executor::with_operator` / `interpreter::run_with_operator`): the normal-equation map
    /// of the inverse-problem methods, image in, image out (the measurement-shaped
    /// intermediate is the executor's own scratch). `src` and `dst` must differ.
    Gram { src: Buf, dst: Buf },
    /// One element-wise Adam step (torch.optim.Adam, `ops::adam`) on `param` with gradient
    /// `grad` and moments `m`, `v` (four distinct buffers).
    Adam {
        param: Buf,
        grad: Buf,
        m: Buf,
        v: Buf,
        step: AdamStep,
    },
}

/// A complete sampling run.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// x_T = init_sigma · z.
    pub init_sigma: f64,
    /// Number of slots used.
    pub slots: usize,
    /// Instructions, grouped per step (for progress reporting).
    pub steps: Vec<Vec<Op>>,
    /// Model evaluations in the whole run.
    pub nfe: usize,
}

impl Op {
    /// Every buffer the instruction names, with whether it writes it.
    pub fn buffers(&self) -> Vec<(Buf, bool)> {
        match self {
            Op::Lin { dst, terms, .. } => {
                let mut v = vec![(*dst, true)];
                v.extend(terms.iter().map(|(b, _)| (*b, false)));
                v
            }
            Op::Langevin { grad, noise, .. } => {
                vec![(*grad, false), (*noise, true), (Buf::X, true)]
            }
            Op::Threshold { buf, shift, .. } => {
                let mut v = vec![(*buf, true)];
                v.extend(shift.iter().map(|b| (*b, false)));
                v
            }
            Op::Model(_) => vec![(Buf::ModelIn, false), (Buf::ModelOut, true)],
            Op::Dot { a, b, .. } => vec![(*a, false), (*b, false)],
            Op::Scalar { .. } => vec![],
            Op::Combine { dst, terms } => {
                let mut v = vec![(*dst, true)];
                v.extend(terms.iter().map(|(b, _, _)| (*b, false)));
                v
            }
            Op::Gram { src, dst } => vec![(*dst, true), (*src, false)],
            Op::Adam {
                param, grad, m, v, ..
            } => vec![(*param, true), (*grad, false), (*m, true), (*v, true)],
        }
    }
}

impl Program {
    /// Checks that the program can run where a condition μ (`cond`) and a second model head
    /// (`aux`) are or are not available: every slot it names is declared, μ and the second
    /// head are given where read and never written. The executor and the interpreter both
    /// call it, so a malformed program is an error, not an out-of-bounds panic.
    pub fn check(&self, cond: bool, aux: bool) -> Result<()> {
        let err = |arg: &'static str, reason: String| Error::Argument {
            op: "sampler",
            arg,
            reason,
        };
        for (b, write) in self.steps.iter().flatten().flat_map(Op::buffers) {
            match b {
                Buf::Slot(i) if i >= self.slots => {
                    return Err(err(
                        "program",
                        format!(
                            "the program reads history slot {i} but declares {} slots",
                            self.slots
                        ),
                    ))
                }
                Buf::Cond | Buf::ModelAux | Buf::StepNoise(_) if write => {
                    return Err(err(
                        "program",
                        format!("{b:?} is read-only but an instruction writes it"),
                    ))
                }
                Buf::Cond if !cond => {
                    return Err(err(
                        "condition",
                        "this program reads the condition image μ but none was given".into(),
                    ))
                }
                Buf::ModelAux if !aux => {
                    return Err(err(
                        "model",
                        "this program reads a second model head but the model has only one".into(),
                    ))
                }
                _ => {}
            }
        }
        for op in self.steps.iter().flatten() {
            if let Op::Adam {
                param, grad, m, v, ..
            } = op
            {
                let b = [param, grad, m, v];
                if (0..4).any(|i| (i + 1..4).any(|j| b[i] == b[j])) {
                    return Err(err(
                        "program",
                        format!("Adam needs four distinct buffers (got {b:?})"),
                    ));
                }
            }
            if let Op::Gram { src, dst } = op {
                if src == dst {
                    return Err(err(
                        "program",
                        format!("Gram reads and writes {src:?}; it needs two buffers"),
                    ));
                }
            }
        }
        let regs = self.scalars();
        for op in self.steps.iter().flatten() {
            if let Op::Scalar { code, .. } = op {
                crate::ops::coef::check_code(code, regs)?;
            }
        }
        Ok(())
    }

    /// How many scalar registers (each one f32 per (sample, channel)) the program uses: one
    /// past the largest index named (0 when none).
    pub fn scalars(&self) -> usize {
        let mut k = 0;
        for op in self.steps.iter().flatten() {
            let named: Vec<usize> = match op {
                Op::Dot { dst, .. } => vec![*dst],
                Op::Scalar { dst, code } => code
                    .iter()
                    .filter_map(|s| match s {
                        Sx::Reg(r) => Some(*r),
                        _ => None,
                    })
                    .chain([*dst])
                    .collect(),
                Op::Combine { terms, .. } => terms.iter().filter_map(|t| t.2).collect(),
                _ => vec![],
            };
            k = named.into_iter().map(|r| r + 1).fold(k, usize::max);
        }
        k
    }

    pub fn new(init_sigma: f64, slots: usize, steps: Vec<Vec<Op>>) -> Self {
        let nfe = steps
            .iter()
            .flatten()
            .filter(|o| matches!(o, Op::Model(_)))
            .count();
        Program {
            init_sigma,
            slots,
            steps,
            nfe,
        }
    }

    /// Whether the program applies a degradation operator ([`Op::Gram`]).
    pub fn uses_operator(&self) -> bool {
        self.steps
            .iter()
            .flatten()
            .any(|o| matches!(o, Op::Gram { .. }))
    }

    /// How many caller-supplied draws ([`Buf::StepNoise`]) the program reads: one past the
    /// largest index named (0 when none).
    pub fn step_noise_draws(&self) -> usize {
        self.steps
            .iter()
            .flatten()
            .flat_map(|op| match op {
                Op::Lin { terms, .. } => terms.iter().map(|(b, _)| *b).collect(),
                Op::Combine { terms, .. } => terms.iter().map(|(b, _, _)| *b).collect(),
                _ => vec![],
            })
            .filter_map(|b| match b {
                Buf::StepNoise(k) => Some(k + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// x̂0 as a combination of `state` (where the model input is `c_in·state`) and `ModelOut`.
pub fn x0_terms(pred: Prediction, state: Buf, c_in: f64, time: ModelTime) -> Vec<(Buf, f64)> {
    let (a, s) = (time.alpha, time.sigma);
    match pred {
        // x̂0 = (x_in − σ ε̂) / α
        Prediction::Epsilon => vec![(state, c_in / a), (Buf::ModelOut, -s / a)],
        Prediction::Sample => vec![(Buf::ModelOut, 1.0)],
        // x̂0 = α x_in − σ v̂
        Prediction::VPrediction => vec![(state, a * c_in), (Buf::ModelOut, -s)],
        // v = ε − x0 with x_in = α x0 + σ ε ⇒ x̂0 = (x_in − σ v̂)/(α + σ)
        Prediction::Flow => vec![(state, c_in / (a + s)), (Buf::ModelOut, -s / (a + s))],
        // ŝ = −ε̂/σ ⇒ x̂0 = (x_in + σ² ŝ)/α
        Prediction::Score => vec![(state, c_in / a), (Buf::ModelOut, s * s / a)],
    }
}

/// ε̂ as a combination of `state` and `ModelOut`.
pub fn eps_terms(pred: Prediction, state: Buf, c_in: f64, time: ModelTime) -> Vec<(Buf, f64)> {
    let (a, s) = (time.alpha, time.sigma);
    match pred {
        Prediction::Epsilon => vec![(Buf::ModelOut, 1.0)],
        // ε̂ = (x_in − α x̂0) / σ
        Prediction::Sample => vec![(state, c_in / s), (Buf::ModelOut, -a / s)],
        // ε̂ = α v̂ + σ x_in
        Prediction::VPrediction => vec![(Buf::ModelOut, a), (state, s * c_in)],
        // ε̂ = (x_in + α v̂)/(α + σ)
        Prediction::Flow => vec![(state, c_in / (a + s)), (Buf::ModelOut, a / (a + s))],
        Prediction::Score => vec![(Buf::ModelOut, -s)],
    }
}

/// Σ w·terms over several weighted term lists, merging equal buffers.
pub fn combine(parts: &[(f64, &[(Buf, f64)])]) -> Vec<(Buf, f64)> {
    let mut out: Vec<(Buf, f64)> = Vec::new();
    for (w, terms) in parts {
        for (b, c) in terms.iter() {
            match out.iter_mut().find(|(ob, _)| ob == b) {
                Some(e) => e.1 += w * c,
                None => out.push((*b, w * c)),
            }
        }
    }
    out.retain(|(_, c)| *c != 0.0);
    out
}

/// The score ŝ = −ε̂/σ of the model-input marginal as a combination of `state` and `ModelOut`.
pub fn score_terms(pred: Prediction, state: Buf, c_in: f64, time: ModelTime) -> Vec<(Buf, f64)> {
    combine(&[(-1.0 / time.sigma, &eps_terms(pred, state, c_in, time))])
}

/// The instruction that prepares the model input `c_in·state` (state in f32, input in the
/// model's dtype).
pub fn model_input(state: Buf, c_in: f64) -> Op {
    Op::Lin {
        dst: Buf::ModelIn,
        terms: vec![(state, c_in)],
        noise: 0.0,
        clamp: None,
    }
}

/// A plain linear instruction.
pub fn lin(dst: Buf, terms: Vec<(Buf, f64)>) -> Op {
    Op::Lin {
        dst,
        terms,
        noise: 0.0,
        clamp: None,
    }
}
