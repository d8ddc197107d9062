//! Runs a [`Program`] on the host in f64 with a host model ([`HostDenoiser`]): the reference
//! semantics of the GPU executor ([`super::executor`]), so solver tests run without an adapter
//! and the executor is tested against it. Noise is the reference Philox4x32-10
//! ([`crate::reference::philox_normal`]) numbered exactly as on the GPU: x_T is element e of
//! stream 0; every `Lin` with noise and every `Langevin` takes the next stream (1, 2, … in
//! program order) and element e of the state draws element e. Langevin steps (Song et al.
//! 2021, Alg. 4/5) take their size from per-sample L2 norms; dynamic thresholding (Imagen) uses
//! the exact linear-interpolated quantile of torch.quantile; clamps are to ±c. Everything is
//! f64: no f32 rounding of the state and no f16 rounding of the model's buffers. Scalar
//! registers are f64 per (sample, channel) of the shape's first two dimensions; inner products
//! are plain f64 sums.

use super::program::{Buf, Op, Over, Program};
use crate::error::{Error, Result};
use crate::models::HostDenoiser;
use crate::ops::coef;
use crate::ops::degrade::{Mode, Operator};
use crate::reference::philox_normal;

/// How a host run starts and what it is conditioned on.
#[derive(Debug, Clone, Copy)]
pub struct HostRun<'a> {
    /// The state's shape, batch first ([N, C, H, W]); Langevin norms and thresholding quantiles
    /// are per sample.
    pub shape: &'a [usize],
    /// Keys every noise draw (stream 0 is x_T).
    pub seed: u64,
    /// x_T = init_sigma · `noise` (a standard-normal draw of the state's size) instead of the
    /// stream-0 draw, like `Executor::set_noise`.
    pub noise: Option<&'a [f64]>,
    /// The condition image μ read as [`Buf::Cond`] (the state's size).
    pub cond: Option<&'a [f64]>,
    /// The caller-supplied draws read as [`Buf::StepNoise`]: `Program::step_noise_draws`
    /// draws of the state's size, draw k first-to-last, like `Executor::set_step_noise`.
    pub step_noise: Option<&'a [f64]>,
}

/// The buffers of one run.
struct State<'a> {
    x: Vec<f64>,
    model_in: Vec<f64>,
    model_out: Vec<f64>,
    slots: Vec<Vec<f64>>,
    cond: Option<&'a [f64]>,
    step_noise: Option<&'a [f64]>,
    samples: usize,
}

fn arg(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "interpreter",
        arg,
        reason,
    }
}

impl State<'_> {
    fn get<'b>(&'b self, b: Buf, aux: Option<&'b [f64]>) -> Result<&'b [f64]> {
        Ok(match b {
            Buf::X => &self.x,
            Buf::ModelIn => &self.model_in,
            Buf::ModelOut => &self.model_out,
            Buf::Slot(i) => &self.slots[i],
            Buf::Cond => self.cond.expect("checked before the run"),
            Buf::StepNoise(k) => {
                let n = self.x.len();
                &self.step_noise.expect("checked before the run")[k * n..(k + 1) * n]
            }
            Buf::ModelAux => aux.ok_or_else(|| {
                arg(
                    "model",
                    "this program reads a second model head but the model has none".into(),
                )
            })?,
        })
    }

    fn get_mut(&mut self, b: Buf) -> Result<&mut Vec<f64>> {
        Ok(match b {
            Buf::X => &mut self.x,
            Buf::ModelIn => &mut self.model_in,
            Buf::ModelOut => &mut self.model_out,
            Buf::Slot(i) => &mut self.slots[i],
            Buf::Cond | Buf::ModelAux | Buf::StepNoise(_) => {
                return Err(arg(
                    "program",
                    format!("{b:?} is read-only but an instruction writes it"),
                ))
            }
        })
    }
}

/// Every buffer an instruction names, with whether it writes it.
/// Checks a program and run against each other: slots declared, μ given where read, lengths.
fn check(program: &Program, opts: &HostRun<'_>, aux: bool) -> Result<usize> {
    let n: usize = opts.shape.iter().product();
    if opts.shape.is_empty() || n == 0 {
        return Err(arg(
            "shape",
            format!("the state shape {:?} is empty", opts.shape),
        ));
    }
    for (name, v) in [("noise", opts.noise), ("cond", opts.cond)] {
        if let Some(v) = v {
            if v.len() != n {
                return Err(Error::HostLength {
                    tensor: name.into(),
                    got: v.len(),
                    want: n,
                    shape: opts.shape.to_vec(),
                });
            }
        }
    }
    let draws = program.step_noise_draws();
    match opts.step_noise {
        Some(z) if z.len() != draws * n => {
            return Err(Error::HostLength {
                tensor: "step_noise".into(),
                got: z.len(),
                want: draws * n,
                shape: [&[draws][..], opts.shape].concat(),
            })
        }
        None if draws > 0 => {
            return Err(arg(
                "step_noise",
                format!("the program reads {draws} supplied step-noise draws but none were given"),
            ))
        }
        _ => {}
    }
    program.check(opts.cond.is_some(), aux)?;
    Ok(n)
}

/// Per-sample L2 norms of `v` over `samples` samples.
fn norms(v: &[f64], samples: usize) -> Vec<f64> {
    v.chunks(v.len() / samples)
        .map(|s| s.iter().map(|a| a * a).sum::<f64>().sqrt())
        .collect()
}

/// torch.quantile of |v| at `ratio` (linear interpolation at position ratio·(D − 1)).
fn abs_quantile(v: &[f64], ratio: f64) -> f64 {
    let mut a: Vec<f64> = v.iter().map(|x| x.abs()).collect();
    a.sort_by(f64::total_cmp);
    let pos = ratio * (a.len() - 1) as f64;
    let k = pos.floor() as usize;
    let hi = a[(k + 1).min(a.len() - 1)];
    a[k] + (pos - k as f64) * (hi - a[k])
}

/// Runs `program` on `model` and returns the final state X (f64, the state's shape);
/// `progress(step, total)` is called after each step.
pub fn run(
    program: &Program,
    model: &mut dyn HostDenoiser,
    opts: &HostRun<'_>,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<f64>> {
    Ok(run_states(program, model, opts, progress)?.0)
}

/// [`run`] that also returns the history slots at the end (e.g. the second state an inversion
/// program leaves), like `Executor::slot`.
pub fn run_states(
    program: &Program,
    model: &mut dyn HostDenoiser,
    opts: &HostRun<'_>,
    progress: impl FnMut(usize, usize),
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    run_inner(program, model, opts, None, progress)
}

/// [`run`] with the degradation operator that [`Op::Gram`] applies (f64, as
/// `Operator::apply_host`).
pub fn run_with_operator(
    program: &Program,
    model: &mut dyn HostDenoiser,
    opts: &HostRun<'_>,
    operator: Operator,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<f64>> {
    Ok(run_inner(program, model, opts, Some(operator), progress)?.0)
}

fn run_inner(
    program: &Program,
    model: &mut dyn HostDenoiser,
    opts: &HostRun<'_>,
    operator: Option<Operator>,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let n = check(program, opts, model.aux_output().is_some())?;
    if program.uses_operator() && operator.is_none() {
        return Err(arg(
            "operator",
            "the program applies a degradation operator but none was given".into(),
        ));
    }
    let seed = opts.seed;
    let x = match opts.noise {
        Some(z) => z.iter().map(|v| program.init_sigma * v).collect(),
        None => (0..n)
            .map(|e| program.init_sigma * philox_normal(seed, 0, e as u64))
            .collect(),
    };
    let mut st = State {
        x,
        model_in: vec![0.0; n],
        model_out: vec![0.0; n],
        slots: vec![vec![0.0; n]; program.slots],
        cond: opts.cond,
        step_noise: opts.step_noise,
        samples: opts.shape[0],
    };
    // Scalar registers [R, N, C].
    let (ns, nc) = (opts.shape[0], opts.shape.get(1).copied().unwrap_or(1));
    let m = ns * nc;
    let hw = n / m;
    let mut regs = vec![0.0f64; program.scalars() * m];
    let mut stream = 0u32;
    let total = program.steps.len();
    for (si, step) in program.steps.iter().enumerate() {
        for op in step {
            match op {
                Op::Model(t) => model.run(&st.model_in, *t, &mut st.model_out)?,
                Op::Lin {
                    dst,
                    terms,
                    noise,
                    clamp,
                } => {
                    let mut v = vec![0.0; n];
                    for (b, c) in terms {
                        for (o, s) in v.iter_mut().zip(st.get(*b, model.aux_output())?) {
                            *o += c * s;
                        }
                    }
                    if *noise != 0.0 {
                        stream += 1;
                        for (e, o) in v.iter_mut().enumerate() {
                            *o += noise * philox_normal(seed, stream, e as u64);
                        }
                    }
                    if let Some(c) = clamp {
                        v.iter_mut().for_each(|o| *o = o.clamp(-c, *c));
                    }
                    *st.get_mut(*dst)? = v;
                }
                Op::Langevin {
                    grad,
                    noise,
                    snr,
                    alpha,
                } => {
                    stream += 1;
                    let z: Vec<f64> = (0..n)
                        .map(|e| philox_normal(seed, stream, e as u64))
                        .collect();
                    *st.get_mut(*noise)? = z.clone();
                    let g = st.get(*grad, model.aux_output())?.to_vec();
                    let sg: f64 = norms(&g, st.samples).iter().sum();
                    let sz: f64 = norms(&z, st.samples).iter().sum();
                    let r = snr * sz / sg.max(1e-30);
                    let eps = 2.0 * alpha * r * r;
                    for ((xv, gv), zv) in st.x.iter_mut().zip(&g).zip(&z) {
                        *xv += eps * gv + (2.0 * eps).sqrt() * zv;
                    }
                }
                Op::Dot { dst, a, b, over } => {
                    let aux = model.aux_output();
                    let (a, b) = (st.get(*a, aux)?, st.get(*b, aux)?);
                    let sums: Vec<f64> = a
                        .chunks(hw)
                        .zip(b.chunks(hw))
                        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum())
                        .collect();
                    let r = &mut regs[dst * m..(dst + 1) * m];
                    match over {
                        Over::Channel => r.copy_from_slice(&sums),
                        Over::Sample => {
                            for (rs, ss) in r.chunks_mut(nc).zip(sums.chunks(nc)) {
                                rs.fill(ss.iter().sum());
                            }
                        }
                    }
                }
                Op::Scalar { dst, code } => {
                    let v: Vec<f64> = (0..m)
                        .map(|j| coef::eval(code, |k| regs[k * m + j]))
                        .collect();
                    regs[dst * m..(dst + 1) * m].copy_from_slice(&v);
                }
                Op::Combine { dst, terms } => {
                    let mut v = vec![0.0; n];
                    for (b, c, r) in terms {
                        let src = st.get(*b, model.aux_output())?;
                        for (e, (o, s)) in v.iter_mut().zip(src).enumerate() {
                            let k = r.map_or(1.0, |r| regs[r * m + e / hw]);
                            *o += c * k * s;
                        }
                    }
                    *st.get_mut(*dst)? = v;
                }
                Op::Adam {
                    param,
                    grad,
                    m,
                    v,
                    step,
                } => {
                    let g = st.get(*grad, model.aux_output())?.to_vec();
                    let mut pv = std::mem::take(st.get_mut(*param)?);
                    let mut mv = std::mem::take(st.get_mut(*m)?);
                    let mut vv = std::mem::take(st.get_mut(*v)?);
                    step.eval(&mut pv, &g, &mut mv, &mut vv);
                    *st.get_mut(*param)? = pv;
                    *st.get_mut(*m)? = mv;
                    *st.get_mut(*v)? = vv;
                }
                Op::Gram { src, dst } => {
                    let op = operator.expect("checked above");
                    let x = st.get(*src, model.aux_output())?;
                    let y = op.apply_host(Mode::Forward, x, opts.shape)?;
                    *st.get_mut(*dst)? = op.apply_host(Mode::Adjoint, &y, opts.shape)?;
                }
                Op::Threshold {
                    buf,
                    shift,
                    ratio,
                    max,
                } => {
                    if !(0.0..=1.0).contains(ratio) || max.is_nan() || *max < 1.0 {
                        return Err(Error::Argument {
                            op: "dynamic thresholding",
                            arg: "ratio",
                            reason: format!(
                                "ratio {ratio} must lie in [0, 1] and max {max} be ≥ 1"
                            ),
                        });
                    }
                    let sh = match shift {
                        Some(b) => st.get(*b, model.aux_output())?.to_vec(),
                        None => vec![0.0; n],
                    };
                    let d = n / st.samples;
                    let t = st.get_mut(*buf)?;
                    for (tv, sv) in t.chunks_mut(d).zip(sh.chunks(d)) {
                        let v: Vec<f64> = tv.iter().zip(sv).map(|(a, b)| a + b).collect();
                        let s = abs_quantile(&v, *ratio).clamp(1.0, *max);
                        for ((o, vi), si) in tv.iter_mut().zip(&v).zip(sv) {
                            *o = vi.clamp(-s, s) / s - si;
                        }
                    }
                }
            }
        }
        progress(si + 1, total);
    }
    Ok((st.x, st.slots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solvers::program::{lin, ModelTime};

    const T: ModelTime = ModelTime {
        t: 1.0,
        alpha: 0.6,
        sigma: 0.8,
    };

    fn opts(shape: &[usize]) -> HostRun<'_> {
        HostRun {
            shape,
            seed: 42,
            noise: None,
            cond: None,
            step_noise: None,
        }
    }

    #[test]
    fn noise_streams_are_numbered_as_on_the_gpu() {
        // x_T from stream 0; the first drawing Lin takes stream 1, a Langevin stream 2, the
        // next drawing Lin stream 3 (a Lin without noise takes none).
        let p = Program::new(
            2.0,
            3,
            vec![
                vec![Op::Lin {
                    dst: Buf::Slot(0),
                    terms: vec![],
                    noise: 1.0,
                    clamp: None,
                }],
                vec![
                    lin(Buf::Slot(1), vec![(Buf::X, 0.5)]),
                    Op::Langevin {
                        grad: Buf::Slot(1),
                        noise: Buf::Slot(2),
                        snr: 0.1,
                        alpha: 1.0,
                    },
                ],
                vec![Op::Lin {
                    dst: Buf::X,
                    terms: vec![(Buf::Slot(0), 1.0), (Buf::Slot(2), 10.0)],
                    noise: 100.0,
                    clamp: None,
                }],
            ],
        );
        let shape = [2, 3];
        let got = run(
            &p,
            &mut |_: &[f64], _, _: &mut [f64]| {},
            &opts(&shape),
            |_, _| {},
        )
        .unwrap();
        for (e, g) in got.iter().enumerate() {
            let z = |s| philox_normal(42, s, e as u64);
            let want = z(1) + 10.0 * z(2) + 100.0 * z(3);
            assert!((g - want).abs() < 1e-12, "element {e}: {g} vs {want}");
        }
    }

    #[test]
    fn lin_reads_before_it_writes_and_clamps() {
        // X ← clamp(2·X − X + 3·ModelOut, ±1.5) with X = init·z and ModelOut = 0.1·ModelIn.
        let p = Program::new(
            1.0,
            0,
            vec![vec![
                lin(Buf::ModelIn, vec![(Buf::X, 1.0)]),
                Op::Model(T),
                Op::Lin {
                    dst: Buf::X,
                    terms: vec![(Buf::X, 2.0), (Buf::X, -1.0), (Buf::ModelOut, 3.0)],
                    noise: 0.0,
                    clamp: Some(1.5),
                },
            ]],
        );
        let z = [0.2, -0.9, 2.0, -0.1];
        let shape = [4];
        let o = HostRun {
            noise: Some(&z),
            ..opts(&shape)
        };
        let mut model = |x: &[f64], t: ModelTime, y: &mut [f64]| {
            assert_eq!(t, T);
            y.iter_mut().zip(x).for_each(|(a, b)| *a = 0.1 * b);
        };
        let mut calls = vec![];
        let got = run(&p, &mut model, &o, |i, n| calls.push((i, n))).unwrap();
        assert_eq!(calls, [(1, 1)]);
        // 1.3·z, the third clamped.
        for (g, w) in got.iter().zip([0.26, -1.17, 1.5, -0.13]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn langevin_step_size_follows_the_norm_ratio() {
        // grad = ModelOut = constant 1 per element: ‖g_b‖ = √D; ε = 2·α·(snr·Σ‖z_b‖/Σ‖g_b‖)².
        let p = Program::new(
            0.0,
            1,
            vec![vec![
                Op::Model(T),
                Op::Langevin {
                    grad: Buf::ModelOut,
                    noise: Buf::Slot(0),
                    snr: 0.3,
                    alpha: 0.7,
                },
            ]],
        );
        let shape = [3, 4];
        let mut ones = |_: &[f64], _, y: &mut [f64]| y.iter_mut().for_each(|v| *v = 1.0);
        let got = run(&p, &mut ones, &opts(&shape), |_, _| {}).unwrap();
        let z: Vec<f64> = (0..12).map(|e| philox_normal(42, 1, e)).collect();
        let zn: f64 = z
            .chunks(4)
            .map(|s| s.iter().map(|v| v * v).sum::<f64>().sqrt())
            .sum();
        let eps = 2.0 * 0.7 * (0.3 * zn / (3.0 * 2.0f64)).powi(2);
        for (g, zv) in got.iter().zip(&z) {
            let want = eps + (2.0 * eps).sqrt() * zv;
            assert!((g - want).abs() < 1e-12, "{g} vs {want}");
        }
    }

    #[test]
    fn threshold_uses_the_interpolated_quantile_per_sample() {
        // Sample 0: |v| = [0.5, 3, 2, 4, 1]; q = 0.5 → position 2 of [0.5, 1, 2, 3, 4] = 2;
        // s = 2. Sample 1: |v| ≤ 0.9 → s = clamp(·, 1, max) = 1 (a pure clip). Sample 2:
        // q = 0.5 → 5, capped at max = 3. With a shift: v = buf + shift, buf = v' − shift.
        let z = [
            0.5, -3.0, 2.0, 4.0, -1.0, //
            0.9, -0.2, 0.1, 0.3, -0.4, //
            5.0, 6.0, -5.0, 7.0, 1.0,
        ];
        let shape = [3, 5];
        let mu: Vec<f64> = (0..15).map(|i| 0.1 * i as f64).collect();
        let thr = |buf, shift| Op::Threshold {
            buf,
            shift,
            ratio: 0.5,
            max: 3.0,
        };
        // In place on X; and on slot = X − μ with the shift μ (the MR data solver's form).
        let direct = Program::new(1.0, 0, vec![vec![thr(Buf::X, None)]]);
        let shifted = Program::new(
            1.0,
            1,
            vec![vec![
                lin(Buf::Slot(0), vec![(Buf::X, 1.0), (Buf::Cond, -1.0)]),
                thr(Buf::Slot(0), Some(Buf::Cond)),
                lin(Buf::X, vec![(Buf::Slot(0), 1.0), (Buf::Cond, 1.0)]),
            ]],
        );
        for (name, p) in [("direct", direct), ("shifted", shifted)] {
            let o = HostRun {
                noise: Some(&z),
                cond: Some(&mu),
                step_noise: None,
                ..opts(&shape)
            };
            let got = run(&p, &mut |_: &[f64], _, _: &mut [f64]| {}, &o, |_, _| {}).unwrap();
            for (i, g) in got.iter().enumerate() {
                let s = [2.0, 1.0, 3.0][i / 5];
                let want = z[i].clamp(-s, s) / s;
                assert!((g - want).abs() < 1e-12, "{name} [{i}]: {g} vs {want}");
            }
        }
    }

    #[test]
    fn malformed_programs_and_runs_are_errors() {
        let shape = [1, 4];
        let mut m = |_: &[f64], _, _: &mut [f64]| {};
        let e = |p: &Program, o: &HostRun<'_>, m: &mut dyn HostDenoiser| {
            run(p, m, o, |_, _| {}).unwrap_err().to_string()
        };
        let slot = Program::new(1.0, 1, vec![vec![lin(Buf::Slot(1), vec![(Buf::X, 1.0)])]]);
        assert!(e(&slot, &opts(&shape), &mut m).contains("slot 1"));
        let cond = Program::new(1.0, 0, vec![vec![lin(Buf::X, vec![(Buf::Cond, 1.0)])]]);
        assert!(e(&cond, &opts(&shape), &mut m).contains("condition"));
        let write = Program::new(1.0, 0, vec![vec![lin(Buf::Cond, vec![(Buf::X, 1.0)])]]);
        let mu = [0.0; 4];
        let o = HostRun {
            cond: Some(&mu),
            step_noise: None,
            ..opts(&shape)
        };
        assert!(e(&write, &o, &mut m).contains("read-only"));
        let aux = Program::new(
            1.0,
            0,
            vec![vec![Op::Model(T), lin(Buf::X, vec![(Buf::ModelAux, 1.0)])]],
        );
        assert!(e(&aux, &opts(&shape), &mut m).contains("second model head"));
        let thr = Program::new(
            1.0,
            0,
            vec![vec![Op::Threshold {
                buf: Buf::X,
                shift: None,
                ratio: 1.5,
                max: 2.0,
            }]],
        );
        assert!(e(&thr, &opts(&shape), &mut m).contains("ratio 1.5"));
        let short = [0.0; 3];
        let o = HostRun {
            noise: Some(&short),
            ..opts(&shape)
        };
        assert!(e(&slot, &o, &mut m).contains("noise"));
    }
}
