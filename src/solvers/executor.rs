//! Runs a [`Program`] on the GPU: the linear instructions between two model evaluations are
//! recorded once into a [`Recording`] (fused update kernels with in-kernel Philox noise) and the
//! whole run is replayed from those recordings — no readback and no allocation inside the loop.

use super::program::{Buf, ModelTime, Op, Program};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder, Recording};
use crate::models::Denoiser;
use crate::ops::degrade::{Degrader, Mode};
use crate::ops::rng::Philox;
use crate::ops::solver_step::{update, Update};
use crate::ops::{adam, coef, langevin, threshold};
use crate::tensor::{DType, Tensor};
use std::ops::ControlFlow;

enum Exec {
    Rec(Recording),
    Model(ModelTime),
}

/// A program bound to a model and buffers, ready to run (and re-run). The recordings own every
/// buffer they bind (state, history slots, norms, the condition); the executor keeps handles of
/// the model's tensors so that [`Executor::run`] can refuse a model it was not built for.
pub struct Executor {
    x: Tensor,
    slots: Vec<Tensor>,
    model: BoundModel,
    steps: Vec<Vec<Exec>>,
    init: Recording,
    noise_in: Option<Tensor>,
    step_noise: Vec<Tensor>,
}

/// The model tensors an executor's recordings read and write.
struct BoundModel {
    input: Tensor,
    output: Tensor,
    aux: Option<Tensor>,
}

impl BoundModel {
    fn of(model: &dyn Denoiser) -> Self {
        BoundModel {
            input: model.input().clone(),
            output: model.output().clone(),
            aux: model.aux_output().cloned(),
        }
    }

    /// Errors unless `model` owns exactly the tensors the recordings bind. Holding the handles
    /// keeps their storage alive, so another model can never share it by reuse.
    fn check(&self, model: &dyn Denoiser) -> Result<()> {
        let same = |bound: &Tensor, given: &Tensor| bound.shares_storage(given);
        let aux_ok = match (&self.aux, model.aux_output()) {
            (Some(b), Some(g)) => same(b, g),
            (None, _) => true,
            (Some(_), None) => false,
        };
        if same(&self.input, model.input()) && same(&self.output, model.output()) && aux_ok {
            return Ok(());
        }
        Err(Error::Argument {
            op: "sampler",
            arg: "model",
            reason: format!(
                "the executor was built for another model: its recordings bind the tensors \
                 `{}` and `{}`, but this model's input `{}` and output `{}` are other buffers \
                 (build an Executor for each model)",
                self.input.name(),
                self.output.name(),
                model.input().name(),
                model.output().name()
            ),
        })
    }
}

struct Ctx<'a> {
    cond: Option<&'a Tensor>,
    aux: Option<&'a Tensor>,
    x: &'a Tensor,
    slots: &'a [Tensor],
    norms: &'a [Tensor; 2],
    regs: Option<&'a Tensor>,
    model_in: &'a Tensor,
    model_out: &'a Tensor,
    step_noise: &'a [Tensor],
    /// The degradation operator of `Op::Gram` and its measurement-shaped scratch.
    degrade: Option<(&'a Degrader, &'a Tensor)>,
    seed: u64,
    stream: u32,
}

impl Ctx<'_> {
    fn buf(&self, b: Buf) -> &Tensor {
        match b {
            // Checked in Executor::with_condition: programs using Cond need a condition.
            Buf::Cond => self.cond.unwrap_or(self.x),
            Buf::ModelAux => self.aux.unwrap_or(self.x),
            Buf::X => self.x,
            Buf::ModelIn => self.model_in,
            Buf::ModelOut => self.model_out,
            Buf::Slot(i) => &self.slots[i],
            // Allocated in Executor::with_condition for every index the program names.
            Buf::StepNoise(k) => &self.step_noise[k],
        }
    }

    fn next_stream(&mut self) -> Philox {
        self.stream += 1;
        Philox {
            seed: self.seed,
            stream: self.stream,
        }
    }

    /// Records a Langevin corrector update: fresh z, per-sample norms, fused update.
    fn record_langevin(
        &mut self,
        rec: &mut Recorder<'_>,
        grad: Buf,
        noise: Buf,
        snr: f64,
        alpha: f64,
    ) -> Result<()> {
        let philox = self.next_stream();
        let norms = langevin::Norms {
            grad: &self.norms[0],
            noise: &self.norms[1],
        };
        let (g, z) = (self.buf(grad), self.buf(noise));
        langevin::langevin(rec, self.x, g, z, &norms, philox, snr, alpha)
    }

    /// Records `dst = Σ c·r·src` with register-scaled coefficients: a term reading dst itself
    /// becomes the update's `keep` (at most one such term).
    fn record_combine(
        &self,
        rec: &mut Recorder<'_>,
        dst: Buf,
        terms: &[(Buf, f64, Option<usize>)],
    ) -> Result<()> {
        let regs = self.regs.unwrap_or(self.x);
        let mine: Vec<_> = terms.iter().filter(|t| t.0 == dst).collect();
        if mine.len() > 1 {
            return Err(Error::Argument {
                op: "sampler",
                arg: "program",
                reason: format!("a Combine names its destination {dst:?} more than once"),
            });
        }
        let keep = mine.first().map(|t| (t.1 as f32, t.2));
        let others: Vec<coef::Term<'_>> = terms
            .iter()
            .filter(|t| t.0 != dst)
            .map(|&(b, c, r)| (self.buf(b), c as f32, r))
            .collect();
        coef::update(rec, self.buf(dst), regs, keep, &others)
    }

    /// Records `dst = Σ terms + noise·z (clamped)`: a term reading dst itself becomes the
    /// update's `keep` coefficient.
    fn record_lin(
        &mut self,
        rec: &mut Recorder<'_>,
        dst: Buf,
        terms: &[(Buf, f64)],
        noise: f64,
        clamp: Option<f64>,
    ) -> Result<()> {
        let noise = if noise != 0.0 {
            Some((self.next_stream(), noise as f32))
        } else {
            None
        };
        let keep = terms.iter().any(|(b, _)| *b == dst).then(|| {
            terms
                .iter()
                .filter(|(b, _)| *b == dst)
                .map(|(_, c)| c)
                .sum::<f64>() as f32
        });
        let others: Vec<(&Tensor, f32)> = terms
            .iter()
            .filter(|(b, _)| *b != dst)
            .map(|&(b, c)| (self.buf(b), c as f32))
            .collect();
        let u = Update {
            dst: self.buf(dst),
            keep,
            terms: &others,
            noise,
            clamp: clamp.map(|c| c as f32),
        };
        update(rec, &u)
    }
}

impl Executor {
    /// Binds `program` to `model`; `seed` keys every noise draw (stream 0 is x_T). With
    /// `noise_input`, x_T = init_sigma · (the values written by [`Executor::set_noise`]).
    pub fn new(
        gpu: &Gpu,
        model: &dyn Denoiser,
        program: &Program,
        seed: u64,
        noise_input: bool,
    ) -> Result<Self> {
        Self::with_condition(gpu, model, program, seed, noise_input, None)
    }

    /// [`Executor::new`] for a conditioned process: `cond` (μ, f32, the state's shape) is
    /// bound wherever the program reads [`Buf::Cond`].
    pub fn with_condition(
        gpu: &Gpu,
        model: &dyn Denoiser,
        program: &Program,
        seed: u64,
        noise_input: bool,
        cond: Option<&Tensor>,
    ) -> Result<Self> {
        Self::with_operator(gpu, model, program, seed, noise_input, cond, None)
    }

    /// [`Executor::with_condition`] with the degradation operator that [`Op::Gram`] applies
    /// (an inverse-problem method; the operator must be bound to the state's H×W).
    pub fn with_operator(
        gpu: &Gpu,
        model: &dyn Denoiser,
        program: &Program,
        seed: u64,
        noise_input: bool,
        cond: Option<&Tensor>,
        operator: Option<&Degrader>,
    ) -> Result<Self> {
        program.check(cond.is_some(), model.aux_output().is_some())?;
        let shape = model.input().shape().to_vec();
        let scratch = match operator {
            Some(d) => {
                let ms = d.operator().measurement_shape(&shape, "x")?;
                Some(Tensor::zeros(gpu, "measurement_scratch", &ms, DType::F32)?)
            }
            None if program.uses_operator() => {
                return Err(Error::Argument {
                    op: "sampler",
                    arg: "operator",
                    reason: "the program applies a degradation operator but none was given".into(),
                })
            }
            None => None,
        };
        let x = Tensor::zeros(gpu, "x", &shape, DType::F32)?;
        let slots = (0..program.slots)
            .map(|i| Tensor::zeros(gpu, &format!("slot{i}"), &shape, DType::F32))
            .collect::<Result<Vec<_>>>()?;
        let norms = [
            Tensor::zeros(gpu, "grad_norms", &shape[..1], DType::F32)?,
            Tensor::zeros(gpu, "noise_norms", &shape[..1], DType::F32)?,
        ];
        // Scalar registers [R, N, C] of the data-dependent coefficients.
        let regs = match program.scalars() {
            0 => None,
            r => {
                let nc = [shape[0], shape.get(1).copied().unwrap_or(1)];
                Some(Tensor::zeros(
                    gpu,
                    "scalars",
                    &[r, nc[0], nc[1]],
                    DType::F32,
                )?)
            }
        };
        let noise_in = if noise_input {
            Some(Tensor::zeros(gpu, "noise", &shape, DType::F32)?)
        } else {
            None
        };
        let step_noise = (0..program.step_noise_draws())
            .map(|k| Tensor::zeros(gpu, &format!("step_noise{k}"), &shape, DType::F32))
            .collect::<Result<Vec<_>>>()?;
        let mut ctx = Ctx {
            cond,
            aux: model.aux_output(),
            x: &x,
            slots: &slots,
            norms: &norms,
            regs: regs.as_ref(),
            model_in: model.input(),
            model_out: model.output(),
            step_noise: &step_noise,
            degrade: operator.zip(scratch.as_ref()),
            seed,
            stream: 0,
        };
        let init = {
            let mut rec = gpu.recorder();
            let scale = program.init_sigma as f32;
            let u = match &noise_in {
                // x_T = init_sigma · (the uploaded draw).
                Some(z) => Update {
                    dst: &x,
                    keep: None,
                    terms: &[(z, scale)],
                    noise: None,
                    clamp: None,
                },
                // Stream 0: x_T = init_sigma · z.
                None => Update {
                    dst: &x,
                    keep: None,
                    terms: &[],
                    noise: Some((Philox { seed, stream: 0 }, scale)),
                    clamp: None,
                },
            };
            update(&mut rec, &u)?;
            rec.finish()?
        };
        let mut steps = Vec::new();
        for ops in &program.steps {
            let mut execs = Vec::new();
            let mut rec: Option<Recorder<'_>> = None;
            for op in ops {
                match op {
                    Op::Lin {
                        dst,
                        terms,
                        noise,
                        clamp,
                    } => {
                        let r = rec.get_or_insert_with(|| gpu.recorder());
                        ctx.record_lin(r, *dst, terms, *noise, *clamp)?;
                    }
                    Op::Langevin {
                        grad,
                        noise,
                        snr,
                        alpha,
                    } => {
                        let r = rec.get_or_insert_with(|| gpu.recorder());
                        ctx.record_langevin(r, *grad, *noise, *snr, *alpha)?;
                    }
                    Op::Threshold {
                        buf,
                        shift,
                        ratio,
                        max,
                    } => {
                        let r = rec.get_or_insert_with(|| gpu.recorder());
                        let shift = shift.map(|b| ctx.buf(b));
                        threshold::dynamic_threshold(r, ctx.buf(*buf), shift, *ratio, *max)?;
                    }
                    Op::Dot { dst, a, b, over } => {
                        let r = rec.get_or_insert_with(|| gpu.recorder());
                        let regs = ctx.regs.unwrap_or(ctx.x);
                        coef::dot(r, ctx.buf(*a), ctx.buf(*b), regs, *dst, *over)?;
                    }
                    Op::Scalar { dst, code } => {
                        let r = rec.get_or_insert_with(|| gpu.recorder());
                        coef::scalar(r, ctx.regs.unwrap_or(ctx.x), *dst, code)?;
                    }
                    Op::Combine { dst, terms } => {
                        let r = rec.get_or_insert_with(|| gpu.recorder());
                        ctx.record_combine(r, *dst, terms)?;
                    }
                    Op::Gram { src, dst } => {
                        let r = rec.get_or_insert_with(|| gpu.recorder());
                        // Checked above: a program with Gram has an operator and scratch.
                        if let Some((d, m)) = ctx.degrade {
                            d.record(r, Mode::Forward, ctx.buf(*src), m)?;
                            d.record(r, Mode::Adjoint, m, ctx.buf(*dst))?;
                        }
                    }
                    Op::Adam {
                        param,
                        grad,
                        m,
                        v,
                        step,
                    } => {
                        let r = rec.get_or_insert_with(|| gpu.recorder());
                        let b = |x: &Buf| ctx.buf(*x);
                        adam::step(r, b(param), b(grad), b(m), b(v), step)?;
                    }
                    Op::Model(t) => {
                        if let Some(r) = rec.take() {
                            execs.push(Exec::Rec(r.finish()?));
                        }
                        execs.push(Exec::Model(*t));
                    }
                }
            }
            if let Some(r) = rec.take() {
                execs.push(Exec::Rec(r.finish()?));
            }
            steps.push(execs);
        }
        Ok(Executor {
            x,
            slots,
            model: BoundModel::of(model),
            steps,
            init,
            noise_in,
            step_noise,
        })
    }

    /// Sets the caller-supplied per-step draws the program reads as [`Buf::StepNoise`]: `z`
    /// holds [`Program::step_noise_draws`] standard-normal draws of the state's size, draw k
    /// first-to-last.
    pub fn set_step_noise(&self, gpu: &Gpu, z: &[f32]) -> Result<()> {
        let n = self.x.numel();
        if z.len() != n * self.step_noise.len() {
            return Err(Error::HostLength {
                tensor: "step_noise".into(),
                got: z.len(),
                want: n * self.step_noise.len(),
                shape: [&[self.step_noise.len()][..], self.x.shape()].concat(),
            });
        }
        for (t, d) in self.step_noise.iter().zip(z.chunks(n.max(1))) {
            t.write_f32(gpu, d)?;
        }
        Ok(())
    }

    /// Sets the standard-normal draw x_T is built from (when created with `noise_input`).
    pub fn set_noise(&self, gpu: &Gpu, z: &[f32]) -> Result<()> {
        match &self.noise_in {
            Some(t) => t.write_f32(gpu, z),
            None => Err(Error::Argument {
                op: "sampler",
                arg: "noise",
                reason: "this executor draws x_T itself; create it with noise_input".into(),
            }),
        }
    }

    /// Runs the whole program; `progress(step, total)` is called after each step is submitted.
    /// Returns the final sample (f32, on the GPU). `model` must be the one the executor was
    /// built for (an error otherwise).
    pub fn run(
        &self,
        gpu: &Gpu,
        model: &mut dyn Denoiser,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<&Tensor> {
        self.run_controlled(gpu, model, |i, n| {
            progress(i, n);
            ControlFlow::Continue(())
        })
    }

    /// [`Executor::run`] that the caller can stop: when `progress(step, total)` returns
    /// `ControlFlow::Break(())`, no further step is submitted and the run returns
    /// [`Error::Cancelled`]. The queue holds at most one step ahead of the GPU (step `i` is
    /// submitted, then step `i − 1` awaited), so progress follows the GPU's real progress and
    /// a cancel takes effect within about one step, while the GPU never waits for the host.
    pub fn run_controlled(
        &self,
        gpu: &Gpu,
        model: &mut dyn Denoiser,
        mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<&Tensor> {
        self.model.check(model)?;
        self.init.submit(gpu);
        let total = self.steps.len();
        let mut queued: Option<wgpu::SubmissionIndex> = None;
        for (i, step) in self.steps.iter().enumerate() {
            for e in step {
                match e {
                    Exec::Rec(r) => r.submit(gpu),
                    Exec::Model(t) => model.run(gpu, *t)?,
                }
            }
            // An empty submission marks the end of this step in the queue.
            let mark = gpu.queue().submit([]);
            if let Some(prev) = queued.replace(mark) {
                gpu.device()
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(prev),
                        timeout: None,
                    })
                    .map_err(|e| Error::Device {
                        adapter: gpu.info().name.clone(),
                        reason: e.to_string(),
                    })?;
            }
            if progress(i + 1, total).is_break() {
                return Err(Error::Cancelled {
                    op: "sampler",
                    step: i + 1,
                    total,
                });
            }
        }
        Ok(&self.x)
    }

    /// The sample buffer.
    pub fn x(&self) -> &Tensor {
        &self.x
    }

    /// History slot `i` (f32, the state's shape), e.g. the second state an inversion program
    /// leaves; `None` past the program's slots.
    pub fn slot(&self, i: usize) -> Option<&Tensor> {
        self.slots.get(i)
    }
}
