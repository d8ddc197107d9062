//! W8A8 linear layer (`shaders/gemm_a8.wgsl`; Shang et al., "Post-training Quantization on
//! Diffusion Models", CVPR 2023 — PTQ4DM): int8 weights [out, in] with per-output scales, the
//! input quantised on load with the layer's calibrated per-tensor scale, integer products
//! accumulated in i32 (`dot4I8Packed`) or f32 — the variants of [`super::conv2d_a8::A8Kernel`].

use super::conv2d_a8::A8Kernel;
use super::{dtype_is, nonempty, same_dtype, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::tuning::{parse_variant, select, time_recorded, Variant};
use crate::gpu::{params, GpuInfo, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Workgroup: 8 × 8 invocations, each 4 outputs × 4 rows.
pub const WG: [u32; 3] = [8, 8, 1];

/// The GEMM's variant (the same two accumulations as the conv, tuned separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearA8Kernel(pub A8Kernel);

impl std::fmt::Display for LinearA8Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for LinearA8Kernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_variant(s)
    }
}

impl Variant for LinearA8Kernel {
    const OP: &'static str = "linear_a8";
    type Ctx = ();
    fn all() -> Vec<Self> {
        A8Kernel::ALL.iter().map(|&k| LinearA8Kernel(k)).collect()
    }
    fn default_for(info: &GpuInfo, _: &()) -> Self {
        LinearA8Kernel(A8Kernel::default_for_info(info))
    }
    fn unsupported(self, info: &GpuInfo, _: &()) -> Option<String> {
        self.0.unsupported_on(info)
    }
}

params! {
    /// `#uniform Params` of `shaders/gemm_a8.wgsl`.
    struct Params {
        rows: u32,
        fin: u32,
        fin4: u32,
        fout: u32,
        in_inv: f32,
        in_scale: f32,
        _p0: u32,
        _p1: u32,
    }
}

/// The kernel key.
pub fn key(v: A8Kernel, dt: DType, bias: bool) -> KernelKey {
    KernelKey::new::<Params>("gemm_a8", "main", dt, WG)
        .flag("DOT4", v == A8Kernel::Dot4)
        .flag("BIAS", bias)
}

/// All kernel keys (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for k in A8Kernel::ALL {
        for b in [false, true] {
            v.push(key(k, dt, b));
        }
    }
    v
}

/// The int8 weights `q` [fout, fin] with rows zero-padded to whole words: [fout, ⌈fin/4⌉·4].
pub fn pack_a8(q: &[i8], fout: usize, fin: usize) -> Vec<i8> {
    let f4 = fin.div_ceil(4) * 4;
    let mut out = vec![0i8; fout * f4];
    for o in 0..fout {
        out[o * f4..o * f4 + fin].copy_from_slice(&q[o * fin..(o + 1) * fin]);
    }
    out
}

/// y [.., fout] = f32(Σ q_w·q_x) · (scale[o]·s_x) + bias[o] for x [.., fin]; `weight` int8
/// [fout, ⌈fin/4⌉·4] ([`pack_a8`]), `scale` f32 [fout], `input_scale` s_x ≥ 0.
pub fn linear_a8(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    scale: &Tensor,
    input_scale: f32,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    linear_a8_variant(rec, x, weight, scale, input_scale, bias, y, None)
}

/// [`linear_a8`] with an explicit kernel.
#[allow(clippy::too_many_arguments)]
pub fn linear_a8_variant(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    scale: &Tensor,
    input_scale: f32,
    bias: Option<&Tensor>,
    y: &Tensor,
    variant: Option<LinearA8Kernel>,
) -> Result<()> {
    const OP: &str = "linear_a8";
    nonempty(OP, x)?;
    super::rank(OP, weight, 2, "[out_features, ⌈in_features/4⌉·4] int8")?;
    dtype_is(OP, weight, DType::I8, "W8A8 weights are int8")?;
    dtype_is(OP, scale, DType::F32, "weight scales are f32")?;
    same_dtype(OP, x, y)?;
    if !input_scale.is_finite() || input_scale < 0.0 {
        return Err(Error::Argument {
            op: OP,
            arg: "input_scale",
            reason: format!("{input_scale} must be finite and ≥ 0"),
        });
    }
    let fin = *x.shape().last().unwrap_or(&0);
    let fout = scale.numel();
    if weight.shape() != [fout, fin.div_ceil(4) * 4] {
        return Err(shape_err(
            OP,
            weight,
            format!(
                "expected [{fout}, {}] int8 for `{}` [.., {fin}] and the scales `{}`",
                fin.div_ceil(4) * 4,
                x.name(),
                scale.name()
            ),
        ));
    }
    let rows = x.numel() / fin;
    let mut want_y = x.shape().to_vec();
    if let Some(l) = want_y.last_mut() {
        *l = fout;
    }
    if y.shape() != want_y.as_slice() {
        return Err(shape_err(OP, y, format!("expected {want_y:?}")));
    }
    if let Some(b) = bias {
        same_dtype(OP, x, b)?;
        if b.numel() != fout {
            return Err(shape_err(OP, b, format!("expected [{fout}]")));
        }
    }
    let xq = super::conv2d_a8::quantize_words(rec, x, rows, fin, 1, input_scale)?;
    let gpu = rec.gpu();
    let p = Params {
        rows: u32_param(OP, "rows", rows)?,
        fin: u32_param(OP, "in_features", fin)?,
        fin4: fin.div_ceil(4) as u32,
        fout: u32_param(OP, "out_features", fout)?,
        in_inv: super::conv2d_a8::inverse_scale(input_scale),
        in_scale: input_scale,
        _p0: 0,
        _p1: 0,
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
    let groups = [
        u32_param(OP, "output tiles", fout.div_ceil(4 * WG[0] as usize))?,
        u32_param(OP, "row tiles", rows.div_ceil(4 * WG[1] as usize))?,
        1,
    ];
    let dt = x.dtype();
    let key_of = |v: LinearA8Kernel| key(v.0, dt, bias.is_some());
    let tuning_key = || format!("{dt:?}|{rows}x{fin}|{fout}");
    let chosen = select(gpu, variant, &(), tuning_key, &mut |c| {
        time_recorded(gpu, &mut |r| {
            r.dispatch(&key_of(c), &p, &binds, groups).map(|_| ())
        })
    })?;
    rec.dispatch(&key_of(chosen), &p, &binds, groups)?;
    Ok(())
}
