//! Data-dependent solver coefficients on the GPU (`shaders/coef.wgsl`): inner products reduced
//! into per-(sample, channel) scalar registers, elementwise scalar programs over those
//! registers, and a linear update whose coefficients are read from them. The registers are
//! one f32 tensor `regs` [R, N, C]; a per-sample value (a reduction over C×H×W) is stored in
//! each of the sample's C entries, so every later kernel indexes registers by (n, c) alone.
//! Used by EVODiff's projections and LML's per-sample corrections; nothing is read back.

use super::{dtype_is, grid_1d, nonempty, same_shape, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Inputs one update dispatch reads.
pub const MAX_INPUTS: usize = 4;
/// Instructions of one scalar program (and constants it may name).
pub const MAX_CODE: usize = 32;
/// Depth of a scalar program's stack.
pub const MAX_STACK: usize = 8;
const NONE: u32 = u32::MAX;

params! {
    /// `#uniform Params` of `shaders/coef.wgsl` with `K_DOT`.
    struct DotParams {
        /// groups (N·C or N)
        groups: u32,
        /// elements per group
        len: u32,
        /// register entries written per group (1, or C for per-sample sums)
        reps: u32,
        /// offset of the destination register in `regs`
        dst: u32,
    }
}

params! {
    /// `#uniform Params` of `shaders/coef.wgsl` with `K_SCALAR`.
    struct ScalarParams {
        /// entries per register (N·C)
        m: u32,
        /// instructions
        len: u32,
        /// offset of the destination register
        dst: u32,
        _p0: u32,
        /// opcode | operand << 8, four per vector
        code: [[u32; 4]; 8],
        consts: [[f32; 4]; 8],
    }
}

params! {
    /// `#uniform Params` of `shaders/coef.wgsl` with `K_UPDATE`.
    struct UpdateParams {
        /// elements
        n: u32,
        /// elements per (n, c) (H·W)
        hw: u32,
        c_self: f32,
        /// register offset of the self coefficient, or u32::MAX
        reg_self: u32,
        c: [f32; 4],
        /// register offsets of the input coefficients, or u32::MAX
        reg: [u32; 4],
    }
}

/// What one inner product is summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Over {
    /// H×W for each (sample, channel).
    Channel,
    /// C×H×W for each sample (stored in each of its C entries).
    Sample,
}

/// One instruction of a scalar program (reverse Polish, evaluated per (n, c) entry).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sx {
    /// Push register k's entry.
    Reg(usize),
    /// Push a constant.
    Const(f64),
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    Abs,
    Neg,
    /// 1 / (1 + e^−x).
    Sigmoid,
    Sqrt,
}

impl Sx {
    /// Stack effect (pops, pushes).
    fn arity(self) -> usize {
        match self {
            Sx::Reg(_) | Sx::Const(_) => 0,
            Sx::Abs | Sx::Neg | Sx::Sigmoid | Sx::Sqrt => 1,
            _ => 2,
        }
    }
}

fn arg(reason: String) -> Error {
    Error::Argument {
        op: "coef",
        arg: "program",
        reason,
    }
}

/// Checks a scalar program: at most [`MAX_CODE`] instructions and constants, registers below
/// `regs`, the stack never under- or over-flows and ends holding one value.
pub fn check_code(code: &[Sx], regs: usize) -> Result<()> {
    if code.len() > MAX_CODE {
        return Err(arg(format!(
            "a scalar program has {} instructions (at most {MAX_CODE})",
            code.len()
        )));
    }
    let mut depth = 0usize;
    for op in code {
        if let Sx::Reg(k) = op {
            if *k >= regs {
                return Err(arg(format!(
                    "a scalar program reads register {k} but the program has {regs}"
                )));
            }
        }
        if depth < op.arity() {
            return Err(arg(format!("scalar program {code:?} pops an empty stack")));
        }
        depth = depth - op.arity() + 1;
        if depth > MAX_STACK {
            return Err(arg(format!(
                "scalar program {code:?} needs a stack deeper than {MAX_STACK}"
            )));
        }
    }
    if depth != 1 {
        return Err(arg(format!(
            "scalar program {code:?} leaves {depth} values (one expected)"
        )));
    }
    Ok(())
}

/// Evaluates a (checked) scalar program in f64 with `reg(k)` the entry of register k: the
/// host semantics of the `K_SCALAR` kernel.
pub fn eval(code: &[Sx], reg: impl Fn(usize) -> f64) -> f64 {
    let mut st: Vec<f64> = Vec::with_capacity(MAX_STACK);
    for op in code {
        match *op {
            Sx::Reg(k) => st.push(reg(k)),
            Sx::Const(c) => st.push(c),
            Sx::Abs | Sx::Neg | Sx::Sigmoid | Sx::Sqrt => {
                let x = st.pop().unwrap_or(f64::NAN);
                st.push(match op {
                    Sx::Abs => x.abs(),
                    Sx::Neg => -x,
                    Sx::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                    _ => x.sqrt(),
                });
            }
            _ => {
                let y = st.pop().unwrap_or(f64::NAN);
                let x = st.pop().unwrap_or(f64::NAN);
                st.push(match op {
                    Sx::Add => x + y,
                    Sx::Sub => x - y,
                    Sx::Mul => x * y,
                    Sx::Div => x / y,
                    // WGSL's min/max; NaN never reaches them in a meaningful program.
                    Sx::Min => x.min(y),
                    _ => x.max(y),
                });
            }
        }
    }
    st.pop().unwrap_or(f64::NAN)
}

fn dt_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::I8 => "i8",
    }
}

/// Workgroup size of a reduction over `len` elements (short groups must not idle 256
/// invocations each).
fn dot_workgroup(len: usize) -> u32 {
    match len {
        0..=64 => 16,
        65..=1024 => 64,
        _ => 256,
    }
}

fn dot_key(a: DType, b: DType, wg: u32) -> KernelKey {
    KernelKey::new::<DotParams>("coef", "main", DType::F32, [wg, 1, 1])
        .flag("K_DOT", true)
        .define("DT_A", dt_name(a))
        .define("DT_B", dt_name(b))
}

fn scalar_key() -> KernelKey {
    KernelKey::new::<ScalarParams>("coef", "main", DType::F32, [WG_1D, 1, 1]).flag("K_SCALAR", true)
}

fn update_key(dst: DType, inputs: &[DType], self_term: bool) -> KernelKey {
    let mut k = KernelKey::new::<UpdateParams>("coef", "main", dst, [WG_1D, 1, 1])
        .flag("K_UPDATE", true)
        .define("DT_DST", dt_name(dst))
        .define("NIN", inputs.len())
        .flag("SELF", self_term);
    for (i, d) in inputs.iter().enumerate() {
        k = k
            .flag(&format!("IN{i}"), true)
            .define(&format!("DT_IN{i}"), dt_name(*d));
    }
    k
}

/// Every variant (reductions and updates of `dt` operands; the scalar kernel with f32).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    if dt == DType::I8 {
        return vec![];
    }
    let mut v = Vec::new();
    for wg in [16, 64, 256] {
        v.push(dot_key(dt, DType::F32, wg));
    }
    if dt == DType::F32 {
        v.push(scalar_key());
    }
    for nin in 0..=MAX_INPUTS {
        let ins: Vec<DType> = (0..nin)
            .map(|i| if i % 2 == 0 { DType::F32 } else { DType::F16 })
            .collect();
        for s in [false, true] {
            v.push(update_key(dt, &ins, s));
        }
    }
    v
}

/// (N, C, H·W) of a state [N, C, ...] (C = 1 and H·W = the rest for a [N, L] tensor).
fn geometry(t: &Tensor) -> (usize, usize, usize) {
    let s = t.shape();
    let n = s[0];
    let c = s.get(1).copied().unwrap_or(1);
    (n, c, t.numel() / (n * c).max(1))
}

/// Checks `regs` is f32 [R, N, C] for states of `like`'s shape and `k` < R; returns N·C.
fn check_regs(op: &'static str, regs: &Tensor, like: &Tensor, k: usize) -> Result<usize> {
    dtype_is(op, regs, DType::F32, "scalar registers are f32")?;
    let (n, c, _) = geometry(like);
    let s = regs.shape();
    if s.len() != 3 || s[1] != n || s[2] != c {
        return Err(shape_err(
            op,
            regs,
            format!(
                "expected [R, {n}, {c}] (per (sample, channel) of `{}`)",
                like.name()
            ),
        ));
    }
    if k >= s[0] {
        return Err(Error::Argument {
            op,
            arg: "register",
            reason: format!("register {k} is past the {} of `{}`", s[0], regs.name()),
        });
    }
    Ok(n * c)
}

/// regs[dst] = ⟨a, b⟩ over `over` for each (sample, channel); `a`, `b` [N, C, ...] f32 or f16.
pub fn dot(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    regs: &Tensor,
    dst: usize,
    over: Over,
) -> Result<()> {
    const OP: &str = "coef dot";
    nonempty(OP, a)?;
    same_shape(OP, a, b)?;
    let m = check_regs(OP, regs, a, dst)?;
    let (n, c, hw) = geometry(a);
    let (groups, len, reps) = match over {
        Over::Channel => (n * c, hw, 1),
        Over::Sample => (n, c * hw, c),
    };
    let p = DotParams {
        groups: u32_param(OP, "groups", groups)?,
        len: u32_param(OP, "elements per group", len)?,
        reps: u32_param(OP, "channels", reps)?,
        dst: u32_param(OP, "register offset", dst * m)?,
    };
    let wg = dot_workgroup(len);
    if reps > wg as usize {
        return Err(Error::TooLarge {
            op: OP,
            what: "channels of a per-sample inner product".into(),
            got: reps as u64,
            limit: wg as u64,
        });
    }
    let gpu = rec.gpu();
    let binds = [
        ("a", a.binding(gpu, OP)?),
        ("b", b.binding(gpu, OP)?),
        ("regs", regs.binding(gpu, OP)?),
    ];
    let g = grid_1d(gpu, OP, groups as u64)?;
    rec.dispatch(&dot_key(a.dtype(), b.dtype(), wg), &p, &binds, g)?;
    Ok(())
}

/// regs[dst] = `code` evaluated on each (n, c) entry.
pub fn scalar(rec: &mut Recorder<'_>, regs: &Tensor, dst: usize, code: &[Sx]) -> Result<()> {
    const OP: &str = "coef scalar";
    dtype_is(OP, regs, DType::F32, "scalar registers are f32")?;
    let s = regs.shape();
    if s.len() != 3 || dst >= s[0] {
        return Err(shape_err(
            OP,
            regs,
            format!("expected [R, N, C] with R > {dst}"),
        ));
    }
    check_code(code, s[0])?;
    let m = s[1] * s[2];
    let mut p = ScalarParams {
        m: u32_param(OP, "entries", m)?,
        len: code.len() as u32,
        dst: u32_param(OP, "register offset", dst * m)?,
        _p0: 0,
        code: [[0; 4]; 8],
        consts: [[0.0; 4]; 8],
    };
    let mut nc = 0usize;
    for (i, op) in code.iter().enumerate() {
        let (opc, operand) = match *op {
            Sx::Reg(k) => (0, k),
            Sx::Const(c) => {
                p.consts[nc / 4][nc % 4] = c as f32;
                nc += 1;
                (1, nc - 1)
            }
            Sx::Add => (2, 0),
            Sx::Sub => (3, 0),
            Sx::Mul => (4, 0),
            Sx::Div => (5, 0),
            Sx::Min => (6, 0),
            Sx::Max => (7, 0),
            Sx::Abs => (8, 0),
            Sx::Neg => (9, 0),
            Sx::Sigmoid => (10, 0),
            Sx::Sqrt => (11, 0),
        };
        p.code[i / 4][i % 4] = opc | (u32_param(OP, "register", operand)? << 8);
    }
    let gpu = rec.gpu();
    let g = grid_1d(gpu, OP, (m as u64).div_ceil(WG_1D as u64))?;
    rec.dispatch(&scalar_key(), &p, &[("regs", regs.binding(gpu, OP)?)], g)?;
    Ok(())
}

/// One input of an update: tensor, constant, and the register whose (n, c) entry multiplies
/// the constant (none: the constant alone).
pub type Term<'a> = (&'a Tensor, f32, Option<usize>);

/// dst = keep·dst + Σ c·r·in (see [`Term`]); `keep` `None` overwrites dst. Split into
/// dispatches of four inputs (the first applies `keep`, later ones accumulate).
pub fn update(
    rec: &mut Recorder<'_>,
    dst: &Tensor,
    regs: &Tensor,
    keep: Option<(f32, Option<usize>)>,
    terms: &[Term<'_>],
) -> Result<()> {
    const OP: &str = "coef update";
    nonempty(OP, dst)?;
    let n = u32_param(OP, "elements", dst.numel())?;
    let (_, _, hw) = geometry(dst);
    let offset = |r: Option<usize>| -> Result<u32> {
        match r {
            None => Ok(NONE),
            Some(k) => {
                let m = check_regs(OP, regs, dst, k)?;
                u32_param(OP, "register offset", k * m)
            }
        }
    };
    let reg_keep = offset(keep.and_then(|k| k.1))?;
    let mut regs_of = Vec::with_capacity(terms.len());
    for (t, c, r) in terms {
        same_shape(OP, dst, t)?;
        if t.shares_storage(dst) {
            return Err(Error::Argument {
                op: OP,
                arg: "terms",
                reason: format!(
                    "input `{}` is the destination `{}`; give its coefficient as `keep`",
                    t.name(),
                    dst.name()
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
        regs_of.push(offset(*r)?);
    }
    let gpu = rec.gpu();
    let grid = grid_1d(gpu, OP, (dst.numel() as u64).div_ceil(WG_1D as u64))?;
    let idx: Vec<usize> = (0..terms.len()).collect();
    let chunks: Vec<&[usize]> = if terms.is_empty() {
        vec![&[]]
    } else {
        idx.chunks(MAX_INPUTS).collect()
    };
    for (ci, chunk) in chunks.into_iter().enumerate() {
        let (self_term, c_self, reg_self) = match (ci, keep) {
            (0, None) => (false, 0.0, NONE),
            (0, Some((c, _))) => (true, c, reg_keep),
            _ => (true, 1.0, NONE),
        };
        let mut p = UpdateParams {
            n,
            hw: u32_param(OP, "elements per channel", hw)?,
            c_self,
            reg_self,
            c: [0.0; 4],
            reg: [NONE; 4],
        };
        let mut binds = vec![
            ("dst", dst.binding(gpu, OP)?),
            ("regs", regs.binding(gpu, OP)?),
        ];
        let mut dts = Vec::new();
        for (j, &ti) in chunk.iter().enumerate() {
            let (t, c, _) = terms[ti];
            p.c[j] = c;
            p.reg[j] = regs_of[ti];
            dts.push(t.dtype());
            binds.push((["in0", "in1", "in2", "in3"][j], t.binding(gpu, OP)?));
        }
        rec.dispatch(&update_key(dst.dtype(), &dts, self_term), &p, &binds, grid)?;
    }
    Ok(())
}
