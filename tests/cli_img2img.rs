//! `diffuse img2img` end to end on the random-weight tiny SD-2.x pipeline: with `--noise`
//! holding diffusers' recorded draws (`sample`, `encoder_noise`) of the golden "ddim_s030" run
//! (`tools/sd_golden/img2img.py`), `--raw` holds diffusers' final latents and VAE image (the
//! library's parity is tests/sd_img2img.rs; here the flags, files and errors); bad input names
//! the flag, exits 1 and writes nothing.

use diffuse::load::{write_f32_tensors, HostTensor, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;

const PIPE: &str = "tests/golden/sd/sd2-tiny";
const INPUT: &str = "tests/golden/sd/img2img_input.png";

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-img2img-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn img2img(args: &[&str]) -> (bool, Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .arg("img2img")
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.success(),
        out.status.code(),
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
fn img2img_writes_the_diffusers_result() {
    let d = scratch("ok");
    let io = Weights::open(Path::new(PIPE).join("img2img_io.safetensors").as_path()).unwrap();
    // The golden "ddim_s030" case: one prompt, guidance 7.5, strength 0.3, the folder's DDIM.
    let t = |name: &str| {
        let v = io.read_f32(name, None).unwrap();
        HostTensor {
            shape: v.shape,
            data: v.data,
        }
    };
    let nf = d.join("noise.safetensors");
    write_f32_tensors(
        &nf,
        &[
            ("sample", &t("ddim_s030.noise")),
            ("encoder_noise", &t("ddim_s030.encoder_noise")),
        ],
    )
    .unwrap();
    let (png, raw) = (d.join("mountain.png"), d.join("raw.safetensors"));
    let (ok, _, err) = img2img(&[
        "--model",
        PIPE,
        "--prompt",
        "a snowy mountain",
        "--input",
        INPUT,
        "--strength",
        "0.3",
        "--steps",
        "10",
        "--guidance",
        "7.5",
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
    let want_l = t("ddim_s030.latents");
    let want_i = t("ddim_s030.image");
    assert_eq!(lat.shape, want_l.shape);
    assert_eq!(img.shape, vec![1, 3, 32, 48]);
    let (el, ei) = (
        max_rel(&lat.data, &want_l.data),
        max_rel(&img.data, &want_i.data),
    );
    println!("cli img2img ddim_s030: latents {el:.2e}·max, image {ei:.2e}·max");
    assert!(el <= 1e-3, "{el}");
    assert!(ei <= 1e-3, "{ei}");
    let (w, h) = image::image_dimensions(&png).unwrap();
    assert_eq!((w, h), (48, 32));
}

#[test]
fn bad_input_is_named_and_writes_nothing() {
    let d = scratch("bad");
    let out = d.join("x.png");
    let o = out.to_str().unwrap();
    // A picture whose size is not a multiple of 8.
    let odd = d.join("odd.png");
    image::RgbImage::new(30, 20).save(&odd).unwrap();
    let odd = odd.to_str().unwrap().to_string();
    let missing = d.join("missing.png");
    let missing = missing.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--input", INPUT, "--strength", "1.5"], "--strength"),
        (vec!["--input", INPUT, "--strength", "-0.2"], "--strength"),
        (vec!["--input", INPUT, "--strength", "nan"], "--strength"),
        // DDIM at strength 0 keeps no step (diffusers returns an empty batch).
        (vec!["--input", INPUT, "--strength", "0"], "--strength"),
        (vec!["--input", &missing], "--input"),
        (vec!["--input", "Cargo.toml"], "--input"),
        (vec!["--input", &odd], "--input"),
        (vec!["--input", INPUT, "--scheduler", "bdia"], "scheduler"),
        (vec!["--input", INPUT, "--batch", "0"], "--batch"),
        (
            vec!["--input", INPUT, "--batch", "4000000000000"],
            "--batch",
        ),
        (vec!["--input", INPUT, "--steps", "0"], "--steps"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["--model", PIPE, "--prompt", "x", "--out", o];
        args.extend(extra.iter().copied());
        let (ok, code, err) = img2img(&args);
        assert!(!ok, "{extra:?} succeeded");
        assert_eq!(code, Some(1), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote {o}");
    }
    // --input is required.
    let (ok, _, _) = img2img(&["--model", PIPE, "--prompt", "x", "--out", o]);
    assert!(!ok);
    assert!(!out.exists());
}
