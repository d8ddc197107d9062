//! `diffuse txt2img`: Stable Diffusion 1.x/2.x text-to-image from a diffusers pipeline folder.
//! [`SdArgs`] and [`Loaded`] (the flags, loading and output writing) are shared with
//! `diffuse img2img`.

use super::checks::finite_f32;
use super::progress_bar;
use clap::Args;
use diffuse::load::clip_tokenizer::ClipTokenizer;
use diffuse::load::single_file::SingleFile;
use diffuse::load::HostTensor;
use diffuse::output::OutputPlan;
use diffuse::pipeline::stable_diffusion::{
    PipelineFolder, StableDiffusion, Txt2Img, Txt2ImgOutput,
};
use diffuse::schedule::config::SchedulerConfig;
use diffuse::{DType, Error, Gpu, GpuOptions};
use std::ops::ControlFlow;
use std::path::PathBuf;

/// The flags txt2img and img2img share.
#[derive(Args)]
pub(crate) struct SdArgs {
    /// A diffusers Stable Diffusion pipeline folder (model_index.json, unet/, vae/,
    /// text_encoder/, tokenizer/, scheduler/), or an original-layout single-file checkpoint
    /// (.safetensors with model.diffusion_model.*, first_stage_model.*, cond_stage_model.*).
    #[arg(long)]
    model: PathBuf,
    /// For a single-file --model: the pipeline folder without weights whose configs to use
    /// (default: assets/configs/sd15 or sd21, as the file's keys identify the version).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    pub prompt: String,
    /// What to guide away from (default: the empty prompt).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Inference steps.
    #[arg(long, allow_negative_numbers = true, default_value_t = 50)]
    pub steps: usize,
    /// Sampler by name on the folder's training schedule (default: the folder's
    /// scheduler/scheduler_config.json as is).
    #[arg(long, conflicts_with = "scheduler_config")]
    scheduler: Option<String>,
    /// A diffusers scheduler_config.json to use as is.
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Classifier-free guidance scale; ≤ 1 turns guidance off (as diffusers).
    #[arg(long, allow_hyphen_values = true, value_parser = finite_f32, default_value_t = 7.5)]
    pub guidance: f32,
    /// Images for the prompt.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CLIP layers to skip from the end (diffusers' clip_skip).
    #[arg(long)]
    pub clip_skip: Option<usize>,
    /// Also write `latents` (the final latents) and `image` (the VAE output, f32 [B,3,H,W],
    /// model range) to this safetensors file.
    #[arg(long)]
    raw: Option<PathBuf>,
    /// A tokenizer folder (vocab.json + merges.txt or tokenizer.json) instead of the
    /// pipeline's tokenizer/ (default when the pipeline has none: the built-in CLIP vocabulary).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The PNG to write (a grid when --batch > 1).
    #[arg(long)]
    pub out: PathBuf,
    /// Weights and activations dtype of the UNet and text encoder (the VAE runs in f32 when
    /// its config says force_upcast).
    #[arg(long, default_value = "f32")]
    dtype: DType,
}

#[derive(Args)]
pub(crate) struct Txt2ImgArgs {
    #[command(flatten)]
    sd: SdArgs,
    /// Image width in pixels (a multiple of 8; default: the UNet's sample_size × 8).
    #[arg(long, allow_negative_numbers = true)]
    width: Option<usize>,
    /// Image height in pixels (a multiple of 8; default: the UNet's sample_size × 8).
    #[arg(long, allow_negative_numbers = true)]
    height: Option<usize>,
    /// safetensors holding `sample`: the standard-normal latents [B, 4, H/8, W/8] (scaled by
    /// the scheduler's init_noise_sigma, as diffusers' `latents=`).
    #[arg(long)]
    noise: Option<PathBuf>,
}

fn arg(op: &'static str, flag: &'static str, reason: String) -> Error {
    Error::Argument {
        op,
        arg: flag,
        reason,
    }
}

/// The host side of a run: the folder's configs, tokenizer and scheduler, read and checked
/// before the GPU starts, and the planned output files.
pub(crate) struct Prepared {
    pub folder: PipelineFolder,
    pub scheduler: SchedulerConfig,
    tokenizer: Option<ClipTokenizer>,
    single: Option<SingleFile>,
    plan: OutputPlan,
    png: usize,
    raw: Option<usize>,
}

impl SdArgs {
    /// Reads the model folder (or single file + config folder), the tokenizer and the
    /// scheduler, checks --batch and --steps, and plans --out and --raw.
    pub(crate) fn prepare(&self, op: &'static str) -> Result<Prepared, Error> {
        if self.batch == 0 {
            return Err(arg(op, "--batch", "must be at least 1".into()));
        }
        let single = if self.model.is_file() {
            Some(SingleFile::open(&self.model)?)
        } else {
            if self.config.is_some() {
                return Err(arg(
                    op,
                    "--config",
                    "only a single-file --model takes a config folder".into(),
                ));
            }
            None
        };
        let config_dir = match (&single, &self.config) {
            (Some(_), Some(c)) => c.clone(),
            (Some(sf), None) => sf.default_config_dir()?,
            (None, _) => self.model.clone(),
        };
        let folder = PipelineFolder::read(&config_dir)?;
        let tokenizer =
            super::tokenize::load_tokenizer(op, &config_dir, self.tokenizer.as_deref())?;
        let scheduler = match (&self.scheduler, &self.scheduler_config) {
            (_, Some(p)) => SchedulerConfig::from_file(p)?,
            (Some(name), None) => SchedulerConfig::named(name, Some(&folder.scheduler))?,
            (None, None) => folder.scheduler.clone(),
        };
        diffuse::schedule::check_steps(self.steps, scheduler.train.num_train_timesteps)?;
        let mut plan = OutputPlan::new();
        let png = plan.file("--out", &self.out)?;
        let raw = self
            .raw
            .as_ref()
            .map(|r| plan.file("--raw", r))
            .transpose()?;
        Ok(Prepared {
            folder,
            scheduler,
            tokenizer: Some(tokenizer),
            single,
            plan,
            png,
            raw,
        })
    }

    pub(crate) fn prompts(&self) -> Vec<String> {
        vec![self.prompt.clone(); self.batch]
    }

    pub(crate) fn negative_prompts(&self) -> Option<Vec<String>> {
        self.negative_prompt
            .as_ref()
            .map(|n| vec![n.clone(); self.batch])
    }
}

impl Prepared {
    /// Starts the GPU and loads the networks.
    pub(crate) fn load(
        &mut self,
        a: &SdArgs,
        opts: &GpuOptions,
    ) -> Result<(Gpu, StableDiffusion), Error> {
        let gpu = Gpu::new(opts)?;
        let folder = self.folder.clone();
        let tok = self.tokenizer.take().ok_or_else(|| Error::Argument {
            op: "load",
            arg: "tokenizer",
            reason: "the pipeline was already loaded".into(),
        })?;
        let sd = match &self.single {
            Some(sf) => StableDiffusion::load_single_file(&gpu, folder, sf, tok, a.dtype)?,
            None => StableDiffusion::load(&gpu, folder, tok, a.dtype)?,
        };
        Ok((gpu, sd))
    }

    /// Warns about cut prompts, writes --raw and the PNG, and commits them together.
    pub(crate) fn finish(
        mut self,
        a: &SdArgs,
        sd: &StableDiffusion,
        out: &Txt2ImgOutput,
    ) -> Result<(), Error> {
        if !out.truncated.is_empty() {
            eprintln!(
                "warning: the {} was cut at the tokenizer's {} tokens (as diffusers, the rest is ignored)",
                if out.truncated.iter().all(|&i| i >= a.batch) {
                    "--negative-prompt"
                } else {
                    "--prompt"
                },
                sd.tokenizer.model_max_length()
            );
        }
        if let Some(r) = self.raw {
            let l = HostTensor {
                shape: out.latent_shape.to_vec(),
                data: out.latents.clone(),
            };
            let im = HostTensor {
                shape: out.image_shape.to_vec(),
                data: out.image.clone(),
            };
            self.plan.write(
                r,
                &diffuse::load::f32_tensors_bytes(&[("latents", &l), ("image", &im)])?,
            )?;
        }
        self.plan.write(
            self.png,
            &diffuse::image_io::encode_images(&out.image, out.image_shape)?,
        )?;
        self.plan.commit()
    }
}

pub(crate) fn txt2img(opts: &GpuOptions, t: Txt2ImgArgs) -> Result<(), Error> {
    let a = &t.sd;
    let mut prep = a.prepare("txt2img")?;
    let folder = &prep.folder;
    let f = folder.vae_scale_factor();
    let (sh, sw) = folder.unet.sample_size.unwrap_or((64, 64));
    let (width, height) = (t.width.unwrap_or(sw * f), t.height.unwrap_or(sh * f));
    folder
        .check_batch(a.batch, width, height)
        .map_err(size_flags)?;
    let req = Txt2Img {
        prompts: a.prompts(),
        negative_prompts: a.negative_prompts(),
        steps: a.steps,
        guidance: a.guidance,
        width,
        height,
        seed: a.seed,
        noise: None,
        clip_skip: a.clip_skip,
    };
    folder.check(&req).map_err(size_flags)?;
    let mut req = req;
    if let Some(p) = &t.noise {
        let shape = folder.latent_shape(&req);
        req.noise = Some(diffuse::pipeline::generate::read_noise(p, &shape)?);
    }
    let (gpu, sd) = prep.load(a, opts)?;
    let scheduler = prep.scheduler.clone();
    let bar = progress_bar(a.steps as u64, scheduler.kind().class_name(), "steps");
    let t0 = std::time::Instant::now();
    let out = sd
        .txt2img(&gpu, &scheduler, &req, |i, _| {
            bar.set_position(i as u64);
            ControlFlow::Continue(())
        })
        .map_err(size_flags)?;
    bar.finish_and_clear();
    prep.finish(a, &sd, &out)?;
    eprintln!(
        "wrote {} ({} image(s) {}×{}, {} steps of {} in {:.1} s on {})",
        a.out.display(),
        a.batch,
        req.width,
        req.height,
        a.steps,
        scheduler.kind().class_name(),
        t0.elapsed().as_secs_f64(),
        gpu.info().name
    );
    Ok(())
}

/// The library names the request's fields; the CLI names its flags.
pub(crate) fn flag_of(arg: &'static str, size: &'static str) -> &'static str {
    match arg {
        "size" => size,
        "prompt" => "--prompt",
        "batch" => "--batch",
        "negative_prompt" => "--negative-prompt",
        "guidance" => "--guidance",
        "steps" => "--steps",
        "strength" => "--strength",
        "image" => "--input",
        "noise" | "encoder_noise" => "--noise",
        "scheduler" => "--scheduler",
        "clip_skip" => "--clip-skip",
        other => other,
    }
}

fn size_flags(e: Error) -> Error {
    match e {
        Error::Argument {
            op: "txt2img",
            arg,
            reason,
        } => Error::Argument {
            op: "txt2img",
            arg: flag_of(arg, "--width/--height"),
            reason,
        },
        e => e,
    }
}
