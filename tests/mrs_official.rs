//! Parity of the MR Sampler with the official implementation (grrrute/mr-sampler,
//! `universal-image-restoration/utils/sampler.py`), on goldens that `tools/gen_mrs_golden.py`
//! produced by running the official `MRSampler.sampling` itself: form (data, noise) × ODE orders
//! 1–3 and SDE orders 1–2 (the official per-step draws supplied) × every time schedule ×
//! network parameterisation (noise, data, velocity), plus λ_min clipping, ≥ 10 steps,
//! `denoise_last`, thresholding, ρ and the leading offset, on a random-weight conditional
//! UNet2DModel (`--interpolation official`). Tolerance: 1e-4·max|x| per case, in f32.
//! The time grids (times, α, σ, λ) are checked on the host, without an adapter.

mod common;

use diffuse::load::{write_f32_tensors, HostTensor, Weights};
use diffuse::models::conditioned::ConditionedUNet;
use diffuse::models::Prediction;
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::schedule::mrs::{Interpolation, MrsOptions};
use diffuse::schedule::restoration::MeanReverting;
use diffuse::solvers::executor::Executor;
use diffuse::solvers::mr_sampler::mrs_program;
use diffuse::solvers::program::Buf;
use diffuse::{DType, Tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mrs")
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

/// The official process of the goldens (released configuration).
fn process() -> MeanReverting {
    MeanReverting::cosine(100, 0.005, 50.0, false)
}

/// The options of a golden case (or schedule row).
fn options(c: &Value) -> MrsOptions {
    let s = |k: &str| c[k].as_str().unwrap_or_else(|| panic!("{k} in {c}"));
    let f = |k: &str| c[k].as_f64().unwrap_or_else(|| panic!("{k} in {c}"));
    let d = MrsOptions::default();
    MrsOptions {
        solver_type: c
            .get("solver_type")
            .map_or(d.solver_type, |v| v.as_str().unwrap().parse().unwrap()),
        order: c
            .get("order")
            .map_or(d.order, |v| v.as_u64().unwrap() as usize),
        form: c
            .get("form")
            .map_or(d.form, |v| v.as_str().unwrap().parse().unwrap()),
        time_schedule: s("time_schedule").parse().unwrap(),
        lambda_min: s("lambda_min").parse().unwrap(),
        denoise_last: c.get("denoise_last").is_some_and(|v| v.as_bool().unwrap()),
        interpolation: Interpolation::Official,
        rho: f("rho"),
        timestep_offset: c["timestep_offset"].as_i64().unwrap(),
        thresholding: c
            .get("thresholding")
            .is_some_and(|v| v.as_bool().unwrap())
            .then(|| (f("threshold_ratio"), f("threshold_max"))),
    }
}

fn network(fit: &str) -> Prediction {
    match fit {
        "noise" => Prediction::Epsilon,
        "data" => Prediction::Sample,
        "velocity" => Prediction::VPrediction,
        o => panic!("fit_target {o}"),
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn official_time_grids_match_on_the_host() {
    // Times and the interpolated α, σ, λ of every schedule setting of the goldens, computed in
    // f32 by the official set_timesteps; ours in f64.
    let sched = process();
    let rows = json("schedules.json");
    let rows = rows["schedules"].as_array().unwrap();
    assert!(rows.len() >= 15, "{}", rows.len());
    let mut worst = [0f64; 4];
    for r in rows {
        let o = options(r);
        let steps = r["steps"].as_u64().unwrap() as usize;
        let times = sched.mrs_times(&o, steps).unwrap();
        let want_t = floats(&r["timesteps"]);
        assert_eq!(times.len(), want_t.len(), "{r}");
        let g = sched.mrs_grid(&times, Interpolation::Official);
        for (k, (ours, key)) in [
            (&times, "timesteps"),
            (&g.alpha, "alphas"),
            (&g.sigma, "sigmas"),
            (&g.lambda, "lambdas"),
        ]
        .into_iter()
        .enumerate()
        {
            for (i, (a, b)) in ours.iter().zip(floats(&r[key])).enumerate() {
                // α, σ relative; t, λ relative to max(1, |b|). The official tensors are f32
                // and our arrays emulate them (measured: 1.3e-5, 1.7e-6, 1.3e-5, 2.9e-6; with
                // f64 arrays the linear-λ times move by 4e-4).
                let e = match k {
                    1 | 2 => (a - b).abs() / b.abs(),
                    _ => (a - b).abs() / b.abs().max(1.0),
                };
                worst[k] = worst[k].max(e);
                let tol = [5e-5, 1e-5, 5e-5, 1e-5][k];
                assert!(e <= tol, "{} {key}[{i}]: {a} vs {b}", r["time_schedule"]);
            }
        }
    }
    println!("worst relative deviation of t, α, σ, λ: {worst:?}");
}

/// A golden run's inputs.
struct Io {
    mu: Vec<f32>,
    z: Vec<f32>,
    step_noise: Vec<f32>,
    shape: Vec<usize>,
}

fn io() -> Io {
    let w = Weights::open(&dir().join("io.safetensors")).unwrap();
    let mu = w.read_f32("mu", None).unwrap();
    let z = w.read_f32("z", Some(&mu.shape)).unwrap();
    let step_noise = w.read_f32("step_noise", None).unwrap();
    Io {
        mu: mu.data,
        z: z.data,
        step_noise: step_noise.data,
        shape: mu.shape,
    }
}

/// Runs the case's program on the golden UNet (GPU executor), draws supplied.
fn run_case(
    gpu: &diffuse::Gpu,
    model: &mut ConditionedUNet,
    cond: &Tensor,
    io: &Io,
    o: &MrsOptions,
    steps: usize,
    fit: &str,
) -> (Vec<f32>, usize) {
    let sched = process();
    let sde = o.solver_type == diffuse::schedule::mrs::MrSolverType::Sde;
    let p = mrs_program(&sched, o, steps, network(fit), &[(Buf::X, 1.0)], sde).unwrap();
    let exec = Executor::with_condition(gpu, model, &p, 0, true, Some(cond)).unwrap();
    exec.set_noise(gpu, &io.z).unwrap();
    let n = io.mu.len();
    let draws = p.step_noise_draws();
    if draws > 0 {
        exec.set_step_noise(gpu, &io.step_noise[..draws * n])
            .unwrap();
    }
    let x = exec
        .run(gpu, model, |_, _| {})
        .unwrap()
        .to_vec_f32(gpu)
        .unwrap();
    (x, p.steps.len())
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let m = b.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
    d / m.max(1e-30)
}

#[test]
fn mr_sampler_matches_the_official_code_on_the_whole_grid() {
    let gpu = common::gpu();
    let io = io();
    let (n, h, w) = (io.shape[0], io.shape[2], io.shape[3]);
    let unet = UNet2DModel::from_dir(gpu, &dir().join("unet"), DType::F32).unwrap();
    let cond_model = Tensor::from_f32(gpu, "condition", &io.shape, &io.mu, DType::F32).unwrap();
    let cond = Tensor::from_f32(gpu, "mu", &io.shape, &io.mu, DType::F32).unwrap();
    let fwd = unet.prepare(gpu, n, h, w).unwrap();
    // The executor folds every parameterisation into the program; the model's label is unused.
    let mut model = ConditionedUNet::new(gpu, fwd, Prediction::Epsilon, &cond_model).unwrap();
    let expected = Weights::open(&dir().join("expected.safetensors")).unwrap();
    let cases = json("cases.json");
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 200);
    let mut slices: BTreeMap<String, f64> = BTreeMap::new();
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let o = options(c);
        let steps = c["steps"].as_u64().unwrap() as usize;
        let fit = c["fit_target"].as_str().unwrap();
        let want = expected.read_f32(name, Some(&io.shape)).unwrap().data;
        let (got, ran) = run_case(gpu, &mut model, &cond, &io, &o, steps, fit);
        assert_eq!(ran as u64, c["official_steps"].as_u64().unwrap(), "{name}");
        let e = rel_err(&got, &want);
        let grid_case = name.starts_with("data_") || name.starts_with("noise_");
        let keys = if grid_case {
            vec![
                format!("form {} {}{}", o.form, o.solver_type, o.order),
                format!("schedule {}", o.time_schedule),
                format!("network {fit}"),
            ]
        } else {
            vec![format!("case {name}")]
        };
        for k in keys {
            let v = slices.entry(k).or_insert(0.0);
            *v = v.max(e);
        }
        if e > 1e-4 {
            failures.push(format!("{name}: {e:.2e}"));
        }
    }
    println!("worst |Δ|/max|x| per slice (official interpolation):");
    for (k, v) in &slices {
        println!("  {k:<48} {v:.2e}");
    }
    assert!(failures.is_empty(), "beyond 1e-4·max|x|: {failures:?}");

    // The official convention matters: with λ = ln(α/σ) (`consistent`) order-2/3 linear-λ runs
    // move by several times the tolerance (measured 3.5e-4 and 6.7e-4 of max|x| on this UNet).
    for name in [
        "data_ode2_linear-lambda_noise",
        "data_ode3_linear-lambda_noise",
    ] {
        let c = cases.iter().find(|c| c["name"] == name).unwrap();
        let o = MrsOptions {
            interpolation: Interpolation::Consistent,
            ..options(c)
        };
        let want = expected.read_f32(name, Some(&io.shape)).unwrap().data;
        let (got, _) = run_case(gpu, &mut model, &cond, &io, &o, 7, "noise");
        let e = rel_err(&got, &want);
        println!("  {name} with consistent interpolation: {e:.2e}");
        assert!(e > 2e-4, "{name}: consistent differs by only {e:.2e}");
    }
}

fn write(path: &Path, name: &str, shape: Vec<usize>, data: Vec<f32>) {
    write_f32_tensors(path, &[(name, &HostTensor { shape, data })]).unwrap();
}

fn diffuse(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A model folder of the golden UNet with a MeanRevertingScheduler config.
fn model_folder(tag: &str, extra: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mrs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(dir().join("unet").join(f), d.join(f)).unwrap();
    }
    std::fs::write(
        d.join("scheduler_config.json"),
        format!(
            r#"{{"_class_name": "MeanRevertingScheduler", "num_train_timesteps": 100, "max_sigma": 50, "eps": 0.005{extra}}}"#
        ),
    )
    .unwrap();
    d
}

#[test]
fn the_cli_reproduces_official_runs_and_refuses_bad_options_by_name() {
    let io = io();
    let d = model_folder("cli", r#", "prediction_type": "v_prediction""#);
    let (input, noise, steps, out, raw) = (
        d.join("mu.safetensors"),
        d.join("z.safetensors"),
        d.join("steps.safetensors"),
        d.join("out.png"),
        d.join("out.safetensors"),
    );
    write(&input, "sample", io.shape.clone(), io.mu.clone());
    write(&noise, "sample", io.shape.clone(), io.z.clone());
    let n = io.mu.len();
    let step_shape = |k: usize| [&[k][..], &io.shape[..]].concat();
    write(
        &steps,
        "sample",
        step_shape(7),
        io.step_noise[..7 * n].to_vec(),
    );
    let expected = Weights::open(&dir().join("expected.safetensors")).unwrap();
    let base = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "restore",
            "--model",
            d.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--noise",
            noise.to_str().unwrap(),
            "--steps",
            "7",
            "--out",
            out.to_str().unwrap(),
            "--raw",
            raw.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let st = steps.to_str().unwrap();
    for (name, extra) in [
        (
            "noise_sde2_karras-n_velocity",
            vec![
                "--solver",
                "sde",
                "--form",
                "noise",
                "--time-schedule",
                "karras-n",
                "--step-noise",
                st,
            ],
        ),
        (
            "data_sde1_leading_velocity",
            vec![
                "--solver",
                "sde",
                "--order",
                "1",
                "--time-schedule",
                "leading",
                "--step-noise",
                st,
            ],
        ),
        // The defaults are the released configuration: ODE, data, order 2, linspace, λ_min −5.
        ("data_ode2_linspace_velocity", vec![]),
    ] {
        let _ = std::fs::remove_file(&raw);
        let args = base(&extra);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (ok, err) = diffuse(&args);
        assert!(ok, "{name}: {err}");
        let got = Weights::open(&raw)
            .unwrap()
            .read_f32("sample", Some(&io.shape))
            .unwrap();
        let want = expected.read_f32(name, Some(&io.shape)).unwrap();
        let e = rel_err(&got.data, &want.data);
        assert!(e <= 1e-4, "{name} through the CLI: {e:.2e}");
    }

    // Bad input: an error naming the flag or field, exit 1, no output written.
    let wrong = d.join("wrong.safetensors");
    write(
        &wrong,
        "sample",
        step_shape(6),
        io.step_noise[..6 * n].to_vec(),
    );
    let wr = wrong.to_str().unwrap();
    for (extra, needle) in [
        (vec!["--form", "epsilon"], "--form"),
        (vec!["--time-schedule", "karras"], "--time-schedule"),
        (vec!["--interpolation", "cubic"], "--interpolation"),
        (vec!["--lambda-min", "7"], "--lambda-min"),
        (vec!["--solver", "sde", "--order", "3"], "SDE orders 1–2"),
        (vec!["--solver", "ode", "--order", "4"], "ODE orders 1–3"),
        (vec!["--solver", "sde", "--step-noise", wr], "--step-noise"),
        (vec!["--solver", "ode", "--step-noise", st], "--step-noise"),
        (vec!["--rho", "0"], "--rho"),
    ] {
        let _ = std::fs::remove_file(&raw);
        let _ = std::fs::remove_file(&out);
        let args = base(&extra);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out_ = std::process::Command::new(env!("CARGO_BIN_EXE_diffuse"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out_.stderr);
        assert_eq!(out_.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!raw.exists() && !out.exists(), "{extra:?} wrote output");
    }
    // Config fields: the same names, refused by field.
    for (extra, needle) in [
        (r#", "time_schedule": "cosine""#, "time_schedule"),
        (r#", "solver_form": "x0""#, "solver_form"),
        (r#", "lambda_min": 9"#, "lambda_min"),
        (
            r#", "solver_type": "sde", "solver_order": 3"#,
            "solver_order",
        ),
        (r#", "denoise_last": "yes""#, "denoise_last"),
        (r#", "interpolation": "linear""#, "interpolation"),
    ] {
        let m = model_folder("cfg", extra);
        let (ok, err) = diffuse(&[
            "restore",
            "--model",
            m.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!ok && err.contains(needle), "{extra}: {err}");
        assert!(!out.exists());
    }
    // The config's fields set the sampler; a flag overrides them.
    let m = model_folder(
        "fields",
        r#", "prediction_type": "v_prediction", "solver_type": "sde", "solver_order": 1, "time_schedule": "leading""#,
    );
    let _ = std::fs::remove_file(&raw);
    let (ok, err) = diffuse(&[
        "restore",
        "--model",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--noise",
        noise.to_str().unwrap(),
        "--steps",
        "7",
        "--step-noise",
        st,
        "--out",
        out.to_str().unwrap(),
        "--raw",
        raw.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let got = Weights::open(&raw)
        .unwrap()
        .read_f32("sample", Some(&io.shape))
        .unwrap();
    let want = expected
        .read_f32("data_sde1_leading_velocity", Some(&io.shape))
        .unwrap();
    assert!(rel_err(&got.data, &want.data) <= 1e-4);
}

/// Supplied per-step draws (`Buf::StepNoise`) are the draws the executor would take itself:
/// an SDE program reading draw k equals the same program drawing in-kernel when draw k is the
/// reference Philox's stream k + 1 (x_T is stream 0; each step's update is the next drawing
/// instruction). Host interpreter (f64, exact up to summation order) and GPU executor (f32).
#[test]
fn supplied_step_noise_equals_the_executors_own_draws() {
    use diffuse::models::analytic::{AnalyticDenoiser, GaussianMixture, HostMixture};
    use diffuse::reference::philox_normal;
    use diffuse::solvers::interpreter::{self, HostRun};
    let sched = process();
    let mix = GaussianMixture {
        shape: [1, 4, 4],
        weights: vec![0.6, 0.4],
        means: vec![
            vec![0.3; 16],
            (0..16).map(|i| (i % 3) as f64 * 0.2 - 0.2).collect(),
        ],
        variances: vec![0.02, 0.05],
    };
    let (batch, seed) = (3usize, 7u64);
    let shape = [batch, 1, 4, 4];
    let n = batch * 16;
    let mu: Vec<f64> = (0..n).map(|i| ((i * 7 % 11) as f64 / 11.0) - 0.5).collect();
    let y_in = [(Buf::X, 1.0), (Buf::Cond, -1.0)];
    for (form, order, sched_name) in [("data", 2, "linspace"), ("noise", 1, "karras-t")] {
        let o = MrsOptions {
            solver_type: diffuse::schedule::mrs::MrSolverType::Sde,
            order,
            form: form.parse().unwrap(),
            time_schedule: sched_name.parse().unwrap(),
            ..Default::default()
        };
        let drawn = mrs_program(&sched, &o, 8, Prediction::Epsilon, &y_in, false).unwrap();
        let supplied = mrs_program(&sched, &o, 8, Prediction::Epsilon, &y_in, true).unwrap();
        let k = supplied.step_noise_draws();
        assert_eq!(k, 8);
        let z: Vec<f64> = (0..k)
            .flat_map(|s| (0..n).map(move |e| philox_normal(seed, s as u32 + 1, e as u64)))
            .collect();
        let host = |p, step_noise| {
            let opts = HostRun {
                shape: &shape,
                seed,
                noise: None,
                cond: Some(&mu),
                step_noise,
            };
            let mut m = HostMixture {
                mixture: mix.clone(),
                prediction: Prediction::Epsilon,
            };
            interpreter::run(p, &mut m, &opts, |_, _| {}).unwrap()
        };
        let (a, b) = (host(&drawn, None), host(&supplied, Some(&z[..])));
        let d = a
            .iter()
            .zip(&b)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < 1e-12, "{form} host: {d:e}");
        // Without the draws the supplied program is refused by name.
        let e = interpreter::run(
            &supplied,
            &mut HostMixture {
                mixture: mix.clone(),
                prediction: Prediction::Epsilon,
            },
            &HostRun {
                shape: &shape,
                seed,
                noise: None,
                cond: Some(&mu),
                step_noise: None,
            },
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("step_noise"), "{e}");

        let gpu = common::gpu();
        let mu32: Vec<f32> = mu.iter().map(|&v| v as f32).collect();
        let cond = Tensor::from_f32(gpu, "mu", &shape, &mu32, DType::F32).unwrap();
        let mut model =
            AnalyticDenoiser::new(gpu, mix.clone(), Prediction::Epsilon, batch, DType::F32)
                .unwrap();
        let run = |p, z: Option<&[f32]>, model: &mut AnalyticDenoiser| {
            let exec = Executor::with_condition(gpu, model, p, seed, false, Some(&cond)).unwrap();
            if let Some(z) = z {
                exec.set_step_noise(gpu, z).unwrap();
            }
            exec.run(gpu, model, |_, _| {})
                .unwrap()
                .to_vec_f32(gpu)
                .unwrap()
        };
        let z32: Vec<f32> = z.iter().map(|&v| v as f32).collect();
        let g1 = run(&drawn, None, &mut model);
        let g2 = run(&supplied, Some(&z32), &mut model);
        let e = rel_err(&g2, &g1);
        assert!(e < 1e-5, "{form} GPU: {e:e}");
        let want: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        assert!(rel_err(&g2, &want) < 1e-4, "{form} GPU vs host");
    }
}
