//! Floor 3 (host only, f64): noise schedules and timestep spacings, as diffusers defines them
//! (`schedulers/scheduling_*.py`), and the mapping of `scheduler_config.json`.

pub mod config;
pub mod mrs;
pub mod options;
pub mod restoration;

use crate::error::{Error, Result};

/// What the network predicts (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// ε (noise).
    Epsilon,
    /// x0 (`sample`).
    Sample,
    /// v = α·ε − σ·x0 (`v_prediction`).
    VPrediction,
    /// Rectified-flow velocity v = ε − x0 (`flow_prediction`), for x = (1 − σ)·x0 + σ·ε.
    Flow,
    /// The score ∇ log p(x_in) of the model-input marginal, −ε/σ (Score-SDE models).
    Score,
}

impl std::str::FromStr for Prediction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "epsilon" => Ok(Prediction::Epsilon),
            "sample" => Ok(Prediction::Sample),
            "v_prediction" => Ok(Prediction::VPrediction),
            "flow_prediction" => Ok(Prediction::Flow),
            "score" => Ok(Prediction::Score),
            o => Err(format!(
                "unknown prediction_type `{o}` (epsilon, sample, v_prediction, flow_prediction)"
            )),
        }
    }
}

/// `beta_schedule` of the discrete VP (DDPM) process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BetaSchedule {
    /// β linear from `beta_start` to `beta_end`.
    Linear { start: f64, end: f64 },
    /// √β linear (Stable Diffusion's).
    ScaledLinear { start: f64, end: f64 },
    /// Nichol & Dhariwal's cosine ᾱ (`squaredcos_cap_v2`), β capped at 0.999.
    SquaredCosCapV2,
}

/// A discrete variance-preserving schedule: ᾱ_t for t = 0..T−1, computed like diffusers
/// (β in f32, cumulative product in f32) so that coefficients match to f32 rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteVp {
    pub alphas_cumprod: Vec<f64>,
}

impl DiscreteVp {
    pub fn new(schedule: BetaSchedule, num_train_timesteps: usize) -> Result<Self> {
        let n = num_train_timesteps;
        if n < 2 {
            return Err(Error::Argument {
                op: "schedule",
                arg: "num_train_timesteps",
                reason: format!("{n} is too few (at least 2)"),
            });
        }
        // β (f32), the linspace (f64) and ᾱ (f64) per timestep, checked before allocating.
        crate::size::host_alloc("num_train_timesteps", n, 20)?;
        if let BetaSchedule::Linear { start, end } | BetaSchedule::ScaledLinear { start, end } =
            schedule
        {
            for (arg, v) in [("beta_start", start), ("beta_end", end)] {
                crate::domain::Domain::OPEN_UNIT
                    .check(v)
                    .map_err(|reason| Error::Argument {
                        op: "schedule",
                        arg,
                        reason,
                    })?;
            }
            crate::domain::ordered("beta_start", start, "beta_end", end, false).map_err(
                |reason| Error::Argument {
                    op: "schedule",
                    arg: "beta_end",
                    reason,
                },
            )?;
        }
        let betas: Vec<f32> = match schedule {
            BetaSchedule::Linear { start, end } => {
                linspace(start, end, n).iter().map(|&b| b as f32).collect()
            }
            BetaSchedule::ScaledLinear { start, end } => linspace(start.sqrt(), end.sqrt(), n)
                .iter()
                .map(|&b| (b as f32) * (b as f32))
                .collect(),
            BetaSchedule::SquaredCosCapV2 => {
                let abar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - abar(t2) / abar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
        };
        let mut acc = 1f32;
        let alphas_cumprod = betas
            .iter()
            .map(|&b| {
                acc *= 1.0 - b;
                acc as f64
            })
            .collect();
        Ok(DiscreteVp { alphas_cumprod })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// ᾱ at an integer timestep.
    pub fn abar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t]
    }

    /// EDM noise level σ_E = √((1 − ᾱ)/ᾱ) at every training timestep.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// σ_E interpolated linearly in t (diffusers' `np.interp(timesteps, arange, sigmas)`).
    pub fn sigma_at(&self, t: f64) -> f64 {
        interp(t, &self.sigmas())
    }

    /// The fractional timestep whose σ_E is `sigma` (log-σ interpolation, diffusers'
    /// `_sigma_to_t`).
    pub fn t_from_sigma(&self, sigma: f64) -> f64 {
        let log_sigmas: Vec<f64> = self.sigmas().iter().map(|s| s.ln()).collect();
        let ls = sigma.max(1e-10).ln();
        let n = log_sigmas.len();
        // First index with log_sigmas[i] >= ls, clipped to [1, n-1]; low = i − 1.
        let mut hi = log_sigmas.iter().position(|&v| v >= ls).unwrap_or(n - 1);
        hi = hi.clamp(1, n - 1);
        let lo = hi - 1;
        let w = ((log_sigmas[lo] - ls) / (log_sigmas[lo] - log_sigmas[hi])).clamp(0.0, 1.0);
        (1.0 - w) * lo as f64 + w * hi as f64
    }
}

/// `np.linspace(a, b, n)`.
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

/// `np.interp(x, arange(len(ys)), ys)`.
pub fn interp(x: f64, ys: &[f64]) -> f64 {
    if x <= 0.0 {
        return ys[0];
    }
    let last = ys.len() - 1;
    if x >= last as f64 {
        return ys[last];
    }
    let i = x.floor() as usize;
    let f = x - i as f64;
    ys[i] * (1.0 - f) + ys[i + 1] * f
}

/// Karras et al. (EDM) σ schedule of `n` levels from σ_max to σ_min with exponent ρ.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize, rho: f64) -> Vec<f64> {
    let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    linspace(0.0, 1.0, n)
        .iter()
        .map(|r| (a + r * (b - a)).powf(rho))
        .collect()
}

/// `timestep_spacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl std::str::FromStr for Spacing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "linspace" => Ok(Spacing::Linspace),
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            o => Err(format!(
                "unknown timestep_spacing `{o}` (linspace, leading, trailing)"
            )),
        }
    }
}

/// Checks 1 ≤ steps ≤ T.
pub fn check_steps(steps: usize, train: usize) -> Result<()> {
    if steps == 0 || steps > train {
        return Err(Error::Argument {
            op: "set_timesteps",
            arg: "steps",
            reason: format!("{steps} inference steps for a model trained with {train} timesteps (need 1..={train})"),
        });
    }
    Ok(())
}

/// Time and marginal coefficients of a model evaluation: the model input is
/// x_in = α·x0 + σ·ε (VP, VE, flow and mean-reverting processes alike) and the network
/// receives `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelTime {
    pub t: f64,
    pub alpha: f64,
    pub sigma: f64,
}
