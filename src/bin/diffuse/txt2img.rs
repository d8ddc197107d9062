//! `diffuse txt2img`: Stable Diffusion 1.x/2.x text-to-image from a diffusers pipeline folder.

use super::checks::finite_f32;
use super::progress_bar;
use clap::Args;
use diffuse::load::single_file::SingleFile;
use diffuse::load::HostTensor;
use diffuse::output::OutputPlan;
use diffuse::pipeline::stable_diffusion::{PipelineFolder, StableDiffusion, Txt2Img};
use diffuse::schedule::config::SchedulerConfig;
use diffuse::{DType, Error, Gpu, GpuOptions};
use std::ops::ControlFlow;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct Txt2ImgArgs {
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
    prompt: String,
    /// What to guide away from (default: the empty prompt).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Inference steps.
    #[arg(long, allow_negative_numbers = true, default_value_t = 50)]
    steps: usize,
    /// Sampler by name on the folder's training schedule (default: the folder's
    /// scheduler/scheduler_config.json as is).
    #[arg(long, conflicts_with = "scheduler_config")]
    scheduler: Option<String>,
    /// A diffusers scheduler_config.json to use as is.
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Classifier-free guidance scale; ≤ 1 turns guidance off (as diffusers).
    #[arg(long, allow_hyphen_values = true, value_parser = finite_f32, default_value_t = 7.5)]
    guidance: f32,
    /// Image width in pixels (a multiple of 8; default: the UNet's sample_size × 8).
    #[arg(long, allow_negative_numbers = true)]
    width: Option<usize>,
    /// Image height in pixels (a multiple of 8; default: the UNet's sample_size × 8).
    #[arg(long, allow_negative_numbers = true)]
    height: Option<usize>,
    /// Images for the prompt.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// safetensors holding `sample`: the standard-normal latents [B, 4, H/8, W/8] (scaled by
    /// the scheduler's init_noise_sigma, as diffusers' `latents=`).
    #[arg(long)]
    noise: Option<PathBuf>,
    /// CLIP layers to skip from the end (diffusers' clip_skip).
    #[arg(long)]
    clip_skip: Option<usize>,
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
    out: PathBuf,
    /// Weights and activations dtype of the UNet and text encoder (the VAE runs in f32 when
    /// its config says force_upcast).
    #[arg(long, default_value = "f32")]
    dtype: DType,
}

fn arg(flag: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "txt2img",
        arg: flag,
        reason,
    }
}

pub(crate) fn txt2img(opts: &GpuOptions, a: Txt2ImgArgs) -> Result<(), Error> {
    if a.batch == 0 {
        return Err(arg("--batch", "must be at least 1".into()));
    }
    let single = if a.model.is_file() {
        Some(SingleFile::open(&a.model)?)
    } else {
        if a.config.is_some() {
            return Err(arg(
                "--config",
                "only a single-file --model takes a config folder".into(),
            ));
        }
        None
    };
    let config_dir = match (&single, &a.config) {
        (Some(_), Some(c)) => c.clone(),
        (Some(sf), None) => sf.default_config_dir()?,
        (None, _) => a.model.clone(),
    };
    let folder = PipelineFolder::read(&config_dir)?;
    let tokenizer =
        super::tokenize::load_tokenizer("txt2img", &config_dir, a.tokenizer.as_deref())?;
    let scheduler = match (&a.scheduler, &a.scheduler_config) {
        (_, Some(p)) => SchedulerConfig::from_file(p)?,
        (Some(name), None) => SchedulerConfig::named(name, Some(&folder.scheduler))?,
        (None, None) => folder.scheduler.clone(),
    };
    diffuse::schedule::check_steps(a.steps, scheduler.train.num_train_timesteps)?;
    let f = folder.vae_scale_factor();
    let (sh, sw) = folder.unet.sample_size.unwrap_or((64, 64));
    let (width, height) = (a.width.unwrap_or(sw * f), a.height.unwrap_or(sh * f));
    folder
        .check_batch(a.batch, width, height)
        .map_err(size_flags)?;
    let req = Txt2Img {
        prompts: vec![a.prompt.clone(); a.batch],
        negative_prompts: a.negative_prompt.as_ref().map(|n| vec![n.clone(); a.batch]),
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
    if let Some(p) = &a.noise {
        let shape = folder.latent_shape(&req);
        req.noise = Some(diffuse::pipeline::generate::read_noise(p, &shape)?);
    }
    let mut plan = OutputPlan::new();
    let png = plan.file("--out", &a.out)?;
    let raw = a.raw.as_ref().map(|r| plan.file("--raw", r)).transpose()?;
    let gpu = Gpu::new(opts)?;
    let sd = match &single {
        Some(sf) => StableDiffusion::load_single_file(&gpu, folder, sf, tokenizer, a.dtype)?,
        None => StableDiffusion::load(&gpu, folder, tokenizer, a.dtype)?,
    };
    let bar = progress_bar(a.steps as u64, scheduler.kind().class_name(), "steps");
    let t0 = std::time::Instant::now();
    let out = sd
        .txt2img(&gpu, &scheduler, &req, |i, _| {
            bar.set_position(i as u64);
            ControlFlow::Continue(())
        })
        .map_err(size_flags)?;
    bar.finish_and_clear();
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
    if let Some(r) = raw {
        let l = HostTensor {
            shape: out.latent_shape.to_vec(),
            data: out.latents.clone(),
        };
        let im = HostTensor {
            shape: out.image_shape.to_vec(),
            data: out.image.clone(),
        };
        plan.write(
            r,
            &diffuse::load::f32_tensors_bytes(&[("latents", &l), ("image", &im)])?,
        )?;
    }
    plan.write(
        png,
        &diffuse::image_io::encode_images(&out.image, out.image_shape)?,
    )?;
    plan.commit()?;
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
fn size_flags(e: Error) -> Error {
    match e {
        Error::Argument {
            op: "txt2img",
            arg,
            reason,
        } => Error::Argument {
            op: "txt2img",
            arg: match arg {
                "size" => "--width/--height",
                "prompt" => "--prompt",
                "batch" => "--batch",
                "negative_prompt" => "--negative-prompt",
                "guidance" => "--guidance",
                "steps" => "--steps",
                other => other,
            },
            reason,
        },
        e => e,
    }
}
