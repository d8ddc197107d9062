//! RED-diff (Mardani, Song, Kautz, Vahdat, "A Variational Perspective on Solving Inverse
//! Problems with Diffusion Models", ICLR 2024; official NVlabs/RED-diff `algos/reddiff.py`), as
//! a program: Adam on the variational mean μ with the moments on the GPU.
//!
//! μ₀ = A†y (Aᵀy for the blurs, which have no closed-form A†). Per step t on the official grid
//! (`range(0, T, T/N)` reversed): x̂0 = μ + σ_x0·z₀; x_t = √ᾱ_t·x̂0 + √(1−ᾱ_t)·z;
//! ε̂ = model(x_t, t); loss = w_t·mean((ε̂ − z)·x̂0) + v·mean((y − A x̂0)²)/2 with ε̂ and z
//! constants, w_t = `grad_term_weight`·√(1−ᾱ_t)/√ᾱ_t (the `linear` weighting), v =
//! `obs_weight`; so ∇_μ = w_t/|x|·(ε̂ − z) + v/|y|·(AᵀA x̂0 − Aᵀy), |x| and |y| the element
//! counts of the batch and of the official measurement (the kept pixels for the masks); one
//! torch.optim.Adam step (β = (0.9, 0.99), eps 1e-8). The result is the last x̂0, as the
//! official `sample` returns. Aᵀy is the read-only [`Buf::Cond`].

use super::program::{eps_terms, lin, AdamStep, Buf, ModelTime, Op, Program};
use crate::error::{Error, Result};
use crate::ops::degrade::Operator;
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;

/// The official defaults (`_configs/algo/reddiff.yaml`, the optimiser in `reddiff.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RedDiffOptions {
    pub lr: f64,
    pub grad_term_weight: f64,
    pub obs_weight: f64,
    pub sigma_x0: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Read step k's draws (the official order: z₀ then z) from `Buf::StepNoise(2k)` and
    /// `Buf::StepNoise(2k + 1)` (caller-supplied, for parity with code that draws inside the
    /// loop) instead of drawing them.
    pub supplied_noise: bool,
}

impl Default for RedDiffOptions {
    fn default() -> Self {
        RedDiffOptions {
            lr: 0.1,
            grad_term_weight: 0.25,
            obs_weight: 1.0,
            sigma_x0: 0.0,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            supplied_noise: false,
        }
    }
}

/// The official default number of steps (`exp.num_steps`).
pub const DEFAULT_STEPS: usize = 50;

const Z: Buf = Buf::Slot(0);
const X0P: Buf = Buf::Slot(1);
const G: Buf = Buf::Slot(2);
const GR: Buf = Buf::Slot(3);
const M: Buf = Buf::Slot(4);
const V: Buf = Buf::Slot(5);
const MU: Buf = Buf::Slot(6);

/// The element count of the official measurement of `image` [N, C, H, W]: the kept pixels of
/// the masks (the official inpainting H returns them only), A's output otherwise.
pub fn measurement_numel(op: &Operator, image: &[usize]) -> Result<usize> {
    let ms = op.measurement_shape(image, "x")?;
    Ok(match op.mask(image[2], image[3]) {
        Some(m) => image[0] * image[1] * m.iter().filter(|v| **v != 0.0).count(),
        None => ms.iter().product(),
    })
}

/// The RED-diff program for `steps` steps on images of `image` [N, C, H, W] degraded by `op`.
pub fn program(
    opts: &RedDiffOptions,
    train: &TrainingSchedule,
    steps: usize,
    op: &Operator,
    image: &[usize],
) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    if opts.sigma_x0.is_nan() || opts.sigma_x0 < 0.0 {
        return Err(Error::Argument {
            op: "red-diff",
            arg: "sigma_x0",
            reason: format!("must be ≥ 0 (got {})", opts.sigma_x0),
        });
    }
    let nx: usize = image.iter().product();
    let ny = measurement_numel(op, image)?.max(1);
    // μ₀ = A†y = R²·Aᵀy for average pooling, Aᵀy for the masks (and the blurs' stand-in).
    let c0 = match op {
        Operator::Sr(r) => (r * r) as f64,
        _ => 1.0,
    };
    let vp = train.vp()?;
    let t_total = train.num_train_timesteps;
    let times: Vec<usize> = (0..t_total).step_by(t_total / steps).collect();
    let mut out = Vec::new();
    for (k, &t) in times.iter().rev().enumerate() {
        let mut ops = Vec::new();
        if k == 0 {
            ops.push(lin(MU, vec![(Buf::Cond, c0)]));
            // X is 0 (init σ 0): zero the moments for every run of the program.
            ops.push(lin(M, vec![(Buf::X, 0.0)]));
            ops.push(lin(V, vec![(Buf::X, 0.0)]));
        }
        let at = vp.abar(t);
        let time = ModelTime {
            t: t as f64,
            alpha: at.sqrt(),
            sigma: (1.0 - at).sqrt(),
        };
        if opts.supplied_noise {
            ops.push(lin(
                X0P,
                vec![(MU, 1.0), (Buf::StepNoise(2 * k), opts.sigma_x0)],
            ));
            ops.push(lin(Z, vec![(Buf::StepNoise(2 * k + 1), 1.0)]));
        } else {
            ops.push(Op::Lin {
                dst: X0P,
                terms: vec![(MU, 1.0)],
                noise: opts.sigma_x0,
                clamp: None,
            });
            ops.push(Op::Lin {
                dst: Z,
                terms: vec![],
                noise: 1.0,
                clamp: None,
            });
        }
        ops.push(Op::Lin {
            dst: Buf::ModelIn,
            terms: vec![(X0P, time.alpha), (Z, time.sigma)],
            noise: 0.0,
            clamp: None,
        });
        ops.push(Op::Model(time));
        ops.push(Op::Gram { src: X0P, dst: GR });
        let w = opts.grad_term_weight * time.sigma / time.alpha / nx as f64;
        let v = opts.obs_weight / ny as f64;
        let mut g: Vec<(Buf, f64)> = eps_terms(train.prediction, Buf::ModelIn, 1.0, time)
            .into_iter()
            .map(|(b, c)| (b, w * c))
            .collect();
        g.extend([(Z, -w), (GR, v), (Buf::Cond, -v)]);
        ops.push(lin(G, g));
        ops.push(Op::Adam {
            param: MU,
            grad: G,
            m: M,
            v: V,
            step: AdamStep {
                lr: opts.lr,
                beta1: opts.beta1,
                beta2: opts.beta2,
                eps: opts.eps,
                k: k as u32 + 1,
            },
        });
        if k + 1 == times.len() {
            ops.push(lin(Buf::X, vec![(X0P, 1.0)]));
        }
        out.push(ops);
    }
    Ok(Program::new(0.0, 7, out))
}
