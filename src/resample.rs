//! Pillow's convolution resampling with the Lanczos (a = 3) filter on 8-bit images, bit for bit
//! (Pillow's `Image.resize(size, Image.LANCZOS)`, `libImaging/Resample.c`): per output pixel the
//! filter's taps over the source, normalised in f64, quantised to fixed point with 22 fraction
//! bits, accumulated in integers with a rounding half and clipped to 0..=255; a horizontal pass
//! over the rows the vertical pass needs, then a vertical pass, each rounding to 8 bits. This is
//! how diffusers' `VaeImageProcessor` resizes a picture whose sides are not multiples of the
//! VAE's factor. Host code, no GPU.

use crate::error::{Error, Result};

const PRECISION_BITS: u32 = 32 - 8 - 2;
const SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-SUPPORT..SUPPORT).contains(&x) {
        sinc(x) * sinc(x / SUPPORT)
    } else {
        0.0
    }
}

/// Taps of one axis: per output index (first source index, fixed-point weights).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncation of values that may be negative, then clamped.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| lanczos((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let f = v * (1u32 << PRECISION_BITS) as f64;
                    if f < 0.0 {
                        (f - 0.5) as i32
                    } else {
                        (f + 0.5) as i32
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) * 256 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
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
    let c = img.channels;
    if width == 0 || height == 0 || img.width == 0 || img.height == 0 {
        return Err(Error::Argument {
            op: "resize",
            arg: "size",
            reason: format!(
                "cannot resize {}×{} to {width}×{height}",
                img.width, img.height
            ),
        });
    }
    if img.data.len() != img.width * img.height * c {
        return Err(Error::HostLength {
            tensor: "image".into(),
            got: img.data.len(),
            want: img.width * img.height * c,
            shape: vec![img.height, img.width, c],
        });
    }
    let horizontal = width != img.width;
    let vertical = height != img.height;
    let kv = coefficients(img.height, height);
    // Rows of the source the vertical pass reads.
    let (first, last) = match (kv.first(), kv.last()) {
        (Some(a), Some(b)) => (a.0, b.0 + b.1.len()),
        _ => (0, img.height),
    };
    let mut cur = img.clone();
    let mut row0 = 0;
    if horizontal {
        let kh = coefficients(img.width, width);
        let rows = last - first;
        let mut data = vec![0u8; rows * width * c];
        for y in 0..rows {
            let src = &img.data[(y + first) * img.width * c..];
            for (xx, (xmin, k)) in kh.iter().enumerate() {
                for ch in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &w) in k.iter().enumerate() {
                        ss += src[(x + xmin) * c + ch] as i64 * w as i64;
                    }
                    data[(y * width + xx) * c + ch] = clip8(ss);
                }
            }
        }
        cur = Image8 {
            width,
            height: rows,
            channels: c,
            data,
        };
        row0 = first;
    }
    if vertical {
        let w = cur.width;
        let mut data = vec![0u8; height * w * c];
        for (yy, (ymin, k)) in kv.iter().enumerate() {
            for xx in 0..w {
                for ch in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (y, &wt) in k.iter().enumerate() {
                        ss += cur.data[((y + ymin - row0) * w + xx) * c + ch] as i64 * wt as i64;
                    }
                    data[(yy * w + xx) * c + ch] = clip8(ss);
                }
            }
        }
        cur = Image8 {
            width: w,
            height,
            channels: c,
            data,
        };
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_a_copy_and_weights_sum_to_one() {
        let img = Image8 {
            width: 5,
            height: 3,
            channels: 3,
            data: (0..45).map(|v| (v * 5) as u8).collect(),
        };
        assert_eq!(lanczos_resize(&img, 5, 3).unwrap(), img);
        for (_, k) in coefficients(52, 48).iter().chain(&coefficients(37, 32)) {
            let s: i64 = k.iter().map(|&v| v as i64).sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{s}");
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
