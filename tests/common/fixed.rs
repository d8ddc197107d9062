//! Models with a fixed prediction (exact round trips of restoration programs) on both
//! backends, and the runners the restoration tests share.

use super::Backend;
use diffuse::models::{Denoiser, HostDenoiser, Prediction};
use diffuse::solvers::executor::Executor;
use diffuse::solvers::program::{ModelTime, Program};
use diffuse::{DType, Tensor};

/// Runs `program` on `model` with condition `cond` and returns the final sample: x_T is built
/// from the standard-normal draw `noise`, or drawn in-kernel from `seed` when `None`.
pub fn run_program(
    model: &mut dyn Denoiser,
    program: &Program,
    seed: u64,
    noise: Option<&[f32]>,
    cond: Option<&Tensor>,
) -> Vec<f32> {
    let gpu = super::gpu();
    let exec =
        Executor::with_condition(gpu, &*model, program, seed, noise.is_some(), cond).unwrap();
    if let Some(z) = noise {
        exec.set_noise(gpu, z).unwrap();
    }
    exec.run(gpu, model, |_, _| {})
        .unwrap()
        .to_vec_f32(gpu)
        .unwrap()
}

/// A host model whose prediction is fixed (and a fixed second head for two-head models).
struct HostFixed {
    out: Vec<f64>,
    aux: Option<Vec<f64>>,
}

impl HostDenoiser for HostFixed {
    fn run(&mut self, _: &[f64], _: ModelTime, output: &mut [f64]) -> diffuse::Result<()> {
        output.copy_from_slice(&self.out);
        Ok(())
    }
    fn aux_output(&self) -> Option<&[f64]> {
        self.aux.as_deref()
    }
}

/// Runs `program` on `backend` with a model of state `shape` whose prediction is the fixed
/// `out` (with the second head `aux`: a two-head model), condition `cond`, x_T from `noise`
/// or `seed`.
#[allow(clippy::too_many_arguments)]
pub fn run_fixed(
    backend: Backend,
    shape: &[usize],
    out: &[f32],
    aux: Option<&[f32]>,
    program: &Program,
    seed: u64,
    noise: Option<&[f32]>,
    cond: Option<&[f32]>,
) -> Vec<f32> {
    match backend {
        Backend::Gpu => {
            let gpu = super::gpu();
            let t = |n: &str, v: &[f32]| Tensor::from_f32(gpu, n, shape, v, DType::F32).unwrap();
            let input = Tensor::zeros(gpu, "in", shape, DType::F32).unwrap();
            let mu = cond.map(|c| t("mu", c));
            let mut model: Box<dyn Denoiser> = match aux {
                Some(a) => Box::new(FixedTwo {
                    input,
                    res: t("out", out),
                    noise: t("aux", a),
                }),
                None => Box::new(Fixed {
                    input,
                    output: t("out", out),
                }),
            };
            run_program(model.as_mut(), program, seed, noise, mu.as_ref())
        }
        Backend::Host => {
            let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
            let mut model = HostFixed {
                out: f64s(out),
                aux: aux.map(f64s),
            };
            let x = super::run_host(&mut model, shape, program, seed, noise, cond);
            x.iter().map(|&v| v as f32).collect()
        }
    }
}

/// The error of binding (GPU) or running (host) `program` with a single-head fixed model of
/// state `shape` and condition `cond`.
pub fn run_error(
    backend: Backend,
    shape: &[usize],
    program: &Program,
    cond: Option<&[f32]>,
) -> String {
    let n: usize = shape.iter().product();
    match backend {
        Backend::Gpu => {
            let gpu = super::gpu();
            let t = |n: &str, v: &[f32]| Tensor::from_f32(gpu, n, shape, v, DType::F32).unwrap();
            let model = Fixed {
                input: t("in", &vec![0.0; n]),
                output: t("out", &vec![0.0; n]),
            };
            let mu = cond.map(|c| t("mu", c));
            Executor::with_condition(gpu, &model, program, 0, false, mu.as_ref())
                .err()
                .expect("the executor accepted the program")
                .to_string()
        }
        Backend::Host => {
            let mut model = HostFixed {
                out: vec![0.0; n],
                aux: None,
            };
            let cond: Option<Vec<f64>> = cond.map(|c| c.iter().map(|&a| a as f64).collect());
            let opts = diffuse::solvers::interpreter::HostRun {
                shape,
                seed: 0,
                noise: None,
                cond: cond.as_deref(),
                step_noise: None,
            };
            diffuse::solvers::interpreter::run(program, &mut model, &opts, |_, _| {})
                .expect_err("the interpreter ran the program")
                .to_string()
        }
    }
}

/// A model whose prediction is a fixed tensor (to check exact round trips).
pub struct Fixed {
    input: Tensor,
    output: Tensor,
}

/// A fixed two-head model (RDDM: residual, noise).
pub struct FixedTwo {
    input: Tensor,
    res: Tensor,
    noise: Tensor,
}

impl Denoiser for FixedTwo {
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn output(&self) -> &Tensor {
        &self.res
    }
    fn aux_output(&self) -> Option<&Tensor> {
        Some(&self.noise)
    }
    fn prediction(&self) -> Prediction {
        Prediction::Sample
    }
    fn run(&mut self, _: &diffuse::Gpu, _: ModelTime) -> diffuse::Result<()> {
        Ok(())
    }
}

impl Denoiser for Fixed {
    fn input(&self) -> &Tensor {
        &self.input
    }
    fn output(&self) -> &Tensor {
        &self.output
    }
    fn prediction(&self) -> Prediction {
        Prediction::Sample
    }
    fn run(&mut self, _: &diffuse::Gpu, _: ModelTime) -> diffuse::Result<()> {
        Ok(())
    }
}
