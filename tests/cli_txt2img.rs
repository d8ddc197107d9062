//! `diffuse txt2img` end to end on the random-weight tiny SD-2.x pipeline: with `--noise` from
//! the diffusers golden run, `--raw` holds diffusers' final latents and VAE image (the
//! library's parity is tests/sd_pipeline.rs; here the flags, files and errors), the PNG is
//! written; bad input names the flag/file, exits 1 and writes nothing.

use diffuse::load::{write_f32_tensors, HostTensor, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;

const PIPE: &str = "tests/golden/sd/sd2-tiny";

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-txt2img-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn txt2img(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .arg("txt2img")
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn max_rel(got: &[f32], want: &[f32]) -> f64 {
    let m = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).abs())
        .fold(0f64, f64::max)
        / m
}

#[test]
fn txt2img_writes_the_diffusers_result() {
    let d = scratch("ok");
    let io = Weights::open(Path::new(PIPE).join("pipeline_io.safetensors").as_path()).unwrap();
    // The golden "noguide" case: one prompt, guidance 1 (off), 48×32, the folder's DDIM.
    let noise = io.read_f32("noguide.noise", None).unwrap();
    let nf = d.join("noise.safetensors");
    let t = HostTensor {
        shape: noise.shape.clone(),
        data: noise.data.clone(),
    };
    write_f32_tensors(&nf, &[("sample", &t)]).unwrap();
    let (png, raw) = (d.join("cube.png"), d.join("raw.safetensors"));
    let (ok, err) = txt2img(&[
        "--model",
        PIPE,
        "--prompt",
        "a red cube",
        "--steps",
        "10",
        "--guidance",
        "1",
        "--width",
        "48",
        "--height",
        "32",
        "--noise",
        nf.to_str().unwrap(),
        "--raw",
        raw.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let r = Weights::open(&raw).unwrap();
    let (lat, img) = (
        r.read_f32("latents", None).unwrap(),
        r.read_f32("image", None).unwrap(),
    );
    let want_l = io.read_f32("noguide.latents", None).unwrap();
    let want_i = io.read_f32("noguide.image", None).unwrap();
    assert_eq!(lat.shape, want_l.shape);
    assert_eq!(img.shape, vec![1, 3, 32, 48]);
    assert!(max_rel(&lat.data, &want_l.data) <= 1e-3);
    assert!(max_rel(&img.data, &want_i.data) <= 1e-3);
    let (w, h) = image::image_dimensions(&png).unwrap();
    assert_eq!((w, h), (48, 32));
}

#[test]
fn bad_input_is_named_and_writes_nothing() {
    let d = scratch("bad");
    let out = d.join("x.png");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--width", "36", "--height", "32"], "--width/--height"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--batch", "4000000000000"], "--batch"),
        (vec!["--steps", "0"], "--steps"),
        (vec!["--scheduler", "no-such"], "no-such"),
        (vec!["--tokenizer", "/nonexistent"], "--tokenizer"),
        (vec!["--guidance", "nan"], "--guidance"),
        // Past the text encoder's depth (the tiny pipeline's CLIP has 2 layers): refused
        // before the GPU starts.
        (vec!["--clip-skip", "3"], "--clip-skip"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--model", PIPE, "--prompt", "x", "--out", o];
        args.extend(extra.iter().copied());
        let (ok, err) = txt2img(&args);
        assert!(!ok, "{extra:?} succeeded");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote {o}");
    }
    // A folder that is not a pipeline (no model_index.json).
    let (ok, err) = txt2img(&["--model", "assets/fmnist-ddpm", "--prompt", "x", "--out", o]);
    assert!(!ok);
    assert!(err.contains("model_index.json"), "{err}");
    // A pipeline folder missing its VAE.
    let p = d.join("novae");
    for c in ["unet", "text_encoder", "tokenizer", "scheduler"] {
        std::fs::create_dir_all(p.join(c)).unwrap();
        for e in std::fs::read_dir(Path::new(PIPE).join(c)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), p.join(c).join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(
        Path::new(PIPE).join("model_index.json"),
        p.join("model_index.json"),
    )
    .unwrap();
    let (ok, err) = txt2img(&["--model", p.to_str().unwrap(), "--prompt", "x", "--out", o]);
    assert!(!ok);
    assert!(err.contains("vae"), "{err}");
    assert!(!out.exists());
}
