//! Sample tensors ↔ PNG grids (the `image` crate). Values in [−1, 1] map to [0, 255];
//! 1-channel samples become grayscale, 3-channel RGB. Files are written atomically.

use crate::error::{Error, Result};
use std::path::Path;

/// Writes `data` ([N, C, H, W] in [−1, 1]) as a grid of `cols` columns (√N rounded up when
/// `None`) with 2-pixel gutters, atomically ([`crate::output::OutputPlan`]).
pub fn write_grid(path: &Path, data: &[f32], shape: [usize; 4], cols: Option<usize>) -> Result<()> {
    let png = encode_grid(data, shape, cols)?;
    crate::output::OutputPlan::write_one("PNG grid", path, &png)
}

/// The PNG bytes of [`write_grid`]'s grid.
pub fn encode_grid(data: &[f32], shape: [usize; 4], cols: Option<usize>) -> Result<Vec<u8>> {
    encode(data, shape, cols, 2)
}

/// The PNG bytes of one image as it is (no gutter) when N = 1, else of [`encode_grid`]'s grid
/// (what `diffuse txt2img` writes: a 512×512 prompt gives a 512×512 PNG).
pub fn encode_images(data: &[f32], shape: [usize; 4]) -> Result<Vec<u8>> {
    encode(data, shape, None, if shape[0] == 1 { 0 } else { 2 })
}

fn encode(data: &[f32], shape: [usize; 4], cols: Option<usize>, gap: usize) -> Result<Vec<u8>> {
    let [n, c, h, w] = shape;
    let fail = |reason: String| Error::Argument {
        op: "PNG grid",
        arg: "samples",
        reason,
    };
    if c != 1 && c != 3 {
        return Err(fail(format!(
            "{c}-channel samples cannot be a PNG (1 or 3 channels)"
        )));
    }
    let len = crate::size::elements("PNG grid samples", &shape)?;
    if data.len() != len {
        return Err(fail(format!("{} values for shape {shape:?}", data.len())));
    }
    let cols = cols
        .unwrap_or_else(|| (n as f64).sqrt().ceil() as usize)
        .max(1);
    let rows = n.div_ceil(cols);
    let side = |k: usize, s: usize| {
        k.checked_mul(s + gap)
            .and_then(|v| v.checked_add(gap))
            .and_then(|v| u32::try_from(v).ok())
    };
    let (Some(gw), Some(gh)) = (side(cols, w), side(rows, h)) else {
        return Err(fail(format!(
            "a grid of {n} images of {h}×{w} is too large for a PNG"
        )));
    };
    crate::size::host_alloc(
        "PNG grid",
        crate::size::mul("PNG grid", gw as usize, gh as usize)?,
        3,
    )?;
    let mut img = image::RgbImage::from_pixel(gw, gh, image::Rgb([32, 32, 32]));
    let to_u8 = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
    for s in 0..n {
        let (ox, oy) = (gap + (s % cols) * (w + gap), gap + (s / cols) * (h + gap));
        for y in 0..h {
            for x in 0..w {
                let at = |ch: usize| data[((s * c + ch) * h + y) * w + x];
                let px = if c == 1 {
                    let g = to_u8(at(0));
                    [g, g, g]
                } else {
                    [to_u8(at(0)), to_u8(at(1)), to_u8(at(2))]
                };
                img.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(px));
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    Ok(out.into_inner())
}

/// Reads a PNG as [1, C, H, W] in [−1, 1]: every colour type and bit depth the `image` crate
/// decodes, at full precision (16-bit samples keep 16 bits). Gray and gray+alpha images give
/// C = 1, RGB and RGBA images C = 3; alpha is dropped (the stored colour is used, not
/// composited). [`to_channels`] converts to a model's channel count.
pub fn read_png(path: &Path) -> Result<(Vec<f32>, [usize; 4])> {
    let img = image::open(path).map_err(|e| Error::Load {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let gray = matches!(
        img.color(),
        image::ColorType::L8
            | image::ColorType::L16
            | image::ColorType::La8
            | image::ColorType::La16
    );
    let scale = |v: f32| v.clamp(0.0, 1.0) * 2.0 - 1.0;
    if gray {
        let g = img.to_luma32f();
        Ok((g.pixels().map(|p| scale(p.0[0])).collect(), [1, 1, h, w]))
    } else {
        let rgb = img.to_rgb32f();
        let mut out = vec![0.0; 3 * h * w];
        for (i, p) in rgb.pixels().enumerate() {
            for ch in 0..3 {
                out[ch * h * w + i] = scale(p.0[ch]);
            }
        }
        Ok((out, [1, 3, h, w]))
    }
}

/// Reads a picture as 8-bit RGB (gray repeated, alpha dropped, 16-bit samples rounded to 8
/// bits), as diffusers' `load_image` (`PIL.Image.convert("RGB")`) gives it for 8-bit files.
pub fn read_rgb8(path: &Path) -> Result<crate::resample::Image8> {
    let img = image::open(path).map_err(|e| Error::Load {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let rgb = img.to_rgb8();
    Ok(crate::resample::Image8 {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        channels: 3,
        data: rgb.into_raw(),
    })
}

/// Rec. 709 luma weights (the `image` crate's RGB → gray conversion).
const LUMA: [f32; 3] = [0.2126, 0.7152, 0.0722];

/// Converts [N, C, H, W] images to `channels`: 1 → 3 repeats the gray value, 3 → 1 takes the
/// Rec. 709 luma Y = 0.2126 R + 0.7152 G + 0.0722 B (as the `image` crate does); equal counts
/// are returned unchanged. Other pairs are an error naming both counts.
pub fn to_channels(
    data: Vec<f32>,
    shape: [usize; 4],
    channels: usize,
) -> Result<(Vec<f32>, [usize; 4])> {
    let [n, c, h, w] = shape;
    let hw = h * w;
    match (c, channels) {
        (a, b) if a == b => Ok((data, shape)),
        (1, 3) => {
            let mut out = Vec::with_capacity(3 * data.len());
            for img in data.chunks(hw) {
                for _ in 0..3 {
                    out.extend_from_slice(img);
                }
            }
            Ok((out, [n, 3, h, w]))
        }
        (3, 1) => {
            let mut out = Vec::with_capacity(data.len() / 3);
            for img in data.chunks(3 * hw) {
                out.extend(
                    (0..hw).map(|i| {
                        LUMA[0] * img[i] + LUMA[1] * img[hw + i] + LUMA[2] * img[2 * hw + i]
                    }),
                );
            }
            Ok((out, [n, 1, h, w]))
        }
        (a, b) => Err(Error::Argument {
            op: "image channels",
            arg: "channels",
            reason: format!("cannot convert {a}-channel images to the model's {b} channels"),
        }),
    }
}

/// Reads an 8-bit RGB PNG as its bytes (HWC, RGB) and (height, width): the input of models
/// that take RGB photos as they are (DA-CLIP restoration). Any other colour type (gray, alpha,
/// 16-bit, palette expanded to those) is an error naming the file and the type.
pub fn read_rgb8_png(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let fail = |reason: String| Error::Load {
        file: path.display().to_string(),
        reason,
    };
    let img = image::open(path).map_err(|e| fail(e.to_string()))?;
    match img {
        image::DynamicImage::ImageRgb8(rgb) => {
            let (w, h) = (rgb.width() as usize, rgb.height() as usize);
            Ok((rgb.into_raw(), h, w))
        }
        other => Err(fail(format!(
            "the image is {:?}; this model restores 8-bit RGB images (convert it to RGB first)",
            other.color()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::{read_png, to_channels};

    #[test]
    fn sixteen_bit_gray_alpha_is_gray_at_full_precision() {
        let d = std::env::temp_dir().join(format!("diffuse-png-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("la16.png");
        // 2×1 pixels: gray 0 and 65535·(3/4) rounded, alpha arbitrary.
        let v = [(0u16, 65535u16), (49151, 0)];
        let img = image::ImageBuffer::<image::LumaA<u16>, Vec<u16>>::from_fn(2, 1, |x, _| {
            image::LumaA([v[x as usize].0, v[x as usize].1])
        });
        img.save(&p).unwrap();
        let (x, s) = read_png(&p).unwrap();
        assert_eq!(s, [1, 1, 1, 2]);
        assert_eq!(x[0], -1.0);
        let want = 49151.0 / 65535.0 * 2.0 - 1.0;
        assert!((x[1] - want).abs() < 1e-6, "{} vs {want}", x[1]);
        let p = d.join("rgba16.png");
        let img = image::ImageBuffer::<image::Rgba<u16>, Vec<u16>>::from_pixel(
            1,
            1,
            image::Rgba([65535, 0, 0, 7]),
        );
        img.save(&p).unwrap();
        let (x, s) = read_png(&p).unwrap();
        assert_eq!((s, x), ([1, 3, 1, 1], vec![1.0, -1.0, -1.0]));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn channel_conversion_rule() {
        let (g, s) = to_channels(vec![0.5, -1.0], [1, 1, 1, 2], 3).unwrap();
        assert_eq!(s, [1, 3, 1, 2]);
        assert_eq!(g, vec![0.5, -1.0, 0.5, -1.0, 0.5, -1.0]);
        // Luma of (R, G, B) = (1, 0, -1) with Rec. 709 weights.
        let (y, s) = to_channels(vec![1.0, 0.0, -1.0], [1, 3, 1, 1], 1).unwrap();
        assert_eq!(s, [1, 1, 1, 1]);
        assert!((y[0] - (0.2126 - 0.0722)).abs() < 1e-7);
        assert!(to_channels(vec![0.0; 2], [1, 2, 1, 1], 3).is_err());
    }
}
