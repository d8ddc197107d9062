//! Image-to-image with Stable Diffusion (SDEdit: Meng et al., "SDEdit: Guided Image Synthesis
//! and Editing with Stochastic Differential Equations", ICLR 2022), as diffusers'
//! `StableDiffusionImg2ImgPipeline`: the input image (model range [−1, 1], sizes multiples of
//! the VAE's factor) → the VAE posterior sample `mean + exp(logvar/2)·ε_enc` × `scaling_factor`
//! → `scheduler.add_noise` at the first kept timestep → the scheduler's program from there
//! (`solvers::sdedit`) with the same guided UNet as txt2img → the VAE decoder.
//!
//! Both draws can be supplied for parity: `noise` is the standard-normal z added at the start
//! timestep (diffusers' `randn_tensor` in `prepare_latents`), `encoder_noise` the posterior's
//! standard-normal draw (`latent_dist.sample(generator)`); each is drawn from the seed when
//! absent (Philox: z on stream 0 as txt2img's x_T, ε_enc on stream [`ENCODER_STREAM`]).

use super::stable_diffusion::{PipelineFolder, StableDiffusion, TextRequest, Txt2ImgOutput};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::resample::{self, Image8};
use crate::schedule::config::SchedulerConfig;
use crate::solvers::sdedit;
use std::ops::ControlFlow;

const OP: &str = "img2img";

/// The Philox stream the posterior draw is taken from when `encoder_noise` is not given.
pub const ENCODER_STREAM: u32 = u32::MAX;

fn arg(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: OP,
        arg,
        reason,
    }
}

/// diffusers' `VaeImageProcessor.preprocess` of an 8-bit RGB picture: width and height rounded
/// down to multiples of `factor` (the VAE's scale factor), Pillow's Lanczos resize when that
/// changes them ([`crate::resample`], bit-exact), then x/255·2 − 1 in f32 as [1, 3, H, W].
pub fn preprocess(img: &Image8, factor: usize) -> Result<(Vec<f32>, [usize; 4])> {
    let (w, h) = (
        img.width - img.width % factor,
        img.height - img.height % factor,
    );
    if img.channels != 3 || w == 0 || h == 0 {
        return Err(arg(
            "image",
            format!(
                "a {}×{} picture with {} channels: need RGB, at least {factor}×{factor}",
                img.width, img.height, img.channels
            ),
        ));
    }
    let img = resample::lanczos_resize(img, w, h)?;
    let mut out = vec![0f32; 3 * h * w];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * h * w + i] = 2.0 * (v as f32 / 255.0) - 1.0;
        }
    }
    Ok((out, [1, 3, h, w]))
}

/// One image-to-image request (diffusers' `StableDiffusionImg2ImgPipeline.__call__`).
#[derive(Debug, Clone)]
pub struct Img2Img {
    pub prompts: Vec<String>,
    /// One per prompt; `None` guides away from the empty prompt, as diffusers.
    pub negative_prompts: Option<Vec<String>>,
    /// The input images [n, 3, H, W] in model range [−1, 1] (diffusers' `VaeImageProcessor`:
    /// x/255·2 − 1, [`preprocess`]), H and W multiples of the VAE's factor; n divides the number of prompts (the encoded
    /// batch is repeated, as diffusers).
    pub image: Vec<f32>,
    pub image_shape: [usize; 4],
    /// How much of the schedule to run, in [0, 1]: the last ⌊steps·strength⌋ steps.
    pub strength: f64,
    /// Inference steps of the whole schedule (`num_inference_steps`).
    pub steps: usize,
    /// Guidance scale w; w ≤ 1 runs without classifier-free guidance (as diffusers).
    pub guidance: f32,
    pub seed: u64,
    /// The standard-normal z [B, C, h, w] added to the encoded image at the start timestep.
    pub noise: Option<Vec<f32>>,
    /// The posterior's standard-normal draw [n, C, h, w].
    pub encoder_noise: Option<Vec<f32>>,
    /// CLIP layers to skip from the end (diffusers' `clip_skip`).
    pub clip_skip: Option<usize>,
}

impl Img2Img {
    /// The latent shape of the run [B, C, H/f, W/f] and of the encoded images [n, C, H/f, W/f].
    pub fn latent_shapes(&self, folder: &PipelineFolder) -> ([usize; 4], [usize; 4]) {
        let f = folder.vae_scale_factor();
        let [n, _, h, w] = self.image_shape;
        let c = folder.unet.in_channels;
        ([self.prompts.len(), c, h / f, w / f], [n, c, h / f, w / f])
    }
}

impl PipelineFolder {
    /// Checks an img2img request before any GPU work: prompts, guidance, strength, the image's
    /// size and batch, the given draws' lengths.
    pub fn check_img2img(&self, r: &Img2Img) -> Result<()> {
        self.check_text(
            OP,
            &r.prompts,
            r.negative_prompts.as_deref(),
            r.guidance,
            r.clip_skip,
        )?;
        sdedit::t_start(r.steps, r.strength)?;
        let [n, c, h, w] = r.image_shape;
        if c != self.vae.in_channels || n == 0 {
            return Err(arg(
                "image",
                format!(
                    "has shape {:?}; expected [images, {}, height, width]",
                    r.image_shape, self.vae.in_channels
                ),
            ));
        }
        if r.image.len() != n * c * h * w {
            return Err(Error::HostLength {
                tensor: "image".into(),
                got: r.image.len(),
                want: n * c * h * w,
                shape: r.image_shape.to_vec(),
            });
        }
        if r.prompts.len() % n != 0 {
            return Err(arg(
                "image",
                format!(
                    "{n} images cannot be repeated to {} prompts",
                    r.prompts.len()
                ),
            ));
        }
        self.check_latent_size(OP, w, h)?;
        self.check_batch(r.prompts.len(), w, h)
            .map_err(|e| match e {
                Error::Argument { arg, reason, .. } => Error::Argument {
                    op: OP,
                    arg,
                    reason,
                },
                e => e,
            })?;
        let (run, enc) = r.latent_shapes(self);
        for (name, v, shape) in [
            ("noise", &r.noise, run),
            ("encoder_noise", &r.encoder_noise, enc),
        ] {
            if let Some(v) = v {
                let want: usize = shape.iter().product();
                if v.len() != want {
                    return Err(Error::HostLength {
                        tensor: name.into(),
                        got: v.len(),
                        want,
                        shape: shape.to_vec(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// `count` standard-normal draws of stream `stream` (the executor's Philox numbering).
fn philox(seed: u64, stream: u32, count: usize) -> Vec<f32> {
    (0..count as u64)
        .map(|e| crate::reference::philox_normal(seed, stream, e) as f32)
        .collect()
}

impl StableDiffusion {
    /// Runs an image-to-image request: `progress(step, total)` may cancel between steps
    /// (total = the kept steps). The output's `latents` are the final latents.
    pub fn img2img(
        &self,
        gpu: &Gpu,
        scheduler: &SchedulerConfig,
        r: &Img2Img,
        progress: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<Txt2ImgOutput> {
        self.folder.check_img2img(r)?;
        let t_start = sdedit::t_start(r.steps, r.strength)?;
        let started = sdedit::start(scheduler, r.steps, t_start)?;
        let (run, enc) = r.latent_shapes(&self.folder);
        // The posterior sample × scaling_factor, repeated to the batch.
        let (mean, logvar, shape) = self.vae.encode_host(gpu, &r.image, &r.image_shape)?;
        if shape != enc {
            return Err(arg(
                "image",
                format!("the VAE encoded it to {shape:?}, not the latents {enc:?}"),
            ));
        }
        let eps = match &r.encoder_noise {
            Some(e) => e.clone(),
            None => philox(r.seed, ENCODER_STREAM, mean.len()),
        };
        let sf = self.vae.scaling_factor() as f32;
        let x0: Vec<f32> = mean
            .iter()
            .zip(&logvar)
            .zip(&eps)
            .map(|((m, l), e)| sf * (m + (0.5 * l).exp() * e))
            .collect();
        let count: usize = run.iter().product();
        let z = match &r.noise {
            Some(z) => z.clone(),
            None => philox(r.seed, 0, count),
        };
        let (a, s) = (started.alpha as f32, started.sigma as f32);
        let start: Vec<f32> = (0..count)
            .map(|i| a * x0[i % x0.len()] + s * z[i])
            .collect();
        let text = TextRequest {
            prompts: &r.prompts,
            negative_prompts: r.negative_prompts.as_deref(),
            guidance: r.guidance,
            clip_skip: r.clip_skip,
        };
        let opts = super::SampleOptions {
            steps: started.program.steps.len(),
            seed: r.seed,
            noise: Some(start),
        };
        let (latents, truncated) = self.denoise(
            gpu,
            scheduler,
            &text,
            &started.program,
            (run[2], run[3]),
            &opts,
            progress,
        )?;
        let (image, image_shape) = self.decode_latents(gpu, &latents, run, OP)?;
        Ok(Txt2ImgOutput {
            latents,
            latent_shape: run,
            image,
            image_shape,
            truncated,
        })
    }
}
