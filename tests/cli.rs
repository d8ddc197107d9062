//! The `diffuse` binary: `forward` parity through the CLI, and bad input that must fail with an
//! error naming the file/tensor/field, a non-zero exit, and no output file.

mod common;

use diffuse::load::{write_f32_tensors, HostTensor, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// A fresh scratch directory under the target dir.
fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn diffuse(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn forward(model: &Path, input: &Path, t: &str, out: &Path) -> (bool, String) {
    diffuse(&[
        "forward",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--timestep",
        t,
        "--out",
        out.to_str().unwrap(),
    ])
}

/// All tensors of a checkpoint as f32.
fn read_all(path: &Path) -> Vec<(String, HostTensor)> {
    let w = Weights::open(path).unwrap();
    w.names()
        .into_iter()
        .map(|n| (n.clone(), w.read_f32(&n, None).unwrap()))
        .collect()
}

fn write_all(path: &Path, tensors: &[(String, HostTensor)]) {
    let refs: Vec<(&str, &HostTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_f32_tensors(path, &refs).unwrap();
}

/// Runs a forward expected to fail; asserts the message contains every `needles` and that no
/// output file appeared.
fn expect_failure(model: &Path, input: &Path, t: &str, needles: &[&str]) {
    let out = model.parent().unwrap().join("out.safetensors");
    let _ = std::fs::remove_file(&out);
    let (ok, err) = forward(model, input, t, &out);
    assert!(!ok, "expected failure, got success; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention `{n}`:\n{err}");
    }
    assert!(
        !err.contains("panicked"),
        "panic instead of an error:\n{err}"
    );
    assert!(
        !out.exists(),
        "an output file was written despite the error"
    );
}

#[test]
fn forward_matches_diffusers_through_the_cli() {
    let dir = golden("unet_no_mid");
    let s = scratch("ok");
    let out = s.join("y.safetensors");
    let (ok, err) = forward(&dir, &dir.join("io.safetensors"), "250", &out);
    assert!(ok, "{err}");
    let want = Weights::open(&dir.join("io.safetensors"))
        .unwrap()
        .read_f32("output", None)
        .unwrap();
    let got = Weights::open(&out)
        .unwrap()
        .read_f32("output", Some(&want.shape))
        .unwrap();
    let ymax = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4 * ymax, "max|Δ| {worst} vs max|y| {ymax}");
    // The same through the f16 path.
    let (ok, err) = diffuse(&[
        "forward",
        "--model",
        dir.to_str().unwrap(),
        "--input",
        dir.join("io.safetensors").to_str().unwrap(),
        "--timestep",
        "250",
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        "f16",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn bad_model_folders_are_refused_by_name() {
    let src = golden("unet_no_mid");
    let input = src.join("io.safetensors");
    let s = scratch("model");

    // Not a model folder.
    expect_failure(
        &s.join("nowhere"),
        &input,
        "1",
        &["nowhere", "no such directory"],
    );

    // Truncated checkpoint.
    let m = s.join("truncated");
    copy_model(&src, &m);
    let w = m.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 100]).unwrap();
    expect_failure(
        &m,
        &input,
        "1",
        &[
            "diffusion_pytorch_model.safetensors",
            "not a valid safetensors",
        ],
    );

    // Corrupt header.
    let m = s.join("corrupt");
    copy_model(&src, &m);
    let w = m.join("diffusion_pytorch_model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    bytes[8..16].copy_from_slice(b"garbage!");
    std::fs::write(&w, &bytes).unwrap();
    expect_failure(
        &m,
        &input,
        "1",
        &[
            "diffusion_pytorch_model.safetensors",
            "not a valid safetensors",
        ],
    );

    // Missing tensor.
    let m = s.join("missing");
    copy_model(&src, &m);
    let w = m.join("diffusion_pytorch_model.safetensors");
    let mut t = read_all(&w);
    t.retain(|(n, _)| n != "conv_out.bias");
    write_all(&w, &t);
    expect_failure(&m, &input, "1", &["missing tensor `conv_out.bias`"]);

    // A tensor the config does not account for.
    let m = s.join("extra");
    copy_model(&src, &m);
    let w = m.join("diffusion_pytorch_model.safetensors");
    let mut t = read_all(&w);
    t.push((
        "mystery.weight".into(),
        HostTensor {
            shape: vec![2],
            data: vec![0.0; 2],
        },
    ));
    write_all(&w, &t);
    expect_failure(
        &m,
        &input,
        "1",
        &["mystery.weight", "not used by the config"],
    );

    // Shape that disagrees with the config.
    let m = s.join("shape");
    copy_model(&src, &m);
    let w = m.join("diffusion_pytorch_model.safetensors");
    let mut t = read_all(&w);
    for (n, ht) in t.iter_mut() {
        if n == "conv_in.weight" {
            ht.shape = vec![8, 3, 1, 9];
        }
    }
    write_all(&w, &t);
    expect_failure(
        &m,
        &input,
        "1",
        &["conv_in.weight", "[8, 3, 1, 9]", "[8, 3, 3, 3]"],
    );

    // Unsupported dtype (an integer weight).
    let m = s.join("dtype");
    copy_model(&src, &m);
    let w = m.join("diffusion_pytorch_model.safetensors");
    let t = read_all(&w);
    let raw: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = t
        .iter()
        .map(|(n, ht)| {
            if n == "conv_out.bias" {
                (
                    n.clone(),
                    ht.shape.clone(),
                    safetensors::Dtype::I32,
                    vec![0u8; 4 * ht.data.len()],
                )
            } else {
                (
                    n.clone(),
                    ht.shape.clone(),
                    safetensors::Dtype::F32,
                    ht.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = raw
        .iter()
        .map(|(n, s, d, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&w, safetensors::serialize(views, None).unwrap()).unwrap();
    expect_failure(&m, &input, "1", &["conv_out.bias", "I32"]);

    // Config: unknown field, unsupported block type, invalid JSON.
    for (tag, edit, needle) in [
        ("field", r#""sample_size": 8,"#, "frobnication"),
        ("block", r#""DownBlock2D""#, "CrossAttnDownBlock2D"),
        ("json", r#"{"#, "invalid JSON"),
    ] {
        let m = s.join(format!("config-{tag}"));
        copy_model(&src, &m);
        let c = m.join("config.json");
        let text = std::fs::read_to_string(&c).unwrap();
        let text = match tag {
            "field" => text.replacen(edit, r#""sample_size": 8, "frobnication": 3,"#, 1),
            "block" => text.replacen(edit, r#""CrossAttnDownBlock2D""#, 1),
            _ => text.replacen(edit, "", 1),
        };
        std::fs::write(&c, text).unwrap();
        expect_failure(&m, &input, "1", &["config.json", needle]);
    }
}

#[test]
fn bad_inputs_are_refused_by_name() {
    let src = golden("unet_no_mid");
    let s = scratch("input");
    let io = read_all(&src.join("io.safetensors"));
    let sample = io.iter().find(|(n, _)| n == "sample").unwrap().1.clone();

    // Wrong channel count.
    let p = s.join("channels.safetensors");
    write_all(
        &p,
        &[(
            "sample".into(),
            HostTensor {
                shape: vec![1, 2, 8, 8],
                data: vec![0.0; 128],
            },
        )],
    );
    expect_failure(
        &src,
        &p,
        "1",
        &["channels.safetensors", "2 channels", "in_channels is 3"],
    );

    // A size the UNet cannot take (8 levels of halving are not available at 7×7).
    let p = s.join("size.safetensors");
    write_all(
        &p,
        &[(
            "sample".into(),
            HostTensor {
                shape: vec![1, 3, 7, 7],
                data: vec![0.0; 147],
            },
        )],
    );
    expect_failure(&src, &p, "1", &["7×7", "multiples of 2"]);

    // Missing `sample`, wrong rank, NaN, bad timestep.
    let p = s.join("nosample.safetensors");
    write_all(&p, &[("x".into(), sample.clone())]);
    expect_failure(&src, &p, "1", &["missing tensor `sample`"]);
    let p = s.join("rank.safetensors");
    write_all(
        &p,
        &[(
            "sample".into(),
            HostTensor {
                shape: vec![3, 64],
                data: vec![0.0; 192],
            },
        )],
    );
    expect_failure(&src, &p, "1", &["`sample` has shape [3, 64]"]);
    let p = s.join("nan.safetensors");
    let mut bad = sample.clone();
    bad.data[5] = f32::NAN;
    write_all(&p, &[("sample".into(), bad)]);
    expect_failure(&src, &p, "1", &["non-finite", "index 5"]);
    expect_failure(&src, &src.join("io.safetensors"), "nan", &["--timestep"]);

    // Class-conditional model: labels missing, or out of range.
    let cc = golden("unet_class_cond");
    let cio = read_all(&cc.join("io.safetensors"));
    let cs = cio.iter().find(|(n, _)| n == "sample").unwrap().1.clone();
    let p = s.join("nolabels.safetensors");
    write_all(&p, &[("sample".into(), cs.clone())]);
    expect_failure(&cc, &p, "1", &["class_labels"]);
    let p = s.join("labels.safetensors");
    let sbytes: Vec<u8> = cs.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let lbytes: Vec<u8> = [0i64, 12, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "sample".to_string(),
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                cs.shape.clone(),
                &sbytes,
            )
            .unwrap(),
        ),
        (
            "class_labels".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![3], &lbytes)
                .unwrap(),
        ),
    ];
    std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
    expect_failure(&cc, &p, "1", &["label 12", "0..10"]);
}

#[test]
fn an_existing_output_survives_a_failed_run() {
    let src = golden("unet_no_mid");
    let s = scratch("keep");
    let out = s.join("out.safetensors");
    std::fs::write(&out, b"previous result").unwrap();
    let (ok, _) = forward(&src, &s.join("missing-input.safetensors"), "1", &out);
    assert!(!ok);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous result");
}

#[test]
fn sample_refuses_bad_requests_by_name() {
    let s = scratch("sample");
    let out = s.join("grid.png");
    let run = |args: &[&str]| {
        let _ = std::fs::remove_file(&out);
        let mut all = vec!["sample", "--out", out.to_str().unwrap()];
        all.extend_from_slice(args);
        let r = diffuse(&all);
        assert!(!out.exists(), "output written despite failure");
        r
    };
    let (ok, err) = run(&[
        "--model",
        "analytic:mixture",
        "--scheduler",
        "dpm-solver+++",
        "--steps",
        "5",
    ]);
    assert!(
        !ok && err.contains("unknown scheduler `dpm-solver+++`"),
        "{err}"
    );
    let (ok, err) = run(&[
        "--model",
        "analytic:mixture",
        "--scheduler",
        "ddim",
        "--steps",
        "0",
    ]);
    assert!(!ok && err.contains("0 inference steps"), "{err}");
    let (ok, err) = run(&[
        "--model",
        "analytic:mixture",
        "--scheduler",
        "ddim",
        "--steps",
        "1001",
    ]);
    assert!(!ok && err.contains("1001 inference steps"), "{err}");
    let (ok, err) = run(&[
        "--model",
        "analytic:nonesuch",
        "--scheduler",
        "ddim",
        "--steps",
        "5",
    ]);
    assert!(!ok && err.contains("nonesuch"), "{err}");
    let (ok, err) = run(&[
        "--model",
        "analytic:mixture",
        "--scheduler",
        "ddim",
        "--steps",
        "5",
        "--guidance",
        "3",
    ]);
    assert!(!ok && err.contains("--guidance"), "{err}");
    // A UNet without class embedding cannot take guidance either.
    let m = golden("unet_ddpm_like");
    let (ok, err) = run(&[
        "--model",
        m.to_str().unwrap(),
        "--scheduler",
        "ddim",
        "--steps",
        "2",
        "--guidance",
        "2",
    ]);
    assert!(!ok && err.contains("class-conditional"), "{err}");
    // Noise of the wrong shape names the tensor and the shapes.
    let n = s.join("noise.safetensors");
    write_all(
        &n,
        &[(
            "sample".into(),
            HostTensor {
                shape: vec![1, 1, 4, 4],
                data: vec![0.0; 16],
            },
        )],
    );
    let (ok, err) = run(&[
        "--model",
        "analytic:mixture",
        "--scheduler",
        "ddim",
        "--steps",
        "5",
        "--batch",
        "2",
        "--noise",
        n.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("sample") && err.contains("[2, 1, 8, 8]"),
        "{err}"
    );
    // An LML field on a class that does not take it names the field.
    let c = s.join("ddim_kappa.json");
    std::fs::write(&c, r#"{"_class_name": "DDIMScheduler", "kappa": 0.5}"#).unwrap();
    let (ok, err) = run(&[
        "--model",
        "analytic:mixture",
        "--scheduler-config",
        c.to_str().unwrap(),
        "--steps",
        "5",
    ]);
    assert!(!ok && err.contains("kappa") && err.contains("LML"), "{err}");
}

#[test]
fn sample_writes_a_grid_and_the_raw_tensor() {
    let s = scratch("sample-ok");
    let (out, raw) = (s.join("grid.png"), s.join("raw.safetensors"));
    let (ok, err) = diffuse(&[
        "sample",
        "--model",
        "analytic:mixture",
        "--scheduler",
        "dpm-solver++",
        "--steps",
        "12",
        "--batch",
        "9",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--raw",
        raw.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (3 * 10 + 2, 3 * 10 + 2));
    let x = Weights::open(&raw)
        .unwrap()
        .read_f32("sample", Some(&[9, 1, 8, 8]))
        .unwrap();
    assert!(x.data.iter().all(|v| v.is_finite()));
    // Each sample sits near one of the mixture's modes: per-pixel |x| is mostly ≤ 1.2.
    let within = x.data.iter().filter(|v| v.abs() <= 1.2).count();
    assert!(
        within as f64 >= 0.95 * x.data.len() as f64,
        "{within} of {}",
        x.data.len()
    );
}

#[test]
fn restore_runs_mr_samplers_and_refuses_bad_requests() {
    let m = golden("mr_tiny"); // random-weight UNet (in 2, out 1) + MeanRevertingScheduler config
    let s = scratch("restore");
    let input = s.join("degraded.safetensors");
    let mu: Vec<f32> = (0..2 * 64)
        .map(|i| ((i * 37 % 19) as f32 / 9.5) - 1.0)
        .collect();
    write_all(
        &input,
        &[(
            "sample".into(),
            HostTensor {
                shape: vec![2, 1, 8, 8],
                data: mu,
            },
        )],
    );
    let out = s.join("restored.png");
    let raw = s.join("restored.safetensors");
    for args in [
        vec![
            "--sampler",
            "mrs",
            "--solver",
            "ode",
            "--order",
            "3",
            "--steps",
            "8",
        ],
        vec![
            "--sampler",
            "mrs",
            "--solver",
            "sde",
            "--order",
            "2",
            "--steps",
            "8",
        ],
        vec!["--sampler", "mr-posterior", "--steps", "20"],
        vec!["--sampler", "mr-euler"],
    ] {
        let _ = std::fs::remove_file(&out);
        let mut all = vec![
            "restore",
            "--model",
            m.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ];
        all.extend(args.iter().copied());
        all.extend([
            "--out",
            out.to_str().unwrap(),
            "--raw",
            raw.to_str().unwrap(),
        ]);
        let (ok, err) = diffuse(&all);
        assert!(ok, "{args:?}: {err}");
        let x = Weights::open(&raw)
            .unwrap()
            .read_f32("sample", Some(&[2, 1, 8, 8]))
            .unwrap();
        assert!(x.data.iter().all(|v| v.is_finite()), "{args:?}");
        assert!(out.exists());
    }
    let bad = |args: &[&str], needle: &str| {
        let _ = std::fs::remove_file(&out);
        let mut all = vec![
            "restore",
            "--model",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let (ok, err) = diffuse(&all);
        assert!(!ok && err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists());
    };
    let inp = input.to_str().unwrap();
    bad(
        &[
            "--input",
            inp,
            "--sampler",
            "mrs",
            "--solver",
            "ode",
            "--order",
            "4",
        ],
        "ODE orders 1–3",
    );
    bad(
        &[
            "--input",
            inp,
            "--sampler",
            "mrs",
            "--solver",
            "sde",
            "--order",
            "3",
        ],
        "SDE orders 1–2",
    );
    bad(&["--input", inp, "--sampler", "rddm"], "RDDMScheduler");
    bad(
        &["--input", inp, "--sampler", "bogus"],
        "unknown sampler `bogus`",
    );
    bad(
        &["--input", inp, "--sampler", "resshift"],
        "ResShiftScheduler",
    );
    bad(
        &["--input", inp, "--sampler", "mr-posterior", "--steps", "7"],
        "must divide",
    );
    let three = s.join("rgb.safetensors");
    write_all(
        &three,
        &[(
            "sample".into(),
            HostTensor {
                shape: vec![1, 3, 8, 8],
                data: vec![0.0; 192],
            },
        )],
    );
    bad(&["--input", three.to_str().unwrap()], "in_channels 2");
    bad(
        &["--input", s.join("missing.png").to_str().unwrap()],
        "missing.png",
    );
}

#[test]
fn restore_runs_resshift_and_resfusion_models() {
    let src = golden("mr_tiny");
    let s = scratch("residual");
    let input = s.join("degraded.safetensors");
    write_all(
        &input,
        &[(
            "sample".into(),
            HostTensor {
                shape: vec![1, 1, 8, 8],
                data: vec![0.25; 64],
            },
        )],
    );
    for (class, sampler, nfe_hint) in [
        ("ResShiftScheduler", "resshift", "4 NFE"),
        ("ResfusionScheduler", "resfusion", "5 NFE"),
    ] {
        let m = s.join(sampler);
        copy_model(&src, &m);
        let cfg = if sampler == "resshift" {
            r#"{"_class_name": "ResShiftScheduler", "num_train_timesteps": 4, "kappa": 2.0, "min_noise": 0.2, "prediction_type": "xstart"}"#
        } else {
            r#"{"_class_name": "ResfusionScheduler", "num_train_timesteps": 12}"#
        };
        std::fs::write(m.join("scheduler_config.json"), cfg).unwrap();
        let out = s.join(format!("{sampler}.png"));
        let (ok, err) = diffuse(&[
            "restore",
            "--model",
            m.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--sampler",
            sampler,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{class}: {err}");
        assert!(err.contains(nfe_hint), "{class}: {err}");
        assert!(out.exists());
    }
}

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

#[test]
fn eval_reports_fid_and_refuses_bad_requests() {
    let d = scratch("eval");
    let json = d.join("report.json");
    let model = asset("fmnist-ddpm");
    let base = [
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--scheduler",
        "ddim",
        "--steps",
        "2",
        "--batch",
        "4",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        diffuse(&a)
    };
    let classifier = asset("fmnist-classifier");
    let (ok, err) = run(with(&[
        "--num-samples",
        "6",
        "--classifier",
        classifier.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["num_samples"], 6);
    assert_eq!(v["nfe"], 2);
    let fid = v["fid_fmnist"].as_f64().unwrap();
    let floor = v["fid_floor_train_vs_test"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > floor && floor >= 0.0, "{v}");
    assert!(v["class_accuracy"].is_null(), "unconditional model");
    std::fs::remove_file(&json).unwrap();
    // Bad requests: a missing classifier folder, too few samples, a corrupt stats file.
    let missing = d.join("no-classifier");
    for (extra, needle) in [
        (
            vec![
                "--num-samples",
                "6",
                "--classifier",
                missing.to_str().unwrap(),
            ],
            "fid_stats.safetensors",
        ),
        (vec!["--num-samples", "1"], "at least 2 samples"),
    ] {
        let mut e = extra.clone();
        e.extend(["--json", json.to_str().unwrap()]);
        let (ok, err) = run(with(&e));
        assert!(!ok, "accepted {extra:?}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!json.exists(), "{extra:?} wrote a report");
    }
    let bad = d.join("bad-classifier");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(classifier.join(f), bad.join(f)).unwrap();
    }
    std::fs::write(bad.join("fid_stats.safetensors"), b"not a safetensors file").unwrap();
    let (ok, err) = run(with(&["--classifier", bad.to_str().unwrap()]));
    assert!(!ok && err.contains("fid_stats.safetensors"), "{err}");
}

#[test]
fn eval_restore_reports_psnr_ssim_and_refuses_bad_test_sets() {
    let d = scratch("eval-restore");
    let json = d.join("report.json");
    let set = d.join("set.safetensors");
    // A test set of n pairs of hw×hw images: clean, and degraded = clean / 2.
    let write_set = |n: usize, hw: usize| {
        let clean: Vec<f32> = (0..n * hw * hw)
            .map(|i| ((i * 7 % 13) as f32 / 6.5) - 1.0)
            .collect();
        let degraded: Vec<f32> = clean.iter().map(|v| 0.5 * v).collect();
        let t = |data: &[f32]| HostTensor {
            shape: vec![n, 1, hw, hw],
            data: data.to_vec(),
        };
        write_f32_tensors(&set, &[("degraded", &t(&degraded)), ("clean", &t(&clean))]).unwrap();
        (clean, degraded)
    };
    write_set(3, 8);
    let model = golden("mr_tiny");
    let args = |set: &Path, extra: &[&str]| {
        let mut a = vec![
            "eval-restore".to_string(),
            "--model".into(),
            model.to_str().unwrap().into(),
            "--testset".into(),
            set.to_str().unwrap().into(),
            "--json".into(),
            json.to_str().unwrap().into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        diffuse(&a)
    };
    // SSIM's 11×11 window does not fit 8×8 images: a clear error, no report.
    let (ok, err) = run(args(&set, &["--steps", "4"]));
    assert!(!ok && err.contains("11×11"), "{err}");
    assert!(!json.exists());
    // A 16×16 test set (the tiny model takes any multiple of 2).
    let (n, hw) = (2, 16);
    let (clean, degraded) = write_set(n, hw);
    let t = |data: &[f32], c: usize| HostTensor {
        shape: vec![n, c, hw, hw],
        data: data.to_vec(),
    };
    let (ok, err) = run(args(&set, &["--sampler", "mr-posterior", "--steps", "10"]));
    assert!(ok, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (v["pairs"].as_u64(), v["nfe"].as_u64()),
        (Some(2), Some(10)),
        "{v}"
    );
    // The degraded input's own scores are computable here: clean vs 0.5·clean.
    let want_psnr: f64 = (0..n)
        .map(|i| {
            diffuse::metrics::psnr(
                &degraded[i * 256..(i + 1) * 256],
                &clean[i * 256..(i + 1) * 256],
            )
        })
        .sum::<f64>()
        / n as f64;
    assert!(
        (v["psnr_input"].as_f64().unwrap() - want_psnr).abs() < 1e-9,
        "{v}"
    );
    assert!(v["psnr"].as_f64().unwrap().is_finite() && v["ssim"].as_f64().unwrap() <= 1.0);
    std::fs::remove_file(&json).unwrap();
    // Bad test sets and counts.
    let no_clean = d.join("no-clean.safetensors");
    write_f32_tensors(&no_clean, &[("degraded", &t(&degraded, 1))]).unwrap();
    let two_ch = d.join("two-channels.safetensors");
    let d2: Vec<f32> = degraded.iter().chain(&degraded).copied().collect();
    write_f32_tensors(&two_ch, &[("degraded", &t(&d2, 2)), ("clean", &t(&d2, 2))]).unwrap();
    for (file, extra, needle) in [
        (&no_clean, vec![], "clean"),
        (&two_ch, vec![], "in_channels"),
        (&set, vec!["--num-samples", "0"], "--num-samples"),
        (&set, vec!["--num-samples", "5"], "--num-samples"),
    ] {
        let (ok, err) = run(args(file, &extra));
        assert!(!ok, "{file:?} {extra:?} accepted");
        assert!(err.contains(needle), "{file:?} {extra:?}: {err}");
        assert!(!json.exists(), "{file:?} {extra:?} wrote a report");
    }
}

#[test]
fn bench_reports_adapter_forward_and_sampling_as_json() {
    let d = scratch("bench");
    let json = d.join("bench.json");
    let model = golden("unet_ddpm_like");
    let (ok, err) = diffuse(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--dtype",
        "f32",
        "--batches",
        "1",
        "--steps",
        "2",
        "--skip-kernels",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["adapter"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    let kinds: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    // The reference GEMM rate first (the denominator of the forward rows' "% of GEMM").
    assert_eq!(kinds, ["gemm", "forward", "sampling"], "{v}");
    for r in v["results"].as_array().unwrap() {
        assert!(r["rate"].as_f64().unwrap() > 0.0, "{r}");
    }
    let (ok, err) = diffuse(&["bench", "--dtype", "f64", "--steps", "0"]);
    assert!(!ok && err.contains("--dtype"), "{err}");
}
