//! Single-file Stable Diffusion 1.x/2.x checkpoints in the original (CompVis / Stability)
//! layout — the `.safetensors` most users have: UNet (`model.diffusion_model.*`), VAE
//! (`first_stage_model.*`) and text encoder (`cond_stage_model.*`) in one file — read as the
//! diffusers components the engine loads, with a key correspondence equivalent to diffusers'
//! single-file loader (`diffusers/loaders/single_file_utils.py`; proven against it by
//! `tests/sd_single_file.rs` on goldens from `tools/sd_golden/single_file.py`).
//!
//! [`SingleFile::open`] checks the layout and infers the version; [`SingleFile::unet`],
//! [`SingleFile::vae`] and [`SingleFile::text_encoder`] each give a [`WeightSource`] answering
//! the diffusers/transformers parameter names with the original tensors (q/k/v cut from
//! OpenCLIP's fused `in_proj`, the VAE attention's 1×1 convs as linear weights). After loading
//! the three components, [`SingleFile::check_all_used`] accounts for every key of the file:
//! known-unused groups ([`keymap::known_unused`]) are ignored by name, anything else is an
//! error naming the key.
//!
//! ```ignore
//! let sf = SingleFile::open(&file)?;
//! let dir = match config { Some(d) => d, None => sf.default_config_dir()? };
//! let ucfg = UNet2DConditionConfig::from_file(&dir.join("unet/config.json"))?;
//! let layout = UNetLayout {
//!     layers_per_block: ucfg.layers_per_block.clone(),
//!     up_cross_attention: ucfg.up_block_types.iter()
//!         .map(|t| matches!(t, CrossUpBlockType::CrossAttnUpBlock2D)).collect(),
//! };
//! let unet = UNet2DConditionModel::load(gpu, ucfg, &sf.unet(layout), dtype)?;
//! let vcfg = AutoencoderKLConfig::from_file(&dir.join("vae/config.json"))?;
//! let vae = AutoencoderKL::load(gpu, vcfg.clone(), &sf.vae(vcfg.block_out_channels.len()), dtype)?;
//! let tcfg = CLIPTextConfig::from_file(&dir.join("text_encoder/config.json"))?;
//! let text = CLIPTextModel::load(gpu, tcfg.clone(), &sf.text_encoder(tcfg.num_hidden_layers), "", dtype)?;
//! sf.check_all_used()?;
//! ```

pub mod keymap;

use self::keymap::{Source, Take, TextLayout, UNetLayout};
use super::{HostTensor, WeightSource, Weights};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The Stable Diffusion generation a file's keys identify, as diffusers'
/// `infer_diffusers_model_type` tells v1 from v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdVersion {
    /// SD 1.x: CLIP ViT-L/14 text encoder, cross-attention dim 768.
    V1,
    /// SD 2.x: OpenCLIP ViT-H text tower, cross-attention dim 1024.
    V2,
}

impl SdVersion {
    /// The name of its shipped config folder under `assets/configs/`.
    pub fn config_name(self) -> &'static str {
        match self {
            SdVersion::V1 => "sd15",
            SdVersion::V2 => "sd21",
        }
    }
}

/// The key diffusers reads the cross-attention width from (`CHECKPOINT_KEY_NAMES["v2"]`).
const CROSS_ATTN_TO_K: &str =
    "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
/// The UNet's first conv (its input channels tell txt2img models from inpainting ones).
const CONV_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";

/// The component a key group belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
}

impl Component {
    /// The diffusers pipeline folder's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
        }
    }
}

/// An opened original-layout single-file checkpoint.
pub struct SingleFile {
    file: String,
    weights: Weights,
    text: TextLayout,
    version: Option<SdVersion>,
    /// Original keys read by a component.
    used: RefCell<BTreeSet<String>>,
    /// The text encoder's `num_hidden_layers`, once [`SingleFile::text_encoder`] is called.
    text_layers: Cell<Option<usize>>,
}

/// The key groups by their first one or two dot-separated parts, with counts (error messages).
fn prefixes(keys: &[String]) -> String {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for k in keys {
        let p: Vec<&str> = k.splitn(3, '.').collect();
        let head = if p.len() > 2 {
            format!("{}.{}.*", p[0], p[1])
        } else {
            k.clone()
        };
        *m.entry(head).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shown: Vec<String> = v
        .iter()
        .take(6)
        .map(|(k, n)| format!("{k} ({n})"))
        .collect();
    let more = if v.len() > 6 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

impl SingleFile {
    /// Opens `path` and checks that it is an original-layout SD 1.x/2.x checkpoint: UNet, VAE
    /// and a CLIP (SD 1.x) or OpenCLIP (SD 2.x) text encoder, and no key outside those groups
    /// and the known-unused ones. Any other layout is an error naming the file and what it
    /// holds.
    pub fn open(path: &Path) -> Result<SingleFile> {
        let weights = Weights::open(path)?;
        let file = path.display().to_string();
        let keys = weights.names();
        let fail = |reason: String| Error::Load {
            file: file.clone(),
            reason,
        };
        let has = |p: &str| keys.iter().any(|k| k.starts_with(p));
        if !has(keymap::UNET_PREFIX) {
            let what = if keys.is_empty() {
                "no tensors".to_string()
            } else if has("conditioner.embedders.") {
                "SDXL-style keys (conditioner.embedders.*), which this loader does not support"
                    .to_string()
            } else if keys.iter().any(|k| k.starts_with("down_blocks.")) {
                "diffusers-layout keys (down_blocks.*): pass the diffusers folder instead"
                    .to_string()
            } else {
                format!("keys {}", prefixes(&keys))
            };
            return Err(fail(format!(
                "not an original-layout Stable Diffusion 1.x/2.x checkpoint (no {}* UNet keys); \
                 found {what}",
                keymap::UNET_PREFIX
            )));
        }
        if !has(keymap::VAE_PREFIX) {
            return Err(fail(format!(
                "original-layout checkpoint without a VAE (no {}* keys)",
                keymap::VAE_PREFIX
            )));
        }
        let clip = format!(
            "{}embeddings.position_embedding.weight",
            keymap::CLIP_PREFIX
        );
        let open_clip = format!("{}token_embedding.weight", keymap::OPEN_CLIP_PREFIX);
        let text = if weights.contains(&clip) {
            TextLayout::Clip
        } else if weights.contains(&open_clip) {
            TextLayout::OpenClip
        } else {
            let found: Vec<String> = keys
                .iter()
                .filter(|k| k.starts_with("cond_stage_model."))
                .cloned()
                .collect();
            return Err(fail(format!(
                "no text encoder in a known layout (neither `{clip}` of SD 1.x's CLIP nor \
                 `{open_clip}` of SD 2.x's OpenCLIP); found {}",
                if found.is_empty() {
                    "no cond_stage_model.* keys".to_string()
                } else {
                    format!("text keys {}", prefixes(&found))
                }
            )));
        };
        let text_prefix = match text {
            TextLayout::Clip => "cond_stage_model.transformer.",
            TextLayout::OpenClip => keymap::OPEN_CLIP_PREFIX,
        };
        for k in &keys {
            let grouped = k.starts_with(keymap::UNET_PREFIX)
                || k.starts_with(keymap::VAE_PREFIX)
                || k.starts_with(text_prefix);
            if !grouped && keymap::known_unused(k, None).is_none() {
                return Err(fail(format!(
                    "tensor `{k}` belongs to no Stable Diffusion component ({}*, {}*, {text_prefix}*) \
                     nor to a known-unused group",
                    keymap::UNET_PREFIX,
                    keymap::VAE_PREFIX
                )));
            }
        }
        let cross = weights
            .shape(CROSS_ATTN_TO_K)
            .and_then(|s| s.last().copied());
        let cin = weights.shape(CONV_IN).and_then(|s| s.get(1).copied());
        let version = match (cross, cin) {
            (Some(1024), Some(4)) => Some(SdVersion::V2),
            (Some(768), Some(4)) => Some(SdVersion::V1),
            _ => None,
        };
        Ok(SingleFile {
            file,
            weights,
            text,
            version,
            used: RefCell::new(BTreeSet::new()),
            text_layers: Cell::new(None),
        })
    }

    /// The file's path as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The text encoder layout the keys show.
    pub fn text_layout(&self) -> TextLayout {
        self.text
    }

    /// The version the keys identify: V2 when the first cross-attention block's `to_k` takes
    /// 1024 inputs, V1 when 768 (diffusers also falls back to v1 for anything else; here any
    /// other width, or a UNet input other than 4 latent channels — inpainting, pix2pix — is
    /// None: such files need `--config`).
    pub fn version(&self) -> Option<SdVersion> {
        self.version
    }

    /// The shipped diffusers pipeline config folder (without weights) of the version the keys
    /// identify: `assets/configs/sd15` (runwayml/stable-diffusion-v1-5) or `assets/configs/sd21`
    /// (stabilityai/stable-diffusion-2-1, v-prediction, as diffusers also picks for any v2 file)
    /// in this source tree (a relocated binary resolves [`SdVersion::config_name`] itself). An
    /// error naming the file and what was found when the keys identify neither.
    pub fn default_config_dir(&self) -> Result<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/configs");
        match self.version {
            Some(v) => Ok(root.join(v.config_name())),
            None => {
                let s = |k: &str| {
                    self.weights
                        .shape(k)
                        .map_or("absent".to_string(), |s| format!("{s:?}"))
                };
                Err(Error::Load {
                    file: self.file.clone(),
                    reason: format!(
                        "the keys identify no shipped config (`{CROSS_ATTN_TO_K}` {}, `{CONV_IN}` {}; \
                         SD 1.x has cross-attention width 768, SD 2.x 1024, both 4 input \
                         channels); pass the pipeline config folder with --config",
                        s(CROSS_ATTN_TO_K),
                        s(CONV_IN)
                    ),
                })
            }
        }
    }

    /// The UNet's weights, named as diffusers' `UNet2DConditionModel`.
    pub fn unet(&self, layout: UNetLayout) -> ComponentWeights<'_> {
        ComponentWeights {
            file: self,
            component: Component::Unet,
            map: Map::Unet(layout),
        }
    }

    /// The VAE's weights, named as diffusers' `AutoencoderKL`; `blocks` is
    /// `len(block_out_channels)` of its config.
    pub fn vae(&self, blocks: usize) -> ComponentWeights<'_> {
        ComponentWeights {
            file: self,
            component: Component::Vae,
            map: Map::Vae(blocks),
        }
    }

    /// The text encoder's weights, named as transformers' `CLIPTextModel` (with or without
    /// its `text_model.` level); `num_hidden_layers` from its config (for SD 2.x files the
    /// OpenCLIP block of that index — the last — is known-unused).
    pub fn text_encoder(&self, num_hidden_layers: usize) -> ComponentWeights<'_> {
        self.text_layers.set(Some(num_hidden_layers));
        ComponentWeights {
            file: self,
            component: Component::TextEncoder,
            map: Map::Text(self.text),
        }
    }

    /// After the three components are loaded: an error naming the first key of the file that
    /// no component read and that is not known-unused (a config that does not match the file,
    /// or a layout this loader does not know).
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let layers = self.text_layers.get();
        let unused: Vec<String> = self
            .weights
            .names()
            .into_iter()
            .filter(|k| !used.contains(k) && keymap::known_unused(k, layers).is_none())
            .collect();
        match unused.first() {
            None => Ok(()),
            Some(first) => Err(Error::UnexpectedTensors {
                file: self.file.clone(),
                count: unused.len(),
                first: first.clone(),
            }),
        }
    }
}

enum Map {
    Unet(UNetLayout),
    Vae(usize),
    Text(TextLayout),
}

/// One component's view of a [`SingleFile`]: a [`WeightSource`] in diffusers names.
pub struct ComponentWeights<'a> {
    file: &'a SingleFile,
    component: Component,
    map: Map,
}

impl ComponentWeights<'_> {
    /// The original key and cut of the parameter `name` (None: no such parameter).
    pub fn source(&self, name: &str) -> Option<Source> {
        match &self.map {
            Map::Unet(l) => keymap::unet_source(name, l),
            Map::Vae(n) => keymap::vae_source(name, *n),
            Map::Text(t) => keymap::text_source(name, *t),
        }
    }

    /// The parameter `name` of shape `want` read to the host as f32 (checked: a float tensor of
    /// the shape the config implies, finite).
    pub fn read_f32(&self, name: &str, want: &[usize]) -> Result<HostTensor> {
        let f = self.file;
        let comp = self.component.name();
        let src = self.source(name).ok_or_else(|| Error::Load {
            file: f.file.clone(),
            reason: format!(
                "the {comp} parameter `{name}` has no place in the original single-file layout"
            ),
        })?;
        let key = &src.key;
        let Some(stored) = f.weights.shape(key) else {
            return Err(Error::Load {
                file: f.file.clone(),
                reason: format!("missing tensor `{key}` (the {comp}'s `{name}`)"),
            });
        };
        let shapes = src.original_shapes(want);
        if !shapes.contains(&stored) {
            return Err(Error::TensorShape {
                file: f.file.clone(),
                tensor: key.clone(),
                got: stored,
                want: shapes[0].clone(),
            });
        }
        let dt = f.weights.stored_dtype(key).unwrap_or_default();
        if !matches!(dt.as_str(), "F32" | "F16" | "BF16") {
            return Err(Error::TensorDType {
                file: f.file.clone(),
                tensor: key.clone(),
                got: dt,
                extra: " for weights".into(),
            });
        }
        let h = f.weights.read_f32(key, None)?;
        if let Some(i) = h.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Load {
                file: f.file.clone(),
                reason: format!("tensor `{key}` holds a non-finite value at flat index {i}"),
            });
        }
        f.used.borrow_mut().insert(key.clone());
        let data = match src.take {
            Take::Whole | Take::Squeeze => h.data,
            Take::Third(j) => {
                let n = h.data.len() / 3;
                h.data[j * n..(j + 1) * n].to_vec()
            }
        };
        Ok(HostTensor {
            shape: want.to_vec(),
            data,
        })
    }
}

impl WeightSource for ComponentWeights<'_> {
    fn tensor(&self, gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let h = self.read_f32(name, shape)?;
        Tensor::from_f32(gpu, name, shape, &h.data, dtype)
    }
}
