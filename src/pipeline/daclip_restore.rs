//! Restoration with the DA-CLIP universal image-restoration model (Luo et al., ICLR 2024) as
//! the MR Sampler paper runs it (Li et al., arXiv 2502.07856; official code grrrute/mr-sampler,
//! `config/daclip-sde/test.py`): a converted folder ([`super::daclip_folder`]) → the
//! `ConditionalUNet` evaluated as ε(x_t, μ, t, degra_context, image_context) by any restore
//! sampler of the folder's mean-reverting process; the two contexts are the DA-CLIP encoder's
//! (image_features, degra_features) of the degraded image, computed once per image.
//! Images are on the folder's `sample_range` scale ([0, 1] for DA-CLIP: uint8/255, both the
//! network's `cond` and the process mean).

use super::daclip_folder::DaclipFolder;
use super::restore::{check_step_noise, run_conditioned, RestoreOptions, Restorer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::daclip_unet::DaclipUNet;
use crate::models::Prediction;
use crate::nn::conditional_unet::ConditionalUNet;
use crate::nn::daclip::DaClip;
use crate::schedule::mrs::MrsOptions;
use crate::solvers::program::Program;
use crate::tensor::{DType, Tensor};
use std::path::Path;

fn rarg(arg: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "restore",
        arg,
        reason,
    }
}

/// The encoder's features of a batch: `image` = image_features, `degra` = degra_features, each
/// [N, embed_dim] (`DaCLIP.encode_image(x, control=True)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Contexts {
    pub image: Vec<f32>,
    pub degra: Vec<f32>,
}

/// A DA-CLIP folder with its sampler program, validated and loaded once.
pub struct DaclipRestorer {
    pub folder: DaclipFolder,
    unet: ConditionalUNet,
    encoder: DaClip,
    program: Program,
    mrs: Option<MrsOptions>,
}

impl DaclipRestorer {
    /// The host-side checks (the folder, its tensors, the sampler options) before any GPU work.
    pub fn check(dir: &Path, o: &RestoreOptions) -> Result<DaclipFolder> {
        let folder = DaclipFolder::read(dir)?;
        if matches!(o.sampler.as_str(), "resshift" | "rddm" | "resfusion") {
            return Err(rarg(
                "sampler",
                format!(
                    "`{}` is not a sampler of DA-CLIP's mean-reverting process (mrs, mr-posterior, mr-euler)",
                    o.sampler
                ),
            ));
        }
        let (_, _, prediction) = Restorer::program_at(&folder.scheduler_config, o)?;
        if prediction != Prediction::Epsilon {
            return Err(Error::Config {
                file: folder.scheduler_config.display().to_string(),
                field: "prediction_type".into(),
                reason: format!(
                    "{prediction:?}: the official ConditionalUNet predicts the noise (fit_target noise → epsilon)"
                ),
            });
        }
        Ok(folder)
    }

    /// Checks, builds the program, loads the UNet and the DA-CLIP encoder.
    pub fn load(gpu: &Gpu, dir: &Path, o: &RestoreOptions) -> Result<Self> {
        let folder = Self::check(dir, o)?;
        let (program, mrs, _) = Restorer::program_at(&folder.scheduler_config, o)?;
        let unet = ConditionalUNet::from_dir(gpu, &folder.unet_dir, o.dtype)?;
        let encoder = DaClip::from_dir(gpu, &folder.daclip_dir, o.dtype)?;
        encoder.config.check_context_dim(
            unet.config.context_dim.unwrap_or(encoder.config.embed_dim),
            "unet/config.json context_dim",
        )?;
        Ok(DaclipRestorer {
            folder,
            unet,
            encoder,
            program,
            mrs,
        })
    }

    /// The MR Sampler's effective options, for `mrs`.
    pub fn mrs_options(&self) -> Option<MrsOptions> {
        self.mrs
    }
    /// Model evaluations per restoration.
    pub fn nfe(&self) -> usize {
        self.program.nfe
    }
    /// Sampler steps per restoration.
    pub fn steps(&self) -> usize {
        self.program.steps.len()
    }
    /// The image channels the network restores (`in_nc`).
    pub fn channels(&self) -> usize {
        self.unet.config.in_nc
    }
    /// The width of the contexts the network takes (`context_dim`; 0 without a context path).
    pub fn context_dim(&self) -> usize {
        self.unet.config.context_dim.unwrap_or(0)
    }

    /// The DA-CLIP contexts of the batch μ ([N, 3, H, W] on the [0, 1] scale), as test.py
    /// computes them: `encode_image(clip_transform(img), control=True)` (the official
    /// `(img·255).astype(uint8)` quantisation, bicubic resize of the shorter side, centre crop,
    /// CLIP mean/std), once per image.
    pub fn contexts(&self, gpu: &Gpu, mu: &[f32], shape: &[usize]) -> Result<Contexts> {
        if shape.len() != 4 || shape[1] != 3 {
            return Err(rarg(
                "condition",
                format!("DA-CLIP encodes RGB images [N, 3, H, W], not {shape:?}"),
            ));
        }
        let (lo, hi) = self.folder.sample_range;
        let unit: Vec<f32> = mu
            .iter()
            .map(|v| ((*v as f64 - lo) / (hi - lo)) as f32)
            .collect();
        let px = self
            .encoder
            .preprocess_unit_nchw(&unit, shape[0], shape[2], shape[3])?;
        let (image, degra) = self.encoder.encode_image(gpu, &px, shape[0])?;
        Ok(Contexts { image, degra })
    }

    /// Restores the batch μ ([N, in_nc, H, W] on the folder's `sample_range` scale, any H×W)
    /// with its encoder features. `noise`: the standard-normal draw of x_T = μ + λ_s·z (drawn
    /// from `seed` when `None`); `step_noise`: the SDE's per-step draws ([steps, N, C, H, W]).
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &self,
        gpu: &Gpu,
        mu: &[f32],
        shape: &[usize],
        contexts: &Contexts,
        seed: u64,
        noise: Option<&[f32]>,
        step_noise: Option<&[f32]>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        let c = &self.unet.config;
        if shape.len() != 4 || shape[1] != c.in_nc || c.out_nc != c.in_nc {
            return Err(rarg(
                "condition",
                format!(
                    "condition of shape {shape:?} for a ConditionalUNet with in_nc {} and out_nc {} (expected [N, {}, H, W])",
                    c.in_nc, c.out_nc, c.in_nc
                ),
            ));
        }
        let len = crate::size::elements("condition", shape)?;
        if mu.len() != len {
            return Err(Error::HostLength {
                tensor: "condition".into(),
                got: mu.len(),
                want: len,
                shape: shape.to_vec(),
            });
        }
        if let Some(i) = mu.iter().position(|v| !v.is_finite()) {
            return Err(rarg(
                "condition",
                format!("non-finite value at flat index {i}"),
            ));
        }
        let (n, h, w) = (shape[0], shape[2], shape[3]);
        let cd = self.context_dim();
        for (name, v) in [
            ("image_context", &contexts.image),
            ("degra_context", &contexts.degra),
        ] {
            if v.len() != n * cd {
                return Err(Error::HostLength {
                    tensor: name.into(),
                    got: v.len(),
                    want: n * cd,
                    shape: vec![n, cd],
                });
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(rarg(
                    "contexts",
                    format!("non-finite {name} value at flat index {i}"),
                ));
            }
        }
        let step_noise = check_step_noise(&self.program, self.steps(), step_noise, shape)?;
        let (degra, image) = (c.degra(), c.image());
        let fwd = self.unet.prepare(gpu, n, h, w, degra, image)?;
        let mut model = DaclipUNet::new(
            gpu,
            fwd,
            mu,
            degra.then_some(&contexts.degra[..]),
            image.then_some(&contexts.image[..]),
        )?;
        let cond_state = Tensor::from_f32(gpu, "mu", shape, mu, DType::F32)?;
        run_conditioned(
            gpu,
            &self.program,
            &mut model,
            &cond_state,
            seed,
            noise,
            step_noise,
            progress,
        )
    }
}
