//! Kernel checks against the f64 references of [`crate::reference`]: each function runs one
//! kernel on random data of a given shape and dtype and compares it with the reference under
//! the kernel's stated tolerance. The test suite drives them over random shapes;
//! `diffuse info --self-check` runs a fixed battery on the user's adapter.
//!
//! Tolerances (|got − want| ≤ atol + rtol·|want|; inputs uniform in [−1, 1]; f16 references
//! are computed from the f16-rounded inputs, and f16 outputs add one rounding, rtol 1.5e-3 —
//! Vulkan lets f32→f16 conversion truncate, lavapipe does, so up to 1 ulp = 2⁻¹⁰ relative):
//! element-wise 2e-6 abs/rel; GEMM and conv 1e-6 + 5e-7·K abs (K = reduction length);
//! GroupNorm 2e-5; softmax 1e-6 + 1e-5 rel; upsampling and concat exact, pooling 1e-7 (f32); embedding
//! and Fourier features 2e-6 + 3e-7·max|arg|; lookup and transpose exact; FIR 1e-6; reductions 1e-6·L + 1e-5 rel; normal draws 2e-5 vs f64 Box–Muller on
//! the same Philox words.

pub mod bands;
pub mod transformer;

use crate::error::Result;
use crate::gpu::tuning::runnable;
use crate::ops::conv2d::{Conv2dArgs, Conv2dDesc, ConvKernel, ConvShape};
use crate::ops::elementwise::{Binary, Unary};
use crate::ops::embedding::TimestepEmbedding;
use crate::ops::gemm::{GemmDesc, GemmKernel};
use crate::ops::reduce::Reduce;
use crate::ops::{self, rng::Philox};
use crate::reference::{self as r, compare, round_f16, Comparison};
use crate::{DType, Gpu, Tensor};

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub cmp: Comparison,
    pub atol: f64,
    pub rtol: f64,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.cmp.ok
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<48} max|Δ| {:.2e}  worst [{}] got {:.6e} want {:.6e}  tol {:.1e}+{:.1e}·|y|  {}",
            self.name,
            self.cmp.max_abs,
            self.cmp.worst,
            self.cmp.got,
            self.cmp.want,
            self.atol,
            self.rtol,
            if self.cmp.ok { "ok" } else { "FAIL" }
        )
    }
}

/// SplitMix64: a tiny deterministic generator for test data.
#[derive(Debug, Clone)]
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    /// Integer in [lo, hi].
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// `n` values in [lo, hi), rounded to what `dt` stores.
    pub fn values(&mut self, n: usize, lo: f64, hi: f64, dt: DType) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = self.uniform(lo, hi) as f32;
                if dt == DType::F16 {
                    round_f16(v)
                } else {
                    v
                }
            })
            .collect()
    }
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn out_rtol(dt: DType, f32_rtol: f64) -> f64 {
    match dt {
        DType::F32 => f32_rtol,
        DType::F16 | DType::I8 => f32_rtol.max(1.5e-3),
    }
}

fn check(name: String, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Check {
    Check {
        cmp: compare(got, want, atol, rtol),
        name,
        atol,
        rtol,
    }
}

fn upload(gpu: &Gpu, name: &str, shape: &[usize], v: &[f32], dt: DType) -> Result<Tensor> {
    Tensor::from_f32(gpu, name, shape, v, dt)
}

/// A unary op on `n` elements in [−4, 4] (`inplace` overwrites the input).
pub fn unary(gpu: &Gpu, op: Unary, n: usize, dt: DType, inplace: bool, seed: u64) -> Result<Check> {
    let mut rng = TestRng(seed);
    let xv = rng.values(n, -4.0, 4.0, dt);
    let x = upload(gpu, "x", &[n], &xv, dt)?;
    let got = if inplace {
        gpu.run(|rec| ops::elementwise::unary_inplace(rec, op, &x))?;
        x.to_vec_f32(gpu)?
    } else {
        let y = Tensor::empty(gpu, "y", &[n], dt)?;
        gpu.run(|rec| ops::elementwise::unary(rec, op, &x, &y))?;
        y.to_vec_f32(gpu)?
    };
    let want: Vec<f64> = xv.iter().map(|&v| r::unary(op, v as f64)).collect();
    Ok(check(
        format!("{op:?} n={n} {dt:?} inplace={inplace}"),
        &got,
        &want,
        2e-6,
        out_rtol(dt, 2e-6),
    ))
}

/// a ∘ b with b broadcast (shape `bshape`) over `ashape`.
pub fn binary(
    gpu: &Gpu,
    op: Binary,
    ashape: &[usize],
    bshape: &[usize],
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let na: usize = ashape.iter().product();
    let nb: usize = bshape.iter().product();
    let (av, bv) = (rng.values(na, -1.0, 1.0, dt), rng.values(nb, -1.0, 1.0, dt));
    let a = upload(gpu, "a", ashape, &av, dt)?;
    let b = upload(gpu, "b", bshape, &bv, dt)?;
    let y = Tensor::empty(gpu, "out", ashape, dt)?;
    let (inner, blen) = ops::elementwise::broadcast_rule(&a, &b)?;
    gpu.run(|rec| ops::elementwise::binary(rec, op, &a, &b, &y))?;
    let want = r::binary(op, &widen(&av), &widen(&bv), inner, blen);
    Ok(check(
        format!("{op:?} {ashape:?} by {bshape:?} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-6,
        out_rtol(dt, 2e-6),
    ))
}

/// a · (1 + scale) + shift with [scale | shift] = t [N, 2C].
pub fn modulate(gpu: &Gpu, xs: [usize; 4], dt: DType, seed: u64) -> Result<Check> {
    let mut rng = TestRng(seed);
    let (n, c, hw) = (xs[0], xs[1], xs[2] * xs[3]);
    let av = rng.values(n * c * hw, -1.0, 1.0, dt);
    let tv = rng.values(n * 2 * c, -1.0, 1.0, dt);
    let a = upload(gpu, "h", &xs, &av, dt)?;
    let t = upload(gpu, "temb", &[n, 2 * c], &tv, dt)?;
    let y = Tensor::empty(gpu, "out", &xs, dt)?;
    gpu.run(|rec| ops::elementwise::modulate(rec, &a, &t, &y))?;
    let want: Vec<f64> = (0..av.len())
        .map(|i| {
            let (nn, cc) = (i / (c * hw), (i / hw) % c);
            av[i] as f64 * (1.0 + tv[nn * 2 * c + cc] as f64) + tv[nn * 2 * c + c + cc] as f64
        })
        .collect();
    Ok(check(
        format!("modulate {xs:?} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-6,
        out_rtol(dt, 2e-6),
    ))
}

/// y ← alpha·x + beta·y.
pub fn axpby(gpu: &Gpu, n: usize, alpha: f32, beta: f32, dt: DType, seed: u64) -> Result<Check> {
    let mut rng = TestRng(seed);
    let (xv, yv) = (rng.values(n, -1.0, 1.0, dt), rng.values(n, -1.0, 1.0, dt));
    let x = upload(gpu, "x", &[n], &xv, dt)?;
    let y = upload(gpu, "y", &[n], &yv, dt)?;
    gpu.run(|rec| ops::elementwise::axpby(rec, alpha, &x, beta, &y))?;
    let want: Vec<f64> = xv
        .iter()
        .zip(&yv)
        .map(|(&a, &b)| alpha as f64 * a as f64 + beta as f64 * b as f64)
        .collect();
    Ok(check(
        format!("axpby n={n} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-6,
        out_rtol(dt, 2e-6),
    ))
}

/// Contiguous batched matmul: a [batch, M, K] · b ([K, N] / [N, K], shared or batched).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    gpu: &Gpu,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    trans_b: bool,
    shared_b: bool,
    bias: bool,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    matmul_variant(
        gpu,
        [batch, m, n, k],
        trans_b,
        shared_b,
        bias,
        dt,
        seed,
        None,
    )
}

/// [`matmul`] of shape [batch, M, N, K] forcing a GEMM kernel (`None`: the launcher's choice).
#[allow(clippy::too_many_arguments)]
pub fn matmul_variant(
    gpu: &Gpu,
    shape: [usize; 4],
    trans_b: bool,
    shared_b: bool,
    bias: bool,
    dt: DType,
    seed: u64,
    variant: Option<GemmKernel>,
) -> Result<Check> {
    let [batch, m, n, k] = shape;
    let mut rng = TestRng(seed);
    let bb = if shared_b { 1 } else { batch };
    let av = rng.values(batch * m * k, -1.0, 1.0, dt);
    let bv = rng.values(bb * k * n, -1.0, 1.0, dt);
    let biasv = rng.values(n, -1.0, 1.0, dt);
    let a = upload(gpu, "a", &[batch, m, k], &av, dt)?;
    let bshape = match (shared_b, trans_b) {
        (true, true) => vec![n, k],
        (true, false) => vec![k, n],
        (false, true) => vec![batch, n, k],
        (false, false) => vec![batch, k, n],
    };
    let b = upload(gpu, "b", &bshape, &bv, dt)?;
    let bias_t = upload(gpu, "bias", &[n], &biasv, dt)?;
    let c = Tensor::empty(gpu, "c", &[batch, m, n], dt)?;
    let alpha = 0.75;
    let d = GemmDesc {
        m,
        n,
        k,
        batch,
        batch_inner: 1,
        lda: k,
        ldb: if trans_b { k } else { n },
        ldc: n,
        a_strides: [m * k, 0],
        b_strides: [if shared_b { 0 } else { k * n }, 0],
        c_strides: [m * n, 0],
        trans_b,
        alpha,
    };
    match variant {
        // The public entry point, as models call it.
        None => gpu.run(|rec| {
            ops::gemm::matmul(rec, &a, &b, bias.then_some(&bias_t), &c, trans_b, alpha)
        })?,
        v @ Some(_) => {
            gpu.run(|rec| ops::gemm::gemm_variant(rec, &d, &a, &b, bias.then_some(&bias_t), &c, v))?
        }
    }
    let mut want = vec![0.0; batch * m * n];
    let bw = widen(&biasv);
    r::gemm(
        &d,
        &widen(&av),
        &widen(&bv),
        bias.then_some(bw.as_slice()),
        &mut want,
    );
    Ok(check(
        format!(
            "gemm b{batch} {m}x{n}x{k} tB={trans_b} shared={shared_b} bias={bias} vec4={} {} {dt:?}",
            d.vec4_ok(),
            label(variant)
        ),
        &c.to_vec_f32(gpu)?,
        &want,
        1e-6 + 5e-7 * k as f64,
        out_rtol(dt, 0.0),
    ))
}

/// conv2d on x [N, Cin, H, W] with a kh×kw kernel.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    gpu: &Gpu,
    xs: [usize; 4],
    cout: usize,
    kh: usize,
    kw: usize,
    args: Conv2dArgs,
    bias: bool,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    conv2d_check(gpu, xs, cout, kh, kw, args, bias, None, dt, seed, None)
}

/// "default" or the forced variant's name, for check labels.
fn label<V: std::fmt::Display>(v: Option<V>) -> String {
    v.map_or("default".into(), |v| v.to_string())
}

/// [`conv2d`] forcing a kernel (see `ops::conv2d::conv2d_variant`); with `packed` the op also
/// gets the weights in the packed layout (`ops::conv_pack`), packed by the GPU kernel as model
/// loading does.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forced(
    gpu: &Gpu,
    xs: [usize; 4],
    cout: usize,
    ksize: usize,
    args: Conv2dArgs,
    epilogue: Option<f32>,
    dt: DType,
    seed: u64,
    variant: ConvKernel,
    packed: bool,
) -> Result<Check> {
    conv2d_check(
        gpu,
        xs,
        cout,
        ksize,
        ksize,
        args,
        true,
        epilogue,
        dt,
        seed,
        Some((variant, packed)),
    )
}

/// conv2d against the f64 reference; with `epilogue = Some(scale)` also a per-(sample,
/// channel) add and a residual add fused into the output write, times `scale`.
#[allow(clippy::too_many_arguments)]
fn conv2d_check(
    gpu: &Gpu,
    xs: [usize; 4],
    cout: usize,
    kh: usize,
    kw: usize,
    args: Conv2dArgs,
    bias: bool,
    epilogue: Option<f32>,
    dt: DType,
    seed: u64,
    variant: Option<(ConvKernel, bool)>,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let ws = [cout, xs[1], kh, kw];
    let xv = rng.values(xs.iter().product(), -1.0, 1.0, dt);
    let wv = rng.values(ws.iter().product(), -1.0, 1.0, dt);
    let bv = rng.values(cout, -1.0, 1.0, dt);
    let (conv, ys) = r::conv2d(
        &widen(&xv),
        xs,
        &widen(&wv),
        ws,
        bias.then_some(widen(&bv).as_slice()),
        args,
    );
    let tv = rng.values(xs[0] * cout, -1.0, 1.0, dt);
    let rv = rng.values(conv.len(), -1.0, 1.0, dt);
    let hw = ys[2] * ys[3];
    let want: Vec<f64> = match epilogue {
        None => conv,
        Some(scale) => conv
            .iter()
            .enumerate()
            .map(|(i, c)| (c + tv[i / hw] as f64 + rv[i] as f64) * scale as f64)
            .collect(),
    };
    let x = upload(gpu, "x", &xs, &xv, dt)?;
    let w = upload(gpu, "weight", &ws, &wv, dt)?;
    let b = upload(gpu, "bias", &[cout], &bv, dt)?;
    let t = upload(gpu, "temb", &[xs[0], cout], &tv, dt)?;
    let res = upload(gpu, "residual", &ys, &rv, dt)?;
    let y = Tensor::empty(gpu, "y", &ys, dt)?;
    let epi = match epilogue {
        None => ops::conv2d::Epilogue::default(),
        Some(scale) => ops::conv2d::Epilogue {
            add_nc: Some(&t),
            residual: Some(&res),
            scale,
        },
    };
    // Packed weights (ops::conv_pack), packed by the GPU kernel as model loading does.
    let (variant, packed) = match variant {
        Some((v, true)) => {
            let shape = ops::conv_pack::packed_shape(&ws);
            let pk = Tensor::empty(gpu, "weight.packed", &shape, dt)?;
            gpu.run(|rec| ops::conv_pack::pack_weights(rec, &w, &pk))?;
            (Some(v), Some(pk))
        }
        Some((v, false)) => (Some(v), None),
        None => (None, None),
    };
    let d = Conv2dDesc::new(&x, &w, bias.then_some(&b), &y, args)
        .with_packed(packed.as_ref())
        .with_epilogue(epi);
    gpu.run(|rec| ops::conv2d::conv2d_variant(rec, &d, variant))?;
    let k = xs[1] * kh * kw;
    Ok(check(
        format!(
            "conv2d {xs:?} -> {cout} k{kh}x{kw} s{} p{} bias={bias} epilogue={epilogue:?} {} packed={} {dt:?}",
            args.stride, args.padding, label(variant), packed.is_some()
        ),
        &y.to_vec_f32(gpu)?,
        &want,
        1e-6 + 5e-7 * k as f64,
        out_rtol(dt, 0.0),
    ))
}

/// conv2d with the fused epilogue: (conv + bias + t[n, co] + residual) · scale, 3×3 same.
pub fn conv2d_epilogue(
    gpu: &Gpu,
    xs: [usize; 4],
    cout: usize,
    scale: f32,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let args = Conv2dArgs {
        stride: 1,
        padding: 1,
        extra_end: 0,
    };
    conv2d_check(gpu, xs, cout, 3, 3, args, true, Some(scale), dt, seed, None)
}

/// GroupNorm (+ SiLU) of x [N, C, H, W].
pub fn group_norm(
    gpu: &Gpu,
    xs: [usize; 4],
    groups: usize,
    silu: bool,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    group_norm_variant(gpu, xs, groups, silu, dt, seed, None, 0.5)
}

/// [`group_norm`] with an explicit kernel variant (`None`: the launcher's choice) and the
/// inputs' common offset (a large one stresses the single-pass variance).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_variant(
    gpu: &Gpu,
    xs: [usize; 4],
    groups: usize,
    silu: bool,
    dt: DType,
    seed: u64,
    variant: Option<ops::group_norm::GroupNormKernel>,
    offset: f32,
) -> Result<Check> {
    let (xv, gv, bv) = group_norm_inputs(&mut TestRng(seed), xs, dt, offset);
    let x = upload(gpu, "x", &xs, &xv, dt)?;
    let g = upload(gpu, "gamma", &[xs[1]], &gv, dt)?;
    let b = upload(gpu, "beta", &[xs[1]], &bv, dt)?;
    let y = Tensor::empty(gpu, "y", &xs, dt)?;
    let eps = 1e-5;
    gpu.run(|rec| {
        ops::group_norm::group_norm_variant(rec, &x, &g, &b, &y, groups, eps, silu, variant)
    })?;
    let want = group_norm_want(xs, &xv, &gv, &bv, groups, eps, silu);
    Ok(check(
        format!(
            "group_norm {xs:?} G={groups} silu={silu} {} offset {offset} {dt:?}",
            label(variant)
        ),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-5,
        out_rtol(dt, 2e-5),
    ))
}

/// GroupNorm test inputs: x = 3·U(−1, 1) + `offset` (an offset so the mean matters; rounded
/// to f16 where stored so), gamma in [0.5, 1.5], beta in [−0.5, 0.5].
fn group_norm_inputs(
    rng: &mut TestRng,
    xs: [usize; 4],
    dt: DType,
    offset: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n: usize = xs.iter().product();
    let xv: Vec<f32> = rng
        .values(n, -1.0, 1.0, dt)
        .iter()
        .map(|v| 3.0 * v + offset)
        .map(|v| if dt == DType::F16 { round_f16(v) } else { v })
        .collect();
    let gv = rng.values(xs[1], 0.5, 1.5, dt);
    let bv = rng.values(xs[1], -0.5, 0.5, dt);
    (xv, gv, bv)
}

/// `torch.nn.GroupNorm` (+ SiLU) of the inputs in f64.
fn group_norm_want(
    xs: [usize; 4],
    xv: &[f32],
    gv: &[f32],
    bv: &[f32],
    groups: usize,
    eps: f32,
    silu: bool,
) -> Vec<f64> {
    r::group_norm(
        &widen(xv),
        xs[0],
        xs[1],
        xs[2] * xs[3],
        &widen(gv),
        &widen(bv),
        groups,
        eps as f64,
        silu,
    )
}

/// softmax(scale · x) over rows of `cols`, in the adapter's default layout.
pub fn softmax(
    gpu: &Gpu,
    rows: usize,
    cols: usize,
    scale: f32,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let layout = ops::softmax::default_variant(gpu.info(), cols);
    softmax_layout(gpu, rows, cols, scale, dt, seed, layout)
}

/// softmax(scale · x) over rows of `cols` in the given kernel layout.
pub fn softmax_layout(
    gpu: &Gpu,
    rows: usize,
    cols: usize,
    scale: f32,
    dt: DType,
    seed: u64,
    layout: ops::softmax::SoftmaxKernel,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let xv = rng.values(rows * cols, -4.0, 4.0, dt);
    let x = upload(gpu, "x", &[rows, cols], &xv, dt)?;
    let y = Tensor::empty(gpu, "y", &[rows, cols], dt)?;
    gpu.run(|rec| ops::softmax::softmax_variant(rec, &x, &y, scale, Some(layout)))?;
    let want = r::softmax(&widen(&xv), cols, scale as f64);
    Ok(check(
        format!("softmax {rows}x{cols} {dt:?} {layout}"),
        &y.to_vec_f32(gpu)?,
        &want,
        1e-6,
        out_rtol(dt, 1e-5),
    ))
}

/// Nearest upsampling by `f` (when `up`) or 2×2 average pooling of x [N, C, H, W].
pub fn resample(
    gpu: &Gpu,
    xs: [usize; 4],
    up: Option<usize>,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let xv = rng.values(xs.iter().product(), -1.0, 1.0, dt);
    let x = upload(gpu, "x", &xs, &xv, dt)?;
    let planes = xs[0] * xs[1];
    let (want, ys, name) = match up {
        Some(f) => (
            r::upsample_nearest(&widen(&xv), planes, xs[2], xs[3], f),
            [xs[0], xs[1], xs[2] * f, xs[3] * f],
            format!("upsample_nearest x{f}"),
        ),
        None => (
            r::avg_pool2x(&widen(&xv), planes, xs[2], xs[3]),
            [xs[0], xs[1], xs[2] / 2, xs[3] / 2],
            "avg_pool2x".to_string(),
        ),
    };
    let y = Tensor::empty(gpu, "y", &ys, dt)?;
    gpu.run(|rec| match up {
        Some(f) => ops::resample::upsample_nearest(rec, &x, &y, f),
        None => ops::resample::avg_pool2x(rec, &x, &y),
    })?;
    let (atol, rtol) = if up.is_some() {
        (0.0, 0.0)
    } else {
        (1e-7, out_rtol(dt, 1e-6))
    };
    Ok(check(
        format!("{name} {xs:?} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        atol,
        rtol,
    ))
}

/// Reflect padding (or cropping) of x [N, C, H, W] to [N, C, Ho, Wo] (`F.pad(.., "reflect")`
/// on the right/bottom edges; `x[.., :Ho, :Wo]`).
pub fn reflect_pad(
    gpu: &Gpu,
    xs: [usize; 4],
    ho: usize,
    wo: usize,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let xv = rng.values(xs.iter().product(), -1.0, 1.0, dt);
    let x = upload(gpu, "x", &xs, &xv, dt)?;
    let want = r::reflect_pad(&widen(&xv), xs[0] * xs[1], xs[2], xs[3], ho, wo);
    let y = Tensor::empty(gpu, "y", &[xs[0], xs[1], ho, wo], dt)?;
    gpu.run(|rec| ops::resample::reflect_pad(rec, &x, &y))?;
    Ok(check(
        format!("reflect_pad {xs:?} -> {ho}x{wo} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        0.0,
        0.0,
    ))
}

/// cat([a, b], dim=1).
#[allow(clippy::too_many_arguments)]
pub fn concat(
    gpu: &Gpu,
    n: usize,
    ca: usize,
    cb: usize,
    h: usize,
    w: usize,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let av = rng.values(n * ca * h * w, -1.0, 1.0, dt);
    let bv = rng.values(n * cb * h * w, -1.0, 1.0, dt);
    let a = upload(gpu, "a", &[n, ca, h, w], &av, dt)?;
    let b = upload(gpu, "b", &[n, cb, h, w], &bv, dt)?;
    let y = Tensor::empty(gpu, "y", &[n, ca + cb, h, w], dt)?;
    gpu.run(|rec| ops::concat::concat_channels(rec, &a, &b, &y))?;
    let want = r::concat_channels(&widen(&av), &widen(&bv), n, ca, cb, h * w);
    Ok(check(
        format!("concat [{n},{ca}+{cb},{h},{w}] {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        0.0,
        0.0,
    ))
}

/// Timestep embedding of `n` timesteps in [0, t_max) into `dim` columns.
pub fn embedding(
    gpu: &Gpu,
    n: usize,
    dim: usize,
    t_max: f64,
    e: TimestepEmbedding,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let tv = rng.values(n, 0.0, t_max, DType::F32);
    let t = upload(gpu, "timesteps", &[n], &tv, DType::F32)?;
    let y = Tensor::empty(gpu, "emb", &[n, dim], dt)?;
    gpu.run(|rec| ops::embedding::timestep_embedding(rec, &t, &y, e))?;
    let want = r::timestep_embedding(&widen(&tv), dim, e);
    let max_arg = t_max * e.scale.abs() as f64;
    Ok(check(
        format!(
            "embedding n={n} dim={dim} t<{t_max} flip={} {dt:?}",
            e.flip_sin_to_cos
        ),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-6 + 3e-7 * max_arg,
        out_rtol(dt, 0.0),
    ))
}

/// Gaussian Fourier features of `n` noise levels in (0.002, 80) with `half` frequencies ~ 16·N(0,1).
pub fn fourier(
    gpu: &Gpu,
    n: usize,
    half: usize,
    log: bool,
    flip: bool,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let tv = rng.values(n, 0.002, 80.0, DType::F32);
    let wv = rng.values(half, -32.0, 32.0, dt);
    let t = upload(gpu, "sigmas", &[n], &tv, DType::F32)?;
    let w = upload(gpu, "time_proj.weight", &[half], &wv, dt)?;
    let y = Tensor::empty(gpu, "emb", &[n, 2 * half], dt)?;
    gpu.run(|rec| ops::embedding::fourier_projection(rec, &t, &w, &y, log, flip))?;
    let want = r::fourier_projection(&widen(&tv), &widen(&wv), log, flip);
    // |arg| ≤ 2π·32·max(|ln t|, t): f32 rounding of the argument dominates.
    let max_arg = 2.0 * std::f64::consts::PI * 32.0 * if log { 6.3 } else { 80.0 };
    Ok(check(
        format!("fourier n={n} half={half} log={log} flip={flip} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-6 + 3e-7 * max_arg,
        out_rtol(dt, 0.0),
    ))
}

/// Class-embedding lookup of `n` labels in a [rows, dim] table.
pub fn lookup(gpu: &Gpu, n: usize, rows: usize, dim: usize, dt: DType, seed: u64) -> Result<Check> {
    let mut rng = TestRng(seed);
    let labels: Vec<f32> = (0..n).map(|_| rng.range(0, rows - 1) as f32).collect();
    let tab = rng.values(rows * dim, -1.0, 1.0, dt);
    let l = upload(gpu, "class_labels", &[n], &labels, DType::F32)?;
    let t = upload(gpu, "class_embedding.weight", &[rows, dim], &tab, dt)?;
    let y = Tensor::empty(gpu, "class_emb", &[n, dim], dt)?;
    gpu.run(|rec| ops::embedding::embedding_lookup(rec, &l, &t, &y))?;
    let want: Vec<f64> = labels
        .iter()
        .flat_map(|&c| {
            tab[c as usize * dim..(c as usize + 1) * dim]
                .iter()
                .map(|&v| v as f64)
        })
        .collect();
    Ok(check(
        format!("lookup n={n} rows={rows} dim={dim} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        0.0,
        0.0,
    ))
}

/// FIR resampling (NCSN++'s [1, 3, 3, 1] kernel or another 1-D kernel) up or down by 2.
pub fn fir(gpu: &Gpu, xs: [usize; 4], k1: &[f64], up: bool, dt: DType, seed: u64) -> Result<Check> {
    use ops::fir::{make_kernel, UpFirDn};
    let mut rng = TestRng(seed);
    let xv = rng.values(xs.iter().product(), -1.0, 1.0, dt);
    let x = upload(gpu, "skip_sample", &xs, &xv, dt)?;
    let (k, g) = if up {
        (make_kernel(k1, 4.0), UpFirDn::upsample(k1.len(), 2))
    } else {
        (make_kernel(k1, 1.0), UpFirDn::downsample(k1.len(), 2))
    };
    let (want, ho, wo) = r::upfirdn2d(
        &widen(&xv),
        xs[0] * xs[1],
        xs[2],
        xs[3],
        &k,
        g.up,
        g.down,
        g.pad0,
        g.pad1,
    );
    let y = Tensor::empty(gpu, "y", &[xs[0], xs[1], ho, wo], dt)?;
    gpu.run(|rec| ops::fir::upfirdn2d(rec, &x, &y, &k, g))?;
    Ok(check(
        format!("fir {xs:?} k={k1:?} up={up} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        1e-6,
        out_rtol(dt, 1e-6),
    ))
}

/// Batched transpose of x [b, rows, cols].
pub fn transpose(
    gpu: &Gpu,
    b: usize,
    rows: usize,
    cols: usize,
    dt: DType,
    seed: u64,
) -> Result<Check> {
    let mut rng = TestRng(seed);
    let xv = rng.values(b * rows * cols, -1.0, 1.0, dt);
    let x = upload(gpu, "x", &[b, rows, cols], &xv, dt)?;
    let y = Tensor::empty(gpu, "y", &[b, cols, rows], dt)?;
    gpu.run(|rec| ops::transpose::transpose(rec, &x, &y, b, rows, cols))?;
    let want = r::transpose(&widen(&xv), b, rows, cols);
    Ok(check(
        format!("transpose [{b},{rows},{cols}] {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        0.0,
        0.0,
    ))
}

/// Per-sample reduction of x [n, len].
pub fn reduce(gpu: &Gpu, op: Reduce, n: usize, len: usize, dt: DType, seed: u64) -> Result<Check> {
    let mut rng = TestRng(seed);
    let xv = rng.values(n * len, -1.0, 1.0, dt);
    let x = upload(gpu, "x", &[n, len], &xv, dt)?;
    let y = Tensor::empty(gpu, "y", &[n], DType::F32)?;
    gpu.run(|rec| ops::reduce::reduce(rec, op, &x, &y))?;
    let want = r::reduce(op, &widen(&xv), n);
    Ok(check(
        format!("{op:?} [{n},{len}] {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        1e-6 * len as f64,
        1e-5,
    ))
}

/// Normal draws `offset .. offset + n` against the f64 Box–Muller of the same Philox words.
pub fn rng_normal(gpu: &Gpu, n: usize, rng: Philox, offset: u64, dt: DType) -> Result<Check> {
    let y = Tensor::empty(gpu, "noise", &[n], dt)?;
    gpu.run(|rec| ops::rng::fill(rec, ops::rng::Distribution::Normal, rng, offset, &y))?;
    let want: Vec<f64> = (0..n as u64)
        .map(|i| r::philox_normal(rng.seed, rng.stream, offset.wrapping_add(i)))
        .collect();
    Ok(check(
        format!("philox normal n={n} offset={offset} {dt:?}"),
        &y.to_vec_f32(gpu)?,
        &want,
        2e-5,
        out_rtol(dt, 1e-5),
    ))
}

/// The fixed battery of `diffuse info --self-check`: every family in f32 and f16.
pub fn battery(gpu: &Gpu) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for dt in [DType::F32, DType::F16] {
        out.push(unary(gpu, Unary::Silu, 1000, dt, false, 1)?);
        out.push(unary(gpu, Unary::Gelu, 1000, dt, false, 2)?);
        out.push(binary(gpu, Binary::Add, &[2, 8, 5, 5], &[8, 1, 1], dt, 3)?);
        out.push(axpby(gpu, 777, 0.3, -1.2, dt, 4)?);
        out.push(matmul(gpu, 2, 37, 45, 64, true, true, true, dt, 5)?);
        out.push(matmul(gpu, 3, 20, 16, 33, false, false, false, dt, 6)?);
        out.push(conv2d(
            gpu,
            [2, 8, 12, 12],
            16,
            3,
            3,
            Conv2dArgs {
                stride: 1,
                padding: 1,
                extra_end: 0,
            },
            true,
            dt,
            7,
        )?);
        out.push(conv2d(
            gpu,
            [1, 3, 11, 11],
            5,
            3,
            3,
            Conv2dArgs {
                stride: 2,
                padding: 1,
                extra_end: 0,
            },
            true,
            dt,
            8,
        )?);
        out.push(group_norm(gpu, [2, 16, 6, 6], 4, true, dt, 9)?);
        out.push(softmax(gpu, 12, 77, 0.125, dt, 10)?);
        // Every kernel variant tuning may pick on this adapter, beside the defaults above.
        let c3 = Conv2dArgs {
            stride: 1,
            padding: 1,
            extra_end: 0,
        };
        let shape = ConvShape {
            dt,
            kh: 3,
            kw: 3,
            stride: 1,
            packed: false,
            q8: false,
        };
        for v in runnable::<ConvKernel>(gpu.info(), &shape) {
            for packed in [false, true] {
                if packed && !v.reads_packed() {
                    continue;
                }
                let xs = [2, 7, 12, 11];
                let epi = Some(0.5);
                out.push(conv2d_forced(gpu, xs, 70, 3, c3, epi, dt, 21, v, packed)?);
            }
        }
        for v in GemmKernel::ALL {
            out.push(matmul_variant(
                gpu,
                [2, 70, 66, 37],
                true,
                false,
                true,
                dt,
                22,
                Some(v),
            )?);
            out.push(matmul_variant(
                gpu,
                [2, 70, 66, 37],
                false,
                true,
                false,
                dt,
                23,
                Some(v),
            )?);
        }
        for v in runnable::<ops::group_norm::GroupNormKernel>(gpu.info(), &()) {
            out.push(group_norm_variant(
                gpu,
                [2, 16, 6, 6],
                4,
                true,
                dt,
                24,
                Some(v),
                100.0,
            )?);
        }
        for layout in runnable::<ops::softmax::SoftmaxKernel>(gpu.info(), &77) {
            out.push(softmax_layout(gpu, 12, 77, 0.125, dt, 25, layout)?);
        }
        out.push(transformer::layer_norm(
            gpu,
            &[2, 77, 48],
            true,
            true,
            1e-5,
            100.0,
            dt,
            26,
        )?);
        out.push(transformer::geglu(gpu, 9, 40, dt, 27)?);
        // Cross-attention to 77 text tokens, and CLIP's causal self-attention chunked.
        for path in [
            transformer::AttnPath::Gemm { chunk: 16 },
            transformer::AttnPath::Fused,
        ] {
            out.push(transformer::attention(
                gpu,
                [2, 16, 77, 2, 40],
                false,
                path,
                dt,
                28,
            )?);
            out.push(transformer::attention(
                gpu,
                [1, 20, 20, 2, 64],
                true,
                path,
                dt,
                29,
            )?);
        }
        out.push(resample(gpu, [2, 3, 5, 7], Some(2), dt, 11)?);
        out.push(resample(gpu, [2, 3, 6, 8], None, dt, 12)?);
        out.push(reflect_pad(gpu, [2, 3, 20, 28], 32, 32, dt, 13)?);
        out.push(concat(gpu, 2, 3, 5, 4, 4, dt, 13)?);
        out.push(embedding(
            gpu,
            4,
            32,
            1000.0,
            TimestepEmbedding::default(),
            dt,
            14,
        )?);
        out.push(reduce(gpu, Reduce::L2Norm, 3, 1000, dt, 15)?);
        out.push(fourier(gpu, 3, 16, true, false, dt, 16)?);
        out.push(lookup(gpu, 5, 10, 24, dt, 17)?);
        out.push(transpose(gpu, 2, 9, 13, dt, 18)?);
        out.push(fir(gpu, [1, 3, 8, 8], &[1.0, 3.0, 3.0, 1.0], true, dt, 19)?);
        out.push(fir(
            gpu,
            [1, 3, 8, 8],
            &[1.0, 3.0, 3.0, 1.0],
            false,
            dt,
            20,
        )?);
        out.push(rng_normal(
            gpu,
            4096,
            Philox {
                seed: 42,
                stream: 0,
            },
            0,
            dt,
        )?);
    }
    Ok(out)
}
