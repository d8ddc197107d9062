//! `diffuse img2img`: Stable Diffusion 1.x/2.x image-to-image (diffusers'
//! `StableDiffusionImg2ImgPipeline`) from a pipeline folder and an input picture.

use super::progress_bar;
use super::txt2img::{flag_of, SdArgs};
use clap::Args;
use diffuse::load::Weights;
use diffuse::pipeline::img2img::{preprocess, Img2Img};
use diffuse::{Error, GpuOptions};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct Img2ImgArgs {
    #[command(flatten)]
    sd: SdArgs,
    /// The picture to start from (PNG or another format the `image` crate reads; gray is
    /// repeated to RGB, alpha dropped, as diffusers' `load_image`). Sides that are not
    /// multiples of 8 are rounded down and the picture Lanczos-resized, as diffusers'
    /// VaeImageProcessor; the resulting latent size must suit the UNet's levels.
    #[arg(long)]
    input: PathBuf,
    /// How much of the schedule to run, in [0, 1]: noise is added at the first of the last
    /// ⌊steps·strength⌋ steps, which are then run (1 = from about pure noise).
    #[arg(long, allow_hyphen_values = true, default_value_t = 0.8)]
    strength: f64,
    /// safetensors holding `sample`: the standard-normal z [B, 4, H/8, W/8] added to the
    /// encoded image at the start timestep (diffusers' `randn_tensor` in `prepare_latents`),
    /// and optionally `encoder_noise`: the VAE posterior's standard-normal draw [1, 4, H/8, W/8]
    /// (`latent_dist.sample(generator)`; drawn from --seed when absent).
    #[arg(long)]
    noise: Option<PathBuf>,
}

const OP: &str = "img2img";

fn input_error(path: &Path, reason: String) -> Error {
    Error::Argument {
        op: OP,
        arg: "--input",
        reason: format!("{}: {reason}", path.display()),
    }
}

/// The input picture as diffusers' `VaeImageProcessor` gives it to the VAE: [1, 3, H, W] in
/// [−1, 1], sides rounded down to multiples of `factor` (Lanczos-resized when they change).
fn read_input(path: &Path, factor: usize) -> Result<(Vec<f32>, [usize; 4]), Error> {
    if !path.is_file() {
        return Err(input_error(path, "no such file".into()));
    }
    let img = diffuse::image_io::read_rgb8(path)
        .map_err(|e| input_error(path, format!("not an image the engine can read ({e})")))?;
    let (data, shape) = preprocess(&img, factor).map_err(|e| input_error(path, e.to_string()))?;
    if (shape[3], shape[2]) != (img.width, img.height) {
        eprintln!(
            "note: --input {}×{} resized to {}×{} (multiples of {factor}, Lanczos, as diffusers)",
            img.width, img.height, shape[3], shape[2]
        );
    }
    Ok((data, shape))
}

fn flags(e: Error) -> Error {
    match e {
        Error::Argument {
            op: OP,
            arg,
            reason,
        } => Error::Argument {
            op: OP,
            arg: flag_of(arg, "--input"),
            reason,
        },
        e => e,
    }
}

pub(crate) fn img2img(opts: &GpuOptions, t: Img2ImgArgs) -> Result<(), Error> {
    let a = &t.sd;
    if !(0.0..=1.0).contains(&t.strength) {
        return Err(flags(Error::Argument {
            op: OP,
            arg: "strength",
            reason: format!("must lie in [0, 1] (got {})", t.strength),
        }));
    }
    let mut prep = a.prepare(OP)?;
    let f = prep.folder.vae_scale_factor();
    let (image, image_shape) = read_input(&t.input, f)?;
    let [_, _, h, w] = image_shape;
    // Before anything is sized from --batch (the prompt list included).
    prep.folder
        .check_batch(a.batch, w, h)
        .map_err(|e| match e {
            Error::Argument { reason, .. } => Error::Argument {
                op: OP,
                arg: "--batch",
                reason,
            },
            e => e,
        })?;
    let mut req = Img2Img {
        prompts: a.prompts(),
        negative_prompts: a.negative_prompts(),
        image,
        image_shape,
        strength: t.strength,
        steps: a.steps,
        guidance: a.guidance,
        seed: a.seed,
        noise: None,
        encoder_noise: None,
        clip_skip: a.clip_skip,
    };
    prep.folder.check_img2img(&req).map_err(flags)?;
    if let Some(p) = &t.noise {
        let (run, enc) = req.latent_shapes(&prep.folder);
        let file = Weights::open(p)?;
        req.noise = Some(file.read_input("sample", Some(&run))?.data);
        if file.contains("encoder_noise") {
            req.encoder_noise = Some(file.read_input("encoder_noise", Some(&enc))?.data);
        }
    }
    let t_start = diffuse::solvers::sdedit::t_start(a.steps, t.strength).map_err(flags)?;
    // Refuses a scheduler that cannot start mid-schedule, or no step left, before the GPU.
    let started =
        diffuse::solvers::sdedit::start(&prep.scheduler, a.steps, t_start).map_err(flags)?;
    let kept = started.program.steps.len();
    let (gpu, sd) = prep.load(a, opts)?;
    let scheduler = prep.scheduler.clone();
    let bar = progress_bar(kept as u64, scheduler.kind().class_name(), "steps");
    let t0 = std::time::Instant::now();
    let out = sd
        .img2img(&gpu, &scheduler, &req, |i, _| {
            bar.set_position(i as u64);
            ControlFlow::Continue(())
        })
        .map_err(flags)?;
    bar.finish_and_clear();
    prep.finish(a, &sd, &out)?;
    eprintln!(
        "wrote {} ({} image(s) {}×{}, {kept} of {} steps of {} at strength {} in {:.1} s on {})",
        a.out.display(),
        a.batch,
        w,
        h,
        a.steps,
        scheduler.kind().class_name(),
        t.strength,
        t0.elapsed().as_secs_f64(),
        gpu.info().name
    );
    Ok(())
}
