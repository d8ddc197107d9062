//! Tiled VAE decoding and encoding with linear overlap blending, following the rules of
//! diffusers' `AutoencoderKL.tiled_decode` / `_tiled_encode` (tile sizes from `sample_size`,
//! overlap factor 0.25, `blend_v` then `blend_h` against the already blended neighbours, crop
//! to `row_limit`), so the result equals `vae.enable_tiling()`'s. Also the memory estimate that
//! decides when tiling is needed: the largest single activation of an untiled forward, which
//! must fit the adapter's storage-binding and buffer limits (convs and norms cannot split).

use super::vae_config::AutoencoderKLConfig;
use crate::tensor::{DType, Tensor};

/// diffusers' `tile_overlap_factor`.
pub const TILE_OVERLAP_FACTOR: f64 = 0.25;

/// Which half of the autoencoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VaeOp {
    /// latents [B, latent_channels, h, w] → image [B, out_channels, h·f, w·f].
    Decode,
    /// image [B, in_channels, H, W] → moments [B, 2·latent_channels, H/f, W/f].
    Encode,
}

/// diffusers' (`tile_latent_min_size`, `tile_sample_min_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TileSize {
    pub latent: usize,
    pub sample: usize,
}

/// Where the tiles of one input start and how their outputs are blended and cropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileGrid {
    /// Tile edge in the input (latent tile for decode, sample tile for encode).
    pub tile: usize,
    pub starts_h: Vec<usize>,
    pub starts_w: Vec<usize>,
    /// Output rows/columns blended with the neighbour above/left.
    pub blend: usize,
    /// Output rows/columns kept from each tile.
    pub row_limit: usize,
}

/// The tiles of an input of `h`×`w` (diffusers: step `int(tile · (1 − 0.25))`, blend
/// `int(out_tile · 0.25)`, keep `out_tile − blend`). `None` when the step would be zero.
pub fn tile_grid(op: VaeOp, t: TileSize, h: usize, w: usize) -> Option<TileGrid> {
    let (tin, tout) = match op {
        VaeOp::Decode => (t.latent, t.sample),
        VaeOp::Encode => (t.sample, t.latent),
    };
    let step = (tin as f64 * (1.0 - TILE_OVERLAP_FACTOR)) as usize;
    let blend = (tout as f64 * TILE_OVERLAP_FACTOR) as usize;
    if step == 0 || tout <= blend {
        return None;
    }
    Some(TileGrid {
        tile: tin,
        starts_h: (0..h).step_by(step).collect(),
        starts_w: (0..w).step_by(step).collect(),
        blend,
        row_limit: tout - blend,
    })
}

/// A host f32 tensor [B, C, H, W].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostTile {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

impl HostTile {
    fn at(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.shape[1] + c) * self.shape[2] + y) * self.shape[3] + x
    }

    /// `self[:, :, y0:y0+h, x0:x0+w]` with the window truncated at the edges (Python slicing).
    pub fn crop(&self, y0: usize, x0: usize, h: usize, w: usize) -> HostTile {
        let [b, c, hh, ww] = self.shape;
        let (h, w) = (h.min(hh - y0), w.min(ww - x0));
        let mut data = Vec::with_capacity(b * c * h * w);
        for n in 0..b {
            for ch in 0..c {
                for y in y0..y0 + h {
                    let s = self.at(n, ch, y, x0);
                    data.extend_from_slice(&self.data[s..s + w]);
                }
            }
        }
        HostTile {
            shape: [b, c, h, w],
            data,
        }
    }
}

/// diffusers' `blend_v`: the first rows of `b` fade in over the last rows of `a` (same width).
pub fn blend_v(a: &HostTile, b: &mut HostTile, extent: usize) {
    let e = extent.min(a.shape[2]).min(b.shape[2]);
    let [bn, c, _, w] = b.shape;
    for y in 0..e {
        let t = y as f32 / e as f32;
        for n in 0..bn {
            for ch in 0..c {
                let ia = a.at(n, ch, a.shape[2] - e + y, 0);
                let ib = b.at(n, ch, y, 0);
                for x in 0..w {
                    b.data[ib + x] = a.data[ia + x] * (1.0 - t) + b.data[ib + x] * t;
                }
            }
        }
    }
}

/// diffusers' `blend_h`: the first columns of `b` fade in over the last columns of `a`.
pub fn blend_h(a: &HostTile, b: &mut HostTile, extent: usize) {
    let e = extent.min(a.shape[3]).min(b.shape[3]);
    let [bn, c, h, _] = b.shape;
    for x in 0..e {
        let t = x as f32 / e as f32;
        for n in 0..bn {
            for ch in 0..c {
                for y in 0..h {
                    let ia = a.at(n, ch, y, a.shape[3] - e + x);
                    let ib = b.at(n, ch, y, x);
                    b.data[ib] = a.data[ia] * (1.0 - t) + b.data[ib] * t;
                }
            }
        }
    }
}

/// Blends each tile with its (already blended) upper then left neighbour, crops every tile to
/// `row_limit` and concatenates: diffusers' second loop of `tiled_decode`.
pub fn blend_and_assemble(
    mut rows: Vec<Vec<HostTile>>,
    blend: usize,
    row_limit: usize,
) -> HostTile {
    for i in 0..rows.len() {
        for j in 0..rows[i].len() {
            let mut t = std::mem::take(&mut rows[i][j]);
            if i > 0 {
                blend_v(&rows[i - 1][j], &mut t, blend);
            }
            if j > 0 {
                blend_h(&rows[i][j - 1], &mut t, blend);
            }
            rows[i][j] = t;
        }
    }
    let (b, c) = (rows[0][0].shape[0], rows[0][0].shape[1]);
    let crops: Vec<Vec<HostTile>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|t| t.crop(0, 0, row_limit, row_limit))
                .collect()
        })
        .collect();
    let h: usize = crops.iter().map(|r| r[0].shape[2]).sum();
    let w: usize = crops[0].iter().map(|t| t.shape[3]).sum();
    let mut out = HostTile {
        shape: [b, c, h, w],
        data: vec![0.0; b * c * h * w],
    };
    let mut y0 = 0;
    for r in &crops {
        let mut x0 = 0;
        for t in r {
            let [_, _, th, tw] = t.shape;
            for n in 0..b {
                for ch in 0..c {
                    for y in 0..th {
                        let s = t.at(n, ch, y, 0);
                        let d = out.at(n, ch, y0 + y, x0);
                        out.data[d..d + tw].copy_from_slice(&t.data[s..s + tw]);
                    }
                }
            }
            x0 += tw;
        }
        y0 += r[0].shape[2];
    }
    out
}

/// Output size of diffusers' `Downsample2D(padding=0)`: pad (0, 1, 0, 1), 3×3, stride 2.
fn down2(s: usize) -> usize {
    (s + 1).saturating_sub(3) / 2 + 1
}

/// Bytes of the largest single activation of an untiled `op` on `batch` inputs of `h`×`w`
/// (latent size for decode, image size for encode), `dtype` storage: the largest feature map
/// of any block, or the attention score matrix [B, L, L] of the mid block (one head). Since
/// `nn::attention::sdpa` chunks the scores over queries when they do not fit one binding, the
/// score term is conservative: where it dominates (encoding), the estimate is an upper bound
/// and tiling starts a little earlier than strictly needed (and matches diffusers' tile size).
pub fn largest_activation_bytes(
    cfg: &AutoencoderKLConfig,
    op: VaeOp,
    batch: usize,
    h: usize,
    w: usize,
    dtype: DType,
) -> u64 {
    let boc = &cfg.block_out_channels;
    let last = boc[boc.len() - 1];
    let mut elems: Vec<u128> = Vec::new();
    let map = |c: usize, h: usize, w: usize| (batch * c) as u128 * (h * w) as u128;
    let attn = |h: usize, w: usize| {
        let l = (h * w) as u128;
        if cfg.mid_block_add_attention {
            batch as u128 * l * l
        } else {
            0
        }
    };
    match op {
        VaeOp::Decode => {
            let (mut y, mut x) = (h, w);
            elems.push(map(cfg.latent_channels, y, x));
            elems.push(map(last, y, x));
            elems.push(attn(y, x));
            let mut prev = last;
            for (i, &c) in boc.iter().rev().enumerate() {
                elems.push(map(prev.max(c), y, x));
                if i + 1 < boc.len() {
                    y *= 2;
                    x *= 2;
                    elems.push(map(c, y, x));
                }
                prev = c;
            }
            elems.push(map(cfg.out_channels, y, x));
        }
        VaeOp::Encode => {
            let (mut y, mut x) = (h, w);
            elems.push(map(cfg.in_channels, y, x));
            let mut prev = boc[0];
            for (i, &c) in boc.iter().enumerate() {
                elems.push(map(prev.max(c), y, x));
                if i + 1 < boc.len() {
                    y = down2(y);
                    x = down2(x);
                    elems.push(map(c, y, x));
                }
                prev = c;
            }
            elems.push(attn(y, x));
            elems.push(map(2 * cfg.latent_channels, y, x));
        }
    }
    let n = elems.into_iter().max().unwrap_or(0);
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n == usize::MAX {
        return u64::MAX;
    }
    n.checked_mul(dtype.size())
        .map_or(u64::MAX, |_| Tensor::bytes_for(&[n], dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(shape: [usize; 4], f: impl Fn(usize) -> f32) -> HostTile {
        let n = shape.iter().product();
        HostTile {
            shape,
            data: (0..n).map(f).collect(),
        }
    }

    #[test]
    fn grid_follows_diffusers() {
        // SD: sample_size 512, 4 levels → latent tile 64: step 48, blend 128, keep 384.
        let t = TileSize {
            latent: 64,
            sample: 512,
        };
        let g = tile_grid(VaeOp::Decode, t, 128, 96).unwrap();
        assert_eq!(g.starts_h, vec![0, 48, 96]);
        assert_eq!(g.starts_w, vec![0, 48]);
        assert_eq!((g.blend, g.row_limit, g.tile), (128, 384, 64));
        let e = tile_grid(VaeOp::Encode, t, 1024, 512).unwrap();
        assert_eq!(e.starts_h, vec![0, 384, 768]);
        assert_eq!((e.blend, e.row_limit, e.tile), (16, 48, 512));
        assert!(tile_grid(
            VaeOp::Decode,
            TileSize {
                latent: 1,
                sample: 8
            },
            8,
            8
        )
        .is_none());
    }

    #[test]
    fn blending_is_linear_and_assembly_crops() {
        // Two constant tiles side by side: the blended band ramps linearly from a to b.
        let a = tile([1, 1, 2, 6], |_| 1.0);
        let b = tile([1, 1, 2, 6], |_| 3.0);
        let out = blend_and_assemble(vec![vec![a, b]], 4, 4);
        assert_eq!(out.shape, [1, 1, 2, 8]);
        let row: Vec<f32> = out.data[..8].to_vec();
        assert_eq!(row, vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 2.0, 2.5]);
        // Vertical: the upper tile's last rows fade into the lower one's first rows.
        let a = tile([1, 1, 4, 1], |i| i as f32);
        let mut b = tile([1, 1, 4, 1], |_| 10.0);
        blend_v(&a, &mut b, 2);
        assert_eq!(b.data, vec![2.0, 0.5 * 3.0 + 0.5 * 10.0, 10.0, 10.0]);
    }

    #[test]
    fn crop_truncates_like_python_slicing() {
        let t = tile([1, 2, 3, 4], |i| i as f32);
        let c = t.crop(1, 2, 8, 8);
        assert_eq!(c.shape, [1, 2, 2, 2]);
        assert_eq!(c.data, vec![6.0, 7.0, 10.0, 11.0, 18.0, 19.0, 22.0, 23.0]);
    }

    #[test]
    fn sd15_activation_estimate() {
        let v = serde_json::from_str(include_str!("../../assets/configs/sd15/vae/config.json"))
            .unwrap();
        let cfg = AutoencoderKLConfig::from_json(&v, "sd15").unwrap();
        // 512×512 decode: the last upsampler writes 256 channels at 512² (256 MiB in f32).
        let mib = |b: u64| b >> 20;
        let d = |dt| largest_activation_bytes(&cfg, VaeOp::Decode, 1, 64, 64, dt);
        assert_eq!(mib(d(DType::F32)), 256);
        assert_eq!(mib(d(DType::F16)), 128);
        // A 32×32 latent tile: 256 channels at 256² (64 MiB), as the scores of 1024 tokens are
        // far smaller.
        let t = largest_activation_bytes(&cfg, VaeOp::Decode, 1, 32, 32, DType::F32);
        assert_eq!(mib(t), 64);
        // 512×512 encode: 128 channels at 512² (128 MiB); 4096-token scores are 64 MiB.
        let e = largest_activation_bytes(&cfg, VaeOp::Encode, 1, 512, 512, DType::F32);
        assert_eq!(mib(e), 128);
        let e2 = largest_activation_bytes(&cfg, VaeOp::Encode, 2, 512, 512, DType::F32);
        assert_eq!(mib(e2), 256);
    }
}
