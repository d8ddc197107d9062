//! 2-D convolution (`shaders/conv2d.wgsl`) as an implicit GEMM over PyTorch-layout weights
//! [Cout, Cin, kh, kw]: square stride and zero padding, any kernel size.

use super::{nonempty, rank, same_dtype, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::{KernelKey, Recorder};
use crate::tensor::{DType, Tensor};
use bytemuck::{Pod, Zeroable};

/// Workgroup shape; each invocation computes 4 or 8 output channels × 4 pixels.
pub const WG: [u32; 3] = [8, 8, 1];

/// The default variant (see [`conv2d_variant`]). On CPU adapters 3×3 stride-1 convs take the
/// row kernel: with packed weights ([`super::conv_pack`]) 8 output channels per invocation in
/// both dtypes, without them 4 in f32 and 8 in f16; everything else takes the general kernel
/// with 8. Measured on lavapipe (Mesa 25, 2 cores, benches/README.md): packed row kernel
/// 22–29 GFLOP/s f32 with 8 channels (22–27 with 4); plain row kernel 18–21 f32 with 4 (14–20
/// with 8); general kernel 16–19 with 8 (13–15 with 4). GPUs start from the general kernel;
/// tuning measures the rest.
pub fn default_variant(dt: DType, row3_ok: bool, cpu: bool, packed: bool) -> &'static str {
    match (row3_ok && cpu, dt, packed) {
        (true, DType::F32, false) => "row3-cb4",
        (true, _, _) => "row3-cb8",
        (false, _, _) => "cb8",
    }
}

/// Stride and padding (the same along H and W, as in diffusers' UNet convs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conv2dArgs {
    pub stride: usize,
    /// Zero padding before the first row/column and after the last.
    pub padding: usize,
    /// Additional zero padding after the last row/column only (diffusers' `Downsample2D` with
    /// `padding=0` pads (0, 1, 0, 1) before a stride-2 conv).
    pub extra_end: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    k: u32,
    hw_out: u32,
    x_bs: u32,
    y_bs: u32,
    out_scale: f32,
    _p1: u32,
}

/// The kernel key: register block `cb` (4 or 8 output channels), `row3` for the 3×3 stride-1
/// row kernel, and the fused epilogue's flags.
pub fn key_variant(
    dt: DType,
    cb: usize,
    row3: bool,
    bias: bool,
    add_nc: bool,
    residual: bool,
) -> KernelKey {
    KernelKey::new("conv2d", "main", dt, WG)
        .flag("ROW3", row3)
        .define("CB", cb)
        .flag("CB8", cb == 8)
        .flag("BIAS", bias)
        .flag("ADD_NC", add_nc)
        .flag("RESIDUAL", residual)
}

/// Workgroup of the shared-memory tile kernel: 16×16 invocations, each 4 channels × 4 pixels,
/// so one workgroup covers 64 output channels × 64 pixels.
pub const TILE_WG: [u32; 3] = [16, 16, 1];

/// The key of the shared-memory tile kernel ("tile64") with the fused epilogue's flags.
pub fn key_tile(dt: DType, bias: bool, add_nc: bool, residual: bool) -> KernelKey {
    KernelKey::new("conv2d", "main", dt, TILE_WG)
        .flag("TILE", true)
        .define("CB", 4)
        .flag("BIAS", bias)
        .flag("ADD_NC", add_nc)
        .flag("RESIDUAL", residual)
}

/// Every variant name [`conv2d_variant`] accepts.
pub const VARIANTS: [&str; 5] = ["cb4", "cb8", "row3-cb4", "row3-cb8", "tile64"];

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for i in 0..8u32 {
        let f = |b: u32| i & (1 << b) != 0;
        for cb in [4, 8] {
            for row3 in [false, true] {
                v.push(key_variant(dt, cb, row3, f(0), f(1), f(2)));
            }
            for row3 in [false, true] {
                v.push(key_variant(dt, cb, row3, f(0), f(1), f(2)).flag("PACKED", true));
            }
        }
        v.push(key_tile(dt, f(0), f(1), f(2)));
    }
    v
}

/// Work fused into the conv's output write: y = (conv + bias + add_nc[n, co] + residual) · scale.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    /// [N, Cout], added per sample and output channel (a time-embedding projection).
    pub add_nc: Option<&'a Tensor>,
    /// [N, Cout, Ho, Wo], added element-wise (a residual branch; must not alias y).
    pub residual: Option<&'a Tensor>,
    /// Final multiplier (1 / output_scale_factor).
    pub scale: f32,
}

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Epilogue {
            add_nc: None,
            residual: None,
            scale: 1.0,
        }
    }
}

/// Output spatial size of a convolution, or an error when the kernel does not fit.
pub fn output_size(
    x: &Tensor,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    a: Conv2dArgs,
) -> Result<(usize, usize)> {
    let (hp, wp) = (
        h + 2 * a.padding + a.extra_end,
        w + 2 * a.padding + a.extra_end,
    );
    if kh > hp || kw > wp {
        return Err(shape_err(
            "conv2d",
            x,
            format!(
                "is smaller than the {kh}x{kw} kernel with padding {}",
                a.padding
            ),
        ));
    }
    Ok(((hp - kh) / a.stride + 1, (wp - kw) / a.stride + 1))
}

/// y = conv2d(x, weight) + bias. x [N, Cin, H, W], weight [Cout, Cin, kh, kw], bias [Cout],
/// y [N, Cout, Ho, Wo] with Ho = (H + 2·pad − kh) / stride + 1.
pub fn conv2d(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    args: Conv2dArgs,
) -> Result<()> {
    conv2d_fused(rec, x, weight, bias, y, args, Epilogue::default())
}

/// [`conv2d`] with a fused epilogue (see [`Epilogue`]).
pub fn conv2d_fused(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    args: Conv2dArgs,
    epi: Epilogue<'_>,
) -> Result<()> {
    conv2d_variant(rec, x, weight, bias, y, args, epi, None)
}

/// Kernel variants of [`conv2d_fused`] ([`VARIANTS`]): "tile64" (the shared-memory implicit
/// GEMM, 64 channels × 64 pixels per workgroup), "cb4" / "cb8" (the general kernel with 4 or 8
/// output channels per invocation) and, for 3×3 stride-1 convs, "row3-cb4" / "row3-cb8" (the row
/// kernel). `None` picks the default or, with tuning on, the adapter's measured winner.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_variant(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    args: Conv2dArgs,
    epi: Epilogue<'_>,
    variant: Option<&str>,
) -> Result<()> {
    conv2d_packed(rec, x, weight, None, bias, y, args, epi, variant)
}

/// [`conv2d_variant`] with the weights also in the packed layout ([`super::conv_pack`]): the row
/// and general kernels then read `packed` (vec4 weight loads), the tile kernel `weight`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_packed(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    packed: Option<&Tensor>,
    bias: Option<&Tensor>,
    y: &Tensor,
    args: Conv2dArgs,
    epi: Epilogue<'_>,
    variant: Option<&str>,
) -> Result<()> {
    const OP: &str = "conv2d";
    nonempty(OP, x)?;
    nonempty(OP, weight)?;
    rank(OP, x, 4, "[N, C, H, W]")?;
    rank(OP, weight, 4, "[Cout, Cin, kh, kw]")?;
    rank(OP, y, 4, "[N, Cout, Ho, Wo]")?;
    same_dtype(OP, x, weight)?;
    same_dtype(OP, x, y)?;
    if args.stride == 0 {
        return Err(Error::Argument {
            op: OP,
            arg: "stride",
            reason: "must be at least 1".into(),
        });
    }
    let [n, cin, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let [cout, wcin, kh, kw] = [
        weight.shape()[0],
        weight.shape()[1],
        weight.shape()[2],
        weight.shape()[3],
    ];
    if wcin != cin {
        return Err(shape_err(
            OP,
            weight,
            format!("expects {wcin} input channels but `{}` has {cin}", x.name()),
        ));
    }
    let (ho, wo) = output_size(x, h, w, kh, kw, args)?;
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
                format!("expected {:?} (the output shape)", [n, cout, ho, wo]),
            ));
        }
    }
    if let Some(pk) = packed {
        same_dtype(OP, x, pk)?;
        let want = super::conv_pack::packed_shape(weight.shape());
        if pk.shape() != want {
            return Err(shape_err(
                OP,
                pk,
                format!("expected {want:?} (`{}` packed)", weight.name()),
            ));
        }
    }
    if !epi.scale.is_finite() {
        return Err(Error::Argument {
            op: OP,
            arg: "scale",
            reason: format!("{} is not finite", epi.scale),
        });
    }
    let k = cin * kh * kw;
    let gpu = rec.gpu();
    let p = Params {
        cin: cin as u32,
        h: h as u32,
        w: w as u32,
        cout: cout as u32,
        ho: ho as u32,
        wo: wo as u32,
        kh: kh as u32,
        kw: kw as u32,
        stride: args.stride as u32,
        pad: u32_param(OP, "padding", args.padding)?,
        k: u32_param(OP, "Cin·kh·kw", k)?,
        hw_out: u32_param(OP, "Ho·Wo", ho * wo)?,
        x_bs: u32_param(OP, "Cin·H·W", cin * h * w)?,
        y_bs: u32_param(OP, "Cout·Ho·Wo", cout * ho * wo)?,
        out_scale: epi.scale,
        _p1: 0,
    };
    let mut binds = vec![
        x.binding(gpu, OP)?,
        weight.binding(gpu, OP)?,
        y.binding(gpu, OP)?,
    ];
    if let Some(b) = bias {
        binds.push(b.binding(gpu, OP)?);
    }
    if let Some(t) = epi.add_nc {
        binds.push(t.binding(gpu, OP)?);
    }
    if let Some(r) = epi.residual {
        binds.push(r.binding(gpu, OP)?);
    }
    let dt = x.dtype();
    let row3_ok = kh == 3 && kw == 3 && args.stride == 1;
    // The packed weights' binding, swapped in for `weight` when the row kernel runs.
    let packed_bind = packed.map(|t| t.binding(gpu, OP)).transpose()?;
    let binds_for = |pack: bool| {
        let mut b = binds.clone();
        if let (true, Some(pb)) = (pack, &packed_bind) {
            b[1] = pb.clone();
        }
        b
    };
    let launch = |v: &str| -> Result<(KernelKey, [u32; 3], bool)> {
        let row3 = v.starts_with("row3");
        if (row3 && !row3_ok) || !VARIANTS.contains(&v) {
            return Err(Error::Argument {
                op: OP,
                arg: "variant",
                reason: format!(
                    "`{v}` does not apply to a {kh}x{kw} stride-{} conv (variants: {})",
                    args.stride,
                    VARIANTS.join(", ")
                ),
            });
        }
        let (has_b, add, res) = (bias.is_some(), epi.add_nc.is_some(), epi.residual.is_some());
        if v == "tile64" {
            let groups = [
                u32_param(OP, "pixel tiles", (ho * wo).div_ceil(64))?,
                u32_param(OP, "channel tiles", cout.div_ceil(64))?,
                u32_param(OP, "batch", n)?,
            ];
            return Ok((key_tile(dt, has_b, add, res), groups, false));
        }
        let cb = if v.ends_with("cb8") { 8 } else { 4 };
        let pack = packed.is_some();
        // The row kernel tiles each output row into ⌈Wo/4⌉ groups; the general kernel tiles
        // the flattened pixels.
        let pixel_groups = if row3 {
            ho * wo.div_ceil(4)
        } else {
            (ho * wo).div_ceil(4)
        };
        let groups = [
            u32_param(OP, "pixel tiles", pixel_groups.div_ceil(WG[0] as usize))?,
            u32_param(OP, "channel tiles", cout.div_ceil(cb * WG[1] as usize))?,
            u32_param(OP, "batch", n)?,
        ];
        Ok((
            key_variant(dt, cb, row3, has_b, add, res).flag("PACKED", pack),
            groups,
            pack,
        ))
    };
    // The variant: given, the default, or the adapter's measured winner when tuning.
    let cpu = gpu.info().device_type == wgpu::DeviceType::Cpu;
    let default = default_variant(dt, row3_ok, cpu, packed.is_some());
    let chosen: String = match variant {
        Some(v) => v.to_string(),
        None if gpu.tuner().enabled() => {
            let mut candidates: Vec<&'static str> = vec![default];
            for c in VARIANTS {
                if c != default && (row3_ok || !c.starts_with("row3")) {
                    candidates.push(c);
                }
            }
            let tkey = format!(
                "conv2d|{dt:?}|{n}x{cin}x{h}x{w}|{cout}|k{kh}x{kw}|s{}p{}e{}|packed{}",
                args.stride,
                args.padding,
                args.extra_end,
                packed.is_some()
            );
            gpu.tuner()
                .pick(&tkey, &candidates, &mut |c| {
                    let (key, groups, pack) = launch(c)?;
                    crate::gpu::tuning::time_recorded(gpu, &mut |r| {
                        r.dispatch(&key, bytemuck::bytes_of(&p), binds_for(pack), groups)
                            .map(|_| ())
                    })
                })?
                .to_string()
        }
        None => default.to_string(),
    };
    let (key, groups, pack) = launch(&chosen)?;
    rec.dispatch(&key, bytemuck::bytes_of(&p), binds_for(pack), groups)?;
    Ok(())
}
