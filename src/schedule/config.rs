//! `scheduler_config.json` → [`SchedulerConfig`]: the training schedule every class shares
//! ([`TrainingSchedule`]) and the options of the solver its `_class_name` selects
//! ([`SolverConfig`]), with diffusers' defaults. [`CLASSES`] is the one table of class names,
//! kinds and `--scheduler` names. Unknown classes, unknown fields and unsupported values are
//! errors naming them; fields of other classes are accepted and ignored.

use super::options::{
    BdiaConfig, Churn, DdimConfig, DdpmConfig, DpmSolverConfig, EdmConfig, EulerConfig,
    EvoDiffConfig, FlowConfig, HeunConfig, LmlBase, LmlConfig, LmsConfig, PndmConfig, Predictor,
    ScoreSdeOptions, Sde, SigmaGrid, SkipType, UniPcConfig,
};
pub use super::options::{DpmAlgorithm, SolverType, VarianceType};
use super::Prediction;
use super::{BetaSchedule, DiscreteVp};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::load::ConfigFields;
use serde_json::Value;
use std::path::Path;

/// Which diffusers class a config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Ddpm,
    Ddim,
    /// Our own class: `DDIMScheduler`'s fields plus `gamma` (BDIA-DDIM).
    Bdia,
    /// The official LML class on DDIM: `DDIMScheduler`'s fields plus `lm`, `lamb`, `kappa`,
    /// `freeze`.
    DdimLm,
    /// PNDM / PLMS (Liu et al. 2022), Stable Diffusion 1.x's default.
    Pndm,
    Euler,
    EulerAncestral,
    Heun,
    LmsDiscrete,
    DpmSolverMultistep,
    /// The official LML class on DPM-Solver(++): its fields plus `lm`, `lamb`, `kappa`.
    DpmSolverMultistepLm,
    UniPc,
    /// Our own class: the training-schedule fields plus EVODiff's `skip_type`, `order`,
    /// `lower_order_final`, `t_start`, `t_end`.
    EvoDiff,
    FlowMatchEuler,
    FlowMatchHeun,
    /// The official LML class on flow-matching Euler: its fields plus `lm`, `lamb`, `kappa`.
    FlowMatchEulerLm,
    /// Our own class (no diffusers equivalent): EDM's Heun sampler with churn on a Karras grid.
    EdmHeun,
    /// diffusers' `ScoreSdeVeScheduler` fields, plus our `predictor`.
    ScoreSdeVe,
    /// diffusers' `ScoreSdeVpScheduler` fields, plus our `predictor`, `correct_steps`, `snr`.
    ScoreSdeVp,
}

/// One row of [`CLASSES`].
#[derive(Debug)]
pub struct SchedulerClass {
    pub kind: SchedulerKind,
    /// diffusers' `_class_name`.
    pub class_name: &'static str,
    /// The `--scheduler` names that select this class, each with the fields (a JSON object) it
    /// sets over the class defaults.
    pub names: &'static [(&'static str, &'static str)],
}

/// Every class, in [`SchedulerKind`] order (row i is the kind with discriminant i): the one list
/// of `_class_name`s and `--scheduler` names.
pub const CLASSES: &[SchedulerClass] = {
    use SchedulerKind as K;
    const fn row(
        kind: K,
        class_name: &'static str,
        names: &'static [(&'static str, &'static str)],
    ) -> SchedulerClass {
        SchedulerClass {
            kind,
            class_name,
            names,
        }
    }
    &[
        row(K::Ddpm, "DDPMScheduler", &[("ddpm", "{}")]),
        row(K::Ddim, "DDIMScheduler", &[("ddim", "{}")]),
        row(K::Bdia, "BDIAScheduler", &[("bdia", r#"{"gamma": 0.5}"#)]),
        // The LML names are the official README's commands: λ as there, κ = 0 (the released
        // default, which no script changes) — exactly the base sampler.
        row(
            K::DdimLm,
            "DDIMLMScheduler",
            &[("ddim-lml", r#"{"lm": true, "lamb": 0.005}"#)],
        ),
        // `pndm` is the class defaults (three Runge–Kutta warm-up steps, as `PNDMPipeline`);
        // `plms` is Stable Diffusion 1.x's setting.
        row(
            K::Pndm,
            "PNDMScheduler",
            &[("pndm", "{}"), ("plms", r#"{"skip_prk_steps": true}"#)],
        ),
        row(K::Euler, "EulerDiscreteScheduler", &[("euler", "{}")]),
        row(
            K::EulerAncestral,
            "EulerAncestralDiscreteScheduler",
            &[("euler-ancestral", "{}"), ("euler-a", "{}")],
        ),
        row(K::Heun, "HeunDiscreteScheduler", &[("heun", "{}")]),
        row(
            K::LmsDiscrete,
            "LMSDiscreteScheduler",
            &[
                ("lms", "{}"),
                ("lms-karras", r#"{"use_karras_sigmas": true}"#),
            ],
        ),
        row(
            K::DpmSolverMultistep,
            "DPMSolverMultistepScheduler",
            &[
                ("dpm-solver++", "{}"),
                ("dpm-solver++-2m", "{}"),
                ("dpm-solver++-3m", r#"{"solver_order": 3}"#),
                ("dpm-solver++-1", r#"{"solver_order": 1}"#),
                (
                    "sde-dpm-solver++",
                    r#"{"algorithm_type": "sde-dpmsolver++"}"#,
                ),
                (
                    "dpm-solver",
                    r#"{"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}"#,
                ),
            ],
        ),
        row(
            K::DpmSolverMultistepLm,
            "DPMSolverMultistepLMScheduler",
            &[
                ("dpm-solver++-lml", r#"{"lm": true, "lamb": 0.0008}"#),
                (
                    "dpm-solver-lml",
                    r#"{"lm": true, "lamb": 0.0008, "algorithm_type": "dpmsolver", "solver_order": 3}"#,
                ),
            ],
        ),
        row(
            K::UniPc,
            "UniPCMultistepScheduler",
            &[("unipc", "{}"), ("unipc-3", r#"{"solver_order": 3}"#)],
        ),
        row(K::EvoDiff, "EVODiffScheduler", &[("evodiff", "{}")]),
        row(
            K::FlowMatchEuler,
            "FlowMatchEulerDiscreteScheduler",
            &[("flow-euler", "{}")],
        ),
        row(
            K::FlowMatchHeun,
            "FlowMatchHeunDiscreteScheduler",
            &[("flow-heun", "{}")],
        ),
        row(
            K::FlowMatchEulerLm,
            "FlowMatchEulerDiscreteLMScheduler",
            &[("flow-euler-lml", r#"{"lamb": 0.01}"#)],
        ),
        row(
            K::EdmHeun,
            "EDMHeunScheduler",
            &[
                ("edm-heun", "{}"),
                (
                    "edm-heun-churn",
                    r#"{"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}"#,
                ),
            ],
        ),
        row(
            K::ScoreSdeVe,
            "ScoreSdeVeScheduler",
            &[
                // Reverse diffusion + 1 Langevin step, snr 0.16, σ 0.01–50.
                ("score-sde-ve", r#"{"snr": 0.16, "sigma_max": 50.0}"#),
                (
                    "score-sde-ve-ode",
                    r#"{"predictor": "probability_flow", "correct_steps": 0, "sigma_max": 50.0}"#,
                ),
            ],
        ),
        row(
            K::ScoreSdeVp,
            "ScoreSdeVpScheduler",
            &[
                ("score-sde-vp", "{}"),
                ("score-sde-vp-ode", r#"{"predictor": "probability_flow"}"#),
                ("score-sde-subvp", r#"{"sde_type": "sub_vp"}"#),
            ],
        ),
    ]
};

// Row i of CLASSES is kind i, and every kind has a row (ScoreSdeVp is the last kind).
const _: () = {
    assert!(CLASSES.len() == SchedulerKind::ScoreSdeVp as usize + 1);
    let mut i = 0;
    while i < CLASSES.len() {
        assert!(CLASSES[i].kind as usize == i);
        i += 1;
    }
};

impl SchedulerKind {
    /// diffusers class name.
    pub fn class_name(self) -> &'static str {
        CLASSES[self as usize].class_name
    }

    /// The kind of a diffusers class name.
    pub fn from_class(name: &str) -> Option<Self> {
        CLASSES
            .iter()
            .find(|c| c.class_name == name)
            .map(|c| c.kind)
    }
}

/// Every `--scheduler` name, in [`CLASSES`] order.
pub fn scheduler_names() -> impl Iterator<Item = &'static str> {
    CLASSES.iter().flat_map(|c| c.names.iter().map(|(n, _)| *n))
}

/// The largest `num_train_timesteps` accepted (checked before ᾱ, a table of that many entries, is
/// allocated).
pub const MAX_TRAIN_TIMESTEPS: usize = 1_000_000;

/// The most Langevin corrector steps per time step accepted (`correct_steps`).
pub const MAX_CORRECTOR_STEPS: usize = 100;

/// What the model was trained with, shared by every class: `--scheduler NAME` keeps it from the
/// model folder's config and changes only the [`SolverConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSchedule {
    /// T, in 2..=[`MAX_TRAIN_TIMESTEPS`].
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub prediction: Prediction,
    /// Added to `leading` timesteps, in 0..T.
    pub steps_offset: usize,
}

impl TrainingSchedule {
    /// The discrete VP schedule (ᾱ_t for t = 0..T−1).
    pub fn vp(&self) -> Result<DiscreteVp> {
        DiscreteVp::new(self.beta_schedule, self.num_train_timesteps)
    }

    fn parse(f: &ConfigFields, kind: SchedulerKind) -> Result<Self> {
        use SchedulerKind as K;
        let num_train_timesteps = f.int("num_train_timesteps", 1000, 2..=MAX_TRAIN_TIMESTEPS)?;
        let (start, end) = (
            f.num("beta_start", 0.0001, Domain::OPEN_UNIT)?,
            f.num("beta_end", 0.02, Domain::OPEN_UNIT)?,
        );
        f.ordered("beta_start", start, "beta_end", end, false)?;
        let beta_schedule = match f.str("beta_schedule", "linear")?.as_str() {
            "linear" => BetaSchedule::Linear { start, end },
            "scaled_linear" => BetaSchedule::ScaledLinear { start, end },
            "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
            o => {
                return Err(f.err(
                    "beta_schedule",
                    format!("`{o}` is not supported (linear, scaled_linear, squaredcos_cap_v2)"),
                ))
            }
        };
        let default_prediction = match kind {
            K::FlowMatchEuler | K::FlowMatchHeun | K::FlowMatchEulerLm => Prediction::Flow,
            K::ScoreSdeVe | K::ScoreSdeVp => Prediction::Score,
            _ => Prediction::Epsilon,
        };
        Ok(TrainingSchedule {
            num_train_timesteps,
            beta_schedule,
            prediction: parsed(f, "prediction_type", default_prediction)?,
            steps_offset: f.int("steps_offset", 0, 0..=num_train_timesteps - 1)?,
        })
    }
}

/// The options of the solver a class selects: one variant per solver (`src/solvers/*.rs`);
/// classes that differ only by a flag (Euler / Euler-ancestral, flow Euler / Heun, Score-SDE
/// VE / VP) share a variant and [`SolverConfig::kind`] recovers the class.
#[derive(Debug, Clone, PartialEq)]
pub enum SolverConfig {
    Ddpm(DdpmConfig),
    Ddim(DdimConfig),
    Bdia(BdiaConfig),
    Euler(EulerConfig),
    Heun(HeunConfig),
    Pndm(PndmConfig),
    Lms(LmsConfig),
    DpmSolver(DpmSolverConfig),
    UniPc(UniPcConfig),
    EvoDiff(EvoDiffConfig),
    Flow(FlowConfig),
    Edm(EdmConfig),
    ScoreSde(ScoreSdeOptions),
    Lml(LmlConfig),
}

impl SolverConfig {
    /// The diffusers class these options are of.
    pub fn kind(&self) -> SchedulerKind {
        use SchedulerKind as K;
        match self {
            SolverConfig::Ddpm(_) => K::Ddpm,
            SolverConfig::Ddim(_) => K::Ddim,
            SolverConfig::Bdia(_) => K::Bdia,
            SolverConfig::Euler(c) if c.ancestral => K::EulerAncestral,
            SolverConfig::Euler(_) => K::Euler,
            SolverConfig::Heun(_) => K::Heun,
            SolverConfig::Pndm(_) => K::Pndm,
            SolverConfig::Lms(_) => K::LmsDiscrete,
            SolverConfig::DpmSolver(_) => K::DpmSolverMultistep,
            SolverConfig::UniPc(_) => K::UniPc,
            SolverConfig::EvoDiff(_) => K::EvoDiff,
            SolverConfig::Flow(c) if c.heun => K::FlowMatchHeun,
            SolverConfig::Flow(_) => K::FlowMatchEuler,
            SolverConfig::Edm(_) => K::EdmHeun,
            SolverConfig::ScoreSde(o) => match o.sde {
                Sde::Ve { .. } => K::ScoreSdeVe,
                Sde::Vp { .. } | Sde::SubVp { .. } => K::ScoreSdeVp,
            },
            SolverConfig::Lml(c) => match c.base {
                LmlBase::Ddim(_) => K::DdimLm,
                LmlBase::DpmSolver(_) => K::DpmSolverMultistepLm,
                LmlBase::FlowEuler(_) => K::FlowMatchEulerLm,
            },
        }
    }

    /// Errors (the reason) unless the class takes this `prediction_type`: PNDM takes ε and v,
    /// LMS ε, v and x0, as diffusers; the other classes take every type.
    pub fn check_prediction(&self, p: Prediction) -> std::result::Result<(), String> {
        use Prediction as P;
        let (ok, names) = match self {
            SolverConfig::Pndm(_) => (
                matches!(p, P::Epsilon | P::VPrediction),
                "epsilon, v_prediction",
            ),
            SolverConfig::Lms(_) => (
                matches!(p, P::Epsilon | P::VPrediction | P::Sample),
                "epsilon, v_prediction, sample",
            ),
            _ => (true, ""),
        };
        if ok {
            Ok(())
        } else {
            let name = match p {
                P::Epsilon => "epsilon",
                P::Sample => "sample",
                P::VPrediction => "v_prediction",
                P::Flow => "flow_prediction",
                P::Score => "score",
            };
            Err(format!(
                "`{name}` is not supported by {} ({names})",
                self.kind().class_name()
            ))
        }
    }

    fn parse(f: &ConfigFields, kind: SchedulerKind) -> Result<Self> {
        use SchedulerKind as K;
        Ok(match kind {
            K::Ddpm => {
                let d = DdpmConfig::default();
                SolverConfig::Ddpm(DdpmConfig {
                    spacing: parsed(f, "timestep_spacing", d.spacing)?,
                    clip_sample: clip_sample(f, d.clip_sample)?,
                    variance_type: choice(
                        f,
                        "variance_type",
                        d.variance_type,
                        &[
                            ("fixed_small", VarianceType::FixedSmall),
                            ("fixed_large", VarianceType::FixedLarge),
                        ],
                    )?,
                })
            }
            K::Ddim => SolverConfig::Ddim(ddim(f)?),
            K::Bdia => {
                let gamma = f.num("gamma", BdiaConfig::default().gamma, Domain::UNIT)?;
                SolverConfig::Bdia(BdiaConfig {
                    ddim: ddim(f)?,
                    gamma,
                })
            }
            K::Euler | K::EulerAncestral => SolverConfig::Euler(EulerConfig {
                grid: sigma_grid(f)?,
                ancestral: kind == K::EulerAncestral,
            }),
            K::Heun => {
                choice(f, "final_sigmas_type", (), &[("zero", ())])?;
                let g = sigma_grid(f)?;
                SolverConfig::Heun(HeunConfig {
                    spacing: g.spacing,
                    use_karras_sigmas: g.use_karras_sigmas,
                })
            }
            K::Pndm => {
                let d = PndmConfig::default();
                SolverConfig::Pndm(PndmConfig {
                    spacing: parsed(f, "timestep_spacing", d.spacing)?,
                    skip_prk_steps: f.bool("skip_prk_steps", d.skip_prk_steps)?,
                    set_alpha_to_one: f.bool("set_alpha_to_one", d.set_alpha_to_one)?,
                })
            }
            K::LmsDiscrete => {
                let d = LmsConfig::default();
                SolverConfig::Lms(LmsConfig {
                    spacing: parsed(f, "timestep_spacing", d.spacing)?,
                    use_karras_sigmas: f.bool("use_karras_sigmas", d.use_karras_sigmas)?,
                })
            }
            K::DpmSolverMultistep => SolverConfig::DpmSolver(dpm_solver(f)?),
            K::UniPc => SolverConfig::UniPc(unipc(f)?),
            K::EvoDiff => SolverConfig::EvoDiff(evodiff(f)?),
            K::FlowMatchEuler | K::FlowMatchHeun => SolverConfig::Flow(FlowConfig {
                shift: f.num("shift", FlowConfig::default().shift, Domain::POSITIVE)?,
                heun: kind == K::FlowMatchHeun,
            }),
            K::EdmHeun => {
                let d = Churn::default();
                let nn = Domain::NON_NEGATIVE;
                let churn = Churn {
                    s_churn: f.num("s_churn", d.s_churn, nn)?,
                    s_min: f.num("s_tmin", d.s_min, nn)?,
                    s_max: f.num("s_tmax", d.s_max, nn.or_plus_inf())?,
                    s_noise: f.num("s_noise", d.s_noise, nn)?,
                };
                f.ordered("s_tmin", churn.s_min, "s_tmax", churn.s_max, false)?;
                SolverConfig::Edm(EdmConfig {
                    churn,
                    sigma_bounds: match (f.get("sigma_min"), f.get("sigma_max")) {
                        (None, None) => None,
                        _ => Some(sigma_bounds(f, 0.002, 80.0)?),
                    },
                })
            }
            K::ScoreSdeVe | K::ScoreSdeVp => {
                SolverConfig::ScoreSde(score_sde(f, kind == K::ScoreSdeVe)?)
            }
            K::DdimLm => lml(f, LmlBase::Ddim(ddim(f)?), false)?,
            K::DpmSolverMultistepLm => {
                // The official file predates `final_sigmas_type`: it always ends at timestep 0.
                let mut c = dpm_solver(f)?;
                c.final_sigma_zero = final_sigma_zero(f, false)?;
                let cfg = lml(f, LmlBase::DpmSolver(c), false)?;
                // Karras / Lu σ end on σ_min twice: the last step has h = 0, so u = 0 and the
                // official correction divides 0 by 0 (NaN, measured on the official file).
                for k in ["use_karras_sigmas", "use_lu_lambdas"] {
                    if f.bool("lm", false)? && f.bool(k, false)? {
                        return Err(f.err(
                            k,
                            "with `lm` the last step of this grid has a zero increment, which the \
                             official LML correction turns into NaN (0/0)",
                        ));
                    }
                }
                cfg
            }
            K::FlowMatchEulerLm => lml(
                f,
                LmlBase::FlowEuler(FlowConfig {
                    shift: f.num("shift", FlowConfig::default().shift, Domain::POSITIVE)?,
                    heun: false,
                }),
                true,
            )?,
        })
    }
}

/// A scheduler configuration (immutable; `set_timesteps` state lives in the program built from
/// it).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub train: TrainingSchedule,
    pub solver: SolverConfig,
}

/// Fields accepted (and ignored when irrelevant to the class) because diffusers writes them.
const KNOWN: &[&str] = &[
    "_class_name",
    "_diffusers_version",
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "timestep_spacing",
    "steps_offset",
    "clip_sample",
    "clip_sample_range",
    "set_alpha_to_one",
    "variance_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "use_karras_sigmas",
    "final_sigmas_type",
    "solver_order",
    "algorithm_type",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "lambda_min_clipped",
    "rescale_betas_zero_snr",
    "interpolation_type",
    "timestep_type",
    "sigma_min",
    "sigma_max",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_flow_sigmas",
    "flow_shift",
    "skip_prk_steps",
    "eta",
    "use_dynamic_shifting",
    "time_shift_type",
    "predict_x0",
    "disable_corrector",
    "solver_p",
    "shift_terminal",
    "shift",
    "base_shift",
    "max_shift",
    "base_image_seq_len",
    "max_image_seq_len",
    "invert_sigmas",
    "stochastic_sampling",
    "use_lu_lambdas",
    "s_churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
    "snr",
    "sampling_eps",
    "correct_steps",
    "predictor",
    "beta_min",
    "beta_max",
    "sde_type",
    "gamma",
    "skip_type",
    "order",
    "t_start",
    "t_end",
    "lm",
    "lamb",
    "kappa",
    "freeze",
];

/// The LML fields, taken only by the LML classes (`freeze` only by `DDIMLMScheduler`).
const LML_FIELDS: &[&str] = &["lm", "lamb", "kappa", "freeze"];

impl SchedulerConfig {
    /// Reads a `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = crate::load::read_json(path)?;
        Self::from_json(&v, &path.display().to_string())
    }

    /// Parses a config object; `file` names it in errors.
    pub fn from_json(v: &Value, file: &str) -> Result<Self> {
        let f = ConfigFields::new(v, file)?;
        for k in f.keys() {
            if !KNOWN.contains(&k.as_str()) {
                return Err(f.err(k, "unknown scheduler field; refusing to guess"));
            }
        }
        let class = f.str("_class_name", "")?;
        let kind = SchedulerKind::from_class(&class).ok_or_else(|| {
            let all: Vec<&str> = CLASSES.iter().map(|c| c.class_name).collect();
            f.err(
                "_class_name",
                format!("`{class}` is not supported ({})", all.join(", ")),
            )
        })?;
        // Features we do not implement, whatever the class: refused unless at their default.
        for k in [
            "thresholding",
            "rescale_betas_zero_snr",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_flow_sigmas",
            "use_dynamic_shifting",
            "invert_sigmas",
            "stochastic_sampling",
        ] {
            f.must_be_default(k, |v| v == &Value::Bool(false))?;
        }
        f.must_be_default("trained_betas", |_| false)?;
        use SchedulerKind as K;
        for &k in LML_FIELDS {
            let takes = match kind {
                K::DdimLm => true,
                K::DpmSolverMultistepLm | K::FlowMatchEulerLm => k != "freeze",
                _ => false,
            };
            if !takes && f.get(k).is_some() {
                return Err(f.err(
                    k,
                    format!("is an LML field, which `{class}` does not take (LML classes: DDIMLMScheduler; `lm`, `lamb`, `kappa` also DPMSolverMultistepLMScheduler, FlowMatchEulerDiscreteLMScheduler)"),
                ));
            }
        }
        f.must_be_default("solver_p", |_| false)?;
        f.must_be_default("shift_terminal", |_| false)?;
        f.must_be_default("interpolation_type", |v| v == "linear")?;
        f.must_be_default("timestep_type", |v| v == "discrete")?;
        if !matches!(kind, SchedulerKind::EdmHeun | SchedulerKind::ScoreSdeVe) {
            f.must_be_default("sigma_min", |_| false)?;
            f.must_be_default("sigma_max", |_| false)?;
        }
        let cfg = SchedulerConfig {
            train: TrainingSchedule::parse(&f, kind)?,
            solver: SolverConfig::parse(&f, kind)?,
        };
        // The prediction types a class takes in diffusers (a ValueError there): checked again
        // when the program is built, for `--scheduler NAME` on another folder's schedule.
        cfg.solver
            .check_prediction(cfg.train.prediction)
            .map_err(|reason| f.err("prediction_type", reason))?;
        Ok(cfg)
    }

    /// The class.
    pub fn kind(&self) -> SchedulerKind {
        self.solver.kind()
    }

    /// The training schedule.
    pub fn vp(&self) -> Result<DiscreteVp> {
        self.train.vp()
    }

    /// Default configuration of a class.
    pub fn default_for(kind: SchedulerKind) -> Self {
        Self::from_json(
            &serde_json::json!({ "_class_name": kind.class_name() }),
            "(defaults)",
        )
        .expect("defaults parse")
    }

    /// `--scheduler NAME`: the class and options of NAME ([`CLASSES`]), with the training
    /// schedule (betas, T, prediction type, steps_offset) of `base` (the model folder's
    /// `scheduler_config.json`) when given.
    pub fn named(name: &str, base: Option<&SchedulerConfig>) -> Result<Self> {
        let (class, fields) = CLASSES
            .iter()
            .find_map(|c| {
                c.names
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| (c, *f))
            })
            .ok_or_else(|| Error::Argument {
                op: "sample",
                arg: "scheduler",
                reason: format!(
                    "unknown scheduler `{name}` (one of: {})",
                    scheduler_names().collect::<Vec<_>>().join(", ")
                ),
            })?;
        let file = format!("scheduler `{name}`");
        let mut v: Value = serde_json::from_str(fields).map_err(|e| Error::Config {
            file: file.clone(),
            field: "(root)".into(),
            reason: e.to_string(),
        })?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("_class_name".into(), class.class_name.into());
        }
        let mut cfg = Self::from_json(&v, &file)?;
        if let Some(b) = base {
            cfg.train = b.train.clone();
        }
        Ok(cfg)
    }
}

/// A field parsed by `FromStr` (error text from the type), `d` when absent.
fn parsed<T: std::str::FromStr<Err = String>>(f: &ConfigFields, k: &str, d: T) -> Result<T> {
    match f.get(k) {
        None => Ok(d),
        Some(_) => f.str(k, "")?.parse().map_err(|e: String| f.err(k, e)),
    }
}

/// A string field naming one of `options`, `d` when absent.
fn choice<T: Copy>(f: &ConfigFields, k: &str, d: T, options: &[(&str, T)]) -> Result<T> {
    if f.get(k).is_none() {
        return Ok(d);
    }
    let s = f.str(k, "")?;
    options
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            f.err(k, format!("`{s}` is not supported ({})", names.join(", ")))
        })
}

/// An LML class around `base` (`lm` defaults to `lm_default`, the official file's).
fn lml(f: &ConfigFields, base: LmlBase, lm_default: bool) -> Result<SolverConfig> {
    let lamb = f.num("lamb", 1.0, Domain::FINITE)?;
    if !(lamb > 0.0 && lamb.is_finite()) {
        return Err(f.err(
            "lamb",
            format!("{lamb} is not a positive damping (at 0 the first step divides 0 by 0)"),
        ));
    }
    let unit = |k: &str| -> Result<f64> {
        let v = f.num(k, 0.0, Domain::FINITE)?;
        if !(0.0..=1.0).contains(&v) {
            return Err(f.err(k, format!("{v} is outside [0, 1]")));
        }
        Ok(v)
    };
    Ok(SolverConfig::Lml(LmlConfig {
        base,
        lm: f.bool("lm", lm_default)?,
        lamb,
        kappa: unit("kappa")?,
        freeze: unit("freeze")?,
    }))
}

/// `clip_sample` with `clip_sample_range`.
fn clip_sample(f: &ConfigFields, d: Option<f64>) -> Result<Option<f64>> {
    f.bool("clip_sample", d.is_some())?
        .then(|| f.num("clip_sample_range", d.unwrap_or(1.0), Domain::POSITIVE))
        .transpose()
}

/// `DDIMScheduler`'s options (also the DDIM part of `BDIAScheduler`).
fn ddim(f: &ConfigFields) -> Result<DdimConfig> {
    let d = DdimConfig::default();
    Ok(DdimConfig {
        spacing: parsed(f, "timestep_spacing", d.spacing)?,
        clip_sample: clip_sample(f, d.clip_sample)?,
        set_alpha_to_one: f.bool("set_alpha_to_one", d.set_alpha_to_one)?,
        eta: f.num("eta", d.eta, Domain::UNIT)?,
    })
}

fn final_sigma_zero(f: &ConfigFields, d: bool) -> Result<bool> {
    choice(
        f,
        "final_sigmas_type",
        d,
        &[("zero", true), ("sigma_min", false)],
    )
}

fn sigma_grid(f: &ConfigFields) -> Result<SigmaGrid> {
    let d = SigmaGrid::default();
    Ok(SigmaGrid {
        spacing: parsed(f, "timestep_spacing", d.spacing)?,
        use_karras_sigmas: f.bool("use_karras_sigmas", d.use_karras_sigmas)?,
        final_sigma_zero: final_sigma_zero(f, d.final_sigma_zero)?,
    })
}

fn dpm_solver(f: &ConfigFields) -> Result<DpmSolverConfig> {
    let d = DpmSolverConfig::default();
    Ok(DpmSolverConfig {
        spacing: parsed(f, "timestep_spacing", d.spacing)?,
        use_karras_sigmas: f.bool("use_karras_sigmas", d.use_karras_sigmas)?,
        use_lu_lambdas: f.bool("use_lu_lambdas", d.use_lu_lambdas)?,
        final_sigma_zero: final_sigma_zero(f, d.final_sigma_zero)?,
        lambda_min_clipped: f.num(
            "lambda_min_clipped",
            d.lambda_min_clipped,
            Domain::FINITE.or_minus_inf(),
        )?,
        solver_order: f.int("solver_order", d.solver_order, 1..=3)?,
        algorithm: choice(
            f,
            "algorithm_type",
            d.algorithm,
            &[
                ("dpmsolver", DpmAlgorithm::DpmSolver),
                ("dpmsolver++", DpmAlgorithm::DpmSolverPlusPlus),
                ("sde-dpmsolver", DpmAlgorithm::SdeDpmSolver),
                ("sde-dpmsolver++", DpmAlgorithm::SdeDpmSolverPlusPlus),
            ],
        )?,
        solver_type: choice(
            f,
            "solver_type",
            d.solver_type,
            &[
                ("midpoint", SolverType::Midpoint),
                ("heun", SolverType::Heun),
            ],
        )?,
        lower_order_final: f.bool("lower_order_final", d.lower_order_final)?,
        euler_at_final: f.bool("euler_at_final", d.euler_at_final)?,
    })
}

/// `EVODiffScheduler`'s options; `t_start`/`t_end` are checked against the schedule when the
/// program is built.
fn evodiff(f: &ConfigFields) -> Result<EvoDiffConfig> {
    let d = EvoDiffConfig::default();
    let order = f.int("order", d.order, 1..=3)?;
    if order != 2 {
        return Err(f.err(
            "order",
            format!("{order} is not supported: the official multistep EVODiff runs order 2 only"),
        ));
    }
    let time = |k: &str| -> Result<Option<f64>> {
        f.get(k).map(|_| f.num(k, 0.0, Domain::FINITE)).transpose()
    };
    Ok(EvoDiffConfig {
        skip_type: choice(
            f,
            "skip_type",
            d.skip_type,
            &[
                ("logSNR", SkipType::LogSnr),
                ("time_uniform", SkipType::TimeUniform),
                ("time_quadratic", SkipType::TimeQuadratic),
                ("edm", SkipType::Edm),
            ],
        )?,
        order,
        lower_order_final: f.bool("lower_order_final", d.lower_order_final)?,
        t_start: time("t_start")?,
        t_end: time("t_end")?,
    })
}

fn unipc(f: &ConfigFields) -> Result<UniPcConfig> {
    let d = UniPcConfig::default();
    // UniPC's final σ is always zero.
    choice(f, "final_sigmas_type", (), &[("zero", ())])?;
    Ok(UniPcConfig {
        spacing: parsed(f, "timestep_spacing", d.spacing)?,
        use_karras_sigmas: f.bool("use_karras_sigmas", d.use_karras_sigmas)?,
        solver_order: f.int("solver_order", d.solver_order, 1..=3)?,
        predict_x0: f.bool("predict_x0", d.predict_x0)?,
        bh1: choice(f, "solver_type", d.bh1, &[("bh1", true), ("bh2", false)])?,
        lower_order_final: f.bool("lower_order_final", d.lower_order_final)?,
        disable_corrector: f.ints("disable_corrector", 0..=MAX_TRAIN_TIMESTEPS)?,
    })
}

/// `sigma_min` < `sigma_max`, both positive.
fn sigma_bounds(f: &ConfigFields, dmin: f64, dmax: f64) -> Result<(f64, f64)> {
    let lo = f.num("sigma_min", dmin, Domain::POSITIVE)?;
    let hi = f.num("sigma_max", dmax, Domain::POSITIVE)?;
    f.ordered("sigma_min", lo, "sigma_max", hi, true)?;
    Ok((lo, hi))
}

/// Score-SDE options with the paper's defaults for VE (`ve`) or VP.
fn score_sde(f: &ConfigFields, ve: bool) -> Result<ScoreSdeOptions> {
    let predictor = choice(
        f,
        "predictor",
        if ve {
            Predictor::ReverseDiffusion
        } else {
            Predictor::EulerMaruyama
        },
        &[
            ("euler_maruyama", Predictor::EulerMaruyama),
            ("reverse_diffusion", Predictor::ReverseDiffusion),
            ("ancestral", Predictor::Ancestral),
            ("probability_flow", Predictor::ProbabilityFlow),
        ],
    )?;
    let sde = if ve {
        let (sigma_min, sigma_max) = sigma_bounds(f, 0.01, 1348.0)?;
        Sde::Ve {
            sigma_min,
            sigma_max,
        }
    } else {
        let (beta_min, beta_max) = (
            f.num("beta_min", 0.1, Domain::POSITIVE)?,
            f.num("beta_max", 20.0, Domain::POSITIVE)?,
        );
        f.ordered("beta_min", beta_min, "beta_max", beta_max, false)?;
        let sub_vp = choice(f, "sde_type", false, &[("vp", false), ("sub_vp", true)])?;
        if !sub_vp {
            Sde::Vp { beta_min, beta_max }
        } else if matches!(
            predictor,
            Predictor::EulerMaruyama | Predictor::ProbabilityFlow
        ) {
            Sde::SubVp { beta_min, beta_max }
        } else {
            return Err(f.err(
                "predictor",
                "sub-VP supports euler_maruyama and probability_flow",
            ));
        }
    };
    Ok(ScoreSdeOptions {
        sde,
        predictor,
        corrector_steps: f.int(
            "correct_steps",
            if ve { 1 } else { 0 },
            0..=MAX_CORRECTOR_STEPS,
        )?,
        snr: f.num("snr", if ve { 0.15 } else { 0.16 }, Domain::NON_NEGATIVE)?,
        eps: f.num(
            "sampling_eps",
            if ve { 1e-5 } else { 1e-3 },
            Domain::OPEN_UNIT,
        )?,
    })
}
