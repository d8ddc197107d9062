//! DA-CLIP's image encoder (Luo et al., 2024, "Controlling Vision-Language Models for Multi-Task
//! Image Restoration"; official `universal-image-restoration/open_clip/daclip_model.py`):
//! `DaCLIP.encode_image(image, control=True)` = (image_features, degra_features), where the
//! controller `visual_control` (a copy of the CLIP image tower whose transformer is a
//! `ControlTransformer`) gives the degradation features and per-block hidden states, and the CLIP
//! tower `visual` run with those hidden states added (in reverse block order,
//! [`super::clip_vision`]) gives the image features. Unnormalised (`normalize=False`, as the
//! restoration code calls it). The official `test.py` runs it under `torch.cuda.amp.autocast()`
//! (f16 GEMMs and convs, f32 LayerNorm/softmax), so the released pipeline's own features carry
//! ~1e-3 relative rounding; the goldens are the f32 forward, which the f32 model here matches to
//! ~1e-6·max and the f16 one (f16 storage, f32 arithmetic) to ~1.6e-3·max.
//!
//! The converted folder's `daclip/` holds `config.json` (open_clip's model config: `embed_dim`,
//! `vision_cfg` with `CLIPVisionCfg`'s field names, `quick_gelu`, `image_mean`, `image_std`) and
//! `model.safetensors` (the official state-dict keys `visual.*` and `visual_control.*`; every
//! tensor must be used).
//!
//! Use (the restore pipeline): [`DaClip::from_dir`] on the model folder (or `daclip/`);
//! [`DaClipConfig::check_context_dim`] against the UNet's `context_dim`; per image, the official
//! `clip_transform` on the host — [`DaClip::preprocess_channels`] (decoded PNG bytes, RGB or
//! RGBA) or [`DaClip::preprocess_unit_nchw`] ([N, 3, h, w] in [0, 1]) — then either
//! [`DaClip::encode_image`] (host f32 [N, embed_dim] × 2 back) or [`DaClip::forward_for`] +
//! [`ImageForward::run`], whose `image_features` / `degra_features` tensors another recording
//! (the UNet's `image_context` / `text_context` inputs) may bind or copy. One recording per batch
//! size, kept by the model.

use super::clip_transform::{clip_transform_u8, quantize_unit};
use super::clip_vision::{CLIPVisionCfg, VisionTransformer};
use super::layers::Loader;
use super::Graph;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recording};
use crate::load::{self, ConfigFields, WeightSource, Weights};
use crate::tensor::{DType, Tensor};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

/// The checkpoint file name inside `daclip/`.
pub const WEIGHTS: &str = "model.safetensors";
/// The subfolder of a converted model folder (`model_index.json`'s `image_encoder`).
pub const SUBFOLDER: &str = "daclip";

/// `vision_cfg` fields read into [`CLIPVisionCfg`].
const VISION_READ: &[&str] = &[
    "image_size",
    "layers",
    "width",
    "patch_size",
    "head_width",
    "mlp_ratio",
    "ls_init_value",
];
/// `vision_cfg` fields with no effect on an inference forward of a ViT tower (dropout, the
/// tokens output, the attentional pooler's sizes when it is off); those that would change the
/// tower (`input_patchnorm`, `global_average_pool`, `attentional_pool`, a timm model) must be
/// off.
const VISION_INERT: &[&str] = &[
    "patch_dropout",
    "output_tokens",
    "n_queries",
    "attn_pooler_heads",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
    "timm_model_pretrained",
];
const VISION_OFF: &[&str] = &[
    "input_patchnorm",
    "global_average_pool",
    "attentional_pool",
    "timm_model_name",
];

/// `daclip/config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct DaClipConfig {
    pub embed_dim: usize,
    pub vision: CLIPVisionCfg,
    pub quick_gelu: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

fn size_field(f: &ConfigFields<'_>, k: &str, d: usize) -> Result<usize> {
    // open_clip's to_2tuple: an int or a square [s, s].
    match f.get(k) {
        Some(Value::Array(a)) => {
            let v: Vec<Option<u64>> = a.iter().map(|x| x.as_u64()).collect();
            match v.as_slice() {
                [Some(h), Some(w)] if h == w && *h >= 1 && *h <= 1 << 16 => Ok(*h as usize),
                _ => Err(f.err(k, "must be an integer or a square [s, s] pair")),
            }
        }
        _ => f.int(k, d, 1..=1 << 16),
    }
}

fn rgb_triple(f: &ConfigFields<'_>, k: &str, d: [f32; 3], dom: Domain) -> Result<[f32; 3]> {
    let Some(v) = f.get(k) else { return Ok(d) };
    let a = v.as_array().filter(|a| a.len() == 3);
    let vals: Option<Vec<f64>> = a.map(|a| a.iter().filter_map(|x| x.as_f64()).collect());
    match vals {
        Some(x) if x.len() == 3 && x.iter().all(|&x| dom.check(x).is_ok()) => {
            Ok([x[0] as f32, x[1] as f32, x[2] as f32])
        }
        _ => Err(f.err(k, format!("must be three numbers in {dom} (R, G, B)"))),
    }
}

impl DaClipConfig {
    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = load::read_json(path)?;
        Self::from_json(&v, &path.display().to_string())
    }

    /// Parses the config object; `file` names it in errors. Unknown fields are refused by name.
    pub fn from_json(v: &Value, file: &str) -> Result<Self> {
        let f = ConfigFields::new(v, file)?;
        const TOP: &[&str] = &[
            "_class_name",
            "embed_dim",
            "vision_cfg",
            "quick_gelu",
            "image_mean",
            "image_std",
            // The text tower's config (never run here) and open_clip's flags for it.
            "text_cfg",
            "custom_text",
            "cast_dtype",
        ];
        for k in f.keys() {
            if !TOP.contains(&k.as_str()) {
                return Err(f.err(k, "not a DaCLIP config field this engine knows"));
            }
        }
        let class = f.str("_class_name", "DaCLIP")?;
        if class != "DaCLIP" {
            return Err(f.err("_class_name", format!("`{class}` is not DaCLIP")));
        }
        let vfile = format!("{file} (vision_cfg)");
        let empty = Value::Object(Default::default());
        let vv = f.get("vision_cfg").unwrap_or(&empty);
        let vf = ConfigFields::new(vv, &vfile)?;
        for k in vf.keys() {
            let k = k.as_str();
            if VISION_OFF.contains(&k) {
                let on = match vf.get(k) {
                    None | Some(Value::Bool(false)) => false,
                    Some(Value::String(s)) => !s.is_empty(),
                    Some(_) => true,
                };
                if on {
                    return Err(vf.err(k, "this vision tower variant is not supported"));
                }
            } else if !VISION_READ.contains(&k) && !VISION_INERT.contains(&k) {
                return Err(vf.err(k, "not a CLIPVisionCfg field this engine knows"));
            }
        }
        if vf.get("layers").is_some_and(|l| l.is_array()) {
            return Err(vf.err(
                "layers",
                "a ResNet tower (a list of layers) is not supported",
            ));
        }
        let vision = CLIPVisionCfg {
            image_size: size_field(&vf, "image_size", 224)?,
            layers: vf.int("layers", 12, 1..=1024)?,
            width: vf.int("width", 768, 1..=1 << 16)?,
            patch_size: size_field(&vf, "patch_size", 16)?,
            head_width: vf.int("head_width", 64, 1..=1 << 16)?,
            mlp_ratio: vf.f64("mlp_ratio", 4.0, Domain::closed(1e-3, 1e3))?,
            ls_init_value: match vf.get("ls_init_value") {
                None => None,
                Some(_) => Some(vf.f64("ls_init_value", 0.0, Domain::FINITE)?),
            },
        };
        if vision.width % vision.head_width != 0 {
            return Err(vf.err(
                "head_width",
                format!(
                    "{} does not divide width {}",
                    vision.head_width, vision.width
                ),
            ));
        }
        if vision.patch_size > vision.image_size {
            return Err(vf.err(
                "patch_size",
                format!(
                    "{} is larger than image_size {}",
                    vision.patch_size, vision.image_size
                ),
            ));
        }
        if vision.mlp_width() == 0 {
            return Err(vf.err("mlp_ratio", "gives an MLP of width 0"));
        }
        Ok(DaClipConfig {
            embed_dim: f.int("embed_dim", 512, 1..=1 << 16)?,
            vision,
            quick_gelu: f.bool("quick_gelu", false)?,
            image_mean: rgb_triple(
                &f,
                "image_mean",
                super::clip_transform::CLIP_MEAN,
                Domain::FINITE,
            )?,
            image_std: rgb_triple(
                &f,
                "image_std",
                super::clip_transform::CLIP_STD,
                Domain::POSITIVE,
            )?,
        })
    }

    /// Errors unless the encoder's features have `context_dim` entries (`who` names the network
    /// whose config asks for it, e.g. `unet/config.json context_dim`).
    pub fn check_context_dim(&self, context_dim: usize, who: &str) -> Result<()> {
        if self.embed_dim != context_dim {
            return Err(Error::Config {
                file: who.to_string(),
                field: "context_dim".into(),
                reason: format!(
                    "{context_dim} does not match the DA-CLIP encoder's embed_dim {}",
                    self.embed_dim
                ),
            });
        }
        Ok(())
    }
}

/// A loaded DA-CLIP image encoder on the GPU.
pub struct DaClip {
    pub config: DaClipConfig,
    pub dtype: DType,
    visual: VisionTransformer,
    visual_control: VisionTransformer,
    /// Bytes of the weight tensors on the GPU.
    pub weight_bytes: u64,
    /// Forwards recorded so far, one per batch size.
    recorded: Mutex<Vec<(usize, std::sync::Arc<ImageForward>)>>,
}

impl DaClip {
    /// Loads the `daclip/` folder (or a converted model folder holding `model_index.json` and
    /// `daclip/`).
    pub fn from_dir(gpu: &Gpu, dir: &Path, dtype: DType) -> Result<Self> {
        let dir = load::resolve_model_dir(dir, SUBFOLDER)?;
        let config = DaClipConfig::from_file(&dir.join(load::CONFIG))?;
        let weights = Weights::open(&dir.join(WEIGHTS))?;
        let model = Self::load(gpu, config, &weights, dtype)?;
        weights.check_all_used()?;
        Ok(model)
    }

    /// Builds both towers from a parsed config and a weight source with the official keys.
    pub fn load(
        gpu: &Gpu,
        config: DaClipConfig,
        weights: &dyn WeightSource,
        dtype: DType,
    ) -> Result<Self> {
        let l = Loader::new(gpu, weights, dtype);
        let (v, e, q) = (&config.vision, config.embed_dim, config.quick_gelu);
        let visual = VisionTransformer::load(&l, "visual.", v, e, q, false)?;
        let visual_control = VisionTransformer::load(&l, "visual_control.", v, e, q, true)?;
        Ok(DaClip {
            weight_bytes: l.bytes.get(),
            config,
            dtype,
            visual,
            visual_control,
            recorded: Mutex::new(Vec::new()),
        })
    }

    /// The input resolution (`vision_cfg.image_size`).
    pub fn resolution(&self) -> usize {
        self.config.vision.image_size
    }

    /// Records `encode_image(x, control=True)` for `batch` images.
    pub fn prepare(&self, gpu: &Gpu, batch: usize) -> Result<ImageForward> {
        crate::size::positive("DA-CLIP batch", batch)?;
        let s = self.resolution();
        let pixel_values = Tensor::zeros(gpu, "pixel_values", &[batch, 3, s, s], self.dtype)?;
        let mut g = Graph::new(gpu, self.dtype);
        let (degra, hiddens) =
            self.visual_control
                .forward(&mut g, &pixel_values, None, "visual_control")?;
        let (image, _) = self
            .visual
            .forward(&mut g, &pixel_values, Some(&hiddens), "visual")?;
        drop(hiddens);
        let flops = g.flops;
        let recording = g.finish(&[&image, &degra])?;
        Ok(ImageForward {
            activation_bytes: recording.activation_bytes(),
            recording,
            pixel_values,
            image_features: image,
            degra_features: degra,
            flops,
        })
    }

    /// The recorded forward for `batch` images (recorded on first use, then reused).
    pub fn forward_for(&self, gpu: &Gpu, batch: usize) -> Result<std::sync::Arc<ImageForward>> {
        let mut rec = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = rec.iter().find(|(b, _)| *b == batch) {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(self.prepare(gpu, batch)?);
        rec.push((batch, f.clone()));
        Ok(f)
    }

    /// `encode_image(pixel_values, control=True)` of preprocessed images (f32 [N, 3, S, S],
    /// N = `batch`): (image_features, degra_features), each f32 [N, embed_dim] row-major.
    pub fn encode_image(
        &self,
        gpu: &Gpu,
        pixel_values: &[f32],
        batch: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let f = self.forward_for(gpu, batch)?;
        f.run(gpu, pixel_values)?;
        Ok((
            f.image_features.to_vec_f32(gpu)?,
            f.degra_features.to_vec_f32(gpu)?,
        ))
    }

    /// The official `clip_transform` of one RGB uint8 image [h, w, 3] (a PNG's bytes): f32
    /// [3, S, S].
    pub fn preprocess_u8(&self, img: &[u8], h: usize, w: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        clip_transform_u8(img, h, w, self.resolution(), c.image_mean, c.image_std)
    }

    /// [`DaClip::preprocess_u8`] of an interleaved 8-bit image with `channels` channels (a decoded
    /// PNG): RGBA drops alpha as the official reader does; grey is an error naming the image.
    pub fn preprocess_channels(
        &self,
        img: &[u8],
        h: usize,
        w: usize,
        channels: usize,
    ) -> Result<Vec<f32>> {
        let rgb = super::clip_transform::rgb_bytes(img, h, w, channels)?;
        self.preprocess_u8(&rgb, h, w)
    }

    /// `clip_transform` of N RGB images in [0, 1] stored [N, 3, h, w] (the restoration network's
    /// layout), quantised as the official `(img * 255).astype(uint8)`: f32 [N, 3, S, S].
    pub fn preprocess_unit_nchw(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<f32>> {
        let len = crate::size::elements("images", &[n, 3, h, w])?;
        if x.len() != len {
            return Err(Error::HostLength {
                tensor: "images".into(),
                got: x.len(),
                want: len,
                shape: vec![n, 3, h, w],
            });
        }
        let q = quantize_unit(x)?;
        let plane = h * w;
        let mut out = Vec::new();
        for i in 0..n {
            let img = &q[i * 3 * plane..(i + 1) * 3 * plane];
            let hwc: Vec<u8> = (0..plane)
                .flat_map(|p| [img[p], img[plane + p], img[2 * plane + p]])
                .collect();
            out.extend(self.preprocess_u8(&hwc, h, w)?);
        }
        Ok(out)
    }
}

/// A recorded DA-CLIP encode: write `pixel_values`, submit, read or bind the features.
pub struct ImageForward {
    recording: Recording,
    /// [N, 3, S, S] in the model dtype: the preprocessed images, written by [`ImageForward::run`].
    pub pixel_values: Tensor,
    /// [N, embed_dim]: the CLIP tower's features with control (the UNet's image context).
    pub image_features: Tensor,
    /// [N, embed_dim]: the controller's features (the UNet's degradation context).
    pub degra_features: Tensor,
    /// Bytes of activation buffers the recording holds.
    pub activation_bytes: u64,
    /// FLOPs of one forward (GEMMs and convolutions, 2 per multiply-add).
    pub flops: u64,
}

impl ImageForward {
    /// Writes `pixel_values` (f32 [N, 3, S, S], finite; checked before anything runs) and
    /// submits the recorded forward.
    pub fn run(&self, gpu: &Gpu, pixel_values: &[f32]) -> Result<()> {
        let n = self.pixel_values.numel();
        if pixel_values.len() != n {
            return Err(Error::HostLength {
                tensor: "pixel_values".into(),
                got: pixel_values.len(),
                want: n,
                shape: self.pixel_values.shape().to_vec(),
            });
        }
        if let Some(i) = pixel_values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Argument {
                op: "DaClip",
                arg: "pixel_values",
                reason: format!("value {i} is not finite"),
            });
        }
        self.pixel_values.write_f32(gpu, pixel_values)?;
        self.recording.submit(gpu);
        Ok(())
    }

    /// Replays the recorded forward with a timestamp per dispatch ([`Recording::profile`]).
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<crate::gpu::DispatchTime>> {
        self.recording.profile(gpu)
    }
}
