//! Sample tensors ↔ PNG grids (the `image` crate). Values in [−1, 1] map to [0, 255];
//! 1-channel samples become grayscale, 3-channel RGB. Files are written atomically.

use crate::error::{Error, Result};
use std::path::Path;

/// Writes `data` ([N, C, H, W] in [−1, 1]) as a grid of `cols` columns (√N rounded up when
/// `None`) with 2-pixel gutters.
pub fn write_grid(path: &Path, data: &[f32], shape: [usize; 4], cols: Option<usize>) -> Result<()> {
    let [n, c, h, w] = shape;
    let fail = |reason: String| Error::Write {
        file: path.display().to_string(),
        reason,
    };
    if c != 1 && c != 3 {
        return Err(fail(format!(
            "{c}-channel samples cannot be a PNG (1 or 3 channels)"
        )));
    }
    if data.len() != n * c * h * w {
        return Err(fail(format!("{} values for shape {shape:?}", data.len())));
    }
    let cols = cols
        .unwrap_or_else(|| (n as f64).sqrt().ceil() as usize)
        .max(1);
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let mut img = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([32, 32, 32]));
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
    let tmp = path.with_extension("png.partial");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e.to_string())
    })
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
