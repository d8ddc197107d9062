//! Runs a [`Program`] on the GPU: the linear instructions between two model evaluations are
//! recorded once into a [`Recording`] (fused update kernels with in-kernel Philox noise) and the
//! whole run is replayed from those recordings — no readback and no allocation inside the loop.

use super::program::{Buf, ModelTime, Op, Program};
use crate::error::{Error, Result};
use crate::gpu::{params, Gpu, KernelKey, Recorder, Recording};
use crate::models::Denoiser;
use crate::ops::{grid_1d, WG_1D};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/solver_step.wgsl`.
    struct Params {
        /// elements
        n: u32,
        /// Philox stream of this instruction's noise
        stream: u32,
        seed_lo: u32,
        seed_hi: u32,
        c_self: f32,
        c_z: f32,
        clamp_to: f32,
        _p0: u32,
        /// input coefficients
        c: [f32; 4],
    }
}

params! {
    /// `#uniform Params` of `shaders/langevin.wgsl`.
    struct LangevinParams {
        /// elements
        n: u32,
        /// N
        samples: u32,
        snr: f32,
        alpha: f32,
    }
}

params! {
    /// `#uniform Params` of `shaders/threshold.wgsl`.
    struct ThresholdParams {
        /// D
        per_sample: u32,
        /// floor(ratio·(D − 1))
        rank: u32,
        /// ratio·(D − 1) − rank
        frac: f32,
        max_value: f32,
    }
}

/// The names of `solver_step.wgsl`'s input bindings.
const INPUTS: [&str; 4] = ["in0", "in1", "in2", "in3"];

fn dt_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
    }
}

/// The update kernel's key for a dst dtype, input dtypes and options.
pub fn step_key(
    dst: DType,
    inputs: &[DType],
    self_term: bool,
    noise: bool,
    clamp: bool,
) -> KernelKey {
    let mut k = KernelKey::new::<Params>("solver_step", "main", dst, [WG_1D, 1, 1])
        .define("DT_DST", dt_name(dst))
        .define("NIN", inputs.len())
        .flag("SELF", self_term)
        .flag("NOISE", noise)
        .flag("CLAMP", clamp);
    for (i, d) in inputs.iter().enumerate() {
        k = k
            .flag(&format!("IN{i}"), true)
            .define(&format!("DT_IN{i}"), dt_name(*d));
    }
    k
}

fn threshold_key(shift: bool) -> KernelKey {
    KernelKey::new::<ThresholdParams>("threshold", "main", DType::F32, [WG_1D, 1, 1])
        .flag("SHIFT", shift)
}

/// Variants for validation: every input count, both dtypes, all options.
pub fn variants() -> Vec<KernelKey> {
    let mut v = vec![
        KernelKey::new::<LangevinParams>("langevin", "main", DType::F32, [WG_1D, 1, 1]),
        threshold_key(false),
        threshold_key(true),
    ];
    for dst in [DType::F32, DType::F16] {
        for nin in 0..=4 {
            let ins: Vec<DType> = (0..nin)
                .map(|i| if i % 2 == 0 { DType::F32 } else { DType::F16 })
                .collect();
            for (s, n, c) in [
                (false, false, false),
                (true, true, true),
                (false, true, false),
                (true, false, true),
            ] {
                v.push(step_key(dst, &ins, s, n, c));
            }
        }
    }
    v
}

enum Exec {
    Rec(Recording),
    Model(ModelTime),
}

/// A program bound to a model and buffers, ready to run (and re-run).
pub struct Executor {
    x: Tensor,
    #[allow(dead_code)]
    slots: Vec<Tensor>,
    #[allow(dead_code)]
    norms: [Tensor; 2],
    steps: Vec<Vec<Exec>>,
    init: Recording,
    noise_in: Option<Tensor>,
}

struct Ctx<'a> {
    cond: Option<&'a Tensor>,
    aux: Option<&'a Tensor>,
    x: &'a Tensor,
    slots: &'a [Tensor],
    norms: &'a [Tensor; 2],
    model_in: &'a Tensor,
    model_out: &'a Tensor,
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
        use crate::ops::{reduce, rng};
        self.stream += 1;
        let (g, z, x) = (self.buf(grad), self.buf(noise), self.x);
        rng::fill(
            rec,
            rng::Distribution::Normal,
            rng::Philox {
                seed: self.seed,
                stream: self.stream,
            },
            0,
            z,
        )?;
        reduce::reduce(rec, reduce::Reduce::L2Norm, g, &self.norms[0])?;
        reduce::reduce(rec, reduce::Reduce::L2Norm, z, &self.norms[1])?;
        let p = LangevinParams {
            n: x.numel() as u32,
            samples: x.shape()[0] as u32,
            snr: snr as f32,
            alpha: alpha as f32,
        };
        let gpu = rec.gpu();
        let k = KernelKey::new::<LangevinParams>("langevin", "main", DType::F32, [WG_1D, 1, 1]);
        let binds = [
            ("x", x.binding(gpu, "langevin")?),
            ("g", g.binding(gpu, "langevin")?),
            ("z", z.binding(gpu, "langevin")?),
            ("gn", self.norms[0].binding(gpu, "langevin")?),
            ("zn", self.norms[1].binding(gpu, "langevin")?),
        ];
        let grid = grid_1d(gpu, "langevin", (x.numel() as u64).div_ceil(WG_1D as u64))?;
        rec.dispatch(&k, &p, &binds, grid)?;
        Ok(())
    }

    /// Records dynamic thresholding of `buf` (one workgroup per sample).
    fn record_threshold(
        &self,
        rec: &mut Recorder<'_>,
        buf: Buf,
        shift: Option<Buf>,
        ratio: f64,
        max: f64,
    ) -> Result<()> {
        let t = self.buf(buf);
        if !(0.0..=1.0).contains(&ratio) || max.is_nan() || max < 1.0 || t.dtype() != DType::F32 {
            return Err(Error::Argument {
                op: "dynamic thresholding",
                arg: "ratio",
                reason: format!(
                    "ratio {ratio} must lie in [0, 1] and max {max} be ≥ 1 (f32 state buffers)"
                ),
            });
        }
        let n = t.shape()[0];
        let d = t.numel() / n;
        let pos = ratio * (d - 1) as f64;
        let p = ThresholdParams {
            per_sample: d as u32,
            rank: pos.floor() as u32,
            frac: (pos - pos.floor()) as f32,
            max_value: max as f32,
        };
        let gpu = rec.gpu();
        let mut binds = vec![("buf", t.binding(gpu, "threshold")?)];
        if let Some(sh) = shift {
            binds.push(("shift", self.buf(sh).binding(gpu, "threshold")?));
        }
        let grid = grid_1d(gpu, "threshold", n as u64)?;
        rec.dispatch(&threshold_key(shift.is_some()), &p, &binds, grid)?;
        Ok(())
    }

    /// Records `dst = Σ terms + noise·z (clamped)`, split into ≤ 4-input dispatches.
    fn record_lin(
        &mut self,
        rec: &mut Recorder<'_>,
        dst: Buf,
        terms: &[(Buf, f64)],
        noise: f64,
        clamp: Option<f64>,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let stream = if noise != 0.0 {
            self.stream += 1;
            self.stream
        } else {
            0
        };
        let d = self.buf(dst);
        let c_self = terms
            .iter()
            .filter(|(b, _)| *b == dst)
            .map(|(_, c)| c)
            .sum::<f64>();
        let mut self_term = terms.iter().any(|(b, _)| *b == dst);
        let others: Vec<(Buf, f64)> = terms.iter().filter(|(b, _)| *b != dst).copied().collect();
        let chunks: Vec<&[(Buf, f64)]> = if others.is_empty() {
            vec![&[]]
        } else {
            others.chunks(4).collect()
        };
        let nchunks = chunks.len();
        for (ci, chunk) in chunks.into_iter().enumerate() {
            let last = ci + 1 == nchunks;
            let mut p = Params {
                n: d.numel() as u32,
                stream,
                seed_lo: self.seed as u32,
                seed_hi: (self.seed >> 32) as u32,
                c_self: if ci == 0 { c_self as f32 } else { 1.0 },
                c_z: if last { noise as f32 } else { 0.0 },
                clamp_to: clamp.unwrap_or(0.0) as f32,
                _p0: 0,
                c: [0.0; 4],
            };
            let mut binds = vec![("dst", d.binding(gpu, "solver_step")?)];
            let mut dts = Vec::new();
            for (j, (b, c)) in chunk.iter().enumerate() {
                let t = self.buf(*b);
                if t.shape() != d.shape() {
                    return Err(Error::Shape {
                        op: "solver_step",
                        tensor: t.name().into(),
                        got: t.shape().to_vec(),
                        expected: format!("{:?} (the shape of `{}`)", d.shape(), d.name()),
                    });
                }
                p.c[j] = *c as f32;
                dts.push(t.dtype());
                binds.push((INPUTS[j], t.binding(gpu, "solver_step")?));
            }
            let k = step_key(
                d.dtype(),
                &dts,
                self_term,
                last && noise != 0.0,
                last && clamp.is_some(),
            );
            let g = grid_1d(
                gpu,
                "solver_step",
                (d.numel() as u64).div_ceil(WG_1D as u64),
            )?;
            rec.dispatch(&k, &p, &binds, g)?;
            self_term = true;
        }
        Ok(())
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
        let uses_cond = program.steps.iter().flatten().any(|op| match op {
            Op::Lin { terms, .. } => terms.iter().any(|(b, _)| *b == Buf::Cond),
            _ => false,
        });
        let uses_aux = program.steps.iter().flatten().any(|op| match op {
            Op::Lin { terms, .. } => terms.iter().any(|(b, _)| *b == Buf::ModelAux),
            _ => false,
        });
        if uses_aux && model.aux_output().is_none() {
            return Err(Error::Argument {
                op: "sampler",
                arg: "model",
                reason: "this program reads a second model head but the model has one".into(),
            });
        }
        // Every history slot a program names must exist (a malformed program is an error,
        // not an out-of-bounds panic).
        let bufs = program.steps.iter().flatten().flat_map(|op| match op {
            Op::Lin { dst, terms, .. } => {
                let mut v = vec![*dst];
                v.extend(terms.iter().map(|(b, _)| *b));
                v
            }
            Op::Langevin { grad, noise, .. } => vec![*grad, *noise],
            Op::Threshold { buf, shift, .. } => {
                let mut v = vec![*buf];
                v.extend(shift.iter().copied());
                v
            }
            Op::Model(_) => vec![],
        });
        if let Some(i) = bufs
            .filter_map(|b| match b {
                Buf::Slot(i) => Some(i),
                _ => None,
            })
            .find(|&i| i >= program.slots)
        {
            return Err(Error::Argument {
                op: "sampler",
                arg: "program",
                reason: format!(
                    "the program reads history slot {i} but declares {} slots",
                    program.slots
                ),
            });
        }
        if uses_cond && cond.is_none() {
            return Err(Error::Argument {
                op: "sampler",
                arg: "condition",
                reason: "this program reads the condition image μ but none was given".into(),
            });
        }
        let shape = model.input().shape().to_vec();
        let x = Tensor::zeros(gpu, "x", &shape, DType::F32)?;
        let slots = (0..program.slots)
            .map(|i| Tensor::zeros(gpu, &format!("slot{i}"), &shape, DType::F32))
            .collect::<Result<Vec<_>>>()?;
        let norms = [
            Tensor::zeros(gpu, "grad_norms", &shape[..1], DType::F32)?,
            Tensor::zeros(gpu, "noise_norms", &shape[..1], DType::F32)?,
        ];
        let noise_in = if noise_input {
            Some(Tensor::zeros(gpu, "noise", &shape, DType::F32)?)
        } else {
            None
        };
        let mut ctx = Ctx {
            cond,
            aux: model.aux_output(),
            x: &x,
            slots: &slots,
            norms: &norms,
            model_in: model.input(),
            model_out: model.output(),
            seed,
            stream: 0,
        };
        let init = {
            let mut rec = gpu.recorder();
            match &noise_in {
                Some(z) => {
                    let p = Params {
                        n: x.numel() as u32,
                        stream: 0,
                        seed_lo: 0,
                        seed_hi: 0,
                        c_self: 0.0,
                        c_z: 0.0,
                        clamp_to: 0.0,
                        _p0: 0,
                        c: [program.init_sigma as f32, 0.0, 0.0, 0.0],
                    };
                    let k = step_key(DType::F32, &[DType::F32], false, false, false);
                    let g = grid_1d(
                        gpu,
                        "solver_step",
                        (x.numel() as u64).div_ceil(WG_1D as u64),
                    )?;
                    rec.dispatch(
                        &k,
                        &p,
                        &[
                            ("dst", x.binding(gpu, "x")?),
                            ("in0", z.binding(gpu, "noise")?),
                        ],
                        g,
                    )?;
                }
                None => {
                    // Stream 0: x_T = init_sigma · z.
                    let p = Params {
                        n: x.numel() as u32,
                        stream: 0,
                        seed_lo: seed as u32,
                        seed_hi: (seed >> 32) as u32,
                        c_self: 0.0,
                        c_z: program.init_sigma as f32,
                        clamp_to: 0.0,
                        _p0: 0,
                        c: [0.0; 4],
                    };
                    let k = step_key(DType::F32, &[], false, true, false);
                    let g = grid_1d(
                        gpu,
                        "solver_step",
                        (x.numel() as u64).div_ceil(WG_1D as u64),
                    )?;
                    rec.dispatch(&k, &p, &[("dst", x.binding(gpu, "x")?)], g)?;
                }
            }
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
                        ctx.record_threshold(r, *buf, *shift, *ratio, *max)?;
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
            norms,
            steps,
            init,
            noise_in,
        })
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
    /// Returns the final sample (f32, on the GPU).
    pub fn run(
        &self,
        gpu: &Gpu,
        model: &mut dyn Denoiser,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<&Tensor> {
        self.init.submit(gpu);
        let total = self.steps.len();
        for (i, step) in self.steps.iter().enumerate() {
            for e in step {
                match e {
                    Exec::Rec(r) => r.submit(gpu),
                    Exec::Model(t) => model.run(gpu, *t)?,
                }
            }
            progress(i + 1, total);
        }
        Ok(&self.x)
    }

    /// The sample buffer.
    pub fn x(&self) -> &Tensor {
        &self.x
    }
}
