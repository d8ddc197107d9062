//! `diffuse invert` and `diffuse sample --latents` through the binary: a BDIA round trip on the
//! golden UNet, and bad input refused by name with exit 1 and nothing written.

mod common;

use diffuse::load::{write_f32_tensors, HostTensor, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-invert-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn diffuse(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes the golden round-trip x0 as `sample` and a BDIA config; returns (x0 file, x0, config).
fn setup(d: &Path, gamma: f64) -> (PathBuf, HostTensor, PathBuf) {
    let x0 = Weights::open(&golden("bdia/roundtrip_sd_g1_10_unet.safetensors"))
        .unwrap()
        .read_f32("x0", None)
        .unwrap();
    let input = d.join("x0.safetensors");
    write_f32_tensors(&input, &[("sample", &x0)]).unwrap();
    let cfg = d.join("bdia.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"_class_name": "BDIAScheduler", "gamma": {gamma}, "clip_sample": false,
                "set_alpha_to_one": false, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear"}}"#
        ),
    )
    .unwrap();
    (input, x0, cfg)
}

#[test]
fn invert_then_sample_reconstructs_the_input() {
    let d = scratch("roundtrip");
    let (input, x0, cfg) = setup(&d, 1.0);
    let model = golden("unet_ddpm_like");
    let lat = d.join("latents.safetensors");
    let (code, err) = diffuse(&[
        "invert",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--scheduler-config",
        s(&cfg),
        "--steps",
        "10",
        "--out",
        s(&lat),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let w = Weights::open(&lat).unwrap();
    assert_eq!(w.shape("latents"), Some(vec![2, 3, 16, 16]));
    assert_eq!(w.shape("latents_next"), Some(vec![2, 3, 16, 16]));
    let raw = d.join("rec.safetensors");
    let (code, err) = diffuse(&[
        "sample",
        "--model",
        s(&model),
        "--scheduler-config",
        s(&cfg),
        "--steps",
        "10",
        "--latents",
        s(&lat),
        "--raw",
        s(&raw),
        "--out",
        s(&d.join("rec.png")),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let rec = Weights::open(&raw)
        .unwrap()
        .read_f32("sample", None)
        .unwrap();
    let m = x0.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let e = rec
        .data
        .iter()
        .zip(&x0.data)
        .fold(0f32, |a, (r, x)| a.max((r - x).abs()))
        / m;
    // The golden case with this config, input and UNet records the official code's own f32
    // round-trip error.
    let cases = diffuse::load::read_json(&golden("bdia/cases.json")).unwrap();
    let official = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "roundtrip_sd_g1_10_unet")
        .unwrap()["official_f32_roundtrip"]
        .as_f64()
        .unwrap() as f32;
    println!("CLI round trip γ = 1, 10 steps: {e:.2e}·max|x0| (official f32: {official:.2e})");
    assert!(e <= 2.0 * official, "{e} vs official {official}");
}

#[test]
fn bad_requests_are_refused_by_name_and_write_nothing() {
    let d = scratch("bad");
    let (input, x0, cfg) = setup(&d, 1.0);
    let model = golden("unet_ddpm_like");
    let out = d.join("out.safetensors");
    let png = d.join("out.png");
    let expect = |args: &[&str], needles: &[&str], file: &Path| {
        let (code, err) = diffuse(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
        }
        assert!(!file.exists(), "{args:?} wrote {}", file.display());
    };
    let invert = |cfg: &Path| {
        vec![
            "invert".to_string(),
            "--model".into(),
            s(&model).into(),
            "--input".into(),
            s(&input).into(),
            "--scheduler-config".into(),
            s(cfg).into(),
            "--steps".into(),
            "10".into(),
            "--out".into(),
            s(&out).into(),
        ]
    };
    let strs = |v: &[String]| {
        v.iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join("\u{1}")
    };
    let run = |v: Vec<String>, needles: &[&str], file: &Path| {
        let joined = strs(&v);
        let args: Vec<&str> = joined.split('\u{1}').collect();
        expect(&args, needles, file)
    };
    // γ outside [0, 1]; γ = 0 has no inverse; a scheduler without inversion.
    for (g, needle) in [("1.5", "gamma"), ("-0.5", "gamma"), ("0", "gamma")] {
        let c = d.join(format!("g{g}.json"));
        std::fs::write(
            &c,
            format!(r#"{{"_class_name": "BDIAScheduler", "gamma": {g}}}"#),
        )
        .unwrap();
        run(invert(&c), &[needle], &out);
    }
    let e = d.join("euler.json");
    std::fs::write(&e, r#"{"_class_name": "EulerDiscreteScheduler"}"#).unwrap();
    run(invert(&e), &["--scheduler", "EulerDiscreteScheduler"], &out);
    // --latents: missing latents_next for BDIA, the wrong shape, no `latents`.
    let only = d.join("only.safetensors");
    write_f32_tensors(&only, &[("latents", &x0)]).unwrap();
    let sample = |lat: &Path| {
        vec![
            "sample".to_string(),
            "--model".into(),
            s(&model).into(),
            "--scheduler-config".into(),
            s(&cfg).into(),
            "--steps".into(),
            "10".into(),
            "--latents".into(),
            s(lat).into(),
            "--out".into(),
            s(&png).into(),
        ]
    };
    run(sample(&only), &["--latents", "latents_next"], &png);
    let small = HostTensor {
        shape: vec![2, 3, 8, 8],
        data: vec![0.0; 384],
    };
    let wrong = d.join("wrong.safetensors");
    write_f32_tensors(&wrong, &[("latents", &small), ("latents_next", &small)]).unwrap();
    run(sample(&wrong), &["--latents", "shape"], &png);
    let none = d.join("none.safetensors");
    write_f32_tensors(&none, &[("sample", &x0)]).unwrap();
    run(sample(&none), &["latents"], &png);
}
