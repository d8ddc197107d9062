//! `diffuse restore --model DACLIP_DIR`: the converted tiny folder restores the sampler golden's
//! PNG (10 MR Sampler steps from the golden's z) to the official final sample, and bad input —
//! a missing tensor, a tensor of the wrong shape, a context_dim that is not the encoder's
//! embed_dim, a non-RGB image — exits 1 with an error naming it and writes nothing.

use diffuse::load::{write_f32_tensors, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/daclip")
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-daclip-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_tiny(to: &Path) {
    let src = golden().join("tiny");
    for sub in ["", "unet", "daclip", "scheduler"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
}

fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(h.as_object_mut().unwrap());
    let mut hb = serde_json::to_vec(&h).unwrap();
    while hb.len() % 8 != 0 {
        hb.push(b' ');
    }
    let mut out = (hb.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&hb);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
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

fn restore(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![
        "restore",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--steps",
        "10",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    diffuse(&args)
}

#[test]
fn restores_the_golden_png_to_the_official_sample() {
    let d = scratch("ok");
    let io = Weights::open(&golden().join("sampler/io.safetensors")).unwrap();
    let z = io.read_f32("z", None).unwrap();
    let noise = d.join("z.safetensors");
    write_f32_tensors(&noise, &[("sample", &z)]).unwrap();
    let (out, raw) = (d.join("restored.png"), d.join("raw.safetensors"));
    let (code, err) = restore(
        &golden().join("tiny"),
        &golden().join("sampler/input.png"),
        &out,
        &[
            "--noise",
            noise.to_str().unwrap(),
            "--raw",
            raw.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let got = Weights::open(&raw)
        .unwrap()
        .read_f32("sample", None)
        .unwrap();
    let want = Weights::open(&golden().join("sampler/expected.safetensors"))
        .unwrap()
        .read_f32("sample", None)
        .unwrap();
    assert_eq!(got.shape, want.shape);
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let e = got
        .data
        .iter()
        .zip(&want.data)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!(
        "CLI, PNG in (engine contexts): max|Δ| {e:.3e} of max|x| {scale:.4} (rel {:.3e})",
        e / scale
    );
    assert!(e <= 1e-3 * scale, "rel {:.3e}", e / scale);
    let img = image::open(&out).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (37, 29),
        "one image, no gutter"
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn expect_failure(tag: &str, model: &Path, input: &Path, needles: &[&str]) {
    let d = scratch(tag);
    let out = d.join("restored.png");
    let (code, err) = restore(model, input, &out, &[]);
    assert_eq!(code, Some(1), "{tag}: {err}");
    for n in needles {
        assert!(err.contains(n), "{tag}: `{n}` not in: {err}");
    }
    assert!(!out.exists(), "{tag}: wrote an output");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_inputs_are_named_and_write_nothing() {
    let png = golden().join("sampler/input.png");
    let d = scratch("bad-models");

    let m = d.join("missing");
    copy_tiny(&m);
    edit_header(&m.join("unet/diffusion_pytorch_model.safetensors"), |h| {
        h.remove("mid_attn.fn.fn.proj_in.weight");
    });
    expect_failure(
        "missing",
        &m,
        &png,
        &["mid_attn.fn.fn.proj_in.weight", "missing"],
    );

    let m = d.join("shape");
    copy_tiny(&m);
    edit_header(&m.join("daclip/model.safetensors"), |h| {
        h.get_mut("visual_control.conv1.weight").unwrap()["shape"] =
            serde_json::json!([128, 3, 32, 32]);
    });
    expect_failure(
        "shape",
        &m,
        &png,
        &["visual_control.conv1.weight", "[128, 3, 32, 32]"],
    );

    let m = d.join("context");
    copy_tiny(&m);
    let cfg = m.join("daclip/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["embed_dim"] = 512.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    expect_failure("context", &m, &png, &["context_dim", "embed_dim 512"]);

    // Gray and RGBA PNGs are not RGB.
    for (tag, img) in [
        (
            "gray",
            image::DynamicImage::ImageLuma8(image::GrayImage::new(9, 7)),
        ),
        (
            "rgba",
            image::DynamicImage::ImageRgba8(image::RgbaImage::new(9, 7)),
        ),
    ] {
        let p = d.join(format!("{tag}.png"));
        img.save(&p).unwrap();
        expect_failure(
            tag,
            &golden().join("tiny"),
            &p,
            &[p.to_str().unwrap(), "RGB"],
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}
