//! `AutoencoderKL` of diffusers (`models/autoencoders/autoencoder_kl.py`; Rombach et al.,
//! "High-Resolution Image Synthesis with Latent Diffusion Models", 2022), the Stable Diffusion
//! subset: loaded from a diffusers folder, each forward recorded once per input shape and
//! replayed. When an untiled forward's largest activation would exceed the adapter's binding or
//! buffer limit, the batch is split; then a decode runs in exact row bands
//! ([`super::vae_bands`]: the untiled result to rounding), and an encode (or a decode too large
//! for bands) is tiled as diffusers' `enable_tiling()` does ([`super::vae_tiling`]),
//! automatically.

use super::layers::{Conv2d, Loader};
use super::vae::{Decoder, Encoder};
use super::vae_bands::{band_count, banded_activation_bytes};
use super::vae_config::AutoencoderKLConfig;
use super::vae_tiling::{
    blend_and_assemble, largest_activation_bytes, tile_grid, HostTile, TileSize, VaeOp,
};
use super::Graph;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::load::{self, WeightSource, Weights};
use crate::ops::conv2d::Conv2dArgs;
use crate::tensor::{DType, Tensor};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How decode/encode choose tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiling {
    /// Untiled when the largest activation fits the adapter's limits; else per-sample; then a
    /// decode in the fewest exact row bands that fit, and an encode (or a decode no band count
    /// fits) in tiles of diffusers' size (from `sample_size`), halved until one tile fits (the
    /// default).
    Auto,
    /// Decode in this many exact row bands (2 to the latent height; 0 or 1: as
    /// [`Tiling::Auto`]); encode as [`Tiling::Auto`].
    Bands(usize),
    /// Never tile (a forward too large for the adapter is an error naming the tensor).
    Never,
    /// Tile exactly as diffusers with `enable_tiling()` and these tile sizes: only inputs
    /// larger than one tile are tiled.
    Force(TileSize),
}

/// How one decode/encode call was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaePlan {
    /// Samples per recorded forward.
    pub chunk: usize,
    /// `None`: whole images (or row bands).
    pub tile: Option<TileSize>,
    /// Row bands of an exact banded decode (1: none).
    pub bands: usize,
}

/// A recorded forward of one input shape.
struct VaeForward {
    recording: Recording,
    input: Tensor,
    output: Tensor,
    activation_bytes: u64,
}

/// (op, batch, height, width, bands).
type Key = (VaeOp, usize, usize, usize, usize);

/// Recorded forwards kept for reuse (a tiled call uses up to four tile shapes per chunk).
const CACHE: usize = 6;

pub struct AutoencoderKL {
    pub config: AutoencoderKLConfig,
    pub dtype: DType,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    /// Bytes of the weight tensors on the GPU.
    pub weight_bytes: u64,
    /// [`Tiling::Auto`] unless a test or benchmark forces it.
    pub tiling: Tiling,
    cache: Mutex<Vec<(Key, Arc<VaeForward>)>>,
    last: Mutex<Option<(VaePlan, u64)>>,
}

impl AutoencoderKL {
    /// Loads a diffusers model folder (or the `vae/` subfolder of a pipeline folder).
    pub fn from_dir(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Self> {
        let dir = load::resolve_model_dir(dir, "vae")?;
        let config = AutoencoderKLConfig::from_file(&dir.join(load::CONFIG))?;
        let weights = Weights::open(&dir.join(load::WEIGHTS))?;
        let model = Self::load(gpu, config, &weights, dtype)?;
        weights.check_all_used()?;
        Ok(model)
    }

    /// Builds the model from a parsed config and a weight source.
    pub fn load(
        gpu: &Gpu,
        config: AutoencoderKLConfig,
        weights: &dyn WeightSource,
        dtype: DType,
    ) -> Result<Self> {
        let l = Loader::new(gpu, weights, dtype);
        let c2 = 2 * config.latent_channels;
        let one = Conv2dArgs {
            stride: 1,
            padding: 0,
            extra_end: 0,
        };
        let encoder = Encoder::load(&l, "encoder", &config)?;
        let decoder = Decoder::load(&l, "decoder", &config)?;
        let quant_conv = config
            .use_quant_conv
            .then(|| l.conv("quant_conv", c2, c2, 1, one))
            .transpose()?;
        let lc = config.latent_channels;
        let post_quant_conv = config
            .use_post_quant_conv
            .then(|| l.conv("post_quant_conv", lc, lc, 1, one))
            .transpose()?;
        Ok(AutoencoderKL {
            config,
            dtype,
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            weight_bytes: l.bytes.get(),
            tiling: Tiling::Auto,
            cache: Mutex::new(Vec::new()),
            last: Mutex::new(None),
        })
    }

    /// The latents the diffusion model sees are `scaling_factor` × these (divide before decode).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// The plan of the last decode/encode and the largest activation bytes one of its
    /// recorded forwards holds.
    pub fn last_run(&self) -> Option<(VaePlan, u64)> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the recorded forwards (their activation buffers return to the pool).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Whether an untiled `op` on `batch` inputs of `h`×`w` fits the adapter's limits.
    pub fn fits(&self, gpu: &Gpu, op: VaeOp, batch: usize, h: usize, w: usize) -> bool {
        let info = gpu.info();
        let limit = info.max_storage_binding.min(info.max_buffer_size);
        largest_activation_bytes(&self.config, op, batch, h, w, self.dtype) <= limit
    }

    /// How `op` on `batch` inputs of `h`×`w` will run under [`AutoencoderKL::tiling`].
    pub fn plan(&self, gpu: &Gpu, op: VaeOp, batch: usize, h: usize, w: usize) -> Result<VaePlan> {
        let chunk_for = |h: usize, w: usize| {
            (1..=batch)
                .rev()
                .find(|&k| self.fits(gpu, op, k, h, w))
                .unwrap_or(1)
        };
        let f = self.config.downscale();
        let larger = |t: TileSize| match op {
            VaeOp::Decode => h > t.latent || w > t.latent,
            VaeOp::Encode => h > t.sample || w > t.sample,
        };
        let whole = |chunk| VaePlan {
            chunk,
            tile: None,
            bands: 1,
        };
        let info = gpu.info();
        let limit = info.max_storage_binding.min(info.max_buffer_size);
        let banded = |t: usize| {
            let chunk = (1..=batch)
                .rev()
                .find(|&k| banded_activation_bytes(&self.config, k, h, w, t, self.dtype) <= limit)
                .unwrap_or(1);
            VaePlan {
                chunk,
                tile: None,
                bands: t,
            }
        };
        match self.tiling {
            Tiling::Never => Ok(whole(batch)),
            Tiling::Bands(t) if op == VaeOp::Decode && t > 1 => {
                if t > h {
                    return Err(Error::Argument {
                        op: "AutoencoderKL",
                        arg: "bands",
                        reason: format!("{t} row bands for {h} latent rows"),
                    });
                }
                Ok(banded(t))
            }
            Tiling::Bands(_) | Tiling::Auto if self.fits(gpu, op, 1, h, w) => {
                Ok(whole(chunk_for(h, w)))
            }
            Tiling::Force(t) if !larger(t) => Ok(whole(chunk_for(h, w))),
            Tiling::Force(t) => {
                let s = match op {
                    VaeOp::Decode => t.latent,
                    VaeOp::Encode => t.sample,
                };
                Ok(VaePlan {
                    chunk: chunk_for(s, s),
                    tile: Some(t),
                    bands: 1,
                })
            }
            Tiling::Bands(_) | Tiling::Auto => {
                if op == VaeOp::Decode {
                    if let Some(t) = band_count(&self.config, 1, h, w, self.dtype, limit) {
                        return Ok(banded(t));
                    }
                }
                let mut t = TileSize {
                    latent: self.config.tile_latent_min_size(),
                    sample: self.config.sample_size,
                };
                loop {
                    let s = match op {
                        VaeOp::Decode => t.latent,
                        VaeOp::Encode => t.sample,
                    };
                    if self.fits(gpu, op, 1, s, s) && larger(t) {
                        return Ok(VaePlan {
                            chunk: chunk_for(s, s),
                            tile: Some(t),
                            bands: 1,
                        });
                    }
                    if t.latent < 8 {
                        return Err(Error::TooLarge {
                            op: "AutoencoderKL",
                            what: format!(
                                "largest activation of a {h}×{w} {op:?} even in {}-latent tiles",
                                t.latent
                            ),
                            got: largest_activation_bytes(&self.config, op, 1, s, s, self.dtype),
                            limit,
                        });
                    }
                    // Halve the tile (multiples of 4 latents keep diffusers' crop exact).
                    t = TileSize {
                        latent: t.latent / 2,
                        sample: t.latent / 2 * f,
                    };
                }
            }
        }
    }

    fn forward(
        &self,
        gpu: &Gpu,
        op: VaeOp,
        b: usize,
        h: usize,
        w: usize,
        bands: usize,
    ) -> Result<Arc<VaeForward>> {
        let key = (op, b, h, w, bands);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
            let e = cache.remove(i);
            let f = e.1.clone();
            cache.push(e);
            return Ok(f);
        }
        let cfg = &self.config;
        let cin = match op {
            VaeOp::Decode => cfg.latent_channels,
            VaeOp::Encode => cfg.in_channels,
        };
        let name = match op {
            VaeOp::Decode => "latents",
            VaeOp::Encode => "image",
        };
        let input = Tensor::zeros(gpu, name, &[b, cin, h, w], self.dtype)?;
        let mut g = Graph::new(gpu, self.dtype);
        let output = match op {
            VaeOp::Decode => {
                let z = match &self.post_quant_conv {
                    Some(c) => c.forward(&mut g, &input, "post_quant_conv")?,
                    None => input.clone(),
                };
                if bands > 1 {
                    self.decoder.forward_banded(&mut g, &z, bands)?
                } else {
                    self.decoder.forward(&mut g, &z)?
                }
            }
            VaeOp::Encode => {
                let m = self.encoder.forward(&mut g, &input)?;
                match &self.quant_conv {
                    Some(c) => c.forward(&mut g, &m, "quant_conv")?,
                    None => m,
                }
            }
        };
        let recording = g.finish(&[&output])?;
        let f = Arc::new(VaeForward {
            activation_bytes: recording.activation_bytes(),
            recording,
            input,
            output,
        });
        if cache.len() >= CACHE {
            cache.remove(0);
        }
        cache.push((key, f.clone()));
        Ok(f)
    }

    /// Plans `op` on `batch` inputs of `h`×`w` and records (without running) every forward the
    /// plan uses, so a later call only replays; returns the plan and the largest activation
    /// bytes one recorded forward holds.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        op: VaeOp,
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<(VaePlan, u64)> {
        let plan = self.plan(gpu, op, batch, h, w)?;
        let mut shapes = vec![(h, w)];
        if let Some(t) = plan.tile {
            if let Some(g) = tile_grid(op, t, h, w) {
                shapes.clear();
                for &i in &g.starts_h {
                    for &j in &g.starts_w {
                        let s = (g.tile.min(h - i), g.tile.min(w - j));
                        if !shapes.contains(&s) {
                            shapes.push(s);
                        }
                    }
                }
            }
        }
        let mut peak = 0;
        for (th, tw) in shapes {
            let f = self.forward(gpu, op, plan.chunk, th, tw, plan.bands)?;
            peak = peak.max(f.activation_bytes);
        }
        Ok((plan, peak))
    }

    fn run(&self, gpu: &Gpu, op: VaeOp, x: &HostTile, bands: usize) -> Result<(HostTile, u64)> {
        let [b, _, h, w] = x.shape;
        let f = self.forward(gpu, op, b, h, w, bands)?;
        f.input.write_f32(gpu, &x.data)?;
        f.recording.submit(gpu);
        let data = f.output.to_vec_f32(gpu)?;
        let s = f.output.shape();
        Ok((
            HostTile {
                shape: [s[0], s[1], s[2], s[3]],
                data,
            },
            f.activation_bytes,
        ))
    }

    /// `op` on a host batch, split and tiled per [`AutoencoderKL::plan`].
    fn apply(&self, gpu: &Gpu, op: VaeOp, x: &HostTile) -> Result<HostTile> {
        let [b, c, h, w] = x.shape;
        let plan = self.plan(gpu, op, b, h, w)?;
        let mut peak = 0u64;
        let mut parts = Vec::new();
        for n0 in (0..b).step_by(plan.chunk.max(1)) {
            let k = plan.chunk.min(b - n0);
            let per = c * h * w;
            let sub = HostTile {
                shape: [k, c, h, w],
                data: x.data[n0 * per..(n0 + k) * per].to_vec(),
            };
            let Some(t) = plan.tile else {
                let (y, a) = self.run(gpu, op, &sub, plan.bands)?;
                peak = peak.max(a);
                parts.push(y);
                continue;
            };
            let grid = tile_grid(op, t, h, w).ok_or_else(|| Error::Argument {
                op: "AutoencoderKL",
                arg: "tile size",
                reason: format!("{t:?} gives no overlap step"),
            })?;
            let mut rows = Vec::new();
            for &i in &grid.starts_h {
                let mut row = Vec::new();
                for &j in &grid.starts_w {
                    let (y, a) = self.run(gpu, op, &sub.crop(i, j, grid.tile, grid.tile), 1)?;
                    peak = peak.max(a);
                    row.push(y);
                }
                rows.push(row);
            }
            parts.push(blend_and_assemble(rows, grid.blend, grid.row_limit));
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((plan, peak));
        let mut shape = parts[0].shape;
        shape[0] = b;
        let data = parts.into_iter().flat_map(|p| p.data).collect();
        Ok(HostTile { shape, data })
    }

    fn check_input(&self, op: VaeOp, name: &str, shape: &[usize], len: usize) -> Result<()> {
        let (c, div) = match op {
            VaeOp::Decode => (self.config.latent_channels, 1),
            VaeOp::Encode => (self.config.in_channels, self.config.downscale()),
        };
        let ok = shape.len() == 4
            && shape[0] > 0
            && shape[1] == c
            && shape[2] > 0
            && shape[3] > 0
            && shape[2] % div == 0
            && shape[3] % div == 0;
        if !ok {
            return Err(Error::Argument {
                op: "AutoencoderKL",
                arg: if op == VaeOp::Decode { "latents" } else { "image" },
                reason: format!(
                    "`{name}` has shape {shape:?}; expected [batch, {c}, height, width] with positive sizes{}",
                    if div > 1 { format!(" divisible by {div}") } else { String::new() }
                ),
            });
        }
        let n: usize = shape.iter().product();
        if len != n {
            return Err(Error::HostLength {
                tensor: name.into(),
                got: len,
                want: n,
                shape: shape.to_vec(),
            });
        }
        Ok(())
    }

    /// Decodes host latents [B, latent_channels, h, w] (already divided by
    /// [`AutoencoderKL::scaling_factor`]) into an f32 image [B, out_channels, h·f, w·f] in the
    /// model's range (about [−1, 1]). Returns the data and its shape.
    pub fn decode_host(
        &self,
        gpu: &Gpu,
        latents: &[f32],
        shape: &[usize],
    ) -> Result<(Vec<f32>, [usize; 4])> {
        self.check_input(VaeOp::Decode, "latents", shape, latents.len())?;
        let x = HostTile {
            shape: [shape[0], shape[1], shape[2], shape[3]],
            data: latents.to_vec(),
        };
        let y = self.apply(gpu, VaeOp::Decode, &x)?;
        Ok((y.data, y.shape))
    }

    /// [`AutoencoderKL::decode_host`] of a GPU tensor; the image is a new f32 tensor.
    pub fn decode(&self, gpu: &Gpu, latents: &Tensor) -> Result<Tensor> {
        let v = latents.to_vec_f32(gpu)?;
        let (y, s) = self.decode_host(gpu, &v, latents.shape())?;
        Tensor::from_f32(gpu, "image", &s, &y, DType::F32)
    }

    /// Encodes a host image [B, in_channels, H, W] (model range, H and W divisible by the
    /// downscale factor) into the posterior's (mean, logvar), each [B, latent_channels, H/f,
    /// W/f]; logvar clamped to [−30, 20] as diffusers' `DiagonalGaussianDistribution`.
    pub fn encode_host(
        &self,
        gpu: &Gpu,
        image: &[f32],
        shape: &[usize],
    ) -> Result<(Vec<f32>, Vec<f32>, [usize; 4])> {
        self.check_input(VaeOp::Encode, "image", shape, image.len())?;
        let x = HostTile {
            shape: [shape[0], shape[1], shape[2], shape[3]],
            data: image.to_vec(),
        };
        let m = self.apply(gpu, VaeOp::Encode, &x)?;
        let [b, c2, h, w] = m.shape;
        let (c, hw) = (c2 / 2, h * w);
        let mut mean = Vec::with_capacity(b * c * hw);
        let mut logvar = Vec::with_capacity(b * c * hw);
        for n in 0..b {
            let s = &m.data[n * c2 * hw..(n + 1) * c2 * hw];
            mean.extend_from_slice(&s[..c * hw]);
            logvar.extend(s[c * hw..].iter().map(|v| v.clamp(-30.0, 20.0)));
        }
        Ok((mean, logvar, [b, c, h, w]))
    }

    /// [`AutoencoderKL::encode_host`] of a GPU tensor; (mean, logvar) are new f32 tensors.
    pub fn encode(&self, gpu: &Gpu, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let v = image.to_vec_f32(gpu)?;
        let (m, l, s) = self.encode_host(gpu, &v, image.shape())?;
        Ok((
            Tensor::from_f32(gpu, "latent_dist.mean", &s, &m, DType::F32)?,
            Tensor::from_f32(gpu, "latent_dist.logvar", &s, &l, DType::F32)?,
        ))
    }
}
