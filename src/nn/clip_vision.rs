//! open_clip's `VisionTransformer` (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words";
//! the CLIP image tower of Radford et al., 2021) as DA-CLIP's official
//! `universal-image-restoration/open_clip/transformer.py` and `model.py` (`_build_vision_tower`)
//! build it: patch conv `conv1` (no bias), `class_embedding` token, `positional_embedding`,
//! `ln_pre`, pre-LN `ResidualAttentionBlock`s (`ln_1`, `nn.MultiheadAttention` with the fused
//! `in_proj_weight`/`in_proj_bias` and `out_proj`, optional `LayerScale` `ls_1`/`ls_2`, `ln_2`,
//! `mlp.c_fc` → GELU or QuickGELU → `mlp.c_proj`), the class token pooled (`x[:, 0]`), `ln_post`
//! and `pooled @ proj`. Heads = width / head_width; LayerNorm eps 1e-5 (`nn.LayerNorm`'s).
//!
//! DA-CLIP's controller copy (`visual_control`) wraps its transformer in `ControlTransformer`:
//! the blocks live under `transformer.transformer.resblocks.*` and each block's output also goes
//! through `transformer.zero_modules.{i}` (an `nn.Linear(width, width)`), whose outputs are the
//! hidden states returned with the pooled features. The main tower run with `control=hiddens`
//! adds `control.pop()` after each block — the controller's hidden states in REVERSE block order
//! (main block i gets hidden L−1−i; asserted on the official code by
//! `tools/daclip_golden/clip.py`).

use super::attention::sdpa;
use super::layers::{add, Conv2d, LayerNorm, Linear, Loader};
use super::Graph;
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::conv2d::Conv2dArgs;
use crate::ops::elementwise::{Binary, Unary};
use crate::tensor::Tensor;

/// `nn.LayerNorm`'s default eps (open_clip's `LayerNorm` subclass keeps it).
const LN_EPS: f64 = 1e-5;

/// The fields of open_clip's `CLIPVisionCfg` this tower uses (ViT towers only).
#[derive(Debug, Clone, PartialEq)]
pub struct CLIPVisionCfg {
    pub image_size: usize,
    pub layers: usize,
    pub width: usize,
    pub patch_size: usize,
    pub head_width: usize,
    pub mlp_ratio: f64,
    /// `LayerScale` init value: when set, every block has `ls_1.gamma` and `ls_2.gamma`.
    pub ls_init_value: Option<f64>,
}

impl CLIPVisionCfg {
    /// Attention heads (`width // head_width`).
    pub fn heads(&self) -> usize {
        self.width / self.head_width
    }

    /// Patches per side (`image_size // patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens: the class token and grid² patches.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// `int(width * mlp_ratio)`.
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
}

/// One `ResidualAttentionBlock`: x + ls_1(attn(ln_1(x))), then + ls_2(mlp(ln_2(x))).
struct Block {
    ln_1: LayerNorm,
    in_proj: Linear,
    out_proj: Linear,
    ls_1: Option<Tensor>,
    ln_2: LayerNorm,
    c_fc: Linear,
    c_proj: Linear,
    ls_2: Option<Tensor>,
}

/// A loaded vision tower (`visual.` or, with zero modules, `visual_control.`).
pub struct VisionTransformer {
    pub cfg: CLIPVisionCfg,
    pub output_dim: usize,
    act: Unary,
    conv1: Conv2d,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: LayerNorm,
    blocks: Vec<Block>,
    /// `ControlTransformer.zero_modules` (the controller only).
    zero_modules: Option<Vec<Linear>>,
    ln_post: LayerNorm,
    proj: Tensor,
}

/// `nn.Conv2d(3, width, patch, stride=patch, bias=False)`, packed for the CPU-adapter kernels
/// as [`Loader::conv`] does.
fn patch_conv(l: &Loader<'_>, name: &str, width: usize, patch: usize) -> Result<Conv2d> {
    let weight = l.tensor(name, &[width, 3, patch, patch])?;
    let cpu = l.gpu.info().device_type == wgpu::DeviceType::Cpu;
    let packed = if cpu {
        let shape = ops::conv_pack::packed_shape(weight.shape());
        let t = Tensor::empty(l.gpu, &format!("{name}.packed"), &shape, l.dtype)?;
        l.gpu
            .run(|rec| ops::conv_pack::pack_weights(rec, &weight, &t))?;
        l.bytes.set(l.bytes.get() + t.storage_bytes());
        Some(t)
    } else {
        None
    };
    Ok(Conv2d {
        name: name.trim_end_matches(".weight").to_string(),
        weight,
        packed,
        scale: None,
        input_scale: None,
        bias: None,
        args: Conv2dArgs {
            stride: patch,
            padding: 0,
            extra_end: 0,
        },
        cout: width,
        k: patch,
    })
}

impl VisionTransformer {
    /// Loads the tower whose keys start with `prefix` (`"visual."`); `control` loads the
    /// `ControlTransformer` layout (`visual_control.`). `quick_gelu` picks the MLP activation as
    /// `_build_vision_tower` does (QuickGELU, else exact GELU).
    pub fn load(
        l: &Loader<'_>,
        prefix: &str,
        cfg: &CLIPVisionCfg,
        output_dim: usize,
        quick_gelu: bool,
        control: bool,
    ) -> Result<Self> {
        let p = |s: &str| format!("{prefix}{s}");
        let w = cfg.width;
        let blocks_at = if control {
            "transformer.transformer.resblocks"
        } else {
            "transformer.resblocks"
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let b = |s: &str| p(&format!("{blocks_at}.{i}.{s}"));
            let ls = |s: &str| -> Result<Option<Tensor>> {
                match cfg.ls_init_value {
                    Some(_) => Ok(Some(l.tensor(&b(s), &[w])?)),
                    None => Ok(None),
                }
            };
            blocks.push(Block {
                ln_1: l.layer_norm(&b("ln_1"), w, LN_EPS)?,
                in_proj: Linear {
                    name: b("attn.in_proj"),
                    weight: l.tensor(&b("attn.in_proj_weight"), &[3 * w, w])?,
                    scale: None,
                    input_scale: None,
                    bias: Some(l.tensor(&b("attn.in_proj_bias"), &[3 * w])?),
                    fout: 3 * w,
                },
                out_proj: l.linear(&b("attn.out_proj"), w, w)?,
                ls_1: ls("ls_1.gamma")?,
                ln_2: l.layer_norm(&b("ln_2"), w, LN_EPS)?,
                c_fc: l.linear(&b("mlp.c_fc"), w, cfg.mlp_width())?,
                c_proj: l.linear(&b("mlp.c_proj"), cfg.mlp_width(), w)?,
                ls_2: ls("ls_2.gamma")?,
            });
        }
        let zero_modules = if control {
            let z = (0..cfg.layers)
                .map(|i| l.linear(&p(&format!("transformer.zero_modules.{i}")), w, w))
                .collect::<Result<Vec<_>>>()?;
            Some(z)
        } else {
            None
        };
        Ok(VisionTransformer {
            conv1: patch_conv(l, &p("conv1.weight"), w, cfg.patch_size)?,
            class_embedding: l.tensor(&p("class_embedding"), &[w])?,
            positional_embedding: l.tensor(&p("positional_embedding"), &[cfg.tokens(), w])?,
            ln_pre: l.layer_norm(&p("ln_pre"), w, LN_EPS)?,
            blocks,
            zero_modules,
            ln_post: l.layer_norm(&p("ln_post"), w, LN_EPS)?,
            proj: l.tensor(&p("proj"), &[w, output_dim])?,
            act: if quick_gelu {
                Unary::QuickGelu
            } else {
                Unary::Gelu
            },
            cfg: cfg.clone(),
            output_dim,
        })
    }

    /// Records the tower on `x` [B, 3, S, S] (S = image_size): returns the pooled features
    /// [B, output_dim] and, for the controller, the zero modules' hidden states (one [B, L, W]
    /// per block, in block order). `control` (the main tower): hidden states to add, block i
    /// getting `control[L − 1 − i]` as the official `control.pop()` does.
    pub fn forward(
        &self,
        g: &mut Graph<'_>,
        x: &Tensor,
        control: Option<&[Tensor]>,
        name: &str,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let c = &self.cfg;
        let (w, s, l) = (c.width, c.image_size, c.tokens());
        let xs = x.shape();
        if xs.len() != 4 || xs[1] != 3 || xs[2] != s || xs[3] != s {
            return Err(Error::Shape {
                op: "VisionTransformer",
                tensor: x.name().to_string(),
                got: xs.to_vec(),
                expected: format!("expected [B, 3, {s}, {s}] (RGB at image_size {s})"),
            });
        }
        let b = xs[0];
        if let Some(h) = control {
            if h.len() != c.layers {
                return Err(Error::Argument {
                    op: "VisionTransformer",
                    arg: "control",
                    reason: format!("{} hidden states for {} blocks", h.len(), c.layers),
                });
            }
        }
        let n = |s: &str| format!("{name}.{s}");
        // Patches, token-major: [B, W, G, G] → [B, G², W].
        let patches = self.conv1.forward(g, x, &n("conv1"))?;
        let tokens_t = g.alloc(&n("patch_tokens"), &[b, l - 1, w, 1])?;
        ops::transpose::transpose(&mut g.rec, &patches, &tokens_t, b, w, l - 1)?;
        // cat([class_embedding + zeros(B, 1, W), patches], dim=1) + positional_embedding.
        let zeros = Tensor::zeros(g.gpu(), &n("class_zeros"), &[b, 1, w], g.dtype)?;
        let cls = g.alloc(&n("class_token"), &[b, 1, w])?;
        ops::elementwise::binary(&mut g.rec, Binary::Add, &zeros, &self.class_embedding, &cls)?;
        let cat = g.alloc(&n("tokens"), &[b, l, w, 1])?;
        let cls = cls.reshape(&[b, 1, w, 1])?;
        ops::concat::concat_channels(&mut g.rec, &cls, &tokens_t, &cat)?;
        let cat = cat.reshape(&[b, l, w])?;
        let x = add(g, &cat, &self.positional_embedding, &n("embeddings"))?;
        let mut x = self.ln_pre.forward(g, &x, &n("ln_pre"))?;
        let mut hiddens = Vec::new();
        for (i, blk) in self.blocks.iter().enumerate() {
            x = self.block(g, blk, &x, &format!("{name}.{i}"))?;
            if let Some(z) = &self.zero_modules {
                hiddens.push(z[i].forward(g, &x, &format!("{name}.{i}.zero_module"))?);
            }
            if let Some(h) = control {
                x = add(g, &x, &h[c.layers - 1 - i], &format!("{name}.{i}.control"))?;
            }
        }
        // Pool the class token: x[:, 0] → [B, W].
        let pooled = g.alloc(&n("pooled"), &[b, 1, w, 1])?;
        let x4 = x.reshape(&[b, l, w, 1])?;
        ops::concat::slice_channels(&mut g.rec, &x4, 0, &pooled)?;
        let pooled = pooled.reshape(&[b, w])?;
        let pooled = self.ln_post.forward(g, &pooled, &n("ln_post"))?;
        let out = g.alloc(&n("features"), &[b, self.output_dim])?;
        g.flops += 2 * (b * w * self.output_dim) as u64;
        ops::gemm::matmul(&mut g.rec, &pooled, &self.proj, None, &out, false, 1.0)?;
        Ok((out, hiddens))
    }

    fn block(&self, g: &mut Graph<'_>, blk: &Block, x: &Tensor, name: &str) -> Result<Tensor> {
        let c = &self.cfg;
        let (w, sh) = (c.width, x.shape().to_vec());
        let rows = sh[0] * sh[1];
        let n = |s: &str| format!("{name}.{s}");
        let y = blk.ln_1.forward(g, x, &n("ln_1"))?;
        let qkv = blk.in_proj.forward(g, &y, &n("qkv"))?;
        let qkv = qkv.reshape(&[rows, 3 * w, 1, 1])?;
        let mut parts = Vec::with_capacity(3);
        for (j, s) in ["q", "k", "v"].iter().enumerate() {
            let t = g.alloc(&n(s), &[rows, w, 1, 1])?;
            ops::concat::slice_channels(&mut g.rec, &qkv, j * w, &t)?;
            parts.push(t.reshape(&sh)?);
        }
        let a = sdpa(
            g,
            &parts[0],
            &parts[1],
            &parts[2],
            c.heads(),
            false,
            &n("attn"),
        )?;
        let o = blk.out_proj.forward(g, &a, &n("attn_out"))?;
        let o = scale(g, o, blk.ls_1.as_ref(), &n("ls_1"))?;
        let x = add(g, x, &o, &n("residual1"))?;
        let y = blk.ln_2.forward(g, &x, &n("ln_2"))?;
        let f = blk.c_fc.forward(g, &y, &n("c_fc"))?;
        ops::elementwise::unary_inplace(&mut g.rec, self.act, &f)?;
        let f = blk.c_proj.forward(g, &f, &n("c_proj"))?;
        let f = scale(g, f, blk.ls_2.as_ref(), &n("ls_2"))?;
        add(g, &x, &f, &n("residual2"))
    }
}

/// `LayerScale`: x · gamma (None: the identity).
fn scale(g: &mut Graph<'_>, x: Tensor, gamma: Option<&Tensor>, name: &str) -> Result<Tensor> {
    let Some(gm) = gamma else { return Ok(x) };
    let y = g.alloc(name, x.shape())?;
    ops::elementwise::binary(&mut g.rec, Binary::Mul, &x, gm, &y)?;
    Ok(y)
}
