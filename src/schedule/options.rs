//! Sampler options that scheduler configs carry, one struct per solver with diffusers' defaults
//! as its `Default` (data only; the solvers use them, `config` parses them).

use super::Spacing;

/// EDM's churn parameters (S_churn = 0: deterministic Heun).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    pub s_churn: f64,
    pub s_min: f64,
    pub s_max: f64,
    pub s_noise: f64,
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            s_churn: 0.0,
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

/// The forward SDE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sde {
    /// σ(t) = σ_min (σ_max/σ_min)^t, x = x0 + σ ε.
    Ve { sigma_min: f64, sigma_max: f64 },
    /// β(t) = β_min + t (β_max − β_min), x = α x0 + σ ε.
    Vp { beta_min: f64, beta_max: f64 },
    /// sub-VP: the VP drift with g² = β(t)(1 − α(t)⁴); marginal std 1 − α².
    SubVp { beta_min: f64, beta_max: f64 },
}

/// The predictor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predictor {
    EulerMaruyama,
    ReverseDiffusion,
    Ancestral,
    /// Euler on the probability-flow ODE (deterministic).
    ProbabilityFlow,
}

/// Options of a predictor–corrector run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreSdeOptions {
    pub sde: Sde,
    pub predictor: Predictor,
    /// Langevin steps per time step (0: no corrector).
    pub corrector_steps: usize,
    pub snr: f64,
    /// The last time (1e-5 VE, 1e-3 VP in the paper).
    pub eps: f64,
}

impl Sde {
    /// Marginal (α, σ) at continuous time t.
    pub fn marginal(&self, t: f64) -> (f64, f64) {
        match *self {
            Sde::Ve {
                sigma_min,
                sigma_max,
            } => (1.0, sigma_min * (sigma_max / sigma_min).powf(t)),
            Sde::Vp { beta_min, beta_max } => {
                let a = (-0.25 * t * t * (beta_max - beta_min) - 0.5 * t * beta_min).exp();
                (a, (1.0 - a * a).max(0.0).sqrt())
            }
            Sde::SubVp { beta_min, beta_max } => {
                let a = (-0.25 * t * t * (beta_max - beta_min) - 0.5 * t * beta_min).exp();
                (a, 1.0 - a * a)
            }
        }
    }
}

/// DDPM's `variance_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarianceType {
    FixedSmall,
    FixedLarge,
}

/// DPM-Solver's `algorithm_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpmAlgorithm {
    /// Noise prediction (Lu et al. 2022).
    DpmSolver,
    /// Data prediction (Lu et al. 2022b).
    DpmSolverPlusPlus,
    SdeDpmSolver,
    SdeDpmSolverPlusPlus,
}

/// DPM-Solver's `solver_type` for the second-order term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// `DDPMScheduler`'s options (defaults: diffusers').
#[derive(Debug, Clone, PartialEq)]
pub struct DdpmConfig {
    pub spacing: Spacing,
    /// `clip_sample` with its range (`clip_sample_range`).
    pub clip_sample: Option<f64>,
    pub variance_type: VarianceType,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        DdpmConfig {
            spacing: Spacing::Leading,
            clip_sample: Some(1.0),
            variance_type: VarianceType::FixedSmall,
        }
    }
}

/// `DDIMScheduler`'s options.
#[derive(Debug, Clone, PartialEq)]
pub struct DdimConfig {
    pub spacing: Spacing,
    /// `clip_sample` with its range (`clip_sample_range`).
    pub clip_sample: Option<f64>,
    pub set_alpha_to_one: bool,
    /// η (a `step` argument in diffusers; 0 by default).
    pub eta: f64,
}

impl Default for DdimConfig {
    fn default() -> Self {
        DdimConfig {
            spacing: Spacing::Leading,
            clip_sample: Some(1.0),
            set_alpha_to_one: true,
            eta: 0.0,
        }
    }
}

/// `BDIAScheduler` (ours; BDIA-DDIM of Zhang, Lewis & Kleijn, ECCV 2024): every
/// `DDIMScheduler` option plus γ, the weight of the state one step back (γ = 0 is DDIM).
#[derive(Debug, Clone, PartialEq)]
pub struct BdiaConfig {
    pub ddim: DdimConfig,
    /// γ ∈ [0, 1] (default 0.5, the paper's image-editing setting).
    pub gamma: f64,
}

impl Default for BdiaConfig {
    fn default() -> Self {
        BdiaConfig {
            ddim: DdimConfig::default(),
            gamma: 0.5,
        }
    }
}

/// EVODiff's time grid (`get_time_steps`' `skip_type`) on the continuous time t ∈ [1/N, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipType {
    /// Uniform in half log-SNR λ (`logSNR`).
    LogSnr,
    /// Uniform in t (`time_uniform`).
    TimeUniform,
    /// Uniform in √t (`time_quadratic`).
    TimeQuadratic,
    /// Karras ρ = 7 on [t_end, t_start] read as σ_E, mapped back through λ = −log σ_E (`edm`).
    Edm,
}

/// `EVODiffScheduler` (ours; EVODiff of Li et al., "Entropy-aware variance optimized diffusion
/// inference"): the arguments of the official `EVODiff_edm.sample` with `method="multistep"`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvoDiffConfig {
    pub skip_type: SkipType,
    /// Only 2 (the official multistep loop has no other working order).
    pub order: usize,
    pub lower_order_final: bool,
    /// First time of the grid (default T = 1).
    pub t_start: Option<f64>,
    /// Last time of the grid (default 1/N).
    pub t_end: Option<f64>,
}

impl Default for EvoDiffConfig {
    fn default() -> Self {
        EvoDiffConfig {
            skip_type: SkipType::LogSnr,
            order: 2,
            lower_order_final: true,
            t_start: None,
            t_end: None,
        }
    }
}

/// The σ grid of the Euler family's `set_timesteps` (`EulerDiscreteScheduler`,
/// `EulerAncestralDiscreteScheduler`, `HeunDiscreteScheduler`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SigmaGrid {
    pub spacing: Spacing,
    pub use_karras_sigmas: bool,
    /// `final_sigmas_type == "zero"` (else `sigma_min`).
    pub final_sigma_zero: bool,
}

impl Default for SigmaGrid {
    fn default() -> Self {
        SigmaGrid {
            spacing: Spacing::Linspace,
            use_karras_sigmas: false,
            final_sigma_zero: true,
        }
    }
}

/// `EulerDiscreteScheduler` (`ancestral: false`) or `EulerAncestralDiscreteScheduler`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EulerConfig {
    pub grid: SigmaGrid,
    pub ancestral: bool,
}

/// `HeunDiscreteScheduler`'s options (its final σ is always zero: diffusers' Heun has no
/// `final_sigmas_type`, and the corrector needs a network time at every σ > 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeunConfig {
    pub spacing: Spacing,
    pub use_karras_sigmas: bool,
}

impl Default for HeunConfig {
    fn default() -> Self {
        let g = SigmaGrid::default();
        HeunConfig {
            spacing: g.spacing,
            use_karras_sigmas: g.use_karras_sigmas,
        }
    }
}

/// `DPMSolverMultistepScheduler`'s options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSolverConfig {
    pub spacing: Spacing,
    pub use_karras_sigmas: bool,
    /// Timesteps uniform in log σ (`use_lu_lambdas`, Lu et al.).
    pub use_lu_lambdas: bool,
    /// `final_sigmas_type == "zero"` (else `sigma_min`).
    pub final_sigma_zero: bool,
    pub lambda_min_clipped: f64,
    /// 1, 2 or 3.
    pub solver_order: usize,
    pub algorithm: DpmAlgorithm,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
}

impl Default for DpmSolverConfig {
    fn default() -> Self {
        DpmSolverConfig {
            spacing: Spacing::Linspace,
            use_karras_sigmas: false,
            use_lu_lambdas: false,
            final_sigma_zero: true,
            lambda_min_clipped: f64::NEG_INFINITY,
            solver_order: 2,
            algorithm: DpmAlgorithm::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
        }
    }
}

/// `UniPCMultistepScheduler`'s options (the final σ is always zero).
#[derive(Debug, Clone, PartialEq)]
pub struct UniPcConfig {
    pub spacing: Spacing,
    pub use_karras_sigmas: bool,
    /// 1, 2 or 3.
    pub solver_order: usize,
    /// Data prediction (`predict_x0`).
    pub predict_x0: bool,
    /// B(h) = h (`solver_type` `bh1`) instead of e^h − 1 (`bh2`).
    pub bh1: bool,
    pub lower_order_final: bool,
    /// Steps whose corrector is skipped.
    pub disable_corrector: Vec<usize>,
}

impl Default for UniPcConfig {
    fn default() -> Self {
        UniPcConfig {
            spacing: Spacing::Linspace,
            use_karras_sigmas: false,
            solver_order: 2,
            predict_x0: true,
            bh1: false,
            lower_order_final: true,
            disable_corrector: Vec::new(),
        }
    }
}

/// `FlowMatchEulerDiscreteScheduler` (`heun: false`) or `FlowMatchHeunDiscreteScheduler`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowConfig {
    /// The time shift (σ ← shift·σ / (1 + (shift − 1)·σ)).
    pub shift: f64,
    pub heun: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            shift: 1.0,
            heun: false,
        }
    }
}

/// `EDMHeunScheduler` (ours): EDM's Heun sampler with churn on a Karras grid.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EdmConfig {
    /// `s_churn`, `s_tmin`, `s_tmax`, `s_noise`.
    pub churn: Churn,
    /// Karras grid bounds (`sigma_min`, `sigma_max`; default: the training schedule's).
    pub sigma_bounds: Option<(f64, f64)>,
}

/// The sampler an LML class corrects.
#[derive(Debug, Clone, PartialEq)]
pub enum LmlBase {
    /// `DDIMLMScheduler`: every `DDIMScheduler` field.
    Ddim(DdimConfig),
    /// `DPMSolverMultistepLMScheduler`: every `DPMSolverMultistepScheduler` field (the official
    /// file predates `final_sigmas_type` and always ends at timestep 0: default `sigma_min`).
    DpmSolver(DpmSolverConfig),
    /// `FlowMatchEulerDiscreteLMScheduler`: every `FlowMatchEulerDiscreteScheduler` field.
    FlowEuler(FlowConfig),
}

/// The LML classes of Wang et al. (ICCV 2025; zituitui/LML-diffusion-sampler): a base sampler
/// plus the official fields. Defaults are the official files' (`lm` on only for the flow class).
#[derive(Debug, Clone, PartialEq)]
pub struct LmlConfig {
    pub base: LmlBase,
    /// Apply the correction (`lm`).
    pub lm: bool,
    /// The damping λ (`lamb`), > 0.
    pub lamb: f64,
    /// The weight κ ∈ [0, 1] of the previous step's vector in the rank-1 direction (`kappa`;
    /// κ = 0 makes the correction the identity).
    pub kappa: f64,
    /// DDIM only: no correction at timesteps t ≥ 1000·(1 − freeze) (`freeze` ∈ [0, 1]).
    pub freeze: f64,
}

/// `PNDMScheduler`'s options (defaults: diffusers'; Stable Diffusion 1.x folders set
/// `skip_prk_steps`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PndmConfig {
    pub spacing: Spacing,
    /// PLMS from the first step (its second-order start) instead of three Runge–Kutta
    /// warm-up steps.
    pub skip_prk_steps: bool,
    /// The ᾱ after the last step: 1, or ᾱ_0 (`false`).
    pub set_alpha_to_one: bool,
}

impl Default for PndmConfig {
    fn default() -> Self {
        PndmConfig {
            spacing: Spacing::Leading,
            skip_prk_steps: false,
            set_alpha_to_one: false,
        }
    }
}

/// `LMSDiscreteScheduler`'s options (the final σ is always zero; the order, 4, is a `step`
/// argument in diffusers that its pipelines never change).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmsConfig {
    pub spacing: Spacing,
    pub use_karras_sigmas: bool,
}

impl Default for LmsConfig {
    fn default() -> Self {
        let g = SigmaGrid::default();
        LmsConfig {
            spacing: g.spacing,
            use_karras_sigmas: g.use_karras_sigmas,
        }
    }
}
