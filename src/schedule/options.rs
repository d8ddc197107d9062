//! Sampler options that scheduler configs carry (data only; the solvers use them).

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
    /// The network's time input is t·time_scale for VP models; VE models receive σ.
    pub time_scale: f64,
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
