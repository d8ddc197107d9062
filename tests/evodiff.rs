//! EVODiff against the official code (`tools/gen_evodiff_golden.py`: the repository's
//! `EVODiff_edm.sample(method="multistep", order=2)` on DPM-Solver's `NoiseScheduleVP('discrete')`
//! and `model_wrapper`, float64) on the random-weight `unet_ddpm_like` UNet: full runs on the
//! GPU (f32, projections reduced on the device) to ≤ 1e-4·max|x| for every skip type, ε / x0 /
//! v networks, the > 20-step branch, `lower_order_final = false`, explicit `t_start`/`t_end`
//! and a clipped (cosine) schedule; the time grids to 1e-12 (from the official ᾱ); bad configurations named.

mod common;

use common::golden_dir as dir;

use diffuse::load::{read_json, Weights};
use diffuse::models::unet::UNetDenoiser;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::schedule::config::{SchedulerConfig, SolverConfig};
use diffuse::solvers::evodiff::{time_steps, VpContinuous};
use diffuse::solvers::{self, executor::Executor};
use diffuse::DType;
use serde_json::{json, Value};

fn cases() -> Vec<(String, SchedulerConfig, usize, Value)> {
    let index = read_json(&dir().join("evodiff/cases.json")).unwrap();
    index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            let cfg = SchedulerConfig::from_json(&c["config"], &name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let steps = c["steps"].as_u64().unwrap() as usize;
            (name, cfg, steps, c.clone())
        })
        .collect()
}

fn tensor(name: &str, t: &str) -> Vec<f32> {
    Weights::open(&dir().join(format!("evodiff/{name}.safetensors")))
        .unwrap()
        .read_f32(t, None)
        .unwrap()
        .data
}

#[test]
fn time_grids_match_the_official_get_time_steps() {
    for (name, cfg, steps, json) in cases() {
        let SolverConfig::EvoDiff(c) = &cfg.solver else {
            panic!("{name}: not an EVODiffScheduler config")
        };
        // The official run's ᾱ (torch's float32 cumprod, up to 6e-7 relative from the engine's
        // sequential one), so the grid itself is compared exactly.
        let abar: Vec<f64> = tensor(&name, "alphas_cumprod")
            .iter()
            .map(|&a| a as f64)
            .collect();
        let ns = VpContinuous::new(&abar);
        assert_eq!(
            ns.total_n() as u64,
            json["total_n"].as_u64().unwrap(),
            "{name}"
        );
        let t_end = c.t_end.unwrap_or(1.0 / ns.total_n() as f64);
        let ts = time_steps(&ns, c.skip_type, c.t_start.unwrap_or(1.0), t_end, steps);
        let want: Vec<f64> = json["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ts.len(), want.len(), "{name}");
        for (i, (a, b)) in ts.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-12, "{name} t[{i}]: {a} vs {b}");
        }
    }
}

#[test]
fn full_runs_match_the_official_evodiff_on_a_unet() {
    let gpu = common::gpu();
    let unet = UNet2DModel::from_dir(gpu, &dir().join("unet_ddpm_like"), DType::F32).unwrap();
    let mut failures = Vec::new();
    for (name, cfg, steps, _) in cases() {
        let program = solvers::build(&cfg, steps).unwrap();
        assert_eq!(
            program.nfe,
            if name.contains("no_lower") {
                steps + 1
            } else {
                steps
            }
        );
        let mut model = UNetDenoiser {
            forward: unet.prepare(gpu, 2, 16, 16).unwrap(),
            prediction: cfg.train.prediction,
            labels: None,
        };
        let exec = Executor::new(gpu, &model, &program, 0, true).unwrap();
        exec.set_noise(gpu, &tensor(&name, "z")).unwrap();
        let x = exec
            .run(gpu, &mut model, |_, _| {})
            .unwrap()
            .to_vec_f32(gpu)
            .unwrap();
        let want = tensor(&name, "expected");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = x
            .iter()
            .zip(&want)
            .map(|(a, b)| {
                if (a - b).is_nan() {
                    f32::INFINITY
                } else {
                    (a - b).abs()
                }
            })
            .fold(0f32, f32::max);
        let rel = d / scale;
        println!("{name:<28} {steps:>2} steps  max|x| {scale:9.3}  error {rel:.2e}·max|x|");
        if rel > 1e-4 {
            failures.push(format!("{name}: {rel:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn bad_configurations_name_the_field() {
    let base = || json!({"_class_name": "EVODiffScheduler", "beta_schedule": "linear"});
    for (field, value, steps, want) in [
        ("skip_type", json!("logSNR2"), 10, "skip_type"),
        ("order", json!(3), 10, "order"),
        ("t_start", json!(1.5), 10, "t_start"),
        ("t_end", json!(0.0), 10, "t_end"),
        (
            "prediction_type",
            json!("flow_prediction"),
            10,
            "prediction_type",
        ),
        ("lower_order_final", json!("yes"), 10, "lower_order_final"),
        ("order", json!(2), 1, "steps"),
    ] {
        let mut v = base();
        v[field] = value;
        let r = SchedulerConfig::from_json(&v, "test").and_then(|c| solvers::build(&c, steps));
        let e = r.expect_err(field).to_string();
        assert!(e.contains(want), "{field}: {e}");
    }
    let mut v = base();
    v["t_start"] = json!(0.2);
    v["t_end"] = json!(0.5);
    let e = SchedulerConfig::from_json(&v, "test")
        .and_then(|c| solvers::build(&c, 5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("t_end"), "{e}");
    // The `--scheduler` name selects the class with its defaults (logSNR, order 2).
    let c = SchedulerConfig::named("evodiff", None).unwrap();
    assert!(matches!(c.solver, SolverConfig::EvoDiff(ref o) if o.order == 2));
}
