//! W8A8 2-D convolution (`shaders/conv2d_a8.wgsl`; Shang et al., "Post-training Quantization
//! on Diffusion Models", CVPR 2023 — PTQ4DM): int8 weights with per-output-channel scales, the
//! input quantised on load with the layer's calibrated per-tensor scale, integer products
//! accumulated in i32 with `dot4I8Packed` where the adapter has WGSL's
//! `packed_4x8_integer_dot_product`, else in f32. The rounding rules are `load::quant`'s.

use super::conv2d::{output_size, Conv2dArgs, Epilogue};
use super::{dtype_is, nonempty, rank, same_dtype, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::tuning::{parse_variant, select, time_recorded, Variant};
use crate::gpu::{params, GpuInfo, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// The input rule of the W8A8 kernels (`load::quant`): q = clamp(round_half_even(f32(x ·
/// inv_scale)), −127, 127), an f32 multiply (correctly rounded on every backend).
pub fn quantize_input(x: f32, inv_scale: f32) -> i8 {
    (x * inv_scale).round_ties_even().clamp(-127.0, 127.0) as i8
}

/// f32(1 / s), the multiplier the kernels quantise inputs with (0 for s = 0).
pub fn inverse_scale(s: f32) -> f32 {
    if s > 0.0 {
        (1.0 / s as f64) as f32
    } else {
        0.0
    }
}

/// Workgroup: 64 invocations along the pixels, each 8 output channels × 4 pixels (and 64
/// words of the quantisation pass).
pub const WG: [u32; 3] = [64, 1, 1];

/// How a W8A8 kernel accumulates the integer products; `Display` is the tuning name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum A8Kernel {
    /// `dot4I8Packed` into i32 (exact): "dot4".
    Dot4,
    /// The same products in f32 (exact below 2^24): "f32".
    F32,
}

impl A8Kernel {
    pub const ALL: [A8Kernel; 2] = [A8Kernel::Dot4, A8Kernel::F32];

    /// The default: i32 accumulation where the adapter has `dot4I8Packed`.
    pub fn default_for_info(info: &GpuInfo) -> Self {
        if info.dot4_i8 {
            A8Kernel::Dot4
        } else {
            A8Kernel::F32
        }
    }

    /// Why the variant cannot run on this adapter.
    pub fn unsupported_on(self, info: &GpuInfo) -> Option<String> {
        (self == A8Kernel::Dot4 && !info.dot4_i8).then(|| {
            "needs the WGSL language feature packed_4x8_integer_dot_product (dot4I8Packed)".into()
        })
    }
}

impl std::fmt::Display for A8Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            A8Kernel::Dot4 => "dot4",
            A8Kernel::F32 => "f32",
        })
    }
}

impl std::str::FromStr for A8Kernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_variant(s)
    }
}

impl Variant for A8Kernel {
    const OP: &'static str = "conv2d_a8";
    type Ctx = ();
    fn all() -> Vec<Self> {
        Self::ALL.to_vec()
    }
    fn default_for(info: &GpuInfo, _: &()) -> Self {
        Self::default_for_info(info)
    }
    fn unsupported(self, info: &GpuInfo, _: &()) -> Option<String> {
        self.unsupported_on(info)
    }
}

params! {
    /// `#uniform Params` of `shaders/conv2d_a8.wgsl`.
    struct Params {
        cin: u32,
        cin4: u32,
        h: u32,
        w: u32,
        cout: u32,
        wo: u32,
        kh: u32,
        kw: u32,
        stride: u32,
        pad: u32,
        hw_out: u32,
        x_bs: u32,
        y_bs: u32,
        out_scale: f32,
        in_inv: f32,
        in_scale: f32,
    }
}

params! {
    /// `#uniform Params` of the QUANTIZE pass of `shaders/conv2d_a8.wgsl`.
    struct QuantizeParams {
        words: u32,
        c: u32,
        c4: u32,
        pix: u32,
        in_inv: f32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

/// The key of the input-quantisation pass.
pub fn key_quantize(dt: DType) -> KernelKey {
    KernelKey::new::<QuantizeParams>("conv2d_a8", "main", dt, WG).flag("QUANTIZE", true)
}

/// Records the quantisation of x, viewed as [A, C, P], into a new activation of words
/// [A, ⌈C/4⌉, P] (four channels per word, `pack4xI8`; zero past C) with the input rule of
/// [`quantize_input`] at scale `s_x`. Shared by the conv (P = H·W) and the linear layer (P = 1).
pub fn quantize_words(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    a: usize,
    c: usize,
    pix: usize,
    s_x: f32,
) -> Result<Tensor> {
    const OP: &str = "quantize_input";
    if a * c * pix != x.numel() {
        return Err(shape_err(OP, x, format!("is not [{a}, {c}, {pix}]")));
    }
    let c4 = c.div_ceil(4);
    let words = a * c4 * pix;
    let xq = Tensor::activation(
        rec,
        &format!("{}.q8", x.name()),
        &[a, c4, pix, 4],
        DType::I8,
    )?;
    let gpu = rec.gpu();
    let p = QuantizeParams {
        words: u32_param(OP, "words", words)?,
        c: c as u32,
        c4: c4 as u32,
        pix: pix as u32,
        in_inv: inverse_scale(s_x),
        _p0: 0,
        _p1: 0,
        _p2: 0,
    };
    let groups = super::grid_1d(gpu, OP, words.div_ceil(WG[0] as usize) as u64)?;
    rec.dispatch(
        &key_quantize(x.dtype()),
        &p,
        &[("x", x.binding(gpu, OP)?), ("xq", xq.binding(gpu, OP)?)],
        groups,
    )?;
    Ok(xq)
}

/// The kernel key.
pub fn key(v: A8Kernel, dt: DType, bias: bool, add_nc: bool, residual: bool) -> KernelKey {
    KernelKey::new::<Params>("conv2d_a8", "main", dt, WG)
        .flag("DOT4", v == A8Kernel::Dot4)
        .flag("BIAS", bias)
        .flag("ADD_NC", add_nc)
        .flag("RESIDUAL", residual)
}

/// All kernel keys (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = vec![key_quantize(dt)];
    for i in 0..8u32 {
        let f = |b: u32| i & (1 << b) != 0;
        for k in A8Kernel::ALL {
            v.push(key(k, dt, f(0), f(1), f(2)));
        }
    }
    v
}

/// The int8 weights `q` [Cout, Cin, kh, kw] (PyTorch layout) in the W8A8 kernel's layout
/// [Cout, kh·kw, ⌈Cin/4⌉·4]: input channels innermost, four to a word, zero past Cin.
pub fn pack_a8(q: &[i8], shape: [usize; 4]) -> Vec<i8> {
    let [cout, cin, kh, kw] = shape;
    let taps = kh * kw;
    let c4 = cin.div_ceil(4) * 4;
    let mut out = vec![0i8; cout * taps * c4];
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..taps {
                out[(co * taps + t) * c4 + ci] = q[(co * cin + ci) * taps + t];
            }
        }
    }
    out
}

/// The shape [`pack_a8`] produces.
pub fn packed_shape(shape: [usize; 4]) -> [usize; 3] {
    [shape[0], shape[2] * shape[3], shape[1].div_ceil(4) * 4]
}

/// One W8A8 convolution: x [N, Cin, H, W] (f32 or f16), `weight` int8 [Cout, k·k, ⌈Cin/4⌉·4]
/// ([`pack_a8`]), `scale` f32 [Cout], `input_scale` s_x ≥ 0, bias [Cout], y [N, Cout, Ho, Wo];
/// y = f32(Σ q_w·q_x) · (scale[co]·s_x) + bias (+ epilogue adds) · epilogue scale.
#[derive(Clone, Copy)]
pub struct Conv2dA8Desc<'a> {
    pub x: &'a Tensor,
    pub weight: &'a Tensor,
    pub scale: &'a Tensor,
    pub input_scale: f32,
    pub bias: Option<&'a Tensor>,
    pub y: &'a Tensor,
    pub args: Conv2dArgs,
    pub epilogue: Epilogue<'a>,
}

/// Records `d` with the default kernel (or the measured winner when tuning).
pub fn conv2d_a8(rec: &mut Recorder<'_>, d: &Conv2dA8Desc<'_>) -> Result<()> {
    conv2d_a8_variant(rec, d, None)
}

/// [`conv2d_a8`] with an explicit kernel ([`A8Kernel`]).
pub fn conv2d_a8_variant(
    rec: &mut Recorder<'_>,
    d: &Conv2dA8Desc<'_>,
    variant: Option<A8Kernel>,
) -> Result<()> {
    const OP: &str = "conv2d_a8";
    let Conv2dA8Desc {
        x,
        weight,
        scale,
        input_scale,
        bias,
        y,
        args,
        epilogue: epi,
    } = *d;
    nonempty(OP, x)?;
    rank(OP, x, 4, "[N, C, H, W]")?;
    rank(OP, y, 4, "[N, Cout, Ho, Wo]")?;
    rank(OP, weight, 3, "[Cout, k·k, ⌈Cin/4⌉·4] int8")?;
    dtype_is(OP, weight, DType::I8, "W8A8 weights are int8")?;
    dtype_is(OP, scale, DType::F32, "weight scales are f32")?;
    same_dtype(OP, x, y)?;
    if args.stride == 0 {
        return Err(Error::Argument {
            op: OP,
            arg: "stride",
            reason: "must be at least 1".into(),
        });
    }
    if !input_scale.is_finite() || input_scale < 0.0 || !epi.scale.is_finite() {
        return Err(Error::Argument {
            op: OP,
            arg: "input_scale",
            reason: format!(
                "input scale {input_scale} and output scale {} must be finite (input ≥ 0)",
                epi.scale
            ),
        });
    }
    let [n, cin, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let ws = weight.shape();
    let cout = scale.numel();
    let k = (1..=ws[1]).find(|k| k * k == ws[1]).unwrap_or(0);
    if ws[0] != cout || k == 0 || ws[2] != cin.div_ceil(4) * 4 {
        return Err(shape_err(
            OP,
            weight,
            format!(
                "expected [Cout = {cout}, k·k, ⌈Cin/4⌉·4 = {}] int8 for `{}` and the scales `{}`",
                cin.div_ceil(4) * 4,
                x.name(),
                scale.name()
            ),
        ));
    }
    let (ho, wo) = output_size(x, h, w, k, k, args)?;
    if y.shape() != [n, cout, ho, wo] {
        return Err(shape_err(
            OP,
            y,
            format!("expected {:?}", [n, cout, ho, wo]),
        ));
    }
    if let Some(b) = bias {
        same_dtype(OP, x, b)?;
        if b.numel() != cout {
            return Err(shape_err(OP, b, format!("expected [{cout}]")));
        }
    }
    if let Some(t) = epi.add_nc {
        same_dtype(OP, x, t)?;
        if t.numel() != n * cout {
            return Err(shape_err(OP, t, format!("expected [{n}, {cout}]")));
        }
    }
    if let Some(r) = epi.residual {
        same_dtype(OP, x, r)?;
        if r.shape() != [n, cout, ho, wo] {
            return Err(shape_err(
                OP,
                r,
                format!("expected {:?}", [n, cout, ho, wo]),
            ));
        }
    }
    let xq = quantize_words(rec, x, n, cin, h * w, input_scale)?;
    let gpu = rec.gpu();
    let p = Params {
        cin: cin as u32,
        cin4: cin.div_ceil(4) as u32,
        h: h as u32,
        w: w as u32,
        cout: cout as u32,
        wo: wo as u32,
        kh: k as u32,
        kw: k as u32,
        stride: u32_param(OP, "stride", args.stride)?,
        pad: u32_param(OP, "padding", args.padding)?,
        hw_out: u32_param(OP, "Ho·Wo", ho * wo)?,
        x_bs: u32_param(OP, "Cin·H·W", cin * h * w)?,
        y_bs: u32_param(OP, "Cout·Ho·Wo", cout * ho * wo)?,
        out_scale: epi.scale,
        in_inv: inverse_scale(input_scale),
        in_scale: input_scale,
    };
    let mut binds = vec![
        ("xq", xq.binding(gpu, OP)?),
        ("wt", weight.binding(gpu, OP)?),
        ("y", y.binding(gpu, OP)?),
        ("wscale", scale.binding(gpu, OP)?),
    ];
    if let Some(b) = bias {
        binds.push(("bias", b.binding(gpu, OP)?));
    }
    if let Some(t) = epi.add_nc {
        binds.push(("tnc", t.binding(gpu, OP)?));
    }
    if let Some(r) = epi.residual {
        binds.push(("res", r.binding(gpu, OP)?));
    }
    let dt = x.dtype();
    let groups = [
        u32_param(OP, "pixel tiles", (ho * wo).div_ceil(4 * WG[0] as usize))?,
        u32_param(OP, "channel tiles", cout.div_ceil(8))?,
        u32_param(OP, "batch", n)?,
    ];
    let flags = (bias.is_some(), epi.add_nc.is_some(), epi.residual.is_some());
    let key_of = |v: A8Kernel| key(v, dt, flags.0, flags.1, flags.2);
    let tuning_key = || format!("{dt:?}|{n}x{cin}x{h}x{w}|{cout}|k{k}|s{}", args.stride);
    let chosen = select(gpu, variant, &(), tuning_key, &mut |c| {
        time_recorded(gpu, &mut |r| {
            r.dispatch(&key_of(c), &p, &binds, groups).map(|_| ())
        })
    })?;
    rec.dispatch(&key_of(chosen), &p, &binds, groups)?;
    Ok(())
}
