//! BDIA-DDIM against the official code (`tools/gen_bdia_golden.py`: the repository's
//! `BDIAddim.py` sampler re-gridded to diffusers' DDIM spacings, and its editing code's
//! inversion lines, transcribed), on the closed-form Gaussian mixture (f64; also through the
//! host interpreter, no adapter needed) and the random-weight `unet_ddpm_like` UNet (f32, GPU):
//! sampling, inversion and sampling from an inverted pair to ≤ 1e-4·max|x|; the engine's f32
//! round trip within 2× the official code's own f32 error; the f64 round trip exact to 1e-10;
//! DDIM inversion measurably inexact; the shipped fmnist-ddpm at γ = 1, 10 steps to 1e-3.

mod common;

use common::{golden_dir as dir, golden_toy as toy};

use common::Backend;
use diffuse::load::{read_json, Weights};
use diffuse::models::analytic::{AnalyticDenoiser, HostMixture};
use diffuse::models::unet::UNetDenoiser;
use diffuse::models::Denoiser;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::pipeline::invert::{self, Latents};
use diffuse::schedule::config::{SchedulerConfig, SolverConfig};
use diffuse::solvers::interpreter::{self, HostRun};
use diffuse::solvers::{self, executor::Executor};
use diffuse::DType;
use serde_json::Value;

struct Case {
    name: String,
    cfg: SchedulerConfig,
    steps: usize,
    unet: bool,
    kind: String,
    json: Value,
}

fn cases() -> Vec<Case> {
    let index = read_json(&dir().join("bdia/cases.json")).unwrap();
    index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            Case {
                cfg: SchedulerConfig::from_json(&c["config"], &name)
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
                steps: c["steps"].as_u64().unwrap() as usize,
                unet: c["model"] == "unet",
                kind: c["kind"].as_str().unwrap().to_string(),
                json: c.clone(),
                name,
            }
        })
        .collect()
}

fn tensor(case: &Case, name: &str) -> Vec<f32> {
    Weights::open(&dir().join(format!("bdia/{}.safetensors", case.name)))
        .unwrap()
        .read_f32(name, None)
        .unwrap()
        .data
}

/// max|got − want| / max|want|.
fn rel(got: &[f64], want: &[f32]) -> f64 {
    let m = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let d = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - *w as f64).abs())
        .fold(
            0f64,
            |a, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
        );
    d / m
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}

/// The GPU model of a case, batch 2.
fn gpu_model(case: &Case) -> Box<dyn Denoiser> {
    let gpu = common::gpu();
    if case.unet {
        let unet = UNet2DModel::from_dir(gpu, &dir().join("unet_ddpm_like"), DType::F32).unwrap();
        Box::new(UNetDenoiser {
            forward: unet.prepare(gpu, 2, 16, 16).unwrap(),
            prediction: case.cfg.train.prediction,
            labels: None,
        })
    } else {
        Box::new(
            AnalyticDenoiser::new(gpu, toy(), case.cfg.train.prediction, 2, DType::F32).unwrap(),
        )
    }
}

fn host_model(case: &Case) -> HostMixture {
    HostMixture {
        mixture: toy(),
        prediction: case.cfg.train.prediction,
    }
}

/// Runs a program on the backend with X = `x`, [`Buf::Cond`] = `cond`; returns X and slot 0.
fn run(
    backend: Backend,
    case: &Case,
    program: &solvers::program::Program,
    x: &[f32],
    cond: Option<&[f32]>,
) -> (Vec<f64>, Option<Vec<f64>>) {
    match backend {
        Backend::Gpu => {
            let gpu = common::gpu();
            let mut model = gpu_model(case);
            let shape = model.input().shape().to_vec();
            let c = cond
                .map(|c| diffuse::Tensor::from_f32(gpu, "cond", &shape, c, DType::F32).unwrap());
            let exec = Executor::with_condition(gpu, model.as_ref(), program, 0, true, c.as_ref())
                .unwrap();
            exec.set_noise(gpu, x).unwrap();
            let out = exec
                .run(gpu, model.as_mut(), |_, _| {})
                .unwrap()
                .to_vec_f32(gpu)
                .unwrap();
            let slot = exec.slot(0).map(|t| f64s(&t.to_vec_f32(gpu).unwrap()));
            (f64s(&out), slot)
        }
        Backend::Host => {
            let (x, c) = (f64s(x), cond.map(f64s));
            let opts = HostRun {
                shape: &[2, 1, 8, 8],
                seed: 0,
                noise: Some(&x),
                cond: c.as_deref(),
                step_noise: None,
            };
            let (out, slots) =
                interpreter::run_states(program, &mut host_model(case), &opts, |_, _| {}).unwrap();
            (out, slots.into_iter().next())
        }
    }
}

fn report(failures: &mut Vec<String>, name: &str, what: &str, err: f64, tol: f64) {
    let ok = err <= tol;
    println!(
        "{name:<30} {what:<22} {err:.2e} (tol {tol:.0e}) {}",
        if ok { "ok" } else { "FAIL" }
    );
    if !ok {
        failures.push(format!("{name} {what}"));
    }
}

/// Sampling from noise, inversion, and sampling from the official inverted pair, against the
/// official code; every case on the GPU, the closed-form ones also on the host.
fn official_parity(backends: &[Backend]) {
    let mut failures = Vec::new();
    for case in cases() {
        for &b in backends {
            if case.unet && b == Backend::Host {
                continue;
            }
            let tag = format!("{} [{b:?}]", case.name);
            if case.kind == "sample" {
                let program = solvers::build(&case.cfg, case.steps).unwrap();
                let (x, _) = run(b, &case, &program, &tensor(&case, "z"), None);
                report(
                    &mut failures,
                    &tag,
                    "sample",
                    rel(&x, &tensor(&case, "expected")),
                    1e-4,
                );
                continue;
            }
            if case.steps > 10 && case.kind == "roundtrip" {
                continue; // x0 only (kept small); the round-trip test uses it
            }
            let x0 = tensor(&case, "x0");
            let (program, _) = solvers::inversion(&case.cfg, case.steps).unwrap();
            let (lat, next) = run(b, &case, &program, &x0, None);
            report(
                &mut failures,
                &tag,
                "latents",
                rel(&lat, &tensor(&case, "latents")),
                1e-4,
            );
            let next = next.unwrap();
            report(
                &mut failures,
                &tag,
                "latents_next",
                rel(&next, &tensor(&case, "latents_next")),
                1e-4,
            );
            let (program, _) = solvers::from_latents(&case.cfg, case.steps).unwrap();
            let (rec, _) = run(
                b,
                &case,
                &program,
                &tensor(&case, "latents"),
                Some(&tensor(&case, "latents_next")),
            );
            // On the UNet, the official f32 sampling from the stored pair is itself off its f64
            // reconstruction by `official_f32_from_pair`; allow twice that (at least 1e-4).
            let tol = case.json["official_f32_from_pair"]
                .as_f64()
                .map_or(1e-4, |e| (2.0 * e).max(1e-4));
            report(
                &mut failures,
                &tag,
                "from official pair",
                rel(&rec, &tensor(&case, "reconstruction")),
                tol,
            );
        }
    }
    assert!(failures.is_empty(), "off the official code: {failures:?}");
}

#[test]
fn matches_the_official_code_host() {
    official_parity(&[Backend::Host]);
}

#[test]
fn matches_the_official_code_gpu() {
    official_parity(&[Backend::Gpu]);
}

/// The engine's f32 round trip (GPU inversion, then sampling from the pair) against the
/// official code's own f32 round-trip error on the same UNet and input.
#[test]
fn f32_round_trip_within_twice_the_official_error() {
    let mut failures = Vec::new();
    for case in cases().into_iter().filter(|c| c.kind == "roundtrip") {
        let x0 = tensor(&case, "x0");
        let (program, _) = solvers::inversion(&case.cfg, case.steps).unwrap();
        let (lat, next) = run(Backend::Gpu, &case, &program, &x0, None);
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (program, _) = solvers::from_latents(&case.cfg, case.steps).unwrap();
        let (rec, _) = run(
            Backend::Gpu,
            &case,
            &program,
            &to32(&lat),
            Some(&to32(&next.unwrap())),
        );
        let official = case.json["official_f32_roundtrip"].as_f64().unwrap();
        println!("{}: official f32 round trip {official:.2e}", case.name);
        report(
            &mut failures,
            &case.name,
            "engine f32 round trip",
            rel(&rec, &x0),
            2.0 * official,
        );
    }
    assert!(failures.is_empty(), "{failures:?}");
}

fn toy_case(cfg: SchedulerConfig, steps: usize) -> Case {
    Case {
        name: "toy".into(),
        cfg,
        steps,
        unet: false,
        kind: "roundtrip".into(),
        json: Value::Null,
    }
}

fn bdia(gamma: f64, clip: bool) -> SchedulerConfig {
    SchedulerConfig::from_json(
        &serde_json::json!({"_class_name": "BDIAScheduler", "gamma": gamma, "clip_sample": clip,
            "set_alpha_to_one": false}),
        "test",
    )
    .unwrap()
}

fn smooth_x0() -> Vec<f32> {
    (0..128).map(|i| (0.3 * i as f32).sin() * 0.9).collect()
}

/// In f64 the round trip is exact (to 1e-10) for every γ in (0, 1] at 10 steps, with and
/// without clipping; DDIM inversion on the same grid is off by far more.
#[test]
fn f64_round_trip_is_exact_and_ddim_inversion_is_not() {
    let x0 = smooth_x0();
    for (gamma, clip) in [(1.0, false), (0.5, false), (0.2, false), (0.8, true)] {
        for steps in [1, 2, 7, 10] {
            let case = toy_case(bdia(gamma, clip), steps);
            let (program, _) = solvers::inversion(&case.cfg, steps).unwrap();
            let (lat, next) = run(Backend::Host, &case, &program, &x0, None);
            // The f64 pair straight into the interpreter (no f32 file in between).
            let (program, _) = solvers::from_latents(&case.cfg, steps).unwrap();
            let opts = HostRun {
                shape: &[2, 1, 8, 8],
                seed: 0,
                noise: Some(&lat),
                cond: next.as_deref(),
                step_noise: None,
            };
            let rec = interpreter::run(&program, &mut host_model(&case), &opts, |_, _| {}).unwrap();
            let e = rel(&rec, &x0);
            println!("γ {gamma} clip {clip} {steps:>2} steps: f64 round trip {e:.1e}");
            assert!(e < 1e-10, "γ {gamma}, {steps} steps: {e}");
        }
    }
    // DDIM inversion: off by O(1) at 10 steps, converging (first order) as steps grow.
    let ddim = SchedulerConfig::from_json(
        &serde_json::json!({"_class_name": "DDIMScheduler", "clip_sample": false,
            "set_alpha_to_one": false}),
        "test",
    )
    .unwrap();
    // x0 on the model's data: a 200-step DDIM sample of the mixture (off its support the
    // low-noise flow is so stiff that inversion stays off at any step count).
    let x0: Vec<f32> = {
        let opts = HostRun {
            shape: &[2, 1, 8, 8],
            seed: 5,
            noise: None,
            cond: None,
            step_noise: None,
        };
        let p = solvers::build(&ddim, 200).unwrap();
        let case = toy_case(ddim.clone(), 200);
        interpreter::run(&p, &mut host_model(&case), &opts, |_, _| {})
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect()
    };
    let mut errs = Vec::new();
    for steps in [10, 100, 1000] {
        let case = toy_case(ddim.clone(), steps);
        let (program, kind) = solvers::inversion(&case.cfg, steps).unwrap();
        assert_eq!(kind, solvers::Inverted::State);
        let (lat, _) = run(Backend::Host, &case, &program, &x0, None);
        let (program, _) = solvers::from_latents(&case.cfg, steps).unwrap();
        let opts = HostRun {
            shape: &[2, 1, 8, 8],
            seed: 0,
            noise: Some(&lat),
            cond: None,
            step_noise: None,
        };
        let rec = interpreter::run(&program, &mut host_model(&case), &opts, |_, _| {}).unwrap();
        let e = rel(&rec, &x0);
        println!("DDIM inversion, {steps} steps: f64 round trip {e:.1e}");
        errs.push(e);
    }
    assert!(errs[0] > 1e-2, "DDIM inversion is approximate: {errs:?}");
    assert!(
        errs[2] < errs[1] && errs[1] < errs[0],
        "and converges: {errs:?}"
    );
}

/// `n` Fashion-MNIST test images, BDIA at γ = 1 on the shipped model `name`'s training schedule,
/// and that model (f32).
fn fmnist_gamma_one(name: &str, n: usize) -> (Vec<f32>, SchedulerConfig, UNet2DModel) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    let clean = Weights::open(&root.join("fmnist-sr4/testset.safetensors"))
        .unwrap()
        .read_f32("clean", None)
        .unwrap();
    let base = SchedulerConfig::from_file(&root.join(name).join("scheduler_config.json")).unwrap();
    let mut cfg = SchedulerConfig::named("bdia", Some(&base)).unwrap();
    match &mut cfg.solver {
        SolverConfig::Bdia(c) => c.gamma = 1.0,
        _ => unreachable!(),
    }
    let unet = UNet2DModel::from_dir(common::gpu(), &root.join(name), DType::F32).unwrap();
    (clean.data[..n * 784].to_vec(), cfg, unet)
}

/// The shipped Fashion-MNIST model at γ = 1, 10 steps: four real test images reconstruct to
/// 1e-3·max|x0| (f32, GPU).
#[test]
fn fmnist_round_trip_at_gamma_one() {
    let gpu = common::gpu();
    let n = 4;
    let (x0, cfg, unet) = fmnist_gamma_one("fmnist-ddpm", n);
    let mut model = UNetDenoiser {
        forward: unet.prepare(gpu, n, 28, 28).unwrap(),
        prediction: cfg.train.prediction,
        labels: None,
    };
    let l = invert::invert(gpu, &mut model, &cfg, &x0, 10, |_, _| {}).unwrap();
    let rec = invert::sample_from_latents(gpu, &mut model, &cfg, &l, 10, |_, _| {}).unwrap();
    let e = rel(&f64s(&rec), &x0);
    println!("fmnist-ddpm γ = 1, 10 steps: round trip {e:.2e}·max|x0|");
    assert!(e <= 1e-3, "{e}");
    // Missing `latents_next` and a wrong shape are errors naming the states.
    let half = Latents {
        next: None,
        ..l.clone()
    };
    let err = invert::sample_from_latents(gpu, &mut model, &cfg, &half, 10, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("latents_next"), "{err}");
    let wrong = Latents {
        shape: vec![n, 1, 28, 27],
        ..l
    };
    let err =
        invert::sample_from_latents(gpu, &mut model, &cfg, &wrong, 10, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("latents"), "{err}");
}

#[test]
fn bad_configs_and_inversions_are_errors_naming_the_field() {
    for g in ["1.5", "-0.1"] {
        let v: Value = serde_json::from_str(&format!(
            r#"{{"_class_name": "BDIAScheduler", "gamma": {g}}}"#
        ))
        .unwrap();
        let e = SchedulerConfig::from_json(&v, "cfg.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gamma"), "{e}");
    }
    // `bdia` is γ = 0.5 with DDIMScheduler's defaults; γ = 0 sampling is DDIM.
    let named = SchedulerConfig::named("bdia", None).unwrap();
    let SolverConfig::Bdia(c) = &named.solver else {
        panic!("{named:?}")
    };
    assert_eq!((c.gamma, c.ddim.clone()), (0.5, Default::default()));
    let e = solvers::inversion(&bdia(0.0, false), 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gamma"), "{e}");
    let ddim0 = solvers::build(&bdia(0.0, false), 10).unwrap();
    let ddim = SchedulerConfig::from_json(
        &serde_json::json!({"_class_name": "DDIMScheduler", "clip_sample": false, "set_alpha_to_one": false}),
        "t",
    )
    .unwrap();
    let (a, b) = (
        interpreter::run(
            &ddim0,
            &mut host_model(&toy_case(ddim.clone(), 10)),
            &HostRun {
                shape: &[2, 1, 8, 8],
                seed: 3,
                noise: None,
                cond: None,
                step_noise: None,
            },
            |_, _| {},
        )
        .unwrap(),
        interpreter::run(
            &solvers::build(&ddim, 10).unwrap(),
            &mut host_model(&toy_case(ddim.clone(), 10)),
            &HostRun {
                shape: &[2, 1, 8, 8],
                seed: 3,
                noise: None,
                cond: None,
                step_noise: None,
            },
            |_, _| {},
        )
        .unwrap(),
    );
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12),
        "γ = 0 is DDIM"
    );
    let euler = SchedulerConfig::named("euler", None).unwrap();
    let e = solvers::inversion(&euler, 10).unwrap_err().to_string();
    assert!(e.contains("scheduler"), "{e}");
    // An x0-prediction model has no ε̂ at ᾱ = 1.
    let v = serde_json::json!({"_class_name": "BDIAScheduler", "prediction_type": "sample"});
    let e = solvers::inversion(&SchedulerConfig::from_json(&v, "t").unwrap(), 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("set_alpha_to_one"), "{e}");
    // The warning: γ = 0.5 at 10 steps is quiet, at 30 steps it speaks; γ = 1 never.
    assert!(invert::rounding_warning(&bdia(0.5, false), 10).is_none());
    assert!(invert::rounding_warning(&bdia(0.5, false), 30).is_some());
    assert!(invert::rounding_warning(&bdia(1.0, false), 1000).is_none());
}

/// Editing with the shipped class-conditional model (the paper's use): inverting and sampling
/// under the same labels reconstructs the images (the labels reach both directions alike), and
/// sampling the same states under other labels changes them.
#[test]
fn fmnist_cond_inverts_under_a_label_and_edits_under_another() {
    let gpu = common::gpu();
    let n = 2;
    let (x0, cfg, unet) = fmnist_gamma_one("fmnist-cond", n);
    assert!(unet.is_class_conditional());
    let model = |labels: Vec<i64>| UNetDenoiser {
        forward: unet.prepare(gpu, n, 28, 28).unwrap(),
        prediction: cfg.train.prediction,
        labels: Some(labels),
    };
    let mut source = model(vec![3, 7]);
    let l = invert::invert(gpu, &mut source, &cfg, &x0, 10, |_, _| {}).unwrap();
    let same = invert::sample_from_latents(gpu, &mut source, &cfg, &l, 10, |_, _| {}).unwrap();
    let e = rel(&f64s(&same), &x0);
    let mut target = model(vec![1, 8]);
    let edited = invert::sample_from_latents(gpu, &mut target, &cfg, &l, 10, |_, _| {}).unwrap();
    let d = rel(&f64s(&edited), &x0);
    println!("fmnist-cond γ = 1, 10 steps: same labels {e:.2e}, other labels {d:.2e} (·max|x0|)");
    assert!(e <= 1e-3, "{e}");
    assert!(d >= 0.05, "other labels left the images unchanged: {d}");
}
