//! Time and class conditioning of `UNet2DModel` (diffusers `models/embeddings.py`):
//! `Timesteps` (sinusoidal, Ho et al. 2020) or `GaussianFourierProjection` (Song et al. 2021),
//! then `TimestepEmbedding` (linear → SiLU → linear), plus an optional class embedding.

use super::config::{ClassEmbedding, TimeEmbeddingType, UNet2DConfig};
use super::layers::{Linear, Loader};
use super::Graph;
use crate::error::Result;
use crate::ops;
use crate::ops::elementwise::Unary;
use crate::ops::embedding::TimestepEmbedding as Sinusoid;
use crate::tensor::Tensor;

enum TimeProj {
    Positional(Sinusoid),
    Fourier { weight: Tensor },
}

/// `TimestepEmbedding`: linear_1 → SiLU → linear_2.
struct Mlp {
    linear_1: Linear,
    linear_2: Linear,
}

impl Mlp {
    fn load(l: &Loader<'_>, prefix: &str, fin: usize, dim: usize) -> Result<Self> {
        Ok(Mlp {
            linear_1: l.linear(&format!("{prefix}.linear_1"), fin, dim)?,
            linear_2: l.linear(&format!("{prefix}.linear_2"), dim, dim)?,
        })
    }
    fn forward(&self, g: &mut Graph<'_>, x: &Tensor) -> Result<Tensor> {
        let h = self.linear_1.forward(g, x, "temb.h")?;
        ops::elementwise::unary_inplace(&mut g.rec, Unary::Silu, &h)?;
        self.linear_2.forward(g, &h, "temb")
    }
}

enum Class {
    Lookup { table: Tensor },
    Timestep(Box<Mlp>),
}

/// The model's conditioning: produces SiLU(emb) [N, time_embed_dim], the input every residual
/// block's `time_emb_proj` takes.
pub struct Conditioning {
    proj: TimeProj,
    proj_dim: usize,
    time_embedding: Mlp,
    class: Option<Class>,
}

impl Conditioning {
    pub fn load(l: &Loader<'_>, cfg: &UNet2DConfig) -> Result<Self> {
        let c0 = cfg.block_out_channels[0];
        let ted = cfg.time_embed_dim();
        let tid = cfg.timestep_input_dim();
        let proj = match cfg.time_embedding_type {
            TimeEmbeddingType::Positional => TimeProj::Positional(Sinusoid {
                flip_sin_to_cos: cfg.flip_sin_to_cos,
                downscale_freq_shift: cfg.freq_shift as f32,
                scale: 1.0,
                max_period: 10000.0,
            }),
            TimeEmbeddingType::Fourier => TimeProj::Fourier {
                weight: l.tensor("time_proj.weight", &[c0])?,
            },
        };
        let class = match cfg.class_embedding {
            None => None,
            Some(ClassEmbedding::Lookup { num_class_embeds }) => Some(Class::Lookup {
                table: l.tensor("class_embedding.weight", &[num_class_embeds, ted])?,
            }),
            Some(ClassEmbedding::Timestep) => Some(Class::Timestep(Box::new(Mlp::load(
                l,
                "class_embedding",
                tid,
                ted,
            )?))),
        };
        Ok(Conditioning {
            proj,
            proj_dim: tid,
            time_embedding: Mlp::load(l, "time_embedding", tid, ted)?,
            class,
        })
    }

    /// Sinusoidal time conditioning alone (`Timesteps(channels, flip_sin_to_cos, freq_shift)`
    /// → `time_embedding`), as `UNet2DConditionModel` without class or addition embeddings.
    pub fn positional(
        l: &Loader<'_>,
        channels: usize,
        time_embed_dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        Ok(Conditioning {
            proj: TimeProj::Positional(Sinusoid {
                flip_sin_to_cos,
                downscale_freq_shift: freq_shift as f32,
                scale: 1.0,
                max_period: 10000.0,
            }),
            proj_dim: channels,
            time_embedding: Mlp::load(l, "time_embedding", channels, time_embed_dim)?,
            class: None,
        })
    }

    fn project(&self, g: &mut Graph<'_>, t: &Tensor, name: &str) -> Result<Tensor> {
        let n = t.shape()[0];
        let y = g.alloc(name, &[n, self.proj_dim])?;
        match &self.proj {
            TimeProj::Positional(e) => ops::embedding::timestep_embedding(&mut g.rec, t, &y, *e)?,
            TimeProj::Fourier { weight } => {
                // diffusers' UNet2DModel builds GaussianFourierProjection with log=True and
                // flip_sin_to_cos=False, whatever the config's flip_sin_to_cos says.
                ops::embedding::fourier_projection(&mut g.rec, t, weight, &y, true, false)?
            }
        }
        Ok(y)
    }

    /// SiLU(time_embedding(proj(t)) [+ class embedding]). `t` is f32 [N]; `labels` f32 [N].
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        t: &Tensor,
        labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let p = self.project(g, t, "time_proj")?;
        let emb = self.time_embedding.forward(g, &p)?;
        if let (Some(class), Some(labels)) = (&self.class, labels) {
            let ce = match class {
                Class::Lookup { table } => {
                    let y = g.alloc("class_emb", emb.shape())?;
                    ops::embedding::embedding_lookup(&mut g.rec, labels, table, &y)?;
                    y
                }
                Class::Timestep(mlp) => {
                    let p = self.project(g, labels, "class_proj")?;
                    mlp.forward(g, &p)?
                }
            };
            let sum = super::layers::add(g, &emb, &ce, "emb")?;
            ops::elementwise::unary_inplace(&mut g.rec, Unary::Silu, &sum)?;
            return Ok(sum);
        }
        ops::elementwise::unary_inplace(&mut g.rec, Unary::Silu, &emb)?;
        Ok(emb)
    }

    /// True when the model needs class labels.
    pub fn needs_labels(&self) -> bool {
        self.class.is_some()
    }

    /// Rows of the class table (labels must be below this), when a lookup table is used.
    pub fn num_classes(&self) -> Option<usize> {
        match &self.class {
            Some(Class::Lookup { table }) => Some(table.shape()[0]),
            _ => None,
        }
    }
}
