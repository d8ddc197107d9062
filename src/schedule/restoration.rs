//! Schedules of the restoration processes (host, f64), groundwork for the conditioned samplers:
//! - the mean-reverting SDE (IR-SDE: Luo et al., "Image Restoration with Mean-Reverting
//!   Stochastic Differential Equations", ICML 2023; MR Sampler: Li et al., arXiv 2502.07856):
//!   cosine θ schedule, θ̄, m_t = e^{−θ̄_t·dt}, σ̄_t = λ_s·√(1 − m_t²), λ_t = ln(m_t/σ̄_t);
//! - ResShift's η schedule (Yue, Wang, Loy, "ResShift", NeurIPS 2023);
//! - Resfusion's truncated "LinearPro" schedule (Shi et al., "Resfusion", NeurIPS 2024).

use crate::domain::Domain;

/// The largest `num_train_timesteps` of a restoration config (checked before allocating).
const MAX_T: f64 = super::config::MAX_TRAIN_TIMESTEPS as f64;

/// The IR-SDE θ schedule and its marginal coefficients at integer times 0..=T.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanReverting {
    /// θ_i, i = 0..=T.
    pub theta: Vec<f64>,
    /// θ̄_i (cumulative).
    pub theta_bar: Vec<f64>,
    /// Time step making m_T = ε_end.
    pub dt: f64,
    /// Stationary std λ_s.
    pub max_sigma: f64,
}

impl MeanReverting {
    /// The cosine θ schedule of `t_max` steps (s = 0.008), mean decay ε_end at T, stationary
    /// std `max_sigma` (divided by 255 when ≥ 1). `original` subtracts θ_0 (IR-SDE's θ̄_0 = 0);
    /// otherwise the MR-Sampler/DA-CLIP copy.
    pub fn cosine(t_max: usize, eps_end: f64, max_sigma: f64, original: bool) -> Self {
        let k = t_max + 2;
        let s = 0.008;
        let f = |i: usize| {
            (((i as f64 / k as f64) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let abar: Vec<f64> = (0..=k).map(|i| f(i) / f(0)).collect();
        let theta: Vec<f64> = (0..=t_max).map(|i| 1.0 - abar[i + 1]).collect();
        let mut acc = 0.0;
        let mut theta_bar: Vec<f64> = theta
            .iter()
            .map(|t| {
                acc += t;
                acc
            })
            .collect();
        if original {
            let t0 = theta[0];
            theta_bar.iter_mut().for_each(|v| *v -= t0);
        }
        let dt = -eps_end.ln() / theta_bar[t_max];
        MeanReverting {
            theta,
            theta_bar,
            dt,
            max_sigma: if max_sigma >= 1.0 {
                max_sigma / 255.0
            } else {
                max_sigma
            },
        }
    }

    /// θ̄ at continuous time t ∈ [0, T] (piecewise linear).
    pub fn theta_bar_at(&self, t: f64) -> f64 {
        crate::schedule::interp(t, &self.theta_bar)
    }
    /// Mean coefficient m_t.
    pub fn m(&self, t: f64) -> f64 {
        (-self.theta_bar_at(t) * self.dt).exp()
    }
    /// Std σ̄_t.
    pub fn sigma_bar(&self, t: f64) -> f64 {
        let m = self.m(t);
        self.max_sigma * (1.0 - m * m).max(0.0).sqrt()
    }
    /// λ_t = ln(m_t / σ̄_t).
    pub fn lambda(&self, t: f64) -> f64 {
        (self.m(t) / self.sigma_bar(t)).ln()
    }

    /// The time whose λ_t is `l` (λ decreases in t; bisection to 1e-12).
    pub fn t_from_lambda(&self, l: f64) -> f64 {
        let (mut lo, mut hi) = (0.0, (self.theta.len() - 1) as f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if self.lambda(mid) > l {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo < 1e-12 {
                break;
            }
        }
        0.5 * (lo + hi)
    }

    /// MRS's Karras schedule: `n + 1` times with σ_E = σ̄/m Karras-spaced (ρ = 7) from the
    /// process's σ_E(T) to σ_E(0) (λ = −ln σ_E).
    pub fn karras_times(&self, n: usize) -> Vec<f64> {
        let t_max = (self.theta.len() - 1) as f64;
        let se = |t: f64| self.sigma_bar(t) / self.m(t);
        let sig = crate::schedule::karras_sigmas(se(0.0), se(t_max), n + 1, 7.0);
        sig.iter()
            .enumerate()
            .map(|(i, s)| {
                if i == 0 {
                    t_max
                } else if i == n {
                    0.0
                } else {
                    self.t_from_lambda(-s.ln())
                }
            })
            .collect()
    }

    /// MRS's "linear-λ" time schedule: `n + 1` times with λ uniform from max(λ_T, λ_min) to λ_0.
    pub fn linear_lambda_times(&self, n: usize, lambda_min: f64) -> Vec<f64> {
        let t_max = (self.theta.len() - 1) as f64;
        let (l0, l1) = (self.lambda(t_max).max(lambda_min), self.lambda(0.0));
        crate::schedule::linspace(l0, l1, n + 1)
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 && l0 == self.lambda(t_max) {
                    t_max
                } else if i == n {
                    0.0
                } else {
                    self.t_from_lambda(l)
                }
            })
            .collect()
    }
}

/// ResShift's √η_t for t = 1..=T: √η_1 = min(min_noise/κ, min_noise), √η_T = 0.99,
/// √η_t = √η_1 · b^{((t−1)/(T−1))^p·(T−1)}, b = (0.99/√η_1)^{1/(T−1)}.
pub fn resshift_sqrt_eta(t_max: usize, kappa: f64, min_noise: f64, power: f64) -> Vec<f64> {
    let e1 = (min_noise / kappa).min(min_noise);
    if t_max == 1 {
        return vec![e1];
    }
    let b = (0.99f64 / e1).powf(1.0 / (t_max - 1) as f64);
    (1..=t_max)
        .map(|t| {
            let r = ((t - 1) as f64 / (t_max - 1) as f64).powf(power) * (t_max - 1) as f64;
            e1 * b.powf(r)
        })
        .collect()
}

/// Resfusion's √ᾱ under "LinearPro" (β linear in (1000/T)·[1e-4, 0.02]) truncated at the first
/// √ᾱ ≤ ½ (set to exactly ½ when it undershoots by more than 0.01).
pub fn resfusion_sqrt_abar(t_max: usize) -> Vec<f64> {
    let scale = 1000.0 / t_max as f64;
    let betas = crate::schedule::linspace(scale * 1e-4, scale * 0.02, t_max);
    let mut acc = 1.0;
    let mut out = Vec::new();
    for b in betas {
        acc *= 1.0 - b;
        let s = acc.sqrt();
        if s <= 0.5 {
            out.push(if 0.5 - s > 0.01 { 0.5 } else { s });
            break;
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, tol: f64, what: &str) {
        assert!((got - want).abs() <= tol, "{what}: {got} vs {want}");
    }

    #[test]
    fn huge_num_train_timesteps_is_an_error_before_allocating() {
        for t in [1e12, 1e30] {
            let v = serde_json::json!({"_class_name": "MeanRevertingScheduler", "num_train_timesteps": t});
            let e = MrConfig::from_json(&v, "mr.json").unwrap_err().to_string();
            assert!(
                e.contains("num_train_timesteps") && e.contains("mr.json"),
                "{e}"
            );
            let path =
                std::env::temp_dir().join(format!("diffuse-residual-{}.json", std::process::id()));
            std::fs::write(
                &path,
                format!(r#"{{"_class_name": "ResfusionScheduler", "num_train_timesteps": {t}}}"#),
            )
            .unwrap();
            let e = ResidualConfig::from_file(&path).unwrap_err().to_string();
            std::fs::remove_file(&path).unwrap();
            assert!(
                e.contains("num_train_timesteps") && e.contains("not an integer in 1..=1000000"),
                "{e}"
            );
        }
    }

    #[test]
    fn mr_sampler_fields_default_to_the_released_config_and_parse() {
        use crate::schedule::mrs::{Interpolation, MrPrediction, MrSolverType, TimeSchedule};
        let v = serde_json::json!({"_class_name": "MeanRevertingScheduler"});
        let c = MrConfig::from_json(&v, "mr.json").unwrap().sampler;
        // config/daclip-sde/options/mrsampler.yml: ode, data, order 2, linspace, λ_min −5.
        assert_eq!(
            (
                c.solver_type,
                c.form,
                c.order,
                c.time_schedule,
                c.lambda_min,
                c.denoise_last
            ),
            (
                MrSolverType::Ode,
                MrPrediction::Data,
                2,
                TimeSchedule::Linspace,
                -5.0,
                false
            )
        );
        let v = serde_json::json!({"_class_name": "MeanRevertingScheduler", "solver_type": "sde",
            "solver_order": 1, "solver_form": "noise", "time_schedule": "karras-t",
            "lambda_min": "-Infinity", "denoise_last": true, "interpolation": "consistent",
            "rho": 5, "timestep_offset": 2});
        let c = MrConfig::from_json(&v, "mr.json").unwrap().sampler;
        assert_eq!(
            (
                c.solver_type,
                c.order,
                c.form,
                c.time_schedule,
                c.interpolation
            ),
            (
                MrSolverType::Sde,
                1,
                MrPrediction::Noise,
                TimeSchedule::KarrasT,
                Interpolation::Consistent
            )
        );
        assert_eq!(
            (c.lambda_min, c.denoise_last, c.rho, c.timestep_offset),
            (f64::NEG_INFINITY, true, 5.0, 2)
        );
        for (k, bad) in [
            ("solver_order", "1.5"),
            ("rho", "-1"),
            ("timestep_offset", "1000"),
            ("solver_type", "\"euler\""),
        ] {
            let v: serde_json::Value = serde_json::from_str(&format!(
                r#"{{"_class_name": "MeanRevertingScheduler", "{k}": {bad}}}"#
            ))
            .unwrap();
            let e = MrConfig::from_json(&v, "mr.json").unwrap_err().to_string();
            assert!(e.contains(k) && e.contains("mr.json"), "{e}");
        }
    }

    #[test]
    fn mean_reverting_reference_values() {
        // samplers.md §1, MRS variant: T = 100, ε_end = 0.005, max_sigma = 50 (→ 50/255).
        let s = MeanReverting::cosine(100, 0.005, 50.0, false);
        close(s.theta[0], 6.142e-4, 1e-7, "θ_0");
        close(s.theta[100], 0.99977, 1e-5, "θ_T");
        close(s.dt, 0.1040926, 1e-6, "dt");
        close(s.m(0.0), 0.999936, 1e-6, "m_0");
        close(s.m(100.0), 0.005, 1e-9, "m_T");
        close(s.sigma_bar(0.0), 0.0022172, 1e-6, "σ̄_0");
        close(s.sigma_bar(100.0), 0.196076, 1e-6, "σ̄_T");
        close(s.lambda(0.0), 6.11144, 1e-4, "λ(0)");
        close(s.lambda(100.0), -3.66906, 1e-5, "λ(T)");
        // The original IR-SDE variant starts exactly at the data: θ̄_0 = 0, σ̄_0 = 0.
        let o = MeanReverting::cosine(100, 0.005, 50.0, true);
        assert_eq!(o.theta_bar[0], 0.0);
        assert_eq!(o.sigma_bar(0.0), 0.0);
        close(o.m(100.0), 0.005, 1e-9, "m_T (original)");
    }

    #[test]
    fn resshift_reference_values() {
        let e = resshift_sqrt_eta(4, 2.0, 0.2, 0.3);
        for (g, w) in e.iter().zip([0.1, 0.52010, 0.76138, 0.99]) {
            close(*g, w, 1e-5, "ResShift √η (T=4)");
        }
        close(
            resshift_sqrt_eta(15, 2.0, 0.04, 0.3)[0],
            0.02,
            1e-12,
            "ResShift √η_1 (T=15)",
        );
    }

    #[test]
    fn resfusion_reference_values() {
        // Resfusion's own scheduler (nkicsl/Resfusion variance_scheduler/linear_pro.py,
        // LinearProScheduler(12): torch.linspace in f32, cumprod, sqrt, truncation at the first
        // √ᾱ ≤ ½) gives [0.9958246, 0.9131821, 0.7586293, 0.5571635] then ½ (run here with
        // torch 2.15); checked to 1e-5. The digest table (samplers.md §7: 0.91321, 0.75864,
        // 0.55720) is off in the last digits — the repo's code is the reference.
        let a = resfusion_sqrt_abar(12);
        let want = [0.9958246, 0.9131821, 0.7586293, 0.5571635, 0.5];
        assert_eq!(a.len(), want.len(), "{a:?}");
        for (g, w) in a.iter().zip(want) {
            close(*g, w, 1e-5, "Resfusion √ᾱ (T=12)");
        }
        assert_eq!(a[4], 0.5);
    }
}

/// A mean-reverting process's `scheduler_config.json` (`_class_name` "MeanRevertingScheduler",
/// our own class: diffusers has none). Fields: `num_train_timesteps` (T, default 100),
/// `max_sigma` (λ_s, /255 when ≥ 1; default 50), `eps` (ε_end, default 0.005),
/// `theta_schedule` ("cosine"), `original_theta_bar` (IR-SDE's θ̄_0 = 0; default false),
/// `prediction_type` ("epsilon", "sample" or "v_prediction"), and the MR Sampler's options
/// ([`MrsOptions`], defaults: the released configuration): `solver_type` ("ode" | "sde"),
/// `solver_order` (2), `solver_form` ("data" | "noise"), `time_schedule` ("linspace",
/// "linear-lambda", "trailing", "leading", "karras-n", "karras-t"), `lambda_min` (−5; may be
/// "-Infinity"), `denoise_last` (false), `interpolation` ("official" | "consistent"), `rho` (7),
/// `timestep_offset` (0), and diffusers' `thresholding`, `dynamic_thresholding_ratio`,
/// `sample_max_value` for the data form's x̂0.
#[derive(Debug, Clone, PartialEq)]
pub struct MrConfig {
    pub schedule: MeanReverting,
    pub prediction: super::Prediction,
    /// The MR Sampler's options (thresholding: (`dynamic_thresholding_ratio`,
    /// `sample_max_value`) when `thresholding` is true, diffusers' field names).
    pub sampler: super::mrs::MrsOptions,
}

impl MrConfig {
    /// Reads a `scheduler_config.json`.
    pub fn from_file(path: &std::path::Path) -> crate::error::Result<Self> {
        Self::from_json(&crate::load::read_json(path)?, &path.display().to_string())
    }

    pub fn from_json(v: &serde_json::Value, file: &str) -> crate::error::Result<Self> {
        let err = |field: &str, reason: String| crate::error::Error::Config {
            file: file.into(),
            field: field.into(),
            reason,
        };
        let obj = v
            .as_object()
            .ok_or_else(|| err("(root)", "expected a JSON object".into()))?;
        // The class first: a generation model's config is named by its `_class_name`, not by
        // the first field a mean-reverting process lacks.
        let class = obj
            .get("_class_name")
            .and_then(|c| c.as_str())
            .unwrap_or("");
        if class != "MeanRevertingScheduler" {
            return Err(err(
                "_class_name",
                format!("`{class}` is not a mean-reverting process (MeanRevertingScheduler)"),
            ));
        }
        const KNOWN: &[&str] = &[
            "_class_name",
            "_diffusers_version",
            "num_train_timesteps",
            "max_sigma",
            "eps",
            "theta_schedule",
            "original_theta_bar",
            "prediction_type",
            "thresholding",
            "dynamic_thresholding_ratio",
            "sample_max_value",
            "solver_type",
            "solver_order",
            "solver_form",
            "time_schedule",
            "lambda_min",
            "denoise_last",
            "interpolation",
            "rho",
            "timestep_offset",
        ];
        for k in obj.keys() {
            if !KNOWN.contains(&k.as_str()) {
                return Err(err(
                    k,
                    "unknown field of MeanRevertingScheduler; refusing to guess".into(),
                ));
            }
        }
        let num = |k: &str, d: f64, dom: Domain| -> crate::error::Result<f64> {
            let v = match obj.get(k) {
                None => d,
                Some(v) => crate::load::json_f64(v)
                    .ok_or_else(|| err(k, format!("expected a number, got {v}")))?,
            };
            dom.check(v).map_err(|r| err(k, r))
        };
        let t = num("num_train_timesteps", 100.0, Domain::FINITE)?;
        if !(2.0..=MAX_T).contains(&t) || t.fract() != 0.0 {
            return Err(err(
                "num_train_timesteps",
                format!("{t} is not an integer in 2..={MAX_T}"),
            ));
        }
        let eps = num("eps", 0.005, Domain::OPEN_UNIT)?;
        let max_sigma = num("max_sigma", 50.0, Domain::POSITIVE)?;
        if let Some(s) = obj.get("theta_schedule") {
            if s != "cosine" {
                return Err(err(
                    "theta_schedule",
                    format!("{s} is not supported (cosine)"),
                ));
            }
        }
        let original = match obj.get("original_theta_bar") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                err(
                    "original_theta_bar",
                    format!("expected true/false, got {v}"),
                )
            })?,
        };
        let prediction = match obj
            .get("prediction_type")
            .and_then(|p| p.as_str())
            .unwrap_or("epsilon")
        {
            "epsilon" => super::Prediction::Epsilon,
            "sample" => super::Prediction::Sample,
            "v_prediction" => super::Prediction::VPrediction,
            o => {
                return Err(err(
                    "prediction_type",
                    format!("`{o}` is not supported for MR models (epsilon, sample, v_prediction)"),
                ))
            }
        };
        let thresholding = match obj.get("thresholding") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| err("thresholding", format!("expected true/false, got {v}")))?,
        };
        let ratio = num("dynamic_thresholding_ratio", 0.995, Domain::UNIT)?;
        let sample_max = num("sample_max_value", 1.5, Domain::closed(1.0, f64::MAX))?;
        let schedule = MeanReverting::cosine(t as usize, eps, max_sigma, original);
        let sampler = mrs_options(obj, &schedule, file)?;
        Ok(MrConfig {
            schedule,
            prediction,
            sampler: super::mrs::MrsOptions {
                thresholding: thresholding.then_some((ratio, sample_max)),
                ..sampler
            },
        })
    }
}

/// The MR Sampler's fields of a `MeanRevertingScheduler` config (defaults: [`MrsOptions`]).
fn mrs_options(
    obj: &serde_json::Map<String, serde_json::Value>,
    schedule: &MeanReverting,
    file: &str,
) -> crate::error::Result<super::mrs::MrsOptions> {
    use super::mrs::MrsOptions;
    let err = |field: &str, reason: String| crate::error::Error::Config {
        file: file.into(),
        field: field.into(),
        reason,
    };
    fn named<T: std::str::FromStr<Err = String>>(
        obj: &serde_json::Map<String, serde_json::Value>,
        k: &str,
        d: T,
    ) -> std::result::Result<T, String> {
        match obj.get(k) {
            None => Ok(d),
            Some(serde_json::Value::String(s)) => s.parse(),
            Some(v) => Err(format!("expected a string, got {v}")),
        }
    }
    let d = MrsOptions::default();
    let solver_type =
        named(obj, "solver_type", d.solver_type).map_err(|e| err("solver_type", e))?;
    let form = named(obj, "solver_form", d.form).map_err(|e| err("solver_form", e))?;
    let time_schedule =
        named(obj, "time_schedule", d.time_schedule).map_err(|e| err("time_schedule", e))?;
    let interpolation =
        named(obj, "interpolation", d.interpolation).map_err(|e| err("interpolation", e))?;
    let whole = |k: &str, d: i64, lo: i64, hi: i64| -> crate::error::Result<i64> {
        match obj.get(k) {
            None => Ok(d),
            Some(v) => match crate::load::json_f64(v) {
                Some(x) if x.fract() == 0.0 && (lo as f64..=hi as f64).contains(&x) => Ok(x as i64),
                _ => Err(err(k, format!("{v} is not an integer in {lo}..={hi}"))),
            },
        }
    };
    let max_order = match solver_type {
        super::mrs::MrSolverType::Ode => 3,
        super::mrs::MrSolverType::Sde => 2,
    };
    let order = whole("solver_order", 2, 1, max_order).map_err(|e| match e {
        crate::error::Error::Config {
            file,
            field,
            reason,
        } => crate::error::Error::Config {
            file,
            field,
            reason: format!("{reason} ({solver_type} solver orders are 1–{max_order})"),
        },
        e => e,
    })? as usize;
    let t_max = (schedule.theta.len() - 1) as i64;
    let timestep_offset = whole("timestep_offset", 0, -t_max, t_max)?;
    let num = |k: &str, d: f64, dom: Domain| -> crate::error::Result<f64> {
        let v = obj.get(k).map_or(Ok(d), |v| {
            crate::load::json_f64(v).ok_or_else(|| err(k, format!("expected a number, got {v}")))
        })?;
        dom.check(v).map_err(|r| err(k, r))
    };
    let lambda_min = num("lambda_min", d.lambda_min, Domain::FINITE.or_minus_inf())?;
    schedule.max_timestep(lambda_min).map_err(|_| {
        err(
            "lambda_min",
            format!(
                "{lambda_min} must lie below λ_0 = {:.4} (the process's largest λ)",
                schedule.lambda(0.0)
            ),
        )
    })?;
    let rho = num("rho", d.rho, Domain::POSITIVE)?;
    let denoise_last = match obj.get("denoise_last") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| err("denoise_last", format!("expected true/false, got {v}")))?,
    };
    Ok(MrsOptions {
        solver_type,
        order,
        form,
        time_schedule,
        lambda_min,
        denoise_last,
        interpolation,
        rho,
        timestep_offset,
        thresholding: None,
    })
}

/// A residual-shift process's `scheduler_config.json` (our classes): `ResShiftScheduler`
/// (`num_train_timesteps` 15, `kappa` 2, `min_noise` 0.04, `power` 0.3, `prediction_type`
/// xstart | epsilon | residual) or `ResfusionScheduler` (`num_train_timesteps` 12,
/// `prediction_type` resnoise).
#[derive(Debug, Clone, PartialEq)]
pub enum ResidualConfig {
    ResShift {
        sqrt_eta: Vec<f64>,
        kappa: f64,
        /// "xstart", "epsilon" or "residual".
        prediction: String,
    },
    Resfusion {
        betas: Vec<f64>,
        sqrt_abar: Vec<f64>,
    },
    /// `RDDMScheduler` (`num_train_timesteps` 1000, `sum_scale` 0.01, two-head res+noise model).
    Rddm { abar: Vec<f64>, bbar: Vec<f64> },
}

impl ResidualConfig {
    pub fn from_file(path: &std::path::Path) -> crate::error::Result<Self> {
        let v = crate::load::read_json(path)?;
        let file = path.display().to_string();
        let err = |field: &str, reason: String| crate::error::Error::Config {
            file: file.clone(),
            field: field.into(),
            reason,
        };
        let obj = v
            .as_object()
            .ok_or_else(|| err("(root)", "expected a JSON object".into()))?;
        let num = |k: &str, d: f64, dom: Domain| -> crate::error::Result<f64> {
            let v = obj.get(k).map_or(Ok(d), |x| {
                crate::load::json_f64(x)
                    .ok_or_else(|| err(k, format!("expected a number, got {x}")))
            })?;
            dom.check(v).map_err(|r| err(k, r))
        };
        let class = obj
            .get("_class_name")
            .and_then(|c| c.as_str())
            .unwrap_or("");
        if !["ResShiftScheduler", "ResfusionScheduler", "RDDMScheduler"].contains(&class) {
            return Err(err(
                "_class_name",
                format!("`{class}` is not a residual-shift process (ResShiftScheduler, ResfusionScheduler, RDDMScheduler)"),
            ));
        }
        let known: &[&str] = &[
            "_class_name",
            "_diffusers_version",
            "num_train_timesteps",
            "sum_scale",
            "kappa",
            "min_noise",
            "power",
            "prediction_type",
        ];
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                return Err(err(k, "unknown field; refusing to guess".into()));
            }
        }
        let t = num("num_train_timesteps", 15.0, Domain::FINITE)?;
        if !(1.0..=MAX_T).contains(&t) || t.fract() != 0.0 {
            return Err(err(
                "num_train_timesteps",
                format!("{t} is not an integer in 1..={MAX_T}"),
            ));
        }
        let pred = obj
            .get("prediction_type")
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string();
        match obj
            .get("_class_name")
            .and_then(|c| c.as_str())
            .unwrap_or("")
        {
            "ResShiftScheduler" => {
                let pred = if pred.is_empty() {
                    "xstart".to_string()
                } else {
                    pred
                };
                if !["xstart", "epsilon", "residual"].contains(&pred.as_str()) {
                    return Err(err(
                        "prediction_type",
                        format!("`{pred}` (xstart, epsilon, residual)"),
                    ));
                }
                let kappa = num("kappa", 2.0, Domain::POSITIVE)?;
                Ok(ResidualConfig::ResShift {
                    sqrt_eta: resshift_sqrt_eta(
                        t as usize,
                        kappa,
                        num("min_noise", 0.04, Domain::OPEN_UNIT)?,
                        num("power", 0.3, Domain::POSITIVE)?,
                    ),
                    kappa,
                    prediction: pred,
                })
            }
            "RDDMScheduler" => {
                let t = num("num_train_timesteps", 1000.0, Domain::FINITE)?;
                let (abar, bbar) =
                    rddm_schedule(t as usize, num("sum_scale", 0.01, Domain::OPEN_UNIT)?);
                Ok(ResidualConfig::Rddm { abar, bbar })
            }
            "ResfusionScheduler" => {
                if !(pred.is_empty() || pred == "resnoise") {
                    return Err(err("prediction_type", format!("`{pred}` (resnoise)")));
                }
                let scale = 1000.0 / t;
                Ok(ResidualConfig::Resfusion {
                    betas: crate::schedule::linspace(scale * 1e-4, scale * 0.02, t as usize),
                    sqrt_abar: resfusion_sqrt_abar(t as usize),
                })
            }
            o => Err(err(
                "_class_name",
                format!(
                    "`{o}` is not a residual-shift process (ResShiftScheduler, ResfusionScheduler)"
                ),
            )),
        }
    }
}

/// RDDM's restoration schedule (Liu et al., "Residual Denoising Diffusion Models", CVPR 2024;
/// nachifur/RDDM): α_i ∝ T + 1 − i normalised to sum 1, β_i² ∝ i normalised to `sum_scale`;
/// returns (ᾱ_t, β̄_t) for t = 1..=T (cumulative sums; β̄ is the square root).
pub fn rddm_schedule(t_max: usize, sum_scale: f64) -> (Vec<f64>, Vec<f64>) {
    let tsum = (t_max * (t_max + 1) / 2) as f64;
    let (mut a, mut b2) = (0.0, 0.0);
    let mut abar = Vec::with_capacity(t_max);
    let mut bbar = Vec::with_capacity(t_max);
    for i in 1..=t_max {
        a += (t_max + 1 - i) as f64 / tsum;
        b2 += i as f64 / tsum * sum_scale;
        abar.push(a);
        bbar.push(b2.sqrt());
    }
    (abar, bbar)
}
