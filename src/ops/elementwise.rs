//! Element-wise ops (`shaders/elementwise.wgsl`): activations, broadcasting add/mul and
//! in-place axpby. Tensors larger than one storage binding are processed in chunks.

use super::{grid_1d, nonempty, same_dtype, same_shape, shape_err, WG_1D};
use crate::error::Result;
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// A unary activation or transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// x·sigmoid(x).
    Silu,
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) (erf to 1.5e-7).
    Gelu,
    /// GELU with the tanh approximation (`approximate="tanh"`).
    GeluTanh,
    /// x·sigmoid(1.702·x), transformers' `quick_gelu` (OpenAI CLIP's activation).
    QuickGelu,
    /// clamp(x, lo, hi).
    Clamp { lo: f32, hi: f32 },
    /// alpha·x + beta.
    Affine { alpha: f32, beta: f32 },
}

impl Unary {
    fn op_define(self) -> &'static str {
        match self {
            Unary::Silu => "OP_SILU",
            Unary::Gelu => "OP_GELU",
            Unary::GeluTanh => "OP_GELU_TANH",
            Unary::QuickGelu => "OP_QUICK_GELU",
            Unary::Clamp { .. } => "OP_CLAMP",
            Unary::Affine { .. } => "OP_AFFINE",
        }
    }
    /// The f64 reference of this op (for tests and self-checks).
    pub fn eval(self, x: f64) -> f64 {
        crate::reference::unary(self, x)
    }
}

/// A broadcasting binary op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Mul,
}

params! {
    /// `#uniform Params` of `shaders/elementwise.wgsl`.
    struct Params {
        /// elements in this dispatch (a chunk of the tensor)
        n: u32,
        /// index of the chunk's first element in the whole tensor (broadcasting)
        base: u32,
        /// binary: b index = ((base + i) / inner) % blen
        inner: u32,
        /// binary: number of elements of b
        blen: u32,
        alpha: f32,
        beta: f32,
        lo: f32,
        hi: f32,
    }
}

fn key(entry: &'static str, dt: DType) -> KernelKey {
    KernelKey::new::<Params>("elementwise", entry, dt, [WG_1D, 1, 1])
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for op in [
        Unary::Silu,
        Unary::Gelu,
        Unary::GeluTanh,
        Unary::QuickGelu,
        Unary::Clamp { lo: 0.0, hi: 0.0 },
        Unary::Affine {
            alpha: 0.0,
            beta: 0.0,
        },
    ] {
        for inplace in [false, true] {
            v.push(unary_key(op, dt, inplace));
        }
    }
    for op in [Binary::Add, Binary::Mul] {
        v.push(binary_key(op, dt));
    }
    v.push(key("axpby", dt).flag("AXPBY", true));
    v.push(key("modulate", dt).flag("MODULATE", true));
    v.push(key("sample_div", dt).flag("SAMPLE_DIV", true));
    v.push(key("geglu", dt).flag("GEGLU", true));
    v
}

fn unary_key(op: Unary, dt: DType, inplace: bool) -> KernelKey {
    key("unary", dt)
        .flag("UNARY", true)
        .flag(op.op_define(), true)
        .flag("INPLACE", inplace)
}

fn binary_key(op: Binary, dt: DType) -> KernelKey {
    key("binary", dt).flag("BINARY", true).flag(
        match op {
            Binary::Add => "OP_ADD",
            Binary::Mul => "OP_MUL",
        },
        true,
    )
}

fn params(op: Option<Unary>, n: usize, base: usize) -> Params {
    let (mut alpha, mut beta, mut lo, mut hi) = (1.0, 0.0, 0.0, 0.0);
    match op {
        Some(Unary::Affine { alpha: a, beta: b }) => {
            alpha = a;
            beta = b;
        }
        Some(Unary::Clamp { lo: l, hi: h }) => {
            lo = l;
            hi = h;
        }
        _ => {}
    }
    Params {
        n: n as u32,
        base: base as u32,
        inner: 1,
        blen: 1,
        alpha,
        beta,
        lo,
        hi,
    }
}

/// y = op(x). Shapes and dtypes must match.
pub fn unary(rec: &mut Recorder<'_>, op: Unary, x: &Tensor, y: &Tensor) -> Result<()> {
    const OP: &str = "unary";
    nonempty(OP, x)?;
    same_dtype(OP, x, y)?;
    same_shape(OP, x, y)?;
    if x.shares_storage(y) {
        return unary_inplace(rec, op, y);
    }
    let gpu = rec.gpu();
    let k = unary_key(op, x.dtype(), false);
    let xs = x.chunk_bindings(gpu);
    let ys = y.chunk_bindings(gpu);
    for ((start, n, xb), (_, _, yb)) in xs.into_iter().zip(ys) {
        let p = params(Some(op), n, start);
        let g = grid_1d(gpu, OP, (n as u64).div_ceil(WG_1D as u64))?;
        rec.dispatch(&k, &p, &[("x", xb), ("y", yb)], g)?;
    }
    Ok(())
}

/// x = op(x) in place.
pub fn unary_inplace(rec: &mut Recorder<'_>, op: Unary, x: &Tensor) -> Result<()> {
    const OP: &str = "unary_inplace";
    nonempty(OP, x)?;
    let gpu = rec.gpu();
    let k = unary_key(op, x.dtype(), true);
    for (start, n, xb) in x.chunk_bindings(gpu) {
        let p = params(Some(op), n, start);
        let g = grid_1d(gpu, OP, (n as u64).div_ceil(WG_1D as u64))?;
        rec.dispatch(&k, &p, &[("x", xb)], g)?;
    }
    Ok(())
}

/// How `b` broadcasts against `a`: b's non-1 dims (after left-padding with 1s) must be one
/// contiguous run equal to a's dims there. Returns (inner, blen) for
/// `b_index = (i / inner) % blen`, e.g. a bias `[C]` or `[1, C, 1, 1]` over `[N, C, H, W]`
/// gives (H·W, C); a per-sample `[N, C]` over `[N, C, H, W]` gives (H·W, N·C).
pub fn broadcast_rule(a: &Tensor, b: &Tensor) -> Result<(usize, usize)> {
    let (ash, bsh) = (a.shape(), b.shape());
    let bad = || {
        shape_err(
            "binary",
            b,
            format!(
                "which does not broadcast against `{}` {:?} (b's non-1 dims must be one run \
                 equal to a's)",
                a.name(),
                ash
            ),
        )
    };
    if bsh.len() > ash.len() {
        return Err(bad());
    }
    let mut padded = vec![1usize; ash.len() - bsh.len()];
    padded.extend_from_slice(bsh);
    let non1: Vec<usize> = (0..ash.len()).filter(|&d| padded[d] != 1).collect();
    if non1.is_empty() {
        return Ok((1, 1));
    }
    let (j, k) = (non1[0], non1[non1.len() - 1] + 1);
    for d in j..k {
        if padded[d] != ash[d] {
            return Err(bad());
        }
    }
    let inner: usize = ash[k..].iter().product();
    let blen: usize = ash[j..k].iter().product();
    Ok((inner, blen))
}

/// out = a ∘ b with b broadcast per [`broadcast_rule`].
pub fn binary(
    rec: &mut Recorder<'_>,
    op: Binary,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    const OP: &str = "binary";
    nonempty(OP, a)?;
    nonempty(OP, b)?;
    same_dtype(OP, a, b)?;
    same_dtype(OP, a, out)?;
    same_shape(OP, a, out)?;
    let (inner, blen) = broadcast_rule(a, b)?;
    if out.shares_storage(a) || out.shares_storage(b) {
        return Err(crate::error::Error::Argument {
            op: OP,
            arg: "out",
            reason: format!(
                "`{}` shares storage with an input; write to a separate tensor",
                out.name()
            ),
        });
    }
    let gpu = rec.gpu();
    let k = binary_key(op, a.dtype());
    let bb = b.binding(gpu, OP)?;
    for ((start, n, ab), (_, _, ob)) in a
        .chunk_bindings(gpu)
        .into_iter()
        .zip(out.chunk_bindings(gpu))
    {
        let mut p = params(None, n, start);
        p.inner = inner as u32;
        p.blen = blen as u32;
        let g = grid_1d(gpu, OP, (n as u64).div_ceil(WG_1D as u64))?;
        rec.dispatch(&k, &p, &[("a", ab), ("b", bb.clone()), ("out", ob)], g)?;
    }
    Ok(())
}

/// y ← alpha·x + beta·y, in place on y.
pub fn axpby(rec: &mut Recorder<'_>, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<()> {
    const OP: &str = "axpby";
    nonempty(OP, x)?;
    same_dtype(OP, x, y)?;
    same_shape(OP, x, y)?;
    if x.shares_storage(y) {
        // x is bound read-only and y read-write: one buffer cannot be both in a dispatch.
        return unary_inplace(
            rec,
            Unary::Affine {
                alpha: alpha + beta,
                beta: 0.0,
            },
            y,
        );
    }
    let gpu = rec.gpu();
    let k = key("axpby", x.dtype()).flag("AXPBY", true);
    for ((start, n, xb), (_, _, yb)) in x.chunk_bindings(gpu).into_iter().zip(y.chunk_bindings(gpu))
    {
        let mut p = params(None, n, start);
        p.alpha = alpha;
        p.beta = beta;
        let g = grid_1d(gpu, OP, (n as u64).div_ceil(WG_1D as u64))?;
        rec.dispatch(&k, &p, &[("x", xb), ("y", yb)], g)?;
    }
    Ok(())
}

/// out = a · (1 + scale) + shift with `t` = [scale | shift] of shape [N, 2C] and a, out
/// [N, C, ...] (diffusers' `scale_shift` time-embedding norm).
pub fn modulate(rec: &mut Recorder<'_>, a: &Tensor, t: &Tensor, out: &Tensor) -> Result<()> {
    const OP: &str = "modulate";
    nonempty(OP, a)?;
    same_dtype(OP, a, t)?;
    same_dtype(OP, a, out)?;
    same_shape(OP, a, out)?;
    if a.shape().len() < 2 {
        return Err(shape_err(OP, a, "expected [N, C, ...]".into()));
    }
    let (n, c) = (a.shape()[0], a.shape()[1]);
    if t.shape() != [n, 2 * c] {
        return Err(shape_err(
            OP,
            t,
            format!("expected [{n}, {}] (scale and shift per channel)", 2 * c),
        ));
    }
    if out.shares_storage(a) || out.shares_storage(t) {
        return Err(crate::error::Error::Argument {
            op: OP,
            arg: "out",
            reason: format!("`{}` shares storage with an input", out.name()),
        });
    }
    let inner = a.numel() / (n * c);
    let gpu = rec.gpu();
    let k = key("modulate", a.dtype()).flag("MODULATE", true);
    let tb = t.binding(gpu, OP)?;
    for ((start, cnt, ab), (_, _, ob)) in a
        .chunk_bindings(gpu)
        .into_iter()
        .zip(out.chunk_bindings(gpu))
    {
        let mut p = params(None, cnt, start);
        p.inner = inner as u32;
        p.blen = c as u32;
        let g = grid_1d(gpu, OP, (cnt as u64).div_ceil(WG_1D as u64))?;
        rec.dispatch(&k, &p, &[("a", ab), ("t", tb.clone()), ("out", ob)], g)?;
    }
    Ok(())
}

/// x[n, ...] ← x[n, ...] / t[n] in place, with t f32 [N].
pub fn divide_per_sample(rec: &mut Recorder<'_>, x: &Tensor, t: &Tensor) -> Result<()> {
    const OP: &str = "divide_per_sample";
    nonempty(OP, x)?;
    super::dtype_is(OP, t, DType::F32, "per-sample divisors are f32")?;
    let n = x.shape()[0];
    if t.shape() != [n] {
        return Err(shape_err(
            OP,
            t,
            format!("expected [{n}] (one divisor per sample of `{}`)", x.name()),
        ));
    }
    let inner = x.numel() / n;
    let gpu = rec.gpu();
    let k = key("sample_div", x.dtype()).flag("SAMPLE_DIV", true);
    let tb = t.binding(gpu, OP)?;
    for (start, cnt, xb) in x.chunk_bindings(gpu) {
        let mut p = params(None, cnt, start);
        p.inner = inner as u32;
        let g = grid_1d(gpu, OP, (cnt as u64).div_ceil(WG_1D as u64))?;
        rec.dispatch(&k, &p, &[("x", xb), ("t", tb.clone())], g)?;
    }
    Ok(())
}

/// y [.., F] = x[.., :F] · gelu(x[.., F:]) for x [.., 2F] (diffusers' `GEGLU`, Shazeer 2020:
/// `hidden, gate = proj(x).chunk(2, -1)`; exact GELU).
pub fn geglu(rec: &mut Recorder<'_>, x: &Tensor, y: &Tensor) -> Result<()> {
    const OP: &str = "geglu";
    nonempty(OP, x)?;
    same_dtype(OP, x, y)?;
    let xs = x.shape();
    let f2 = *xs.last().unwrap_or(&0);
    let mut want = xs.to_vec();
    if let Some(l) = want.last_mut() {
        *l = f2 / 2;
    }
    if f2 % 2 != 0 {
        return Err(shape_err(
            OP,
            x,
            "expected an even last dimension (hidden and gate halves)".into(),
        ));
    }
    if y.shape() != want {
        return Err(shape_err(
            OP,
            y,
            format!("expected {want:?} (half the last dim of `{}`)", x.name()),
        ));
    }
    if x.shares_storage(y) {
        return Err(crate::error::Error::Argument {
            op: OP,
            arg: "y",
            reason: format!("`{}` shares storage with the input", y.name()),
        });
    }
    let gpu = rec.gpu();
    let n = super::u32_param(OP, "elements", y.numel())?;
    let mut p = params(None, n as usize, 0);
    p.inner = (f2 / 2) as u32;
    let g = grid_1d(gpu, OP, (n as u64).div_ceil(WG_1D as u64))?;
    let k = key("geglu", x.dtype()).flag("GEGLU", true);
    rec.dispatch(
        &k,
        &p,
        &[("x", x.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)],
        g,
    )?;
    Ok(())
}
