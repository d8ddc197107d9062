//! The fused solver update `dst = c_self·dst + Σ cᵢ·inᵢ + c_z·z` (optionally clamped), z a
//! standard normal drawn in-kernel with Philox (`shaders/solver_step.wgsl`): every linear
//! instruction of a solver program is one such update, split into dispatches of at most four
//! inputs. Operands may mix f32 and f16 storage; arithmetic is f32.

use super::rng::Philox;
use super::{grid_1d, same_shape, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Inputs one dispatch of the kernel reads.
pub const MAX_INPUTS: usize = 4;

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

/// The names of the kernel's input bindings.
const INPUTS: [&str; MAX_INPUTS] = ["in0", "in1", "in2", "in3"];

/// One update; see the module doc.
#[derive(Clone, Copy)]
pub struct Update<'a> {
    pub dst: &'a Tensor,
    /// The coefficient of dst's current value; `None` overwrites dst.
    pub keep: Option<f32>,
    /// (input, coefficient) pairs, each of dst's shape; any number (split by four).
    pub terms: &'a [(&'a Tensor, f32)],
    /// A fresh standard-normal draw times the coefficient.
    pub noise: Option<(Philox, f32)>,
    /// Clamp the result to ±value.
    pub clamp: Option<f32>,
}

fn dt_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::I8 => "i8",
    }
}

fn key(dst: DType, inputs: &[DType], self_term: bool, noise: bool, clamp: bool) -> KernelKey {
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

/// Every variant with `dst` storage: every input count, mixed input dtypes, all options.
pub fn variants(dst: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for nin in 0..=MAX_INPUTS {
        let ins: Vec<DType> = (0..nin)
            .map(|i| if i % 2 == 0 { DType::F32 } else { DType::F16 })
            .collect();
        for (s, n, c) in [
            (false, false, false),
            (true, true, true),
            (false, true, false),
            (true, false, true),
        ] {
            v.push(key(dst, &ins, s, n, c));
        }
    }
    v
}

/// Records `u`. The first dispatch applies `keep`, later ones accumulate into dst; noise and
/// clamp ride in the last.
pub fn update(rec: &mut Recorder<'_>, u: &Update<'_>) -> Result<()> {
    const OP: &str = "solver_step";
    let d = u.dst;
    super::nonempty(OP, d)?;
    let n = u32_param(OP, "elements", d.numel())?;
    for (t, c) in u.terms {
        same_shape(OP, d, t)?;
        if t.shares_storage(d) {
            return Err(Error::Argument {
                op: OP,
                arg: "terms",
                reason: format!(
                    "input `{}` is the destination `{}`; give its coefficient as `keep`",
                    t.name(),
                    d.name()
                ),
            });
        }
        if !c.is_finite() {
            return Err(Error::Argument {
                op: OP,
                arg: "terms",
                reason: format!("coefficient {c} of `{}` is not finite", t.name()),
            });
        }
    }
    let gpu = rec.gpu();
    let (philox, c_z) = u.noise.unwrap_or((Philox { seed: 0, stream: 0 }, 0.0));
    let chunks: Vec<&[(&Tensor, f32)]> = if u.terms.is_empty() {
        vec![&[]]
    } else {
        u.terms.chunks(MAX_INPUTS).collect()
    };
    let grid = grid_1d(gpu, OP, (d.numel() as u64).div_ceil(WG_1D as u64))?;
    let last = chunks.len() - 1;
    for (ci, chunk) in chunks.into_iter().enumerate() {
        let (self_term, c_self) = match (ci, u.keep) {
            (0, None) => (false, 0.0),
            (0, Some(c)) => (true, c),
            _ => (true, 1.0),
        };
        let is_last = ci == last;
        let mut p = Params {
            n,
            stream: philox.stream,
            seed_lo: philox.seed as u32,
            seed_hi: (philox.seed >> 32) as u32,
            c_self,
            c_z: if is_last { c_z } else { 0.0 },
            clamp_to: u.clamp.unwrap_or(0.0),
            _p0: 0,
            c: [0.0; 4],
        };
        let mut binds = vec![("dst", d.binding(gpu, OP)?)];
        let mut dts = Vec::new();
        for (j, (t, c)) in chunk.iter().enumerate() {
            p.c[j] = *c;
            dts.push(t.dtype());
            binds.push((INPUTS[j], t.binding(gpu, OP)?));
        }
        let k = key(
            d.dtype(),
            &dts,
            self_term,
            is_last && u.noise.is_some(),
            is_last && u.clamp.is_some(),
        );
        rec.dispatch(&k, &p, &binds, grid)?;
    }
    Ok(())
}
