//! The key correspondence between the original (CompVis / Stability "LDM") single-file layout of
//! Stable Diffusion 1.x/2.x checkpoints and the diffusers/transformers parameter names the engine
//! loads — the inverse of diffusers' single-file converters (`convert_ldm_unet_checkpoint`,
//! `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`
//! in `diffusers/loaders/single_file_utils.py`), written from the layouts, as a function from a
//! diffusers name to the original key it comes from. Pure string work; no file access.

/// Prefix of the UNet's keys in an original-layout file.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Prefix of the VAE's keys.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Prefix of SD 1.x's CLIP text encoder keys (transformers' `CLIPTextModel` inside CompVis'
/// `FrozenCLIPEmbedder`).
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.text_model.";
/// Prefix of SD 2.x's OpenCLIP ViT-H text tower keys (`FrozenOpenCLIPEmbedder`).
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// Which text encoder layout a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLayout {
    /// SD 1.x: `cond_stage_model.transformer.text_model.*`, transformers' names.
    Clip,
    /// SD 2.x: `cond_stage_model.model.*`, OpenCLIP's names with fused q/k/v `in_proj`.
    OpenClip,
}

/// How a parameter is cut out of its original tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The whole tensor, same shape.
    Whole,
    /// The whole tensor, whose trailing 1×1 (conv) dimensions are dropped: the VAE mid-block
    /// attention's q/k/v/proj_out are 1×1 convolutions in the original, linear in diffusers.
    Squeeze,
    /// Third `i` (0 = q, 1 = k, 2 = v) of the rows of OpenCLIP's fused `in_proj_weight`/`bias`.
    Third(usize),
}

/// The original key a diffusers parameter is read from, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub key: String,
    pub take: Take,
}

impl Source {
    fn whole(key: String) -> Self {
        Source {
            key,
            take: Take::Whole,
        }
    }

    /// The shapes the original tensor may have when the parameter has shape `want`, the
    /// canonical one first (a [`Take::Squeeze`] source may also be stored already squeezed,
    /// as diffusers' `conv_attn_to_linear` accepts).
    pub fn original_shapes(&self, want: &[usize]) -> Vec<Vec<usize>> {
        match self.take {
            Take::Whole => vec![want.to_vec()],
            Take::Squeeze => {
                let mut four = want.to_vec();
                four.extend([1, 1]);
                vec![four, want.to_vec()]
            }
            Take::Third(_) => {
                let mut s = want.to_vec();
                if let Some(r) = s.first_mut() {
                    *r *= 3;
                }
                vec![s]
            }
        }
    }
}

/// The block structure the UNet mapping needs (from `unet/config.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UNetLayout {
    /// Resnets per down block (diffusers' `layers_per_block`, per block); up blocks have one
    /// more, in reverse order.
    pub layers_per_block: Vec<usize>,
    /// Per up block: whether it is a `CrossAttnUpBlock2D` (its upsampler is then the third
    /// module of its last output block, `output_blocks.i.2`, else `output_blocks.i.1`).
    pub up_cross_attention: Vec<bool>,
}

/// diffusers' ResnetBlock2D names → LDM's `ResBlock` names.
fn unet_resnet(rest: &str) -> Option<String> {
    const M: [(&str, &str); 6] = [
        ("norm1", "in_layers.0"),
        ("conv1", "in_layers.2"),
        ("time_emb_proj", "emb_layers.1"),
        ("norm2", "out_layers.0"),
        ("conv2", "out_layers.3"),
        ("conv_shortcut", "skip_connection"),
    ];
    rename(rest, &M)
}

/// `a.<param>` → `b.<param>` for the first pair whose `a` is a leading module path of `rest`.
fn rename(rest: &str, pairs: &[(&str, &str)]) -> Option<String> {
    pairs.iter().find_map(|(a, b)| {
        rest.strip_prefix(a)
            .and_then(|p| p.strip_prefix('.'))
            .filter(|p| !p.is_empty())
            .map(|p| format!("{b}.{p}"))
    })
}

/// `first.second.rest…` split at the first `n` dots.
fn split(name: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = name;
    for _ in 0..n {
        let (a, b) = rest.split_once('.')?;
        parts.push(a);
        rest = b;
    }
    Some((parts, rest))
}

/// The original key (with [`UNET_PREFIX`]) of the UNet2DConditionModel parameter `name`.
pub fn unet_source(name: &str, l: &UNetLayout) -> Option<Source> {
    let fixed = [
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ];
    let key = if let Some(k) = rename(name, &fixed) {
        k
    } else if let Some(r) = name.strip_prefix("down_blocks.") {
        let (p, rest) = split(r, 3)?;
        let b: usize = p[0].parse().ok()?;
        let lpb = *l.layers_per_block.get(b)?;
        let start = 1 + l.layers_per_block[..b].iter().map(|n| n + 1).sum::<usize>();
        match p[1] {
            "resnets" => {
                let j: usize = p[2].parse().ok()?;
                format!("input_blocks.{}.0.{}", start + j, unet_resnet(rest)?)
            }
            "attentions" => {
                let j: usize = p[2].parse().ok()?;
                format!("input_blocks.{}.1.{rest}", start + j)
            }
            "downsamplers" if p[2] == "0" => {
                let rest = rest.strip_prefix("conv.")?;
                format!("input_blocks.{}.0.op.{rest}", start + lpb)
            }
            _ => return None,
        }
    } else if let Some(r) = name.strip_prefix("mid_block.") {
        let (p, rest) = split(r, 2)?;
        match (p[0], p[1]) {
            ("resnets", k) => {
                let k: usize = k.parse().ok()?;
                format!("middle_block.{}.{}", 2 * k, unet_resnet(rest)?)
            }
            ("attentions", "0") => format!("middle_block.1.{rest}"),
            _ => return None,
        }
    } else if let Some(r) = name.strip_prefix("up_blocks.") {
        let (p, rest) = split(r, 3)?;
        let b: usize = p[0].parse().ok()?;
        let rev: Vec<usize> = l.layers_per_block.iter().rev().map(|n| n + 1).collect();
        let layers = *rev.get(b)?;
        let start: usize = rev[..b].iter().sum();
        match p[1] {
            "resnets" => {
                let j: usize = p[2].parse().ok()?;
                format!("output_blocks.{}.0.{}", start + j, unet_resnet(rest)?)
            }
            "attentions" => {
                let j: usize = p[2].parse().ok()?;
                format!("output_blocks.{}.1.{rest}", start + j)
            }
            "upsamplers" if p[2] == "0" => {
                let rest = rest.strip_prefix("conv.")?;
                let m = if *l.up_cross_attention.get(b)? { 2 } else { 1 };
                format!("output_blocks.{}.{m}.conv.{rest}", start + layers - 1)
            }
            _ => return None,
        }
    } else {
        return None;
    };
    Some(Source::whole(format!("{UNET_PREFIX}{key}")))
}

/// The original key (with [`VAE_PREFIX`]) of the AutoencoderKL parameter `name`; `blocks` is
/// `len(block_out_channels)` (the decoder's up blocks are numbered in reverse in the original).
pub fn vae_source(name: &str, blocks: usize) -> Option<Source> {
    let resnet = [
        ("norm1", "norm1"),
        ("conv1", "conv1"),
        ("norm2", "norm2"),
        ("conv2", "conv2"),
        ("conv_shortcut", "nin_shortcut"),
    ];
    let whole = |k: String| Some(Source::whole(format!("{VAE_PREFIX}{k}")));
    for conv in ["quant_conv.", "post_quant_conv."] {
        if name.starts_with(conv) {
            return whole(name.to_string());
        }
    }
    let (side, rest) = name.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return None;
    }
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return whole(name.to_string());
    }
    if let Some(p) = rest.strip_prefix("conv_norm_out.") {
        return whole(format!("{side}.norm_out.{p}"));
    }
    if let Some(r) = rest.strip_prefix("mid_block.") {
        let (p, rest) = split(r, 2)?;
        return match (p[0], p[1]) {
            ("resnets", k) => {
                let k: usize = k.parse().ok()?;
                whole(format!(
                    "{side}.mid.block_{}.{}",
                    k + 1,
                    rename(rest, &resnet)?
                ))
            }
            ("attentions", "0") => {
                let attn = [
                    ("group_norm", "norm"),
                    ("to_q", "q"),
                    ("to_k", "k"),
                    ("to_v", "v"),
                    ("to_out.0", "proj_out"),
                ];
                let o = rename(rest, &attn)?;
                let conv = !o.starts_with("norm.") && o.ends_with(".weight");
                Some(Source {
                    key: format!("{VAE_PREFIX}{side}.mid.attn_1.{o}"),
                    take: if conv { Take::Squeeze } else { Take::Whole },
                })
            }
            _ => None,
        };
    }
    let (blocks_name, orig) = if side == "encoder" {
        ("down_blocks.", "down")
    } else {
        ("up_blocks.", "up")
    };
    let r = rest.strip_prefix(blocks_name)?;
    let (p, rest) = split(r, 3)?;
    let i: usize = p[0].parse().ok()?;
    if i >= blocks {
        return None;
    }
    let k = if side == "encoder" { i } else { blocks - 1 - i };
    match p[1] {
        "resnets" => whole(format!(
            "{side}.{orig}.{k}.block.{}.{}",
            p[2].parse::<usize>().ok()?,
            rename(rest, &resnet)?
        )),
        "downsamplers" | "upsamplers" if p[2] == "0" => {
            let what = if side == "encoder" {
                "downsample"
            } else {
                "upsample"
            };
            whole(format!(
                "{side}.{orig}.{k}.{what}.conv.{}",
                rest.strip_prefix("conv.")?
            ))
        }
        _ => None,
    }
}

/// The original key of the CLIPTextModel parameter `name` (with or without transformers'
/// `text_model.` level).
pub fn text_source(name: &str, layout: TextLayout) -> Option<Source> {
    let name = name.strip_prefix("text_model.").unwrap_or(name);
    match layout {
        TextLayout::Clip => Some(Source::whole(format!("{CLIP_PREFIX}{name}"))),
        TextLayout::OpenClip => open_clip_source(name),
    }
}

fn open_clip_source(name: &str) -> Option<Source> {
    let fixed = [
        (
            "embeddings.position_embedding.weight",
            "positional_embedding",
        ),
        (
            "embeddings.token_embedding.weight",
            "token_embedding.weight",
        ),
        ("final_layer_norm.weight", "ln_final.weight"),
        ("final_layer_norm.bias", "ln_final.bias"),
    ];
    let whole = |k: String| Some(Source::whole(format!("{OPEN_CLIP_PREFIX}{k}")));
    if let Some((_, o)) = fixed.iter().find(|(d, _)| *d == name) {
        return whole(o.to_string());
    }
    let r = name.strip_prefix("encoder.layers.")?;
    let (p, rest) = split(r, 1)?;
    let i: usize = p[0].parse().ok()?;
    let block = format!("transformer.resblocks.{i}");
    for (j, qkv) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        if let Some(param) = rest
            .strip_prefix("self_attn.")
            .and_then(|r| r.strip_prefix(qkv))
            .and_then(|r| r.strip_prefix('.'))
        {
            if param != "weight" && param != "bias" {
                return None;
            }
            return Some(Source {
                key: format!("{OPEN_CLIP_PREFIX}{block}.attn.in_proj_{param}"),
                take: Take::Third(j),
            });
        }
    }
    let m = [
        ("layer_norm1", "ln_1"),
        ("layer_norm2", "ln_2"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
        ("self_attn.out_proj", "attn.out_proj"),
    ];
    whole(format!("{block}.{}", rename(rest, &m)?))
}

/// The DDPM buffers CompVis' `LatentDiffusion` saves at the top level of SD 1.x/2.x files
/// (the scheduler config carries the schedule instead).
const LDM_BUFFERS: [&str; 13] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
];

/// Why the original key `key` feeds no parameter, when it is one of the known-unused groups
/// (diffusers drops or ignores them too); None for every other key. `text_layers` is the text
/// encoder's `num_hidden_layers` when known: OpenCLIP's block of that index is the last block
/// of the tower, past the penultimate output SD 2.x uses (diffusers ignores `resblocks.23`).
pub fn known_unused(key: &str, text_layers: Option<usize>) -> Option<&'static str> {
    if LDM_BUFFERS.contains(&key) {
        return Some("a DDPM schedule buffer of the LDM training code");
    }
    if key.starts_with("model_ema.") {
        return Some("an EMA copy (the file's non-EMA UNet weights are used, as diffusers does)");
    }
    if key.starts_with("first_stage_model.loss.") {
        return Some("the VAE's training loss");
    }
    if key == format!("{CLIP_PREFIX}embeddings.position_ids") {
        return Some("CLIP's position-ids buffer");
    }
    let oc = key.strip_prefix(OPEN_CLIP_PREFIX)?;
    if oc == "text_projection" || oc == "logit_scale" {
        return Some("OpenCLIP's contrastive head (the pipeline uses the hidden states)");
    }
    let n = text_layers?;
    let (block, _) = oc.strip_prefix("transformer.resblocks.")?.split_once('.')?;
    (block.parse::<usize>().ok()? == n)
        .then_some("OpenCLIP's last block, after the penultimate layer SD 2.x conditions on")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> UNetLayout {
        UNetLayout {
            layers_per_block: vec![2; 4],
            up_cross_attention: vec![false, true, true, true],
        }
    }

    #[test]
    fn unet_keys_follow_the_ldm_numbering() {
        let k = |n: &str| unet_source(n, &sd15()).map(|s| s.key);
        assert_eq!(
            k("down_blocks.1.resnets.0.conv_shortcut.weight").as_deref(),
            Some("model.diffusion_model.input_blocks.4.0.skip_connection.weight")
        );
        assert_eq!(
            k("down_blocks.2.downsamplers.0.conv.bias").as_deref(),
            Some("model.diffusion_model.input_blocks.9.0.op.bias")
        );
        assert_eq!(
            k("up_blocks.0.upsamplers.0.conv.weight").as_deref(),
            Some("model.diffusion_model.output_blocks.2.1.conv.weight")
        );
        assert_eq!(
            k("up_blocks.1.upsamplers.0.conv.weight").as_deref(),
            Some("model.diffusion_model.output_blocks.5.2.conv.weight")
        );
        assert_eq!(k("up_blocks.4.resnets.0.norm1.weight"), None);
        assert_eq!(k("down_blocks.0.resnets.0.bogus.weight"), None);
    }

    #[test]
    fn open_clip_qkv_are_thirds_of_in_proj() {
        let s = text_source(
            "encoder.layers.3.self_attn.k_proj.bias",
            TextLayout::OpenClip,
        );
        assert_eq!(
            s,
            Some(Source {
                key: "cond_stage_model.model.transformer.resblocks.3.attn.in_proj_bias".into(),
                take: Take::Third(1)
            })
        );
        assert_eq!(
            known_unused(
                "cond_stage_model.model.transformer.resblocks.23.ln_1.weight",
                Some(23)
            ),
            Some("OpenCLIP's last block, after the penultimate layer SD 2.x conditions on")
        );
        assert_eq!(
            known_unused(
                "cond_stage_model.model.transformer.resblocks.22.ln_1.weight",
                Some(23)
            ),
            None
        );
    }
}
