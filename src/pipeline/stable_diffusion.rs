//! Latent text-to-image with Stable Diffusion 1.x/2.x (Rombach et al., "High-Resolution Image
//! Synthesis with Latent Diffusion Models", CVPR 2022), as diffusers' `StableDiffusionPipeline`:
//! prompts → CLIP tokens → text states; classifier-free guidance over [prompts; negative
//! prompts] in one batch; the scheduler's program over the UNet from x_T = init σ·z; the final
//! latents ÷ `scaling_factor` → the VAE decoder.
//!
//! A pipeline folder is diffusers' layout: `model_index.json`, `unet/`, `vae/`,
//! `text_encoder/`, `scheduler/scheduler_config.json` and (optionally) `tokenizer/`; the
//! caller supplies the tokenizer (`load::clip_tokenizer`), so a folder without one can use a
//! default vocabulary.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::load;
use crate::load::clip_tokenizer::ClipTokenizer;
use crate::load::single_file::keymap::UNetLayout;
use crate::load::single_file::SingleFile;
use crate::load::WeightSource;
use crate::models::text_guided::TextGuidedUNet;
use crate::nn::autoencoder_kl::AutoencoderKL;
use crate::nn::clip_text::{CLIPTextConfig, CLIPTextModel};
use crate::nn::unet_2d_condition::UNet2DConditionModel;
use crate::nn::unet_2d_condition_config::{CrossUpBlockType, UNet2DConditionConfig};
use crate::nn::vae_config::AutoencoderKLConfig;
use crate::schedule::config::SchedulerConfig;
use crate::solvers::program::Program;
use crate::tensor::DType;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

const OP: &str = "txt2img";

fn arg(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: OP,
        arg,
        reason,
    }
}

/// The components a pipeline folder must hold (diffusers' names; `tokenizer/` is optional).
pub const COMPONENTS: [&str; 4] = ["unet", "vae", "text_encoder", "scheduler"];

/// The host-side facts of a pipeline folder, read and cross-checked before the GPU starts.
#[derive(Debug, Clone)]
pub struct PipelineFolder {
    pub dir: PathBuf,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub text: CLIPTextConfig,
    pub scheduler: SchedulerConfig,
}

impl PipelineFolder {
    /// Reads `model_index.json` and every component's config; a missing component, a config
    /// that does not parse, or components that do not fit together (the UNet's
    /// `cross_attention_dim` ≠ the text encoder's `hidden_size`, latent channels) is an error
    /// naming the file and field.
    pub fn read(dir: &Path) -> Result<Self> {
        let index = dir.join("model_index.json");
        if !index.is_file() {
            return Err(Error::Config {
                file: index.display().to_string(),
                field: "model_index.json".into(),
                reason: "not found: a Stable Diffusion model is a diffusers pipeline folder with model_index.json".into(),
            });
        }
        load::read_json(&index)?;
        for c in COMPONENTS {
            if !dir.join(c).is_dir() {
                return Err(Error::Config {
                    file: dir.join(c).display().to_string(),
                    field: c.into(),
                    reason: format!("the pipeline folder has no `{c}` component"),
                });
            }
        }
        let unet_cfg = dir.join("unet").join(load::CONFIG);
        let unet = UNet2DConditionConfig::from_file(&unet_cfg)?;
        let vae = AutoencoderKLConfig::from_file(&dir.join("vae").join(load::CONFIG))?;
        let text_cfg = dir.join("text_encoder").join(load::CONFIG);
        let text = CLIPTextConfig::from_file(&text_cfg)?;
        let scheduler =
            SchedulerConfig::from_file(&dir.join("scheduler").join(load::SCHEDULER_CONFIG))?;
        if unet.cross_attention_dim != text.hidden_size {
            return Err(Error::Config {
                file: unet_cfg.display().to_string(),
                field: "cross_attention_dim".into(),
                reason: format!(
                    "cross_attention_dim {} does not match the text encoder's hidden_size {} ({})",
                    unet.cross_attention_dim,
                    text.hidden_size,
                    text_cfg.display()
                ),
            });
        }
        if unet.in_channels != vae.latent_channels || unet.out_channels != vae.latent_channels {
            return Err(Error::Config {
                file: unet_cfg.display().to_string(),
                field: "in_channels".into(),
                reason: format!(
                    "in_channels {} / out_channels {} do not match the VAE's latent_channels {}",
                    unet.in_channels, unet.out_channels, vae.latent_channels
                ),
            });
        }
        Ok(PipelineFolder {
            dir: dir.to_path_buf(),
            unet,
            vae,
            text,
            scheduler,
        })
    }

    /// The VAE's spatial factor: 2^(levels − 1) (8 for SD).
    pub fn vae_scale_factor(&self) -> usize {
        1 << (self.vae.block_out_channels.len().max(1) - 1)
    }

    /// Checks a request against the pipeline before any GPU work.
    pub fn check(&self, r: &Txt2Img) -> Result<()> {
        self.check_text(
            OP,
            &r.prompts,
            r.negative_prompts.as_deref(),
            r.guidance,
            r.clip_skip,
        )?;
        self.check_size(OP, r.width, r.height)?;
        self.check_batch(r.prompts.len(), r.width, r.height)
    }

    /// The prompts, negative prompts, guidance scale and `clip_skip` of a request of `op`.
    pub(crate) fn check_text(
        &self,
        op: &'static str,
        prompts: &[String],
        negative_prompts: Option<&[String]>,
        guidance: f32,
        clip_skip: Option<usize>,
    ) -> Result<()> {
        let arg = |arg: &'static str, reason: String| Error::Argument { op, arg, reason };
        if prompts.is_empty() {
            return Err(arg("prompt", "needs at least one prompt".into()));
        }
        if let Some(n) = negative_prompts {
            if n.len() != prompts.len() {
                return Err(arg(
                    "negative_prompt",
                    format!("{} negative prompts for {} prompts", n.len(), prompts.len()),
                ));
            }
        }
        if !guidance.is_finite() {
            return Err(arg("guidance", format!("must be finite (got {guidance})")));
        }
        let layers = self.text.num_hidden_layers;
        if clip_skip.is_some_and(|k| k > layers) {
            return Err(arg(
                "clip_skip",
                format!(
                    "{} is more than the text encoder's {layers} layers",
                    clip_skip.unwrap_or(0)
                ),
            ));
        }
        Ok(())
    }

    /// An image size of a request of `op`: multiples of 8 whose latents the UNet's levels
    /// can take (the error's field is `size`).
    pub(crate) fn check_size(&self, op: &'static str, width: usize, height: usize) -> Result<()> {
        if width == 0 || height == 0 || width % 8 != 0 || height % 8 != 0 {
            return Err(Error::Argument {
                op,
                arg: "size",
                reason: format!(
                    "width and height must be positive multiples of 8 (got {width}×{height})"
                ),
            });
        }
        self.check_latent_size(op, width, height)
    }

    /// An image size whose latents (÷ the VAE's factor, exactly) the UNet's levels can take.
    pub(crate) fn check_latent_size(
        &self,
        op: &'static str,
        width: usize,
        height: usize,
    ) -> Result<()> {
        let arg = |reason: String| Error::Argument {
            op,
            arg: "size",
            reason,
        };
        let f = self.vae_scale_factor();
        if width == 0 || height == 0 || width % f != 0 || height % f != 0 {
            return Err(arg(format!(
                "width and height must be positive multiples of the VAE's factor {f} (got {width}×{height})"
            )));
        }
        let (h, w) = (height / f, width / f);
        let div = 1usize << (self.unet.block_out_channels.len() - 1);
        if h % div != 0 || w % div != 0 {
            return Err(arg(format!(
                "{width}×{height} gives {h}×{w} latents, which this UNet's {} levels cannot take (multiples of {})",
                self.unet.block_out_channels.len(),
                div * f
            )));
        }
        Ok(())
    }

    /// Whether `batch` images of `width`×`height` fit the host buffers of a run (the guided
    /// latents [2B, C, h, w] and the image [B, 3, H, W], f32), checked before anything is
    /// sized from the batch: an absurd batch is named as the batch, not an allocation failure.
    pub fn check_batch(&self, batch: usize, width: usize, height: usize) -> Result<()> {
        let f = self.vae_scale_factor();
        let c = self.unet.in_channels;
        let fits = crate::size::mul("batch", batch, 2)
            .and_then(|b2| crate::size::elements("batch", &[b2, c, height / f, width / f]))
            .and_then(|n| crate::size::host_alloc("batch", n, 4))
            .and_then(|_| crate::size::elements("batch", &[batch, 3, height, width]))
            .and_then(|n| crate::size::host_alloc("batch", n, 4));
        fits.map(drop).map_err(|e| {
            arg(
                "batch",
                format!("{batch} images of {width}×{height} are too large ({e})"),
            )
        })
    }

    /// The latent shape of a request.
    pub fn latent_shape(&self, r: &Txt2Img) -> [usize; 4] {
        let f = self.vae_scale_factor();
        [
            r.prompts.len(),
            self.unet.in_channels,
            r.height / f,
            r.width / f,
        ]
    }
}

/// One text-to-image request (diffusers' `StableDiffusionPipeline.__call__` arguments).
#[derive(Debug, Clone)]
pub struct Txt2Img {
    pub prompts: Vec<String>,
    /// One per prompt; `None` guides away from the empty prompt, as diffusers.
    pub negative_prompts: Option<Vec<String>>,
    pub steps: usize,
    /// Guidance scale w; w ≤ 1 runs without classifier-free guidance (as diffusers).
    pub guidance: f32,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    /// The standard-normal latents [B, C, h, w] (scaled by `init_noise_sigma`); drawn from
    /// `seed` when `None`.
    pub noise: Option<Vec<f32>>,
    /// CLIP layers to skip from the end (diffusers' `clip_skip`).
    pub clip_skip: Option<usize>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Txt2ImgOutput {
    /// The final latents (diffusers' `output_type="latent"`), f32 [B, C, h, w].
    pub latents: Vec<f32>,
    pub latent_shape: [usize; 4],
    /// The VAE output in model range (about [−1, 1]), f32 [B, 3, H, W].
    pub image: Vec<f32>,
    pub image_shape: [usize; 4],
    /// Prompts (index; negative prompts after the prompts) cut at the tokenizer's 77 tokens.
    pub truncated: Vec<usize>,
}

/// Where the three networks' weights come from.
pub struct ComponentSources<'a> {
    pub unet: &'a dyn WeightSource,
    pub vae: &'a dyn WeightSource,
    pub text_encoder: &'a dyn WeightSource,
}

/// A loaded pipeline.
pub struct StableDiffusion {
    pub folder: PipelineFolder,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: CLIPTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub dtype: DType,
}

impl StableDiffusion {
    /// Loads every component of the folder: the UNet and text encoder in `dtype`, the VAE in
    /// f32 when its config says `force_upcast` (SD's VAE overflows f16 activations), else in
    /// `dtype`. `tokenizer`: the folder's (`ClipTokenizer::from_dir(dir/tokenizer)`) or another.
    pub fn load(
        gpu: &Gpu,
        folder: PipelineFolder,
        tokenizer: ClipTokenizer,
        dtype: DType,
    ) -> Result<Self> {
        let dir = folder.dir.clone();
        let text_encoder = CLIPTextModel::from_dir(gpu, &dir.join("text_encoder"), dtype)?;
        let unet = UNet2DConditionModel::from_dir(gpu, &dir.join("unet"), dtype)?;
        let vae_dtype = if folder.vae.force_upcast {
            DType::F32
        } else {
            dtype
        };
        let vae = AutoencoderKL::from_dir(gpu, &dir.join("vae"), vae_dtype)?;
        Ok(StableDiffusion {
            folder,
            tokenizer,
            text_encoder,
            unet,
            vae,
            dtype,
        })
    }

    /// Loads the components from an original-layout single-file checkpoint
    /// ([`load::single_file`]) with the configs of `folder` (a pipeline folder without weights,
    /// e.g. `assets/configs/sd15`); every key of the file must be accounted for.
    pub fn load_single_file(
        gpu: &Gpu,
        folder: PipelineFolder,
        file: &SingleFile,
        tokenizer: ClipTokenizer,
        dtype: DType,
    ) -> Result<Self> {
        let layout = UNetLayout {
            layers_per_block: folder.unet.layers_per_block.clone(),
            up_cross_attention: folder
                .unet
                .up_block_types
                .iter()
                .map(|t| matches!(t, CrossUpBlockType::CrossAttnUpBlock2D))
                .collect(),
        };
        let text = file.text_encoder(folder.text.num_hidden_layers);
        let unet = file.unet(layout);
        let vae = file.vae(folder.vae.block_out_channels.len());
        let sd = Self::load_from(
            gpu,
            folder,
            ComponentSources {
                unet: &unet,
                vae: &vae,
                text_encoder: &text,
            },
            tokenizer,
            dtype,
        )?;
        file.check_all_used()?;
        Ok(sd)
    }

    /// Builds the three networks from the folder's configs and the given weight sources (a
    /// single file's components, or [`load::RandomWeights`] for full-size runs without a
    /// checkpoint).
    pub fn load_from(
        gpu: &Gpu,
        folder: PipelineFolder,
        sources: ComponentSources<'_>,
        tokenizer: ClipTokenizer,
        dtype: DType,
    ) -> Result<Self> {
        let text_encoder =
            CLIPTextModel::load(gpu, folder.text.clone(), sources.text_encoder, "", dtype)?;
        let unet = UNet2DConditionModel::load(gpu, folder.unet.clone(), sources.unet, dtype)?;
        let vae_dtype = if folder.vae.force_upcast {
            DType::F32
        } else {
            dtype
        };
        let vae = AutoencoderKL::load(gpu, folder.vae.clone(), sources.vae, vae_dtype)?;
        Ok(StableDiffusion {
            folder,
            tokenizer,
            text_encoder,
            unet,
            vae,
            dtype,
        })
    }

    /// Text states of `texts`: [texts, 77, hidden] as f32, and the indices cut at 77 tokens.
    pub fn encode_text(
        &self,
        gpu: &Gpu,
        texts: &[String],
        clip_skip: Option<usize>,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let mut ids = Vec::new();
        let mut truncated = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let e = self.tokenizer.encode_padded(t);
            if e.truncated > 0 {
                truncated.push(i);
            }
            ids.extend(e.input_ids);
        }
        let fwd = self
            .text_encoder
            .prepare(gpu, texts.len(), clip_skip.unwrap_or(0))?;
        Ok((fwd.forward_host(gpu, &ids)?, truncated))
    }

    /// Runs a request: `progress(step, total)` may cancel between steps.
    pub fn txt2img(
        &self,
        gpu: &Gpu,
        scheduler: &SchedulerConfig,
        r: &Txt2Img,
        progress: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<Txt2ImgOutput> {
        self.folder.check(r)?;
        let [b, c, h, w] = self.folder.latent_shape(r);
        let text = TextRequest {
            prompts: &r.prompts,
            negative_prompts: r.negative_prompts.as_deref(),
            guidance: r.guidance,
            clip_skip: r.clip_skip,
        };
        let program = crate::solvers::build(scheduler, r.steps)?;
        let opts = super::SampleOptions {
            steps: r.steps,
            seed: r.seed,
            noise: r.noise.clone(),
        };
        let (latents, truncated) =
            self.denoise(gpu, scheduler, &text, &program, (h, w), &opts, progress)?;
        let (image, image_shape) = self.decode_latents(gpu, &latents, [b, c, h, w], OP)?;
        Ok(Txt2ImgOutput {
            latents,
            latent_shape: [b, c, h, w],
            image,
            image_shape,
            truncated,
        })
    }

    /// The denoising loop shared by txt2img and img2img: encodes [prompts; negative prompts]
    /// once, wraps the UNet in classifier-free guidance and runs `program` from the start
    /// state of `opts` (`noise` uploaded, scaled by the program's `init_sigma`, or drawn from
    /// `seed`). Returns the final latents and the prompts cut at 77 tokens.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn denoise(
        &self,
        gpu: &Gpu,
        scheduler: &SchedulerConfig,
        text: &TextRequest<'_>,
        program: &Program,
        (h, w): (usize, usize),
        opts: &super::SampleOptions,
        progress: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let b = text.prompts.len();
        let guided = text.guidance > 1.0;
        let mut texts = text.prompts.to_vec();
        if guided {
            match text.negative_prompts {
                Some(n) => texts.extend(n.iter().cloned()),
                None => texts.extend(std::iter::repeat_n(String::new(), b)),
            }
        }
        let (states, truncated) = self.encode_text(gpu, &texts, text.clip_skip)?;
        let rows = if guided { 2 * b } else { b };
        let forward = self.unet.prepare(gpu, rows, h, w)?;
        let mut model = TextGuidedUNet::new(
            gpu,
            forward,
            scheduler.train.prediction,
            &states,
            guided.then_some(text.guidance),
        )?;
        let latents = super::sample_program(gpu, &mut model, program, opts, progress)?;
        Ok((latents, truncated))
    }

    /// Final latents ÷ `scaling_factor` → the VAE decoder; a non-finite output is an error.
    pub(crate) fn decode_latents(
        &self,
        gpu: &Gpu,
        latents: &[f32],
        shape: [usize; 4],
        op: &'static str,
    ) -> Result<(Vec<f32>, [usize; 4])> {
        let inv = (1.0 / self.vae.scaling_factor()) as f32;
        let scaled: Vec<f32> = latents.iter().map(|v| v * inv).collect();
        let (image, image_shape) = self.vae.decode_host(gpu, &scaled, &shape)?;
        if let Some(i) = image.iter().position(|v| !v.is_finite()) {
            return Err(Error::Argument {
                op,
                arg: "output",
                reason: format!("the VAE produced a non-finite value at flat index {i}"),
            });
        }
        Ok((image, image_shape))
    }
}

/// The text side of a request.
pub(crate) struct TextRequest<'a> {
    pub prompts: &'a [String],
    pub negative_prompts: Option<&'a [String]>,
    pub guidance: f32,
    pub clip_skip: Option<usize>,
}
