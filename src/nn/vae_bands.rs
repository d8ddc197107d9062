//! Exact banded decoding for an `AutoencoderKL` whose activations exceed the adapter's binding
//! limit. Tiling as diffusers' `enable_tiling()` does ([`super::vae_tiling`]) gives each tile
//! its own GroupNorm statistics and blends the seams, so its output differs from the untiled
//! decode (diffusers' own test allows 0.5). Here the image is cut into horizontal row bands
//! after the mid block (which runs whole: at latent size it is small, and its attention is
//! global), and every layer runs on all bands in lockstep:
//! - each band is `[N, C, 1 + rows + 1, W]`, its interior rows plus one halo row above and
//!   below, refreshed from the neighbours' interiors (zeros at the image edges) before every
//!   3×3 conv, so each conv sees exactly the rows the untiled conv sees;
//! - each GroupNorm sums statistics over the interiors of all bands
//!   ([`crate::ops::group_norm_banded`]) before normalising any of them;
//! - nearest ×2 upsampling writes the bands of the doubled image directly.
//!
//! The bands together compute the untiled decoder to rounding, and no tensor after the mid block
//! is larger than one band. Peak memory is the untiled decode's (every band of a stage is alive
//! at once); what shrinks is the largest single binding.

use super::layers::{Conv2d, GroupNorm};
use super::resnet::{ResnetBlock2D, Upsample2D};
use super::vae_config::AutoencoderKLConfig;
use super::Graph;
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::rows::{copy_rows, zero_rows};
use crate::tensor::{DType, Tensor};

/// Interior rows of each of `bands` bands over `h` rows (sizes differ by at most one).
pub fn partition(h: usize, bands: usize) -> Vec<usize> {
    (0..bands)
        .map(|t| (t + 1) * h / bands - t * h / bands)
        .collect()
}

/// Bytes of the largest single tensor of a decode of `batch` latents of `h`×`w` in `bands` row
/// bands (`bands` ≤ 1: untiled, as [`super::vae_tiling::largest_activation_bytes`]). The parts
/// before the bands (conv_in and the mid block at latent size) and the joined output image are
/// whole tensors; the mid block's attention scores are not counted, as `nn::attention::sdpa`
/// chunks them over queries to fit.
pub fn banded_activation_bytes(
    cfg: &AutoencoderKLConfig,
    batch: usize,
    h: usize,
    w: usize,
    bands: usize,
    dtype: DType,
) -> u64 {
    use super::vae_tiling::{largest_activation_bytes, VaeOp};
    if bands <= 1 {
        return largest_activation_bytes(cfg, VaeOp::Decode, batch, h, w, dtype);
    }
    let boc = &cfg.block_out_channels;
    let last = boc[boc.len() - 1];
    let map = |c: usize, rows: usize, cols: usize| (batch * c) as u128 * (rows * cols) as u128;
    let r = h.div_ceil(bands);
    let mut elems = vec![map(cfg.latent_channels, h, w), map(last, h, w)];
    let (mut s, mut prev) = (1, last);
    for (i, &c) in boc.iter().rev().enumerate() {
        elems.push(map(prev.max(c), r * s + 2, w * s));
        if i + 1 < boc.len() {
            s *= 2;
            elems.push(map(c, r * s + 2, w * s));
        }
        prev = c;
    }
    elems.push(map(cfg.out_channels, h * s, w * s));
    let n = elems.into_iter().max().unwrap_or(0);
    let bytes = n.saturating_mul(dtype.size() as u128);
    u64::try_from(bytes.next_multiple_of(4)).unwrap_or(u64::MAX)
}

/// The fewest bands (≥ 2) whose largest tensor fits `limit` bytes, or None when even one latent
/// row per band does not (or the whole-tensor parts do not).
pub fn band_count(
    cfg: &AutoencoderKLConfig,
    batch: usize,
    h: usize,
    w: usize,
    dtype: DType,
    limit: u64,
) -> Option<usize> {
    (2..=h).find(|&t| banded_activation_bytes(cfg, batch, h, w, t, dtype) <= limit)
}

/// A tensor held as row bands: `tensors[t]` is `[N, C, 1 + rows[t] + 1, W]`, interior rows
/// `1 ..= rows[t]`; its halo rows are stale except right after [`Bands::refresh`].
#[derive(Clone)]
pub struct Bands {
    pub tensors: Vec<Tensor>,
    pub rows: Vec<usize>,
}

impl Bands {
    /// Cuts `x` [N, C, H, W] into `bands` row bands (halos filled).
    pub fn split(g: &mut Graph<'_>, x: &Tensor, bands: usize) -> Result<Bands> {
        let s = x.shape();
        if s.len() != 4 || bands < 2 || bands > s[2] {
            return Err(Error::Argument {
                op: "Bands::split",
                arg: "bands",
                reason: format!(
                    "cannot cut `{}` {s:?} into {bands} row bands (2 to its height)",
                    x.name()
                ),
            });
        }
        let rows = partition(s[2], bands);
        let mut tensors = Vec::with_capacity(bands);
        let mut y0 = 0isize;
        for &r in &rows {
            let t = g.alloc("band", &[s[0], s[1], r + 2, s[3]])?;
            copy_rows(&mut g.rec, x, y0 - 1, 1, &t, 0, r + 2)?;
            tensors.push(t);
            y0 += r as isize;
        }
        Ok(Bands { tensors, rows })
    }

    /// The bands joined into one tensor [N, C, Σ rows, W] (interiors only).
    pub fn join(&self, g: &mut Graph<'_>, name: &str) -> Result<Tensor> {
        let s = self.tensors[0].shape().to_vec();
        let h: usize = self.rows.iter().sum();
        let y = g.alloc(name, &[s[0], s[1], h, s[3]])?;
        let mut y0 = 0;
        for (t, &r) in self.tensors.iter().zip(&self.rows) {
            copy_rows(&mut g.rec, t, 1, 1, &y, y0, r)?;
            y0 += r;
        }
        Ok(y)
    }

    /// Fills every band's halo rows from its neighbours' interiors (zeros at the image edges).
    pub fn refresh(&self, g: &mut Graph<'_>) -> Result<()> {
        let n = self.tensors.len();
        for (t, x) in self.tensors.iter().enumerate() {
            let r = self.rows[t];
            if t == 0 {
                zero_rows(&mut g.rec, x, 0, 1)?;
            } else {
                let above = &self.tensors[t - 1];
                copy_rows(&mut g.rec, above, self.rows[t - 1] as isize, 1, x, 0, 1)?;
            }
            if t + 1 == n {
                zero_rows(&mut g.rec, x, r + 1, 1)?;
            } else {
                copy_rows(&mut g.rec, &self.tensors[t + 1], 1, 1, x, r + 1, 1)?;
            }
        }
        Ok(())
    }

    /// GroupNorm (then SiLU if `silu`) with statistics over all bands' interiors.
    pub fn group_norm(&self, g: &mut Graph<'_>, norm: &GroupNorm, silu: bool) -> Result<Bands> {
        let n = self.tensors[0].shape()[0];
        let stats = g.alloc_dtype(
            "group_norm.band_stats",
            &[self.tensors.len(), n * norm.groups, 4],
            DType::F32,
        )?;
        for (t, (x, &r)) in self.tensors.iter().zip(&self.rows).enumerate() {
            ops::group_norm_banded::group_norm_stats(&mut g.rec, x, 1, r, &stats, t, norm.groups)?;
        }
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for x in &self.tensors {
            let y = g.alloc("group_norm.band", x.shape())?;
            ops::group_norm_banded::group_norm_shared(
                &mut g.rec,
                x,
                &norm.gamma,
                &norm.beta,
                &y,
                &stats,
                norm.groups,
                norm.eps,
                silu,
            )?;
            tensors.push(y);
        }
        Ok(Bands {
            tensors,
            rows: self.rows.clone(),
        })
    }

    /// `conv` (3×3 with padding 1, or 1×1 without, stride 1) of every band, plus the matching
    /// band of `residual` when given; 3×3 convs refresh the halos first.
    pub fn conv(
        &self,
        g: &mut Graph<'_>,
        conv: &Conv2d,
        residual: Option<&Bands>,
        name: &str,
    ) -> Result<Bands> {
        let a = conv.args;
        let same = a.stride == 1 && a.extra_end == 0 && 2 * a.padding + 1 == conv.k;
        if !same || conv.k > 3 {
            return Err(Error::Argument {
                op: "Bands::conv",
                arg: "conv",
                reason: format!(
                    "`{}` ({}×{}, {a:?}) is not a size-preserving 1×1 or 3×3 conv",
                    conv.name, conv.k, conv.k
                ),
            });
        }
        if conv.k == 3 {
            self.refresh(g)?;
        }
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for (t, x) in self.tensors.iter().enumerate() {
            let epi = ops::conv2d::Epilogue {
                residual: residual.map(|r| &r.tensors[t]),
                ..Default::default()
            };
            tensors.push(conv.forward_fused(g, x, name, epi)?);
        }
        Ok(Bands {
            tensors,
            rows: self.rows.clone(),
        })
    }

    /// A VAE `ResnetBlock2D` (no time embedding): norm1 → SiLU → conv1 → norm2 → SiLU → conv2
    /// plus the (1×1-projected) input.
    pub fn resnet(&self, g: &mut Graph<'_>, block: &ResnetBlock2D) -> Result<Bands> {
        let l = block.plain_layers().ok_or_else(|| Error::Argument {
            op: "Bands::resnet",
            arg: "block",
            reason: "only plain residual blocks (no time embedding or resampling) run in bands"
                .into(),
        })?;
        let h = self.group_norm(g, l.norm1, true)?;
        let h = h.conv(g, l.conv1, None, "resnet.conv1")?;
        let h = h.group_norm(g, l.norm2, true)?;
        let skip = match l.conv_shortcut {
            Some(c) => self.conv(g, c, None, "resnet.shortcut")?,
            None => self.clone(),
        };
        h.conv(g, l.conv2, Some(&skip), "resnet.out")
    }

    /// `Upsample2D`: nearest ×2 of every band straight into the bands of the doubled image
    /// (interior rows doubled; the halos are refreshed by the conv), then its 3×3 conv.
    pub fn upsample(&self, g: &mut Graph<'_>, up: &Upsample2D) -> Result<Bands> {
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for (x, &r) in self.tensors.iter().zip(&self.rows) {
            let s = x.shape();
            let y = g.alloc("upsample.nearest", &[s[0], s[1], 2 * r + 2, 2 * s[3]])?;
            // Row 1 of the ×2 band is its stale upper halo doubled; rows 2 .. 2r+2 the interior.
            copy_rows(&mut g.rec, x, 1, 2, &y, 0, 2 * r + 2)?;
            tensors.push(y);
        }
        let rows = self.rows.iter().map(|r| 2 * r).collect();
        Bands { tensors, rows }.conv(g, up.conv(), None, "upsample")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_even_and_complete() {
        assert_eq!(partition(64, 3), vec![21, 21, 22]);
        assert_eq!(partition(5, 5), vec![1; 5]);
        for (h, b) in [(7, 2), (64, 7), (100, 9)] {
            let p = partition(h, b);
            assert_eq!(p.iter().sum::<usize>(), h);
            assert!(p.iter().max().unwrap() - p.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn sd15_bands_at_512() {
        let v = serde_json::from_str(include_str!("../../assets/configs/sd15/vae/config.json"))
            .unwrap();
        let cfg = AutoencoderKLConfig::from_json(&v, "sd15").unwrap();
        let mib = |b: u64| b >> 20;
        // 64 latent rows in 3 bands of ≤ 22: the largest band tensor is the last ×2 upsample,
        // 256 channels × (8·22 + 2) rows × 512 columns (89 MiB in f32) — under lavapipe's 128.
        let limit = 128 << 20;
        assert_eq!(band_count(&cfg, 1, 64, 64, DType::F32, limit), Some(3));
        let b = banded_activation_bytes(&cfg, 1, 64, 64, 3, DType::F32);
        assert_eq!(b, 256 * 178 * 512 * 4);
        assert_eq!(mib(b), 89);
        // f16 untiled is 128 MiB exactly: it needs no bands; at 2 bands it halves.
        assert!(band_count(&cfg, 1, 64, 64, DType::F16, limit).is_some());
        // A 4096² image (512² latents) in f32: the mid block's 512 × 512² map alone is 512 MiB
        // — no band count helps.
        assert_eq!(band_count(&cfg, 1, 512, 512, DType::F32, limit), None);
    }
}
