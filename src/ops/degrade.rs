//! Linear degradation operators of the training-free inverse-problem methods (RED-diff, Mardani
//! et al. 2023; DDS, Chung et al. 2024; FlowChef, Patel et al. 2024): A, its adjoint Aᵀ and the
//! closed-form pseudo-inverse A† where one exists, batched over [N, C, H, W] f32 images
//! (`shaders/degrade.wgsl`), with the f64 host semantics ([`Operator::apply_host`]) the tests
//! and the interpreter use.
//!
//! - `sr2`, `sr4`: R×R average pooling, y [N, C, H/R, W/R]; Aᵀ = nearest upsampling / R²,
//!   A† = nearest upsampling (A A† = I exactly).
//! - `inpaint-box` (a centred box of half the side is lost), `inpaint-random` (each pixel kept
//!   with probability 0.3, the same mask over batch and channels, drawn from the operator seed
//!   by Philox): y = m ⊙ x has the image's shape, zeros where lost; A = Aᵀ = A† (A A† = A on
//!   every y, and = I on measurements, which are zero off the mask).
//! - `blur-gauss` (11 taps, σ = 5, normalised), `blur-box` (9 taps of 1/9): the separable 2-D
//!   kernel k⊗k applied as a correlation with **zero padding**, same size out; Aᵀ is the same
//!   with the taps reversed (the kernels are symmetric, so Aᵀ = A). No closed-form A†.
//! - `mri4x`: the 2-D unitary DFT with centred frequencies,
//!   Y[u, v] = (HW)^(−1/2) Σ_{a,b} x[a, b]·exp(−2πi((u − ⌊H/2⌋)a/H + (v − ⌊W/2⌋)b/W)), of any
//!   size (a direct sum per output, no FFT), then a Cartesian mask keeping whole k-space rows
//!   u: 25 % of them (rounded), the ⌈8 %⌉ centred on u = ⌊H/2⌋ always, the rest drawn from the
//!   operator seed. y [N, C, H, W, 2] (re, im; zero on dropped rows). Aᵀ y = Re(Fᴴ M y) (the
//!   real adjoint of the real → complex map). A† is Aᵀ (zero-filled reconstruction, the usual
//!   baseline): Fᴴ M is the pseudo-inverse over complex images, but on real images A Aᵀ ≠ I
//!   because the kept rows need not be Hermitian-symmetric, so it is not exact
//!   ([`Operator::pinv_is_exact`]).

use super::{grid_1d, nonempty, rank, shape_err, u32_param, WG_1D};
use crate::error::{Error, Result};
use crate::gpu::{params, Gpu, KernelKey, Recorder};
use crate::reference::philox_words;
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/degrade.wgsl`.
    struct Params {
        /// output elements
        n: u32,
        /// input plane H
        h: u32,
        /// input plane W
        w: u32,
        /// output plane H
        ho: u32,
        /// output plane W
        wo: u32,
        /// pooling factor
        r: u32,
        /// blur taps
        ntaps: u32,
        scale: f32,
        /// 1-D blur taps k[0..ntaps] (≤ 12)
        taps: [[f32; 4]; 3],
    }
}

/// Philox stream of the random inpainting mask (element e = i·W + j, key = operator seed).
pub const MASK_STREAM: u32 = 0x4d41_534b;
/// Probability that `inpaint-random` keeps a pixel.
pub const KEEP_PROB: f64 = 0.3;
/// `blur-gauss`: taps and σ.
pub const GAUSS_TAPS: usize = 11;
pub const GAUSS_SIGMA: f64 = 5.0;
/// `blur-box`: taps.
pub const BOX_TAPS: usize = 9;

/// `mri4x`: the fraction of k-space rows kept, and of centre rows always among them.
pub const MRI_KEEP: f64 = 0.25;
pub const MRI_CENTRE: f64 = 0.08;
/// Philox stream of the `mri4x` row choice (element u = row, key = operator seed).
pub const MRI_STREAM: u32 = 0x4d52_4931;

/// Which of the operator's three maps to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A
    Forward,
    /// Aᵀ
    Adjoint,
    /// A† (only where [`Operator::has_pinv`])
    Pinv,
}

/// A degradation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// R×R average pooling.
    Sr(usize),
    /// A centred box of half the side is lost.
    InpaintBox,
    /// Pixels kept with probability [`KEEP_PROB`]; the mask drawn from `seed`.
    InpaintRandom { seed: u64 },
    /// Separable Gaussian, [`GAUSS_TAPS`] taps, σ = [`GAUSS_SIGMA`], zero padding.
    BlurGauss,
    /// Separable box, [`BOX_TAPS`] taps, zero padding.
    BlurBox,
    /// Unitary 2-D DFT, 25 % of the k-space rows kept; the random rows drawn from `seed`.
    Mri { seed: u64 },
}

/// The operator names, as `--operator` takes them.
pub const NAMES: [&str; 7] = [
    "sr2",
    "sr4",
    "inpaint-box",
    "inpaint-random",
    "blur-gauss",
    "blur-box",
    "mri4x",
];

impl Operator {
    /// Parses an operator name (`seed` is used by `inpaint-random` only).
    pub fn parse(name: &str, seed: u64) -> Result<Operator> {
        Ok(match name {
            "sr2" => Operator::Sr(2),
            "sr4" => Operator::Sr(4),
            "inpaint-box" => Operator::InpaintBox,
            "inpaint-random" => Operator::InpaintRandom { seed },
            "blur-gauss" => Operator::BlurGauss,
            "blur-box" => Operator::BlurBox,
            "mri4x" => Operator::Mri { seed },
            _ => {
                return Err(Error::Argument {
                    op: "inverse",
                    arg: "operator",
                    reason: format!("unknown operator `{name}` (one of {})", NAMES.join(", ")),
                })
            }
        })
    }

    /// The operator's name.
    pub fn name(&self) -> String {
        match self {
            Operator::Sr(r) => format!("sr{r}"),
            Operator::InpaintBox => "inpaint-box".into(),
            Operator::InpaintRandom { .. } => "inpaint-random".into(),
            Operator::BlurGauss => "blur-gauss".into(),
            Operator::BlurBox => "blur-box".into(),
            Operator::Mri { .. } => "mri4x".into(),
        }
    }

    /// Whether A† has a closed form here.
    pub fn has_pinv(&self) -> bool {
        !matches!(self, Operator::BlurGauss | Operator::BlurBox)
    }

    /// Whether A(A† y) = y on measurements in A's range (all but `mri4x`, whose A† is the
    /// zero-filled Aᵀ).
    pub fn pinv_is_exact(&self) -> bool {
        self.has_pinv() && !matches!(self, Operator::Mri { .. })
    }

    /// The `mri4x` k-space row mask over u ∈ [0, H) (1 kept), None for other operators:
    /// k = round(0.25·H) rows (at least 1), the c = min(k, ⌈0.08·H⌉) rows starting at
    /// ⌊H/2⌋ − ⌊c/2⌋ always, then the other rows with the k − c smallest Philox uniforms (word
    /// u % 4 of block u / 4, stream [`MRI_STREAM`], key = seed; ties by row).
    pub fn kspace_mask(&self, h: usize) -> Option<Vec<f32>> {
        let Operator::Mri { seed } = *self else {
            return None;
        };
        let k = ((MRI_KEEP * h as f64).round() as usize).clamp(1, h);
        let c = ((MRI_CENTRE * h as f64).ceil() as usize).min(k);
        let c0 = h / 2 - c / 2;
        let mut m = vec![0f32; h];
        for v in &mut m[c0..c0 + c] {
            *v = 1.0;
        }
        let mut rest: Vec<(u32, usize)> = (0..h)
            .filter(|u| m[*u] == 0.0)
            .map(|u| {
                let (words, lane) = philox_words(seed, MRI_STREAM, u as u64);
                (words[lane], u)
            })
            .collect();
        rest.sort();
        for (_, u) in rest.into_iter().take(k - c) {
            m[u] = 1.0;
        }
        Some(m)
    }

    /// The measurement shape for images of `shape` [N, C, H, W], or an error naming `what`
    /// (the tensor) when the operator cannot take that size.
    pub fn measurement_shape(&self, shape: &[usize], what: &str) -> Result<Vec<usize>> {
        if shape.len() != 4 || shape.contains(&0) {
            return Err(Error::Shape {
                op: "inverse",
                tensor: what.into(),
                got: shape.to_vec(),
                expected: "a non-empty [N, C, H, W] image batch".into(),
            });
        }
        match self {
            Operator::Sr(r) => {
                if shape[2] % r != 0 || shape[3] % r != 0 {
                    return Err(Error::Shape {
                        op: "inverse",
                        tensor: what.into(),
                        got: shape.to_vec(),
                        expected: format!(
                            "H and W divisible by {r} for operator `{}`",
                            self.name()
                        ),
                    });
                }
                Ok(vec![shape[0], shape[1], shape[2] / r, shape[3] / r])
            }
            Operator::Mri { .. } => Ok(vec![shape[0], shape[1], shape[2], shape[3], 2]),
            _ => Ok(shape.to_vec()),
        }
    }

    /// The 1-D blur taps (normalised to sum 1), or None for non-blur operators.
    pub fn taps(&self) -> Option<Vec<f64>> {
        let k: Vec<f64> = match self {
            Operator::BlurGauss => (0..GAUSS_TAPS)
                .map(|i| {
                    let d = i as f64 - (GAUSS_TAPS / 2) as f64;
                    (-d * d / (2.0 * GAUSS_SIGMA * GAUSS_SIGMA)).exp()
                })
                .collect(),
            Operator::BlurBox => vec![1.0; BOX_TAPS],
            _ => return None,
        };
        let s: f64 = k.iter().sum();
        Some(k.iter().map(|v| v / s).collect())
    }

    /// The [H, W] keep mask (1 kept, 0 lost) of the inpainting operators, None otherwise.
    /// `inpaint-box` loses rows and columns [H/4, H/4 + H/2) × [W/4, W/4 + W/2);
    /// `inpaint-random` keeps pixel e = i·W + j when Philox's uniform (top 24 bits of word
    /// e % 4 of block e / 4, stream [`MASK_STREAM`], key = seed) is below [`KEEP_PROB`].
    pub fn mask(&self, h: usize, w: usize) -> Option<Vec<f32>> {
        match *self {
            Operator::InpaintBox => {
                let (h0, w0) = (h / 4, w / 4);
                let (h1, w1) = (h0 + h / 2, w0 + w / 2);
                Some(
                    (0..h * w)
                        .map(|e| {
                            let (i, j) = (e / w, e % w);
                            let lost = (h0..h1).contains(&i) && (w0..w1).contains(&j);
                            if lost {
                                0.0
                            } else {
                                1.0
                            }
                        })
                        .collect(),
                )
            }
            Operator::InpaintRandom { seed } => Some(
                (0..h * w)
                    .map(|e| {
                        let (words, lane) = philox_words(seed, MASK_STREAM, e as u64);
                        let u = (words[lane] >> 8) as f64 / 16777216.0;
                        if u < KEEP_PROB {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The map `mode` applied in f64 on the host to `x` of shape `shape` ([N, C, H, W] for A and
    /// the image side; the measurement shape for Aᵀ and A†). Returns the result; its shape is
    /// [`Operator::measurement_shape`] for A and `image` for Aᵀ/A†.
    pub fn apply_host(&self, mode: Mode, x: &[f64], image: &[usize]) -> Result<Vec<f64>> {
        let ms = self.measurement_shape(image, "x")?;
        let (h, w) = (image[2], image[3]);
        let planes = image[0] * image[1];
        if mode == Mode::Pinv && !self.has_pinv() {
            return Err(no_pinv(self));
        }
        let input_len = if mode == Mode::Forward {
            image.iter().product::<usize>()
        } else {
            ms.iter().product()
        };
        if x.len() != input_len {
            return Err(Error::Argument {
                op: "degrade",
                arg: "x",
                reason: format!("{} values for {input_len}", x.len()),
            });
        }
        Ok(match *self {
            Operator::Sr(r) => {
                let (ho, wo) = (h / r, w / r);
                let s = 1.0 / (r * r) as f64;
                match mode {
                    Mode::Forward => (0..planes * ho * wo)
                        .map(|e| {
                            let (p, i, j) = (e / (ho * wo), e % (ho * wo) / wo, e % wo);
                            let mut acc = 0.0;
                            for a in 0..r {
                                for b in 0..r {
                                    acc += x[p * h * w + (r * i + a) * w + r * j + b];
                                }
                            }
                            s * acc
                        })
                        .collect(),
                    _ => {
                        let sc = if mode == Mode::Adjoint { s } else { 1.0 };
                        (0..planes * h * w)
                            .map(|e| {
                                let (p, i, j) = (e / (h * w), e % (h * w) / w, e % w);
                                sc * x[p * ho * wo + (i / r) * wo + j / r]
                            })
                            .collect()
                    }
                }
            }
            Operator::InpaintBox | Operator::InpaintRandom { .. } => {
                let m = self.mask(h, w).unwrap_or_default();
                x.iter()
                    .enumerate()
                    .map(|(e, v)| m[e % (h * w)] as f64 * v)
                    .collect()
            }
            Operator::BlurGauss | Operator::BlurBox => {
                let mut k = self.taps().unwrap_or_default();
                if mode == Mode::Adjoint {
                    k.reverse();
                }
                let t = k.len() as isize;
                let half = t / 2;
                (0..planes * h * w)
                    .map(|e| {
                        let (p, i, j) = (e / (h * w), (e % (h * w) / w) as isize, (e % w) as isize);
                        let mut acc = 0.0;
                        for a in 0..t {
                            let yy = i + a - half;
                            if yy < 0 || yy >= h as isize {
                                continue;
                            }
                            for b in 0..t {
                                let xx = j + b - half;
                                if xx < 0 || xx >= w as isize {
                                    continue;
                                }
                                acc += k[a as usize]
                                    * k[b as usize]
                                    * x[p * h * w + yy as usize * w + xx as usize];
                            }
                        }
                        acc
                    })
                    .collect()
            }
            Operator::Mri { .. } => {
                let m = self.kspace_mask(h).unwrap_or_default();
                let norm = 1.0 / ((h * w) as f64).sqrt();
                let (ch, cw) = (h / 2, w / 2);
                let tau = std::f64::consts::TAU;
                let phase = |u: usize, v: usize, a: usize, b: usize| {
                    let ku = (u + h - ch) % h;
                    let kv = (v + w - cw) % w;
                    tau * (((ku * a) % h) as f64 / h as f64 + ((kv * b) % w) as f64 / w as f64)
                };
                let hw = h * w;
                if mode == Mode::Forward {
                    let mut y = vec![0.0; planes * hw * 2];
                    for p in 0..planes {
                        for u in (0..h).filter(|u| m[*u] != 0.0) {
                            for v in 0..w {
                                let (mut re, mut im) = (0.0, 0.0);
                                for a in 0..h {
                                    for b in 0..w {
                                        let (sn, cs) = phase(u, v, a, b).sin_cos();
                                        let xv = x[p * hw + a * w + b];
                                        re += xv * cs;
                                        im -= xv * sn;
                                    }
                                }
                                let o = (p * hw + u * w + v) * 2;
                                y[o] = norm * re;
                                y[o + 1] = norm * im;
                            }
                        }
                    }
                    y
                } else {
                    (0..planes * hw)
                        .map(|e| {
                            let (p, a, b) = (e / hw, e % hw / w, e % w);
                            let mut acc = 0.0;
                            for u in (0..h).filter(|u| m[*u] != 0.0) {
                                for v in 0..w {
                                    let (sn, cs) = phase(u, v, a, b).sin_cos();
                                    let o = (p * hw + u * w + v) * 2;
                                    acc += x[o] * cs - x[o + 1] * sn;
                                }
                            }
                            norm * acc
                        })
                        .collect()
                }
            }
        })
    }
}

fn no_pinv(op: &Operator) -> Error {
    Error::Argument {
        op: "inverse",
        arg: "operator",
        reason: format!(
            "`{}` has no closed-form pseudo-inverse (method pinv needs sr2, sr4, inpaint-box, inpaint-random or mri4x)",
            op.name()
        ),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Pool,
    Unpool,
    Mask,
    Blur,
    Dft,
    Idft,
}

fn key(kind: Kind) -> KernelKey {
    let flag = match kind {
        Kind::Pool => "K_POOL",
        Kind::Unpool => "K_UNPOOL",
        Kind::Mask => "K_MASK",
        Kind::Blur => "K_BLUR",
        Kind::Dft => "K_DFT",
        Kind::Idft => "K_IDFT",
    };
    let k = KernelKey::new::<Params>("degrade", "main", DType::F32, [WG_1D, 1, 1]).flag(flag, true);
    k.flag("K_KSPACE", matches!(kind, Kind::Dft | Kind::Idft))
}

/// All variants (for validation); f32 only.
pub fn variants(dt: DType) -> Vec<KernelKey> {
    if dt != DType::F32 {
        return Vec::new();
    }
    [
        Kind::Pool,
        Kind::Unpool,
        Kind::Mask,
        Kind::Blur,
        Kind::Dft,
        Kind::Idft,
    ]
    .into_iter()
    .map(key)
    .collect()
}

/// An operator bound to an image size on one device: holds the uploaded mask.
pub struct Degrader {
    op: Operator,
    image: [usize; 2],
    mask: Option<Tensor>,
}

impl Degrader {
    /// Binds `op` to [H, W] images (uploads the inpainting mask).
    pub fn new(gpu: &Gpu, op: Operator, h: usize, w: usize) -> Result<Degrader> {
        op.measurement_shape(&[1, 1, h, w], "x")?;
        let mask = match (op.mask(h, w), op.kspace_mask(h)) {
            (Some(m), _) => Some(Tensor::from_f32(
                gpu,
                "degrade.mask",
                &[h, w],
                &m,
                DType::F32,
            )?),
            (None, Some(m)) => Some(Tensor::from_f32(
                gpu,
                "degrade.kspace_mask",
                &[h],
                &m,
                DType::F32,
            )?),
            _ => None,
        };
        Ok(Degrader {
            op,
            image: [h, w],
            mask,
        })
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.op
    }

    /// Records y = A x, Aᵀ x or A† x. For A, x is the image batch [N, C, H, W] and y the
    /// measurement; for Aᵀ and A† the other way round. Both f32.
    pub fn record(&self, rec: &mut Recorder<'_>, mode: Mode, x: &Tensor, y: &Tensor) -> Result<()> {
        const OP: &str = "degrade";
        nonempty(OP, x)?;
        let complex = matches!(self.op, Operator::Mri { .. });
        let (rx, ry) = match (complex, mode == Mode::Forward) {
            (false, _) => (4, 4),
            (true, true) => (4, 5),
            (true, false) => (5, 4),
        };
        for (t, r) in [(x, rx), (y, ry)] {
            if r == 5 {
                rank(OP, t, 5, "[N, C, H, W, 2] (complex k-space)")?;
            } else {
                rank(OP, t, 4, "[N, C, H, W]")?;
            }
        }
        for t in [x, y] {
            super::dtype_is(OP, t, DType::F32, "degradation operators run in f32")?;
        }
        let [h, w] = self.image;
        let (img, meas) = if mode == Mode::Forward {
            (x, y)
        } else {
            (y, x)
        };
        let s = img.shape();
        if s[2..] != [h, w] {
            return Err(shape_err(
                OP,
                img,
                format!("an image of {h}×{w} (the operator's size)"),
            ));
        }
        let ms = self.op.measurement_shape(s, img.name())?;
        if meas.shape() != ms {
            return Err(shape_err(OP, meas, format!("expected {ms:?}")));
        }
        if mode == Mode::Pinv && !self.op.has_pinv() {
            return Err(no_pinv(&self.op));
        }
        let (xi, yo) = (x.shape(), y.shape());
        let mut p = Params {
            n: u32_param(OP, "output elements", y.numel())?,
            h: xi[2] as u32,
            w: xi[3] as u32,
            ho: yo[2] as u32,
            wo: yo[3] as u32,
            r: 1,
            ntaps: 0,
            scale: 1.0,
            taps: [[0.0; 4]; 3],
        };
        let kind = match self.op {
            Operator::Sr(r) => {
                p.r = r as u32;
                let s = 1.0 / (r * r) as f32;
                match mode {
                    Mode::Forward => {
                        p.scale = s;
                        Kind::Pool
                    }
                    Mode::Adjoint => {
                        p.scale = s;
                        Kind::Unpool
                    }
                    Mode::Pinv => Kind::Unpool,
                }
            }
            Operator::InpaintBox | Operator::InpaintRandom { .. } => Kind::Mask,
            Operator::BlurGauss | Operator::BlurBox => {
                let mut k = self.op.taps().unwrap_or_default();
                if mode == Mode::Adjoint {
                    k.reverse();
                }
                p.ntaps = k.len() as u32;
                for (i, v) in k.iter().enumerate() {
                    p.taps[i / 4][i % 4] = *v as f32;
                }
                Kind::Blur
            }
            Operator::Mri { .. } => {
                // Both planes are the image's H×W.
                (p.h, p.w, p.ho, p.wo) = (h as u32, w as u32, h as u32, w as u32);
                p.scale = (1.0 / ((h * w) as f64).sqrt()) as f32;
                if mode == Mode::Forward {
                    Kind::Dft
                } else {
                    Kind::Idft
                }
            }
        };
        let gpu = rec.gpu();
        let grid = grid_1d(gpu, OP, (y.numel() as u64).div_ceil(WG_1D as u64))?;
        let mut binds = vec![("x", x.binding(gpu, OP)?), ("y", y.binding(gpu, OP)?)];
        if let (Kind::Mask | Kind::Dft | Kind::Idft, Some(m)) = (kind, &self.mask) {
            binds.push(("m", m.binding(gpu, OP)?));
        }
        rec.dispatch(&key(kind), &p, &binds, grid)?;
        Ok(())
    }
}
