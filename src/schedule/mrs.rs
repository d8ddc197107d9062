//! The MR Sampler's options and time grids (Li et al., "MR Sampler: Fast Sampling of
//! Mean-Reverting Diffusion", arXiv 2502.07856), with the semantics of the official
//! `MRSampler.set_timesteps` (grrrute/mr-sampler, `universal-image-restoration/utils/sampler.py`):
//! the six time schedules, the λ_min clipping of the maximum timestep, and the two conventions
//! for α, σ, λ at fractional t (`Interpolation`).

use super::restoration::MeanReverting;
use crate::error::{Error, Result};

/// The solver's parameterisation (the official `parameterization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MrPrediction {
    Noise,
    Data,
}

/// ODE (probability flow) or SDE (reverse SDE, fresh noise each step) solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MrSolverType {
    Ode,
    Sde,
}

/// The official `time_schedule` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSchedule {
    /// linspace(0, max_t, steps + 1), descending.
    Linspace,
    /// λ uniform from max(λ_T, λ_min) to λ_0, mapped back to t.
    LinearLambda,
    /// max_t, max_t − T/(steps + 1), … while > 0 (may give fewer steps than asked).
    Trailing,
    /// k·⌊max_t/(steps + 1)⌋ + offset for k = steps … 0.
    Leading,
    /// σ/α Karras-spaced (ρ) over the whole process (λ_min unused, as in the official code).
    KarrasN,
    /// t Karras-spaced (ρ) from T to 1 (λ_min unused, as in the official code).
    KarrasT,
}

/// How α, σ, λ are taken at fractional t.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// The official code: each of the discrete arrays α_i, σ_i, λ_i (i = 0..=T) interpolated
    /// linearly on its own, so λ(t) ≠ ln(α(t)/σ(t)) between integers; λ → t and σ/α → t by
    /// linear interpolation of the discrete arrays too.
    Official,
    /// θ̄ interpolated linearly, α = e^{−θ̄·dt}, σ = λ_s√(1 − α²), λ = ln(α/σ) exactly; λ → t
    /// and σ/α → t by inverting these continuous functions.
    Consistent,
}

macro_rules! names {
    ($t:ty, $what:literal, $($v:path => $s:literal),+) => {
        impl $t {
            /// Every accepted name, for error messages.
            pub const NAMES: &'static str = concat!($($s, " "),+);
            pub fn name(self) -> &'static str {
                match self { $($v => $s),+ }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($s => Ok($v),)+
                    _ => Err(format!(
                        "unknown {} `{s}` (one of: {})",
                        $what,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

names!(MrPrediction, "solver form", MrPrediction::Data => "data", MrPrediction::Noise => "noise");
names!(MrSolverType, "solver type", MrSolverType::Ode => "ode", MrSolverType::Sde => "sde");
names!(TimeSchedule, "time schedule",
    TimeSchedule::Linspace => "linspace", TimeSchedule::LinearLambda => "linear-lambda",
    TimeSchedule::Trailing => "trailing", TimeSchedule::Leading => "leading",
    TimeSchedule::KarrasN => "karras-n", TimeSchedule::KarrasT => "karras-t");
names!(Interpolation, "interpolation",
    Interpolation::Official => "official", Interpolation::Consistent => "consistent");

/// Every option of the official `MRSampler` (besides `num_sample_steps` and the network's
/// `fit_target`, which is the process's `prediction_type`). `Default` is the released
/// configuration `config/daclip-sde/options/mrsampler.yml`: ODE, data form, order 2, linspace,
/// λ_min = −5, no thresholding, no final denoising; ρ = 7, offset 0 (the constructor's
/// defaults); interpolation as the official code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MrsOptions {
    pub solver_type: MrSolverType,
    /// ODE 1–3, SDE 1–2.
    pub order: usize,
    pub form: MrPrediction,
    pub time_schedule: TimeSchedule,
    /// Lower clip of λ (−∞ disables it); must lie below λ_0.
    pub lambda_min: f64,
    /// The final x̂0 from the last model output instead of a last solver step.
    pub denoise_last: bool,
    pub interpolation: Interpolation,
    /// Karras exponent (karras-n, karras-t).
    pub rho: f64,
    /// Added to the leading schedule's times.
    pub timestep_offset: i64,
    /// Dynamic thresholding of x̂0: (ratio, max) (data form only).
    pub thresholding: Option<(f64, f64)>,
}

impl Default for MrsOptions {
    fn default() -> Self {
        MrsOptions {
            solver_type: MrSolverType::Ode,
            order: 2,
            form: MrPrediction::Data,
            time_schedule: TimeSchedule::Linspace,
            lambda_min: -5.0,
            denoise_last: false,
            interpolation: Interpolation::Official,
            rho: 7.0,
            timestep_offset: 0,
            thresholding: None,
        }
    }
}

/// α, σ, λ at each time of a sampling grid (descending times, training-index units).
#[derive(Debug, Clone, PartialEq)]
pub struct MrsGrid {
    pub t: Vec<f64>,
    pub alpha: Vec<f64>,
    pub sigma: Vec<f64>,
    pub lambda: Vec<f64>,
}

/// `interpolate_fn` of the official code (from DPM-Solver): piecewise linear through
/// (xp, yp), xp increasing, extended linearly beyond both ends by the outermost segments.
pub fn interpolate(x: f64, xp: &[f64], yp: &[f64]) -> f64 {
    let k = xp.len();
    // The segment: the first index with xp[j] > x, clamped to 1..=k−1 (x itself sorts before
    // equal keypoints in the official torch.sort, so x = xp[j] takes the segment ending at j).
    let j = xp.iter().position(|&v| v >= x).unwrap_or(k).clamp(1, k - 1);
    let (x0, x1, y0, y1) = (xp[j - 1], xp[j], yp[j - 1], yp[j]);
    y0 + (x - x0) * (y1 - y0) / (x1 - x0)
}

fn arg(name: &'static str, reason: String) -> Error {
    Error::Argument {
        op: "MR Sampler",
        arg: name,
        reason,
    }
}

impl MeanReverting {
    /// The discrete arrays of the official sampler: α_i = e^{−θ̄_i·dt}, σ_i = σ̄_i,
    /// λ_i = ln α_i − ln σ_i for i = 0..=T, computed in f32 as the official code computes them
    /// (torch f32 tensors). This matters at t = 0: 1 − e^{−2θ̄_0·dt} cancels in f32, which moves
    /// the official σ_0 and λ_0 (by ~6e-5 for the released process) and with λ_0 every
    /// linear-λ time.
    pub fn discrete_arrays(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let dt = self.dt as f32;
        let ms2 = (self.max_sigma * self.max_sigma) as f32;
        let mut out = (vec![], vec![], vec![]);
        for &tb in &self.theta_bar {
            let cs = tb as f32;
            let alpha = (-cs * dt).exp();
            let sigma = (ms2 * (1.0 - (-2.0 * cs * dt).exp())).sqrt();
            out.0.push(alpha as f64);
            out.1.push(sigma as f64);
            out.2.push((alpha.ln() - sigma.ln()) as f64);
        }
        out
    }

    /// The official `max_timestep`: T minus the number of discrete λ_i below λ_min (λ
    /// decreases in t, so the largest i with λ_i ≥ λ_min). λ_min must lie below λ_0.
    pub fn max_timestep(&self, lambda_min: f64) -> Result<usize> {
        let (_, _, lambda) = self.discrete_arrays();
        if lambda_min.is_nan() || lambda_min >= lambda[0] {
            return Err(arg(
                "lambda_min",
                format!(
                    "{lambda_min} must lie below λ_0 = {:.4} (the process's largest λ)",
                    lambda[0]
                ),
            ));
        }
        Ok(lambda.len() - 1 - lambda.iter().filter(|&&l| l < lambda_min).count())
    }

    /// The sampling times of `o.time_schedule` for `steps` requested steps (descending; the
    /// trailing schedule may return fewer), as the official `set_timesteps` computes them.
    pub fn mrs_times(&self, o: &MrsOptions, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(arg("steps", "must be at least 1".into()));
        }
        if !(o.rho.is_finite() && o.rho > 0.0) {
            return Err(arg("rho", format!("{} must be positive", o.rho)));
        }
        let n_train = self.theta.len() - 1;
        let t_arr: Vec<f64> = (0..=n_train).map(|i| i as f64).collect();
        let (alpha, sigma, lambda) = self.discrete_arrays();
        let max_t = self.max_timestep(o.lambda_min)?;
        let n = steps;
        let official = o.interpolation == Interpolation::Official;
        let times: Vec<f64> = match o.time_schedule {
            TimeSchedule::Linspace => super::linspace(max_t as f64, 0.0, n + 1),
            TimeSchedule::Leading => {
                let interval = max_t / (n + 1);
                if interval == 0 {
                    return Err(arg(
                        "steps",
                        format!("the leading schedule needs steps + 1 ≤ the maximum timestep {max_t} (λ_min clipping), not {n} steps"),
                    ));
                }
                (0..=n)
                    .rev()
                    .map(|k| (k * interval) as f64 + o.timestep_offset as f64)
                    .collect()
            }
            TimeSchedule::Trailing => {
                let interval = n_train as f64 / (n + 1) as f64;
                // torch.arange(max_t, 0, −interval): ⌈(0 − max_t)/(−interval)⌉ values (double).
                let count = ((0.0 - max_t as f64) / -interval).ceil() as usize;
                (0..count)
                    .map(|k| max_t as f64 - k as f64 * interval)
                    .collect()
            }
            TimeSchedule::KarrasN if official => {
                let se: Vec<f64> = sigma.iter().zip(&alpha).map(|(s, a)| s / a).collect();
                let sig = super::karras_sigmas(se[0], se[n_train], n + 1, o.rho);
                sig.iter().map(|&s| interpolate(s, &se, &t_arr)).collect()
            }
            TimeSchedule::KarrasN => {
                // σ/α of the continuous process, its ends pinned to T and 0.
                let se = |t: f64| self.sigma_bar(t) / self.m(t);
                let sig = super::karras_sigmas(se(0.0), se(n_train as f64), n + 1, o.rho);
                (0..=n)
                    .map(|i| match i {
                        0 => n_train as f64,
                        i if i == n => 0.0,
                        i => self.t_from_lambda(-sig[i].ln()),
                    })
                    .collect()
            }
            TimeSchedule::KarrasT => {
                let (a, b) = ((n_train as f64).powf(1.0 / o.rho), 1.0);
                super::linspace(0.0, 1.0, n + 1)
                    .iter()
                    .map(|i| (a + i * (b - a)).powf(o.rho))
                    .collect()
            }
            TimeSchedule::LinearLambda => {
                let l_min = lambda[n_train].max(o.lambda_min);
                let ls = super::linspace(l_min, lambda[0], n + 1);
                if official {
                    let lf: Vec<f64> = lambda.iter().rev().copied().collect();
                    let tf: Vec<f64> = t_arr.iter().rev().copied().collect();
                    ls.iter().map(|&l| interpolate(l, &lf, &tf)).collect()
                } else {
                    self.linear_lambda_times(n, o.lambda_min)
                }
            }
        };
        if times.len() < 2 {
            return Err(arg(
                "steps",
                format!(
                    "the {} schedule gives no step for {n} steps below the maximum timestep {max_t}",
                    o.time_schedule
                ),
            ));
        }
        Ok(times)
    }

    /// α, σ, λ at `times` under `interp`.
    pub fn mrs_grid(&self, times: &[f64], interp: Interpolation) -> MrsGrid {
        let (alpha, sigma, lambda) = self.discrete_arrays();
        let t_arr: Vec<f64> = (0..alpha.len()).map(|i| i as f64).collect();
        let at = |ys: &[f64]| -> Vec<f64> {
            times.iter().map(|&t| interpolate(t, &t_arr, ys)).collect()
        };
        match interp {
            Interpolation::Official => MrsGrid {
                t: times.to_vec(),
                alpha: at(&alpha),
                sigma: at(&sigma),
                lambda: at(&lambda),
            },
            Interpolation::Consistent => MrsGrid {
                t: times.to_vec(),
                alpha: times.iter().map(|&t| self.m(t)).collect(),
                sigma: times.iter().map(|&t| self.sigma_bar(t)).collect(),
                lambda: times.iter().map(|&t| self.lambda(t)).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> MeanReverting {
        MeanReverting::cosine(100, 0.005, 50.0, false)
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for s in [
            TimeSchedule::Linspace,
            TimeSchedule::LinearLambda,
            TimeSchedule::Trailing,
            TimeSchedule::Leading,
            TimeSchedule::KarrasN,
            TimeSchedule::KarrasT,
        ] {
            assert_eq!(s.name().parse::<TimeSchedule>().unwrap(), s);
        }
        let e = "karras".parse::<TimeSchedule>().unwrap_err();
        assert!(e.contains("karras-n") && e.contains("linspace"), "{e}");
        assert!("x".parse::<MrPrediction>().unwrap_err().contains("data"));
    }

    #[test]
    fn interpolate_extends_the_outer_segments() {
        let (xp, yp) = ([0.0, 1.0, 3.0], [0.0, 2.0, 3.0]);
        assert_eq!(interpolate(0.5, &xp, &yp), 1.0);
        assert_eq!(interpolate(2.0, &xp, &yp), 2.5);
        assert_eq!(interpolate(1.0, &xp, &yp), 2.0);
        assert_eq!(interpolate(-1.0, &xp, &yp), -2.0);
        assert_eq!(interpolate(5.0, &xp, &yp), 4.0);
    }

    #[test]
    fn official_lambda_is_not_log_snr_between_integers_but_consistent_is() {
        let s = sched();
        let o = s.mrs_grid(&[50.5], Interpolation::Official);
        let c = s.mrs_grid(&[50.5], Interpolation::Consistent);
        let gap = (o.lambda[0] - (o.alpha[0] / o.sigma[0]).ln()).abs();
        assert!(gap > 1e-6, "{gap}");
        assert!((c.lambda[0] - (c.alpha[0] / c.sigma[0]).ln()).abs() < 1e-12);
        // At integers both agree up to the official arrays' f32 rounding.
        let (a, b) = (
            s.mrs_grid(&[40.0], Interpolation::Official),
            s.mrs_grid(&[40.0], Interpolation::Consistent),
        );
        assert!((a.lambda[0] - b.lambda[0]).abs() < 1e-6);
        // At t = 0 the f32 cancellation in 1 − e^{−2θ̄_0·dt} moves the official λ_0 (as torch
        // computes it: 6.1114955 against 6.1114354 in f64).
        let (o0, c0) = (s.discrete_arrays().2[0], s.lambda(0.0));
        assert!(
            (o0 - 6.1114955).abs() < 2e-6 && (c0 - 6.1114354).abs() < 1e-6,
            "{o0} {c0}"
        );
    }

    #[test]
    fn max_timestep_clips_by_lambda_min_and_rejects_lambda_min_above_lambda_0() {
        let s = sched();
        // λ_T ≈ −3.67: λ_min = −5 clips nothing.
        assert_eq!(s.max_timestep(-5.0).unwrap(), 100);
        assert_eq!(s.max_timestep(f64::NEG_INFINITY).unwrap(), 100);
        let m = s.max_timestep(-2.0).unwrap();
        assert!(s.lambda(m as f64) >= -2.0 && s.lambda(m as f64 + 1.0) < -2.0);
        let e = s.max_timestep(7.0).unwrap_err().to_string();
        assert!(e.contains("lambda_min") && e.contains("λ_0"), "{e}");
        assert!(s.max_timestep(f64::NAN).is_err());
    }

    #[test]
    fn schedules_follow_the_official_set_timesteps() {
        let s = sched();
        let mk = |ts: TimeSchedule| MrsOptions {
            time_schedule: ts,
            ..Default::default()
        };
        let lin = s.mrs_times(&mk(TimeSchedule::Linspace), 4).unwrap();
        assert_eq!(lin, vec![100.0, 75.0, 50.0, 25.0, 0.0]);
        // ⌊100 / 5⌋ = 20.
        let lead = s.mrs_times(&mk(TimeSchedule::Leading), 4).unwrap();
        assert_eq!(lead, vec![80.0, 60.0, 40.0, 20.0, 0.0]);
        // 100/5 = 20: 100, 80, 60, 40, 20 (stops before 0).
        let trail = s.mrs_times(&mk(TimeSchedule::Trailing), 4).unwrap();
        assert_eq!(trail, vec![100.0, 80.0, 60.0, 40.0, 20.0]);
        let kt = s.mrs_times(&mk(TimeSchedule::KarrasT), 4).unwrap();
        assert!((kt[0] - 100.0).abs() < 1e-9 && (kt[4] - 1.0).abs() < 1e-12);
        let kn = s.mrs_times(&mk(TimeSchedule::KarrasN), 4).unwrap();
        assert!((kn[0] - 100.0).abs() < 1e-9 && kn[4].abs() < 1e-9, "{kn:?}");
        let ll = s.mrs_times(&mk(TimeSchedule::LinearLambda), 4).unwrap();
        assert!((ll[0] - 100.0).abs() < 1e-9 && ll[4].abs() < 1e-9, "{ll:?}");
        // Official linear-λ: λ of the discrete array interpolated at those times is uniform.
        let g = s.mrs_grid(&ll, Interpolation::Official);
        let h: Vec<f64> = g.lambda.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(h.iter().all(|d| (d - h[0]).abs() < 1e-9), "{h:?}");
        // λ_min clips linspace's first time and linear-λ's lower end.
        let clip = MrsOptions {
            lambda_min: -2.0,
            ..mk(TimeSchedule::Linspace)
        };
        let m = s.max_timestep(-2.0).unwrap() as f64;
        assert_eq!(s.mrs_times(&clip, 4).unwrap()[0], m);
        // Consistent karras-n (ρ = 7) is the continuous-process grid of `karras_times`.
        let kc = MrsOptions {
            interpolation: Interpolation::Consistent,
            ..mk(TimeSchedule::KarrasN)
        };
        assert_eq!(s.mrs_times(&kc, 6).unwrap(), s.karras_times(6));
        let e = s
            .mrs_times(&mk(TimeSchedule::Leading), 200)
            .unwrap_err()
            .to_string();
        assert!(e.contains("steps"), "{e}");
    }
}
