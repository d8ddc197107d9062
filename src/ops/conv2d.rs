//! 2-D convolution (`shaders/conv2d.wgsl`) as an implicit GEMM over PyTorch-layout weights
//! [Cout, Cin, kh, kw]: square stride and zero padding, any kernel size.

use super::{nonempty, rank, same_dtype, shape_err, u32_param};
use crate::error::{Error, Result};
use crate::gpu::tuning::{parse_variant, select, time_recorded, Variant};
use crate::gpu::{params, GpuInfo, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Workgroup shape; each invocation computes 4 or 8 output channels × 4 pixels.
pub const WG: [u32; 3] = [8, 8, 1];

/// A conv2d kernel variant; its `Display` is the name the tuning cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKernel {
    /// The general kernel (any size and stride), `cb` (4 or 8) output channels × 4 pixels per
    /// invocation: "cb4", "cb8".
    General { cb: usize },
    /// The 3×3 stride-1 row kernel, `cb` (4 or 8) output channels × 4 pixels of one output row
    /// per invocation: "row3-cb4", "row3-cb8".
    Row3 { cb: usize },
    /// The shared-memory implicit GEMM, 64 output channels × 64 pixels per workgroup (a tuning
    /// candidate for GPUs; reads the PyTorch-layout weights): "tile64".
    Tile64,
}

impl ConvKernel {
    /// Every variant, in the order tuning measures them.
    pub const ALL: [ConvKernel; 5] = [
        ConvKernel::General { cb: 4 },
        ConvKernel::General { cb: 8 },
        ConvKernel::Row3 { cb: 4 },
        ConvKernel::Row3 { cb: 8 },
        ConvKernel::Tile64,
    ];

    /// Whether the kernel can run a kh×kw conv with this stride (the row kernel needs 3×3
    /// stride 1).
    pub fn applies_to(self, kh: usize, kw: usize, stride: usize) -> bool {
        !matches!(self, ConvKernel::Row3 { .. }) || (kh == 3 && kw == 3 && stride == 1)
    }

    /// Whether the kernel reads the packed weights ([`super::conv_pack`]) when they are given.
    pub fn reads_packed(self) -> bool {
        !matches!(self, ConvKernel::Tile64)
    }

    /// The kernel key with the fused epilogue's flags and, for the row and general kernels,
    /// whether they read packed weights.
    pub fn key(
        self,
        dt: DType,
        bias: bool,
        add_nc: bool,
        residual: bool,
        packed: bool,
    ) -> KernelKey {
        match self {
            ConvKernel::General { cb } => {
                key_variant(dt, cb, false, bias, add_nc, residual).flag("PACKED", packed)
            }
            ConvKernel::Row3 { cb } => {
                key_variant(dt, cb, true, bias, add_nc, residual).flag("PACKED", packed)
            }
            ConvKernel::Tile64 => key_tile(dt, bias, add_nc, residual),
        }
    }

    /// The key reading int8 weights (W8A32: packed int8 weights and per-channel scales; row
    /// and general kernels only).
    pub fn key_q8(self, dt: DType, bias: bool, add_nc: bool, residual: bool) -> KernelKey {
        self.key(dt, bias, add_nc, residual, true).flag("Q8", true)
    }
}

impl std::fmt::Display for ConvKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvKernel::General { cb } => write!(f, "cb{cb}"),
            ConvKernel::Row3 { cb } => write!(f, "row3-cb{cb}"),
            ConvKernel::Tile64 => write!(f, "tile64"),
        }
    }
}

impl std::str::FromStr for ConvKernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_variant(s)
    }
}

/// What decides which conv kernels apply and the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub dt: DType,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// Packed weights are given.
    pub packed: bool,
    /// The weights are int8 (packed, with per-channel scales).
    pub q8: bool,
}

impl Variant for ConvKernel {
    const OP: &'static str = "conv2d";
    type Ctx = ConvShape;
    fn all() -> Vec<Self> {
        Self::ALL.to_vec()
    }
    fn default_for(info: &GpuInfo, c: &ConvShape) -> Self {
        let row3_ok = ConvKernel::Row3 { cb: 4 }.applies_to(c.kh, c.kw, c.stride);
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        default_variant(c.dt, row3_ok, cpu, c.packed)
    }
    fn unsupported(self, _: &GpuInfo, c: &ConvShape) -> Option<String> {
        match self {
            ConvKernel::General { cb } | ConvKernel::Row3 { cb } if cb != 4 && cb != 8 => {
                Some("has a register block other than 4 or 8 channels".into())
            }
            ConvKernel::Tile64 if c.q8 => Some("does not read int8 weights".into()),
            _ if !self.applies_to(c.kh, c.kw, c.stride) => Some(format!(
                "does not apply to a {}x{} stride-{} conv",
                c.kh, c.kw, c.stride
            )),
            _ => None,
        }
    }
}

/// The default variant. On CPU adapters 3×3 stride-1 convs take the row kernel: with packed
/// weights ([`super::conv_pack`]) 8 output channels per invocation in both dtypes, without
/// them 4 in f32 and 8 in f16; everything else takes the general kernel with 8. Measured on
/// lavapipe (Mesa 25, 2 cores, benches/README.md): packed row kernel 22–29 GFLOP/s f32 with 8
/// channels (22–27 with 4); plain row kernel 18–21 f32 with 4 (14–20 with 8); general kernel
/// 16–19 with 8 (13–15 with 4). GPUs start from the general kernel; tuning measures the rest.
pub fn default_variant(dt: DType, row3_ok: bool, cpu: bool, packed: bool) -> ConvKernel {
    match (row3_ok && cpu, dt, packed) {
        (true, DType::F32, false) => ConvKernel::Row3 { cb: 4 },
        (true, _, _) => ConvKernel::Row3 { cb: 8 },
        (false, _, _) => ConvKernel::General { cb: 8 },
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

params! {
    /// `#uniform Params` of `shaders/conv2d.wgsl`.
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
    KernelKey::new::<Params>("conv2d", "main", dt, WG)
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
    KernelKey::new::<Params>("conv2d", "main", dt, TILE_WG)
        .flag("TILE", true)
        .define("CB", 4)
        .flag("BIAS", bias)
        .flag("ADD_NC", add_nc)
        .flag("RESIDUAL", residual)
}

/// All kernel keys (for validation): every [`ConvKernel`] with every epilogue, the row and
/// general kernels also on packed weights.
pub fn variants(dt: DType) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for i in 0..8u32 {
        let f = |b: u32| i & (1 << b) != 0;
        for k in ConvKernel::ALL {
            v.push(k.key(dt, f(0), f(1), f(2), false));
            if k.reads_packed() {
                v.push(k.key(dt, f(0), f(1), f(2), true));
                v.push(k.key_q8(dt, f(0), f(1), f(2)));
            }
        }
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

/// The int8 weights of a W8A32 conv in the layout the kernels read: `q` [Cout, Cin, kh, kw]
/// (PyTorch layout, row-major) repacked as [⌈Cout/4⌉, Cin, kh·kw, 4] (four output channels
/// innermost — one u32 word per 4 channels and tap — zero past Cout), as `conv_pack` does for
/// float weights.
pub fn pack_q8(q: &[i8], shape: [usize; 4]) -> Vec<i8> {
    let [cout, cin, kh, kw] = shape;
    let taps = kh * kw;
    let mut out = vec![0i8; cout.div_ceil(4) * 4 * cin * taps];
    for co in 0..cout {
        for ci in 0..cin {
            for t in 0..taps {
                out[(((co / 4) * cin + ci) * taps + t) * 4 + co % 4] =
                    q[(co * cin + ci) * taps + t];
            }
        }
    }
    out
}

/// One convolution: y = (conv2d(x, weight) + bias + epilogue adds) · epilogue scale.
/// x [N, Cin, H, W], weight [Cout, Cin, kh, kw], bias [Cout], y [N, Cout, Ho, Wo] with
/// Ho = (H + 2·pad + extra_end − kh) / stride + 1.
///
/// W8A32: `weight` is an `I8` tensor [⌈Cout/4⌉, Cin, kh·kw, 4] ([`pack_q8`]; square kernels)
/// and `scale` the f32 per-output-channel scales [Cout]:
/// y = scale[co] · Σ q[co, k] · x[k] + bias[co] (+ epilogue), f32 accumulation.
#[derive(Clone, Copy)]
pub struct Conv2dDesc<'a> {
    pub x: &'a Tensor,
    pub weight: &'a Tensor,
    /// `weight` also in the packed layout ([`super::conv_pack`]): the row and general kernels
    /// then read it (vec4 weight loads), the tile kernel reads `weight`.
    pub packed: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub y: &'a Tensor,
    pub args: Conv2dArgs,
    pub epilogue: Epilogue<'a>,
    /// The per-output-channel scales of int8 `weight` (W8A32; None for float weights).
    pub scale: Option<&'a Tensor>,
}

impl<'a> Conv2dDesc<'a> {
    /// A plain conv (no packed weights, no epilogue).
    pub fn new(
        x: &'a Tensor,
        weight: &'a Tensor,
        bias: Option<&'a Tensor>,
        y: &'a Tensor,
        args: Conv2dArgs,
    ) -> Self {
        Conv2dDesc {
            x,
            weight,
            packed: None,
            bias,
            y,
            args,
            epilogue: Epilogue::default(),
            scale: None,
        }
    }

    /// With the per-channel scales of int8 weights (see [`Conv2dDesc::scale`]).
    pub fn with_scale(self, scale: Option<&'a Tensor>) -> Self {
        Conv2dDesc { scale, ..self }
    }

    /// With the packed weights (see [`Conv2dDesc::packed`]).
    pub fn with_packed(self, packed: Option<&'a Tensor>) -> Self {
        Conv2dDesc { packed, ..self }
    }

    /// With a fused epilogue (see [`Epilogue`]).
    pub fn with_epilogue(self, epilogue: Epilogue<'a>) -> Self {
        Conv2dDesc { epilogue, ..self }
    }
}

/// Records the convolution `d` with the default kernel or, with tuning on, the adapter's
/// measured winner.
pub fn conv2d(rec: &mut Recorder<'_>, d: &Conv2dDesc<'_>) -> Result<()> {
    conv2d_variant(rec, d, None)
}

/// [`conv2d`] with an explicit kernel ([`ConvKernel`]; an error when it does not apply to the
/// conv); `None` as [`conv2d`].
pub fn conv2d_variant(
    rec: &mut Recorder<'_>,
    d: &Conv2dDesc<'_>,
    variant: Option<ConvKernel>,
) -> Result<()> {
    let Conv2dDesc {
        x,
        weight,
        packed,
        bias,
        y,
        args,
        epilogue: epi,
        scale,
    } = *d;
    const OP: &str = "conv2d";
    nonempty(OP, x)?;
    nonempty(OP, weight)?;
    rank(OP, x, 4, "[N, C, H, W]")?;
    rank(OP, y, 4, "[N, Cout, Ho, Wo]")?;
    let q8 = weight.dtype() == DType::I8;
    if q8 {
        rank(OP, weight, 4, "[⌈Cout/4⌉, Cin, kh·kw, 4] int8")?;
    } else {
        rank(OP, weight, 4, "[Cout, Cin, kh, kw]")?;
        same_dtype(OP, x, weight)?;
    }
    same_dtype(OP, x, y)?;
    if args.stride == 0 {
        return Err(Error::Argument {
            op: OP,
            arg: "stride",
            reason: "must be at least 1".into(),
        });
    }
    let [n, cin, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let [cout, wcin, kh, kw] = if q8 {
        let scale = scale.ok_or_else(|| Error::Argument {
            op: OP,
            arg: "scale",
            reason: format!("int8 weights `{}` need per-channel scales", weight.name()),
        })?;
        super::dtype_is(OP, scale, DType::F32, "dequantisation scales are f32")?;
        let ws = weight.shape();
        let cout = scale.numel();
        let k = (1..=ws[2]).find(|k| k * k == ws[2]).unwrap_or(0);
        if ws[3] != 4 || k == 0 || ws[0] != cout.div_ceil(4) {
            return Err(shape_err(
                OP,
                weight,
                format!(
                    "expected [⌈Cout/4⌉ = {}, Cin, k·k, 4] int8 for the {cout} scales of `{}`",
                    cout.div_ceil(4),
                    scale.name()
                ),
            ));
        }
        if packed.is_some() {
            return Err(Error::Argument {
                op: OP,
                arg: "packed",
                reason: "int8 weights are already packed".into(),
            });
        }
        [cout, ws[1], k, k]
    } else {
        if let Some(s) = scale {
            return Err(Error::Argument {
                op: OP,
                arg: "scale",
                reason: format!("`{}` given for float weights `{}`", s.name(), weight.name()),
            });
        }
        [
            weight.shape()[0],
            weight.shape()[1],
            weight.shape()[2],
            weight.shape()[3],
        ]
    };
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
        ("x", x.binding(gpu, OP)?),
        ("wt", weight.binding(gpu, OP)?),
        ("y", y.binding(gpu, OP)?),
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
    if let Some(s) = scale {
        binds.push(("wscale", s.binding(gpu, OP)?));
    }
    let dt = x.dtype();
    let shape = ConvShape {
        dt,
        kh,
        kw,
        stride: args.stride,
        packed: packed.is_some() || q8,
        q8,
    };
    // The packed weights' binding, swapped in for `weight` when the row or general kernel runs.
    let packed_bind = packed.map(|t| t.binding(gpu, OP)).transpose()?;
    let binds_for = |pack: bool| {
        let mut b = binds.clone();
        if let (true, Some(pb)) = (pack, &packed_bind) {
            b[1].1 = pb.clone();
        }
        b
    };
    let launch = |v: ConvKernel| -> Result<(KernelKey, [u32; 3], bool)> {
        let (has_b, add, res) = (bias.is_some(), epi.add_nc.is_some(), epi.residual.is_some());
        let (cb, row3) = match v {
            ConvKernel::Tile64 => {
                let groups = [
                    u32_param(OP, "pixel tiles", (ho * wo).div_ceil(64))?,
                    u32_param(OP, "channel tiles", cout.div_ceil(64))?,
                    u32_param(OP, "batch", n)?,
                ];
                return Ok((v.key(dt, has_b, add, res, false), groups, false));
            }
            ConvKernel::General { cb } => (cb, false),
            ConvKernel::Row3 { cb } => (cb, true),
        };
        if q8 {
            let groups = [
                u32_param(
                    OP,
                    "pixel tiles",
                    (if row3 {
                        ho * wo.div_ceil(4)
                    } else {
                        (ho * wo).div_ceil(4)
                    })
                    .div_ceil(WG[0] as usize),
                )?,
                u32_param(OP, "channel tiles", cout.div_ceil(cb * WG[1] as usize))?,
                u32_param(OP, "batch", n)?,
            ];
            let (has_b, add, res) = (bias.is_some(), epi.add_nc.is_some(), epi.residual.is_some());
            return Ok((v.key_q8(dt, has_b, add, res), groups, false));
        }
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
        Ok((v.key(dt, has_b, add, res, pack), groups, pack))
    };
    // The variant: given, the default, or the adapter's measured winner when tuning.
    let tuning_key = || {
        format!(
            "{dt:?}|{n}x{cin}x{h}x{w}|{cout}|k{kh}x{kw}|s{}p{}e{}|packed{}{}",
            args.stride,
            args.padding,
            args.extra_end,
            packed.is_some(),
            if q8 { "|q8" } else { "" }
        )
    };
    let chosen = select(gpu, variant, &shape, tuning_key, &mut |c| {
        let (key, groups, pack) = launch(c)?;
        time_recorded(gpu, &mut |r| {
            r.dispatch(&key, &p, &binds_for(pack), groups).map(|_| ())
        })
    })?;
    let (key, groups, pack) = launch(chosen)?;
    rec.dispatch(&key, &p, &binds_for(pack), groups)?;
    Ok(())
}
