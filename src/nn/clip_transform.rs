//! CLIP image preprocessing as DA-CLIP's official `data/util.py` `clip_transform` does it
//! (grrrute/mr-sampler, universal-image-restoration): `Image.fromarray((img * 255).astype(uint8))`,
//! then torchvision's `Resize(R, BICUBIC)` (shorter side to R, the longer to ⌊R·long/short⌋, by
//! Pillow's 8-bit resampling, [`crate::resample`]), `CenterCrop(R)` (offsets
//! `int(round((size − R) / 2))`, Python's ties-to-even), `ToTensor` (u8 / 255 in f32) and
//! `Normalize(mean, std)` (`(x − mean) / std` in f32), giving [3, R, R].
//!
//! Colour order: the official datasets read images with cv2 (BGR), convert to RGB
//! (`img[:, :, [2, 1, 0]]`) and then call `clip_transform`, so the encoder's input (`LQ_clip`) is
//! **RGB**; the images here are RGB, interleaved [H, W, 3]. Their float path
//! (`cv2` uint8 → f32 / 255 → `* 255` → `astype(uint8)`) gives every byte back unchanged, so a PNG's
//! bytes go straight in ([`clip_transform_u8`]); a float image in [0, 1] is quantised as that
//! `astype(uint8)` does (f32 multiply by 255, truncation; values outside [0, 1] clamp,
//! [`quantize_unit`]).

use crate::error::{Error, Result};
use crate::resample::resize_bicubic_u8;

/// OpenAI CLIP's normalisation (`OPENAI_DATASET_MEAN`/`STD`, the values `clip_transform` uses),
/// written as the official decimals; f32 rounds them as `torch.as_tensor(…, float32)` does.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// torchvision's `Resize(R)` output size (h, w) for an h×w image: the shorter side becomes R, the
/// longer ⌊R·long/short⌋ (f64, as Python computes `int(R * long / short)`).
pub fn resized_size(h: usize, w: usize, res: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (res as f64 * long as f64 / short as f64) as usize;
    if w <= h {
        (new_long, res)
    } else {
        (res, new_long)
    }
}

/// torchvision's `CenterCrop` offsets (top, left) of an R×R crop of an h×w image (h, w ≥ R).
pub fn center_crop_offsets(h: usize, w: usize, res: usize) -> (usize, usize) {
    let off = |s: usize| ((s - res) as f64 / 2.0).round_ties_even() as usize;
    (off(h), off(w))
}

fn image_err(reason: String) -> Error {
    Error::Argument {
        op: "clip_transform",
        arg: "image",
        reason,
    }
}

/// The PIL steps alone: `Resize(res, BICUBIC)` then `CenterCrop(res)` of an RGB image
/// [h, w, 3] (u8), giving the [res, res, 3] bytes `ToTensor` reads.
pub fn resize_center_crop(img: &[u8], h: usize, w: usize, res: usize) -> Result<Vec<u8>> {
    if res == 0 {
        return Err(Error::Argument {
            op: "clip_transform",
            arg: "resolution",
            reason: "must be at least 1".into(),
        });
    }
    if h == 0 || w == 0 {
        return Err(image_err(format!("an image of {h}×{w} pixels is empty")));
    }
    let n = crate::size::elements("image", &[h, w, 3])?;
    if img.len() != n {
        return Err(image_err(format!(
            "{} values for an RGB image of {h}×{w} (expected {n} = H·W·3; is it RGB?)",
            img.len()
        )));
    }
    let (rh, rw) = resized_size(h, w, res);
    let resized = if (rh, rw) == (h, w) {
        img.to_vec()
    } else {
        resize_bicubic_u8(img, h, w, 3, rh, rw)?
    };
    let (top, left) = center_crop_offsets(rh, rw, res);
    let mut out = Vec::with_capacity(res * res * 3);
    for y in top..top + res {
        out.extend_from_slice(&resized[(y * rw + left) * 3..(y * rw + left + res) * 3]);
    }
    Ok(out)
}

/// `ToTensor` + `Normalize(mean, std)` of an [res, res, 3] RGB crop: f32 [3, res, res].
pub fn to_normalized_tensor(crop: &[u8], res: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = res * res;
    let mut out = vec![0f32; 3 * plane];
    for (p, px) in crop.chunks_exact(3).enumerate().take(plane) {
        for c in 0..3 {
            out[c * plane + p] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// The whole official `clip_transform` of an RGB uint8 image [h, w, 3]: f32 [3, res, res].
pub fn clip_transform_u8(
    img: &[u8],
    h: usize,
    w: usize,
    res: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Vec<f32>> {
    let crop = resize_center_crop(img, h, w, res)?;
    Ok(to_normalized_tensor(&crop, res, mean, std))
}

/// An interleaved 8-bit image [h, w, channels] as the RGB bytes the official dataset path feeds
/// `clip_transform`: 3 channels as they are, 4 without the alpha channel (`util.read_img` keeps
/// `img[:, :, :3]`); anything else (grey, grey + alpha) is an error naming the image — the
/// official path fails on those too (PIL cannot build an image from [h, w, 1] bytes).
pub fn rgb_bytes(img: &[u8], h: usize, w: usize, channels: usize) -> Result<Vec<u8>> {
    if channels != 3 && channels != 4 {
        return Err(image_err(format!(
            "{channels} channel(s); DA-CLIP's preprocessing needs an RGB (or RGBA) image"
        )));
    }
    let n = crate::size::elements("image", &[h, w, channels])?;
    if img.len() != n {
        return Err(image_err(format!(
            "{} values for a {h}×{w} image of {channels} channels ({n} expected)",
            img.len()
        )));
    }
    Ok(img
        .chunks_exact(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect())
}

/// A float RGB image in [0, 1] to bytes as `(np_image * 255).astype(np.uint8)` does for the
/// official f32 images (multiply in f32, truncate); outside [0, 1] clamps; NaN is an error.
pub fn quantize_unit(img: &[f32]) -> Result<Vec<u8>> {
    img.iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.is_nan() {
                return Err(image_err(format!("value {i} is NaN")));
            }
            Ok((v * 255.0).clamp(0.0, 255.0) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{center_crop_offsets, resized_size};

    #[test]
    fn torchvision_sizes_and_offsets() {
        // int(224 * long / short), the short side to 224.
        assert_eq!(resized_size(301, 229, 224), (294, 224));
        assert_eq!(resized_size(97, 131, 224), (224, 302));
        assert_eq!(resized_size(1, 1, 224), (224, 224));
        assert_eq!(resized_size(480, 50, 48), (460, 48));
        // int(round((s − 224) / 2)), ties to even as Python's round.
        assert_eq!(center_crop_offsets(294, 224, 224), (35, 0));
        assert_eq!(center_crop_offsets(225, 224, 224), (0, 0));
        assert_eq!(center_crop_offsets(227, 302, 224), (2, 39));
    }
}
