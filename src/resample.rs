//! Pillow's convolution resampling of 8-bit images (`Image.resize(size, BICUBIC | LANCZOS)` on an
//! `RGB`/`L` image; `libImaging/Resample.c`, `ImagingResample` with the default box), byte for
//! byte. Two users: torchvision's `Resize(…, BICUBIC)` on PIL images in CLIP's preprocessing
//! (`nn::clip_transform`), and diffusers' `VaeImageProcessor`, which resizes img2img inputs whose
//! sides are not multiples of the VAE's factor with Lanczos. Host code, no GPU.
//!
//! The algorithm, as Pillow does it:
//! - per axis, `precompute_coeffs`: scale = in/out; the filter (Keys' cubic with a = −0.5,
//!   support 2; or Lanczos a = 3, support 3) is stretched by max(scale, 1) when downscaling
//!   (antialiasing); output pixel x takes input pixels ⌊center − support + ½⌋ ..
//!   ⌊center + support + ½⌋ (clamped to the image) with center = (x + ½)·scale, weights
//!   normalised to sum 1 in f64;
//! - weights to fixed point with 22 fractional bits, rounded half away from zero;
//! - two separable passes (the horizontal one over the rows the vertical pass reads only), each
//!   accumulating in i32 from ½ (2²¹), shifting right by 22 (floor) and clamping to 0..=255, so the
//!   intermediate image is uint8; a pass whose size is unchanged is skipped; Pillow ≥ 13 runs the
//!   vertical pass first when the height shrinks by more than twice what the width does.

use crate::error::{Error, Result};

/// Fractional bits of the fixed-point weights (`PRECISION_BITS` = 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

/// The resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Pillow's `bicubic_filter` (a = −0.5), support 2.
    Bicubic,
    /// Pillow's `lanczos_filter` (a = 3), support 3.
    Lanczos,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bicubic => bicubic(x),
            Filter::Lanczos => lanczos(x),
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Pillow's `lanczos_filter` (a = 3).
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `bicubic_filter` (a = −0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// One axis' taps: for each output pixel its first input pixel and count, and `ksize` fixed-point
/// weights per output pixel.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    kk: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box [0, in_size).
fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let support_1 = filter.support();
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support_1 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero; a negative start clamps to 0 either way.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.weight(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { bounds, ksize, kk }
}

/// `clip8`: the accumulator to a byte (floor shift, clamp).
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an 8-bit image `src` ([h, w, channels] row-major, interleaved) to [oh, ow, channels]
/// exactly as Pillow's `Image.resize((ow, oh), filter)` does.
pub fn resize_u8(
    src: &[u8],
    h: usize,
    w: usize,
    channels: usize,
    oh: usize,
    ow: usize,
    filter: Filter,
) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::Argument {
        op: "resize",
        arg: "image",
        reason,
    };
    if h == 0 || w == 0 || oh == 0 || ow == 0 || channels == 0 {
        return Err(bad(format!(
            "sizes must be positive (input {h}×{w}, output {oh}×{ow}, {channels} channels)"
        )));
    }
    // Pillow's image sizes are C ints; the weights' fixed point needs sums below 2³¹.
    let limit = 1usize << 24;
    if [h, w, oh, ow].iter().any(|&s| s >= limit) || channels > 4 {
        return Err(bad(format!(
            "input {h}×{w}×{channels} or output {oh}×{ow} is outside Pillow's range"
        )));
    }
    let n = crate::size::elements("resize input", &[h, w, channels])?;
    if src.len() != n {
        return Err(bad(format!(
            "{} bytes for a {h}×{w}×{channels} image ({n} expected)",
            src.len()
        )));
    }
    crate::size::host_elements("resize output", &[oh, ow, channels], 1)?;
    crate::size::host_elements("resize intermediate", &[h, ow, channels], 1)?;
    let need_h = ow != w;
    let need_v = oh != h;
    let hc = coeffs(w, ow, filter);
    let vc = coeffs(h, oh, filter);
    // Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the height is
    // reduced by more than twice the width's reduction; the horizontal pass first otherwise.
    // The order changes the uint8 rounding between the passes (found and checked against
    // Pillow 13.0.0 on random sizes by the goldens' case `j` and tests/daclip_encoder.rs).
    let vertical_first =
        need_h && need_v && oh < h && (h as i64 - oh as i64) > 2 * (w as i64 - ow as i64);
    let out = if vertical_first {
        let tmp = vertical(src, w * channels, &vc, 0, oh);
        horizontal(&tmp, w, channels, &hc, 0, oh)
    } else {
        let (mut img, mut row0) = (None, 0);
        if need_h {
            // Only the rows the vertical pass reads.
            let first = vc.bounds[0].0;
            let last = vc.bounds[oh - 1].0 + vc.bounds[oh - 1].1;
            img = Some(horizontal(src, w, channels, &hc, first, last - first));
            row0 = first;
        }
        let iw = if need_h { ow } else { w };
        let cur = img.as_deref().unwrap_or(src);
        if need_v {
            vertical(cur, iw * channels, &vc, row0, oh)
        } else {
            cur.to_vec()
        }
    };
    debug_assert_eq!(out.len(), oh * ow * channels);
    Ok(out)
}

/// `ImagingResampleHorizontal_8bpc` over `rows` input rows from `first`: [rows, ow, channels].
fn horizontal(
    src: &[u8],
    w: usize,
    channels: usize,
    hc: &Coeffs,
    first: usize,
    rows: usize,
) -> Vec<u8> {
    let ow = hc.bounds.len();
    let mut out = vec![0u8; rows * ow * channels];
    for y in 0..rows {
        let srow = &src[(y + first) * w * channels..(y + first + 1) * w * channels];
        for (xx, &(xmin, n)) in hc.bounds.iter().enumerate() {
            let k = &hc.kk[xx * hc.ksize..xx * hc.ksize + n];
            for c in 0..channels {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (x, &kx) in k.iter().enumerate() {
                    ss += srow[(x + xmin) * channels + c] as i32 * kx;
                }
                out[(y * ow + xx) * channels + c] = clip8(ss);
            }
        }
    }
    out
}

/// `ImagingResampleVertical_8bpc` of an image with `row_len` bytes per row whose first row is
/// input row `row0`: [oh, row_len].
fn vertical(src: &[u8], row_len: usize, vc: &Coeffs, row0: usize, oh: usize) -> Vec<u8> {
    let mut out = vec![0u8; oh * row_len];
    for yy in 0..oh {
        let (ymin, n) = vc.bounds[yy];
        let ymin = ymin - row0;
        let k = &vc.kk[yy * vc.ksize..yy * vc.ksize + n];
        for x in 0..row_len {
            let mut ss: i32 = 1 << (PRECISION_BITS - 1);
            for (y, &ky) in k.iter().enumerate() {
                ss += src[(y + ymin) * row_len + x] as i32 * ky;
            }
            out[yy * row_len + x] = clip8(ss);
        }
    }
    out
}

/// Pillow's `Image.resize((ow, oh), Image.BICUBIC)` of [h, w, channels] bytes.
pub fn resize_bicubic_u8(
    src: &[u8],
    h: usize,
    w: usize,
    channels: usize,
    oh: usize,
    ow: usize,
) -> Result<Vec<u8>> {
    resize_u8(src, h, w, channels, oh, ow, Filter::Bicubic)
}

/// An 8-bit image with `channels` interleaved samples per pixel (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// Resizes `img` to `width`×`height` as Pillow's `resize(…, LANCZOS)`; the same size is a copy.
pub fn lanczos_resize(img: &Image8, width: usize, height: usize) -> Result<Image8> {
    let data = resize_u8(
        &img.data,
        img.height,
        img.width,
        img.channels,
        height,
        width,
        Filter::Lanczos,
    )?;
    Ok(Image8 {
        width,
        height,
        channels: img.channels,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant_and_same_size_is_identity() {
        for (h, w, oh, ow) in [
            (1, 1, 7, 5),
            (40, 9, 3, 31),
            (13, 13, 13, 2),
            (5, 90, 60, 4),
        ] {
            for c in [0u8, 1, 77, 254, 255] {
                let img = vec![c; h * w * 3];
                let out = resize_bicubic_u8(&img, h, w, 3, oh, ow).unwrap();
                assert!(
                    out.iter().all(|&v| v == c),
                    "{h}×{w} → {oh}×{ow}, value {c}"
                );
            }
        }
        let img: Vec<u8> = (0..6 * 4 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(resize_bicubic_u8(&img, 6, 4, 3, 6, 4).unwrap(), img);
        assert!(resize_bicubic_u8(&img, 6, 4, 3, 0, 4).is_err());
        assert!(resize_bicubic_u8(&img[1..], 6, 4, 3, 2, 2).is_err());
    }

    #[test]
    fn same_size_is_a_copy_and_weights_sum_to_one() {
        let img = Image8 {
            width: 5,
            height: 3,
            channels: 3,
            data: (0..45).map(|v| (v * 5) as u8).collect(),
        };
        assert_eq!(lanczos_resize(&img, 5, 3).unwrap(), img);
        for c in [
            coeffs(52, 48, Filter::Lanczos),
            coeffs(37, 32, Filter::Lanczos),
        ] {
            for (xx, &(_, n)) in c.bounds.iter().enumerate() {
                let k = &c.kk[xx * c.ksize..xx * c.ksize + n];
                let s: i64 = k.iter().map(|&v| v as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= n as i64, "{s}");
            }
        }
        // A constant image stays constant.
        let flat = Image8 {
            width: 13,
            height: 11,
            channels: 1,
            data: vec![200; 143],
        };
        let r = lanczos_resize(&flat, 8, 8).unwrap();
        assert!(r.data.iter().all(|&v| v == 200), "{:?}", r.data);
    }
}
