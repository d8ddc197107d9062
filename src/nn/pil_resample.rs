//! Pillow's 8-bit bicubic resize (`Image.resize(size, Image.BICUBIC)` on an `RGB`/`L` image;
//! `libImaging/Resample.c`, `ImagingResample` with the default box), the resampling torchvision's
//! `Resize(…, InterpolationMode.BICUBIC)` runs on PIL images and therefore CLIP's preprocessing.
//!
//! The algorithm, as Pillow does it, so that the uint8 result is the same byte for byte:
//! - per axis, `precompute_coeffs`: scale = in/out; the filter (Keys' cubic with a = −0.5, support
//!   2) is stretched by max(scale, 1) when downscaling (antialiasing); output pixel x takes input
//!   pixels ⌊center − support + ½⌋ .. ⌊center + support + ½⌋ (clamped to the image) with
//!   center = (x + ½)·scale, weights normalised to sum 1 in f64;
//! - weights to fixed point with 22 fractional bits, rounded half away from zero;
//! - two separable passes (the horizontal one over the rows the vertical pass reads only), each
//!   accumulating in i32 from ½ (2²¹), shifting right by 22 (floor) and clamping to 0..=255, so the
//!   intermediate image is uint8; a pass whose size is unchanged is skipped; Pillow ≥ 13 runs the
//!   vertical pass first when the height shrinks by more than twice what the width does.

use crate::error::{Error, Result};

/// Fractional bits of the fixed-point weights (`PRECISION_BITS` = 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

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
fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
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
            let w = bicubic(((x + xmin) as f64 - center + 0.5) * ss);
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
/// exactly as Pillow's `Image.resize((ow, oh), Image.BICUBIC)` does.
pub fn resize_bicubic_u8(
    src: &[u8],
    h: usize,
    w: usize,
    channels: usize,
    oh: usize,
    ow: usize,
) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::Argument {
        op: "resize_bicubic_u8",
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
    let hc = coeffs(w, ow);
    let vc = coeffs(h, oh);
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

#[cfg(test)]
mod tests {
    use super::resize_bicubic_u8;

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
}
