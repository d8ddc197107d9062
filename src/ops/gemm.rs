//! Batched GEMM (`shaders/gemm.wgsl`): C = alpha·A·op(B) (+ bias), register-blocked 4×4 per
//! invocation, vec4 loads along K when the shapes allow, f32 accumulation.

use super::{nonempty, same_dtype, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::tuning::{parse_variant, select, time_recorded, Variant};
use crate::gpu::{params, GpuInfo, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Workgroup shape (invocations); each invocation computes a 4×4 block, so a workgroup covers
/// a 32×32 tile of C.
pub const WG: [u32; 3] = [8, 8, 1];

/// A fully strided GEMM description (element units). Batch index z = zo·batch_inner + zi;
/// operand offsets are zo·s0 + zi·s1.
#[derive(Debug, Clone, Copy)]
pub struct GemmDesc {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub batch_inner: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub a_strides: [usize; 2],
    pub b_strides: [usize; 2],
    pub c_strides: [usize; 2],
    /// B is stored [N, K] (C = A·Bᵀ).
    pub trans_b: bool,
    pub alpha: f32,
}

params! {
    /// `#uniform Params` of `shaders/gemm.wgsl`.
    struct Params {
        m: u32,
        n: u32,
        k: u32,
        batch_inner: u32,
        lda: u32,
        ldb: u32,
        ldc: u32,
        /// element offset of A's first batch (a chunk of rows inside a larger tensor)
        a_off: u32,
        a_s0: u32,
        a_s1: u32,
        b_s0: u32,
        b_s1: u32,
        c_s0: u32,
        c_s1: u32,
        alpha: f32,
        /// element offset of C's first batch
        c_off: u32,
    }
}

/// The register-blocked kernel with `rows` (4 or 8) rows of C per invocation.
pub fn key_rows(dt: DType, rows: usize, trans_b: bool, vec4: bool, bias: bool) -> KernelKey {
    KernelKey::new::<Params>("gemm", "main", dt, WG)
        .define("ROWS", rows)
        .flag("M8", rows == 8)
        .flag("TRANS_B", trans_b)
        .flag("VEC4", vec4)
        .flag("BIAS", bias)
}

/// Workgroup of the shared-memory tile variant: 16×16 invocations, 4×4 each, a 64×64 block of C.
pub const TILE_WG: [u32; 3] = [16, 16, 1];

/// The key of the shared-memory tile variant ("tile64").
pub fn key_tile(dt: DType, trans_b: bool, bias: bool) -> KernelKey {
    KernelKey::new::<Params>("gemm", "main", dt, TILE_WG)
        .flag("TILE", true)
        .flag("TRANS_B", trans_b)
        .flag("BIAS", bias)
}

/// A GEMM kernel variant; its `Display` is the name the tuning cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKernel {
    /// Register-blocked, 4 rows × 4 columns of C per invocation (vec4 loads along K where the
    /// shapes allow): "reg4x4".
    Reg4x4,
    /// Register-blocked, 8 rows × 4 columns: "reg8x4".
    Reg8x4,
    /// The shared-memory tile, 64×64 of C per 16×16 workgroup (a tuning candidate for GPUs):
    /// "tile64".
    Tile64,
}

impl GemmKernel {
    /// Every variant, in the order tuning measures them.
    pub const ALL: [GemmKernel; 3] = [GemmKernel::Reg4x4, GemmKernel::Reg8x4, GemmKernel::Tile64];
}

impl std::fmt::Display for GemmKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GemmKernel::Reg4x4 => "reg4x4",
            GemmKernel::Reg8x4 => "reg8x4",
            GemmKernel::Tile64 => "tile64",
        })
    }
}

impl std::str::FromStr for GemmKernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_variant(s)
    }
}

impl Variant for GemmKernel {
    const OP: &'static str = "gemm";
    type Ctx = GemmDesc;
    fn all() -> Vec<Self> {
        Self::ALL.to_vec()
    }
    fn default_for(info: &GpuInfo, d: &GemmDesc) -> Self {
        default_variant(info, d)
    }
    fn unsupported(self, _: &GpuInfo, _: &GemmDesc) -> Option<String> {
        None
    }
}

/// The default variant. CPU adapters take 8 rows per invocation when K ≥ 64 and M ≥ 8
/// (lavapipe, side by side: 1.05–1.2× on 1024³ and the UNets' projection shapes, but 0.6–0.9×
/// for single rows and K = 16 attention scores; benches/README.md); everything else 4.
pub fn default_variant(info: &GpuInfo, d: &GemmDesc) -> GemmKernel {
    if info.device_type == wgpu::DeviceType::Cpu && d.k >= 64 && d.m >= 8 {
        GemmKernel::Reg8x4
    } else {
        GemmKernel::Reg4x4
    }
}

/// All kernel keys (for validation): every [`GemmKernel`], with and without Bᵀ, bias and (for
/// the register-blocked kernels) vec4 loads.
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for t in [false, true] {
        for b in [false, true] {
            for kernel in GemmKernel::ALL {
                match kernel {
                    GemmKernel::Tile64 => v.push(key_tile(dt, t, b)),
                    GemmKernel::Reg4x4 | GemmKernel::Reg8x4 => {
                        for v4 in [false, true] {
                            v.push(key_rows(dt, rows_of(kernel), t, v4, b));
                            if t {
                                v.push(key_rows(dt, rows_of(kernel), t, v4, b).flag("Q8", true));
                            }
                        }
                    }
                }
            }
        }
    }
    v
}

/// Rows of C per invocation of a register-blocked kernel (64 for the tile's workgroup tile).
fn rows_of(k: GemmKernel) -> usize {
    match k {
        GemmKernel::Reg4x4 => 4,
        GemmKernel::Reg8x4 => 8,
        GemmKernel::Tile64 => 64,
    }
}

impl GemmDesc {
    /// One contiguous, unbatched C [M, N] = A [M, K] · B ([K, N], or [N, K] with `trans_b`).
    pub fn single(m: usize, n: usize, k: usize, trans_b: bool) -> GemmDesc {
        GemmDesc {
            m,
            n,
            k,
            batch: 1,
            batch_inner: 1,
            lda: k,
            ldb: if trans_b { k } else { n },
            ldc: n,
            a_strides: [0, 0],
            b_strides: [0, 0],
            c_strides: [0, 0],
            trans_b,
            alpha: 1.0,
        }
    }

    /// Whether the vec4 kernel applies (every K-row start and, without TRANS_B, every B row
    /// segment is 4-aligned).
    pub fn vec4_ok(&self) -> bool {
        let all4 = |v: &[usize]| v.iter().all(|x| x % 4 == 0);
        all4(&[self.k, self.lda, self.ldb])
            && all4(&self.a_strides)
            && all4(&self.b_strides)
            && (self.trans_b || self.n % 4 == 0)
    }
}

/// Records `c = alpha·a·op(b) (+ bias)` for a strided description. Bounds of every operand
/// are checked against its tensor.
pub fn gemm(
    rec: &mut Recorder<'_>,
    d: &GemmDesc,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<()> {
    gemm_variant(rec, d, a, b, bias, c, None)
}

/// [`gemm`] with an explicit kernel ([`GemmKernel`]); `None` takes [`default_variant`] or, with
/// tuning on, the adapter's measured winner for this shape.
pub fn gemm_variant(
    rec: &mut Recorder<'_>,
    d: &GemmDesc,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    variant: Option<GemmKernel>,
) -> Result<()> {
    gemm_impl(rec, d, a, b, None, bias, c, variant, [0, 0])
}

/// [`gemm`] on A and C starting at element offsets `a_off` and `c_off` of their tensors (every
/// batch offset is added to them): attention over a chunk of query rows addresses the rows of
/// q and of the output inside the whole tensors.
#[allow(clippy::too_many_arguments)]
pub fn gemm_offset(
    rec: &mut Recorder<'_>,
    d: &GemmDesc,
    a: &Tensor,
    a_off: usize,
    b: &Tensor,
    c: &Tensor,
    c_off: usize,
) -> Result<()> {
    gemm_impl(rec, d, a, b, None, None, c, None, [a_off, c_off])
}

/// W8A32 GEMM: `b` is an `I8` tensor [N, ldb] (C = alpha·A·Bᵀ, `d.trans_b`, shared by every
/// batch) with f32 per-row scales `scale` [N]:
/// C[m, n] = alpha · scale[n] · Σ_k A[m, k] · q[n, k] + bias[n], f32 accumulation. `variant`
/// as in [`gemm_variant`] (the register-blocked kernels only; no tuning).
#[allow(clippy::too_many_arguments)]
pub fn gemm_q8(
    rec: &mut Recorder<'_>,
    d: &GemmDesc,
    a: &Tensor,
    b: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    variant: Option<GemmKernel>,
) -> Result<()> {
    gemm_impl(rec, d, a, b, Some(scale), bias, c, variant, [0, 0])
}

#[allow(clippy::too_many_arguments)]
fn gemm_impl(
    rec: &mut Recorder<'_>,
    d: &GemmDesc,
    a: &Tensor,
    b: &Tensor,
    scale: Option<&Tensor>,
    bias: Option<&Tensor>,
    c: &Tensor,
    variant: Option<GemmKernel>,
    offs: [usize; 2],
) -> Result<()> {
    const OP: &str = "gemm";
    for t in [a, b, c] {
        nonempty(OP, t)?;
    }
    let q8 = b.dtype() == DType::I8;
    match (q8, scale) {
        (false, None) => same_dtype(OP, a, b)?,
        (true, Some(s)) => {
            super::dtype_is(OP, s, DType::F32, "dequantisation scales are f32")?;
            if s.numel() != d.n {
                return Err(shape_err(
                    OP,
                    s,
                    format!("expected [{}] (one per row of `{}`)", d.n, b.name()),
                ));
            }
            if !d.trans_b || d.b_strides != [0, 0] {
                return Err(Error::Argument {
                    op: OP,
                    arg: "trans_b",
                    reason: format!(
                        "int8 `{}` must be shared [N, K] weights (C = A·Bᵀ)",
                        b.name()
                    ),
                });
            }
            if variant == Some(GemmKernel::Tile64) {
                return Err(Error::Argument {
                    op: OP,
                    arg: "variant",
                    reason: "tile64 does not read int8 weights".into(),
                });
            }
        }
        (true, None) => {
            return Err(Error::Argument {
                op: OP,
                arg: "scale",
                reason: format!("int8 weights `{}` need per-row scales", b.name()),
            })
        }
        (false, Some(s)) => {
            return Err(Error::Argument {
                op: OP,
                arg: "scale",
                reason: format!("`{}` given for float weights `{}`", s.name(), b.name()),
            })
        }
    }
    same_dtype(OP, a, c)?;
    if d.m == 0 || d.n == 0 || d.k == 0 || d.batch == 0 || d.batch_inner == 0 {
        return Err(Error::Argument {
            op: OP,
            arg: "m/n/k/batch",
            reason: format!("zero-sized GEMM {d:?}"),
        });
    }
    // Largest element index each operand touches, plus one.
    let zo_max = (d.batch - 1) / d.batch_inner;
    let zi_max = (d.batch - 1).min(d.batch_inner - 1);
    let reach = |s: [usize; 2], rows: usize, ld: usize, cols: usize| {
        zo_max * s[0] + zi_max * s[1] + (rows - 1) * ld + cols
    };
    let (brows, bcols) = if d.trans_b { (d.n, d.k) } else { (d.k, d.n) };
    for (t, need) in [
        (a, offs[0] + reach(d.a_strides, d.m, d.lda, d.k)),
        (b, reach(d.b_strides, brows, d.ldb, bcols)),
        (c, offs[1] + reach(d.c_strides, d.m, d.ldc, d.n)),
    ] {
        if need > t.numel() {
            return Err(shape_err(
                OP,
                t,
                format!("too small for the GEMM {d:?} (needs {need} elements)"),
            ));
        }
    }
    if let Some(bias) = bias {
        same_dtype(OP, a, bias)?;
        if bias.numel() != d.n {
            return Err(shape_err(
                OP,
                bias,
                format!("expected [{}] (one per output column)", d.n),
            ));
        }
    }
    let gpu = rec.gpu();
    let vec4 = d.vec4_ok() && offs[0] % 4 == 0;
    let p = Params {
        m: u32_param(OP, "M", d.m)?,
        n: u32_param(OP, "N", d.n)?,
        k: u32_param(OP, "K", d.k)?,
        batch_inner: u32_param(OP, "batch_inner", d.batch_inner)?,
        lda: u32_param(OP, "lda", d.lda)?,
        ldb: u32_param(OP, "ldb", d.ldb)?,
        ldc: u32_param(OP, "ldc", d.ldc)?,
        a_off: u32_param(OP, "A offset", offs[0])?,
        a_s0: u32_param(OP, "a stride", d.a_strides[0])?,
        a_s1: u32_param(OP, "a stride", d.a_strides[1])?,
        b_s0: u32_param(OP, "b stride", d.b_strides[0])?,
        b_s1: u32_param(OP, "b stride", d.b_strides[1])?,
        c_s0: u32_param(OP, "c stride", d.c_strides[0])?,
        c_s1: u32_param(OP, "c stride", d.c_strides[1])?,
        alpha: d.alpha,
        c_off: u32_param(OP, "C offset", offs[1])?,
    };
    let mut binds = vec![
        ("a", a.binding(gpu, OP)?),
        ("b", b.binding(gpu, OP)?),
        ("c", c.binding(gpu, OP)?),
    ];
    if let Some(bias) = bias {
        binds.push(("bias", bias.binding(gpu, OP)?));
    }
    if let Some(s) = scale {
        binds.push(("wscale", s.binding(gpu, OP)?));
    }
    let launch = |v: GemmKernel| -> Result<(KernelKey, [u32; 3])> {
        // The key and the columns × rows of C one workgroup covers.
        let (key, cols, rows) = match v {
            GemmKernel::Reg4x4 | GemmKernel::Reg8x4 => {
                let rows = rows_of(v);
                let k = key_rows(a.dtype(), rows, d.trans_b, vec4, bias.is_some()).flag("Q8", q8);
                (k, 4 * WG[0] as usize, rows * WG[1] as usize)
            }
            GemmKernel::Tile64 => (key_tile(a.dtype(), d.trans_b, bias.is_some()), 64, 64),
        };
        let groups = [
            u32_param(OP, "N tiles", d.n.div_ceil(cols))?,
            u32_param(OP, "M tiles", d.m.div_ceil(rows))?,
            u32_param(OP, "batch", d.batch)?,
        ];
        Ok((key, groups))
    };
    let tuning_key = || {
        format!(
            "{:?}|b{}|{}x{}x{}|tb{}|vec4{}",
            a.dtype(),
            d.batch,
            d.m,
            d.n,
            d.k,
            d.trans_b,
            vec4
        )
    };
    if q8 {
        let (key, groups) = launch(variant.unwrap_or_else(|| default_variant(gpu.info(), d)))?;
        rec.dispatch(&key, &p, &binds, groups)?;
        return Ok(());
    }
    let chosen = select(gpu, variant, d, tuning_key, &mut |v| {
        let (key, groups) = launch(v)?;
        time_recorded(gpu, &mut |r| {
            r.dispatch(&key, &p, &binds, groups).map(|_| ())
        })
    })?;
    let (key, groups) = launch(chosen)?;
    rec.dispatch(&key, &p, &binds, groups)?;
    Ok(())
}

/// Batched matrix product of contiguous tensors: `a` [.., M, K] times `b` — [K, N] (or [N, K]
/// with `trans_b`) shared by every batch, or [batch, K, N] / [batch, N, K] — into `c` [.., M, N].
/// Leading dims of `a` and `c` are flattened into the batch.
pub fn matmul(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    trans_b: bool,
    alpha: f32,
) -> Result<()> {
    const OP: &str = "matmul";
    let ash = a.shape();
    if ash.len() < 2 {
        return Err(shape_err(OP, a, "expected at least [M, K]".into()));
    }
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let batch: usize = ash[..ash.len() - 2].iter().product();
    let bsh = b.shape();
    if bsh.len() < 2 {
        return Err(shape_err(OP, b, "expected at least 2 dims".into()));
    }
    let (br, bc) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    let bbatch: usize = bsh[..bsh.len() - 2].iter().product();
    let (bk, n) = if trans_b { (bc, br) } else { (br, bc) };
    if bk != k {
        return Err(shape_err(
            OP,
            b,
            format!(
                "inner dimension {bk} does not match K = {k} of `{}` {:?}",
                a.name(),
                ash
            ),
        ));
    }
    if bbatch != 1 && bbatch != batch {
        return Err(shape_err(
            OP,
            b,
            format!("batch {bbatch} does not match {batch} of `{}`", a.name()),
        ));
    }
    let mut want_c = ash[..ash.len() - 2].to_vec();
    want_c.extend([m, n]);
    if c.shape() != want_c.as_slice() {
        return Err(shape_err(OP, c, format!("expected {want_c:?}")));
    }
    let d = GemmDesc {
        m,
        n,
        k,
        batch,
        batch_inner: 1,
        lda: k,
        ldb: bc,
        ldc: n,
        a_strides: [m * k, 0],
        b_strides: [if bbatch == 1 { 0 } else { br * bc }, 0],
        c_strides: [m * n, 0],
        trans_b,
        alpha,
    };
    gemm(rec, &d, a, b, bias, c)
}

/// `nn.Linear`: y [.., out] = x [.., in] · Wᵀ + bias, with `w` [out, in] (PyTorch layout).
pub fn linear(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    const OP: &str = "linear";
    super::rank(OP, w, 2, "[out_features, in_features]")?;
    let xs = x.shape();
    let inf = *xs.last().unwrap_or(&0);
    let rows = x.numel() / inf.max(1);
    let x2 = x.reshape(&[rows, inf])?;
    let mut want_y = xs.to_vec();
    if let Some(l) = want_y.last_mut() {
        *l = w.shape()[0];
    }
    if y.shape() != want_y.as_slice() {
        return Err(shape_err(OP, y, format!("expected {want_y:?}")));
    }
    let y2 = y.reshape(&[rows, w.shape()[0]])?;
    matmul(rec, &x2, w, bias, &y2, true, 1.0)
}

/// W8A32 `nn.Linear`: y [.., out] = x [.., in] · (scale ⊙ q)ᵀ + bias, with `q` an `I8` tensor
/// [out, in] (PyTorch layout) and `scale` [out] f32 (see [`gemm_q8`]).
pub fn linear_q8(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    q: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    const OP: &str = "linear";
    super::rank(OP, q, 2, "[out_features, in_features] int8")?;
    let xs = x.shape();
    let (fout, fin) = (q.shape()[0], q.shape()[1]);
    if xs.last() != Some(&fin) {
        return Err(shape_err(
            OP,
            x,
            format!("expected [.., {fin}] (the in_features of `{}`)", q.name()),
        ));
    }
    let rows = x.numel() / fin;
    let mut want_y = xs.to_vec();
    if let Some(l) = want_y.last_mut() {
        *l = fout;
    }
    if y.shape() != want_y.as_slice() {
        return Err(shape_err(OP, y, format!("expected {want_y:?}")));
    }
    let d = GemmDesc::single(rows, fout, fin, true);
    gemm_q8(rec, &d, x, q, scale, bias, y, None)
}
