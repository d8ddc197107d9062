//! FlowChef (Patel, Sharma, Yang et al., "Steering Rectified Flow Models in the Vector Field for
//! Controlled Image Generation", 2024; official FlowChef/FlowChef
//! `inverseproblems/pixel_models/rfpp/generate_inverseproblems_flowchef.py`,
//! `sample_ode_generative`), as a program: the gradient-free steering of the state through x̂0
//! followed by the plain Euler step, on a rectified-flow model (v = ε − x0).
//!
//! Grid t_i = (N − i)/N, i < N, with t_0 = 1 − 10⁻⁵, then 0 (the official `time_schedule`);
//! the network time is t·T. Per step: v = model(z, t); x̂0 = z − t·v; unless last,
//! z ← z − s·∇_z mean((A x̂0 − y)²) with v held constant (the official `vt` comes from a no-grad
//! call, so the gradient skips the network): ∇ = (2/|y|)·Aᵀ(A x̂0 − y) = (2/|y|)(AᵀA x̂0 − Aᵀy);
//! then z ← z + (t_{i+1} − t_i)·v with the v from before the steering. s = `gradient_scale`
//! (official default 100). The official mask factor is 1 for super-resolution and A's own mask
//! for inpainting (where A x̂0 − y is already zero off the mask), so it drops out. |y| is the
//! element count of one image's measurement: the official mean runs over its batch too (it
//! solves one reference image at a time, batch 1), which would make the step depend on how many
//! images share a batch. Aᵀy is the read-only [`Buf::Cond`].

use super::flow::{flow_time, velocity};
use super::program::{lin, model_input, Buf, Op, Program};
use crate::error::{Error, Result};
use crate::schedule::check_steps;
use crate::schedule::config::TrainingSchedule;
use crate::schedule::Prediction;

/// The official step size (`--gradient_scale`).
pub const GRADIENT_SCALE: f64 = 100.0;
/// The official default number of steps (`--N`).
pub const DEFAULT_STEPS: usize = 20;

const V: Buf = Buf::Slot(0);
const XH: Buf = Buf::Slot(1);
const GR: Buf = Buf::Slot(2);

/// The official time grid for `steps` steps (N + 1 points, 1 − 10⁻⁵ … 0).
pub fn times(steps: usize) -> Vec<f64> {
    let n = steps as f64;
    let mut t: Vec<f64> = (1..=steps).rev().map(|i| i as f64 / n).collect();
    t[0] = 1.0 - 1e-5;
    t.push(0.0);
    t
}

/// The FlowChef program: `steps` model evaluations on a flow-prediction model, step size
/// `scale`, `ny` = the element count of one image's measurement.
pub fn program(train: &TrainingSchedule, steps: usize, scale: f64, ny: usize) -> Result<Program> {
    check_steps(steps, train.num_train_timesteps)?;
    if train.prediction != Prediction::Flow {
        return Err(Error::Argument {
            op: "inverse",
            arg: "method",
            reason: format!(
                "flowchef needs a rectified-flow model (flow prediction, a FlowMatch scheduler config); this model predicts {:?}",
                train.prediction
            ),
        });
    }
    let t = times(steps);
    let c = 2.0 * scale / ny.max(1) as f64;
    let mut out = Vec::with_capacity(steps);
    for i in 0..steps {
        let time = flow_time(train, t[i]);
        let mut ops = vec![model_input(Buf::X, 1.0), Op::Model(time)];
        ops.push(lin(V, velocity(train.prediction, time)));
        if i + 1 < steps {
            ops.push(lin(XH, vec![(Buf::X, 1.0), (V, -t[i])]));
            ops.push(Op::Gram { src: XH, dst: GR });
            ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (GR, -c), (Buf::Cond, c)]));
        }
        ops.push(lin(Buf::X, vec![(Buf::X, 1.0), (V, t[i + 1] - t[i])]));
        out.push(ops);
    }
    Ok(Program::new(1.0, 3, out))
}
