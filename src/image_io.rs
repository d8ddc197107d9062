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
    let gap = 2;
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

/// Reads a PNG as [1, C, H, W] in [−1, 1] (C = 1 for grayscale images, else 3).
pub fn read_png(path: &Path) -> Result<(Vec<f32>, [usize; 4])> {
    let img = image::open(path).map_err(|e| Error::Load {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let gray = matches!(
        img.color(),
        image::ColorType::L8 | image::ColorType::L16 | image::ColorType::La8
    );
    if gray {
        let g = img.to_luma8();
        Ok((
            g.pixels().map(|p| p.0[0] as f32 / 127.5 - 1.0).collect(),
            [1, 1, h, w],
        ))
    } else {
        let rgb = img.to_rgb8();
        let mut out = vec![0.0; 3 * h * w];
        for (i, p) in rgb.pixels().enumerate() {
            for ch in 0..3 {
                out[ch * h * w + i] = p.0[ch] as f32 / 127.5 - 1.0;
            }
        }
        Ok((out, [1, 3, h, w]))
    }
}
