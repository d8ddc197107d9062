//! Inversion (x0 → the states sampling starts from) and sampling from those states: BDIA-DDIM's
//! exact inversion (a pair `latents`, `latents_next`) and DDIM's approximate one (`latents`).
//! Both run as programs on the GPU executor, like sampling: no readback inside the loop.
//! Inverting under one class label and sampling under another edits the image.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::load::{HostTensor, Weights};
use crate::models::Denoiser;
use crate::schedule::config::{SchedulerConfig, SolverConfig};
use crate::solvers::{self, bdia, executor::Executor, Inverted};
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// Inverted states (f32, [N, C, H, W]): x_T and, for BDIA, the state one step later.
#[derive(Debug, Clone, PartialEq)]
pub struct Latents {
    pub shape: Vec<usize>,
    pub latents: Vec<f32>,
    pub next: Option<Vec<f32>>,
}

fn arg(op: &'static str, arg: &'static str, reason: String) -> Error {
    Error::Argument { op, arg, reason }
}

fn finite(op: &'static str, what: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(arg(
            op,
            "output",
            format!("{what} holds a non-finite value at flat index {i}"),
        )),
        None => Ok(()),
    }
}

/// Runs the inversion of `cfg` (DDIM or BDIA) on `model` from `x0` (the model's input shape).
pub fn invert(
    gpu: &Gpu,
    model: &mut dyn Denoiser,
    cfg: &SchedulerConfig,
    x0: &[f32],
    steps: usize,
    progress: impl FnMut(usize, usize),
) -> Result<Latents> {
    let shape = model.input().shape().to_vec();
    if x0.len() != model.input().numel() {
        return Err(Error::HostLength {
            tensor: "x0".into(),
            got: x0.len(),
            want: model.input().numel(),
            shape,
        });
    }
    let (program, kind) = solvers::inversion(cfg, steps)?;
    let exec = Executor::new(gpu, model, &program, 0, true)?;
    exec.set_noise(gpu, x0)?;
    let latents = exec.run(gpu, model, progress)?.to_vec_f32(gpu)?;
    finite("invert", "`latents`", &latents)?;
    let next = match kind {
        Inverted::State => None,
        Inverted::Pair => {
            let t = exec.slot(bdia::NEXT_SLOT).ok_or_else(|| {
                arg(
                    "invert",
                    "program",
                    "the inversion left no second state".into(),
                )
            })?;
            let v = t.to_vec_f32(gpu)?;
            finite("invert", "`latents_next`", &v)?;
            Some(v)
        }
    };
    Ok(Latents {
        shape,
        latents,
        next,
    })
}

/// Samples with `cfg` (DDIM or BDIA) from inverted states, exactly as given (no scaling); the
/// states must have the model's input shape, and BDIA needs `latents_next`.
pub fn sample_from_latents(
    gpu: &Gpu,
    model: &mut dyn Denoiser,
    cfg: &SchedulerConfig,
    start: &Latents,
    steps: usize,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let shape = model.input().shape().to_vec();
    if start.shape != shape {
        return Err(arg(
            "sample",
            "latents",
            format!(
                "the states have shape {:?} but the model samples {:?}",
                start.shape, shape
            ),
        ));
    }
    let (program, kind) = solvers::from_latents(cfg, steps)?;
    let cond = match (kind, &start.next) {
        (Inverted::Pair, Some(n)) => Some(Tensor::from_f32(
            gpu,
            "latents_next",
            &shape,
            n,
            DType::F32,
        )?),
        (Inverted::Pair, None) => {
            return Err(arg(
                "sample",
                "latents",
                format!(
                    "there is no `latents_next`, which {} needs (the state one step after \
                     `latents`; `diffuse invert --scheduler bdia` writes it)",
                    cfg.kind().class_name()
                ),
            ))
        }
        (Inverted::State, _) => None,
    };
    let exec = Executor::with_condition(gpu, model, &program, 0, true, cond.as_ref())?;
    exec.set_noise(gpu, &start.latents)?;
    let x = exec.run(gpu, model, progress)?.to_vec_f32(gpu)?;
    finite("sample", "the sample", &x)?;
    Ok(x)
}

/// The f32 unit roundoff.
const F32_EPS: f64 = 5.960_464_477_539_063e-8;

/// The reconstruction error (relative to max|x0|) that BDIA inversion's amplified rounding is
/// expected to reach at this γ and step count: 2⁻²⁴·γ^{−(N−1)}·240, the factor 240 calibrated on
/// the official code's own f32 error at γ = 0.5, 10 steps (7.2e-3, issue 14). `None` for
/// other schedulers.
pub fn expected_rounding(cfg: &SchedulerConfig, steps: usize) -> Option<f64> {
    match &cfg.solver {
        SolverConfig::Bdia(c) if c.gamma > 0.0 => {
            Some(F32_EPS * 240.0 * bdia::rounding_amplification(c.gamma, steps))
        }
        _ => None,
    }
}

/// A warning when [`expected_rounding`] passes 1e-2.
pub fn rounding_warning(cfg: &SchedulerConfig, steps: usize) -> Option<String> {
    let e = expected_rounding(cfg, steps)?;
    let SolverConfig::Bdia(c) = &cfg.solver else {
        return None;
    };
    (e > 1e-2).then(|| {
        format!(
            "BDIA inversion multiplies rounding errors of the states by about 1/γ per step: at \
             γ = {} and {steps} steps (×{:.1e}) the round trip may be off by ~{e:.1e}·max|x0| \
             or diverge (the official code does at γ = 0.5, 50 steps, even in float64; smooth \
             models can do far better); use fewer steps or a γ closer to 1",
            c.gamma,
            bdia::rounding_amplification(c.gamma, steps)
        )
    })
}

/// Writes `latents` (and `latents_next`) as f32 safetensors, atomically.
pub fn write_latents(path: &Path, l: &Latents) -> Result<()> {
    crate::output::OutputPlan::write_one("latents output", path, &latents_bytes(l)?)
}

/// The safetensors bytes [`write_latents`] writes.
pub fn latents_bytes(l: &Latents) -> Result<Vec<u8>> {
    let t = HostTensor {
        shape: l.shape.clone(),
        data: l.latents.clone(),
    };
    match &l.next {
        Some(n) => {
            let u = HostTensor {
                shape: l.shape.clone(),
                data: n.clone(),
            };
            crate::load::f32_tensors_bytes(&[("latents", &t), ("latents_next", &u)])
        }
        None => crate::load::f32_tensors_bytes(&[("latents", &t)]),
    }
}

/// Reads `latents` and, when present, `latents_next` (same shape, [N, C, H, W], finite).
pub fn read_latents(path: &Path) -> Result<Latents> {
    let file = path.display().to_string();
    let err = |reason: String| Error::Load {
        file: file.clone(),
        reason,
    };
    let w = Weights::open(path)?;
    if !w.contains("latents") {
        return Err(err(
            "no tensor `latents` (write it with `diffuse invert`)".into()
        ));
    }
    let l = w.read_input("latents", None)?;
    if l.shape.len() != 4 {
        return Err(err(format!(
            "`latents` has shape {:?}; expected [N, C, H, W]",
            l.shape
        )));
    }
    let next = if w.contains("latents_next") {
        Some(w.read_input("latents_next", Some(&l.shape))?.data)
    } else {
        None
    };
    for (name, v) in [("latents", Some(&l.data)), ("latents_next", next.as_ref())] {
        if let Some(i) = v.and_then(|v| v.iter().position(|x| !x.is_finite())) {
            return Err(err(format!(
                "`{name}` holds a non-finite value at flat index {i}"
            )));
        }
    }
    Ok(Latents {
        shape: l.shape,
        latents: l.data,
        next,
    })
}
