//! `diffuse quantize` (PTQ4DM W8A32) on the shipped model: the folder it writes, the loader's
//! int8 path against an f32 folder holding the dequantized weights s·q, and bad input that must
//! fail with an error naming the field, exit 1 and write nothing.

mod common;

use common::gpu;
use diffuse::load::quant::{quantize_value, SCALE_SUFFIX};
use diffuse::load::{self, HostTensor, Weights};
use diffuse::nn::unet_2d::UNet2DModel;
use diffuse::DType;
use std::path::{Path, PathBuf};
use std::process::Command;

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fmnist-ddpm")
}

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quantize-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn diffuse(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn quantize(out: &Path) {
    let (code, err) = diffuse(&[
        "quantize",
        "--model",
        model().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// Raw safetensors header: name → (dtype, shape).
fn header(path: &Path) -> serde_json::Value {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&b[8..8 + n]).unwrap()
}

#[test]
fn quantized_folder_has_int8_weights_and_loads_like_its_dequantized_twin() {
    let dir = scratch("twin");
    let q = dir.join("w8");
    quantize(&q);
    let cfg = load::read_json(&q.join(load::CONFIG)).unwrap();
    assert_eq!(cfg["quantization_config"]["weights"], "int8");
    assert!(q.join(load::SCHEDULER_CONFIG).is_file());
    // Every conv/linear weight is I8 with an F32 scale per output channel; the rest is float.
    let h = header(&q.join(load::WEIGHTS));
    let orig = Weights::open(&model().join(load::WEIGHTS)).unwrap();
    let qw = Weights::open(&q.join(load::WEIGHTS)).unwrap();
    let mut n_int8 = 0;
    let mut twin: Vec<(String, HostTensor)> = Vec::new();
    for name in orig.names() {
        let shape = orig.shape(&name).unwrap();
        let dt = h[&name]["dtype"].as_str().unwrap().to_string();
        let conv_or_linear = name.ends_with(".weight")
            && !name.ends_with("embedding.weight")
            && (shape.len() == 4 || shape.len() == 2);
        if !conv_or_linear {
            assert_ne!(dt, "I8", "{name}");
            twin.push((name.clone(), orig.read_f32(&name, None).unwrap()));
            continue;
        }
        assert_eq!(dt, "I8", "{name}");
        n_int8 += 1;
        let sname = format!("{name}{SCALE_SUFFIX}");
        assert_eq!(h[&sname]["dtype"], "F32");
        let s = qw.read_f32(&sname, Some(&shape[..1])).unwrap().data;
        // The stored q are what the rounding rule gives for the stored scale.
        let w = orig.read_f32(&name, None).unwrap().data;
        let qv = qw.raw(&name).unwrap().2.to_vec();
        let per = w.len() / shape[0];
        for (i, (&b, &wv)) in qv.iter().zip(&w).enumerate() {
            assert_eq!(
                b as i8,
                quantize_value(wv as f64, s[i / per]),
                "{name}[{i}]"
            );
        }
        let deq: Vec<f32> = qv
            .iter()
            .enumerate()
            .map(|(i, &b)| s[i / per] * b as i8 as f32)
            .collect();
        twin.push((name.clone(), HostTensor { shape, data: deq }));
    }
    assert_eq!(n_int8, 64);
    // The f32 twin: the same network with w = s·q written as floats.
    let tdir = dir.join("twin");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::copy(model().join(load::CONFIG), tdir.join(load::CONFIG)).unwrap();
    let refs: Vec<(&str, &HostTensor)> = twin.iter().map(|(n, t)| (n.as_str(), t)).collect();
    load::write_f32_tensors(&tdir.join(load::WEIGHTS), &refs).unwrap();

    let gpu = gpu();
    let mq = UNet2DModel::from_dir(gpu, &q, DType::F32).unwrap();
    let mt = UNet2DModel::from_dir(gpu, &tdir, DType::F32).unwrap();
    // GPU weight memory: int8 + scales against the twin's f32 (one copy of each conv weight).
    let f32_params: u64 = twin.iter().map(|(_, t)| 4 * t.data.len() as u64).sum();
    let ratio = mq.weight_bytes as f64 / f32_params as f64;
    assert!(
        ratio <= 0.27,
        "GPU weight bytes {} = {ratio:.3}x f32",
        mq.weight_bytes
    );
    let x: Vec<f32> = (0..2 * 28 * 28)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let mut outs = Vec::new();
    for m in [&mq, &mt] {
        let f = m.prepare(gpu, 2, 28, 28).unwrap();
        f.sample.write_f32(gpu, &x).unwrap();
        f.run(gpu, &[10.0, 700.0], None).unwrap();
        outs.push(f.output.to_vec_f32(gpu).unwrap());
    }
    let want: Vec<f64> = outs[1].iter().map(|&v| v as f64).collect();
    let c = diffuse::reference::compare(&outs[0], &want, 2e-4, 2e-4);
    assert!(c.ok, "int8 model vs its dequantized f32 twin: {c:?}");
}

#[test]
fn bad_input_names_the_field_exits_1_and_writes_nothing() {
    let dir = scratch("bad");
    let m = model();
    let ms = m.to_str().unwrap();
    let out = dir.join("o");
    let os = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["--calibration-samples", "0"], "--calibration-samples"),
        (vec!["--weights", "int4"], "--weights"),
        (vec!["--activations", "fp8"], "--activations"),
        (vec!["--calibration", "log"], "--calibration"),
    ] {
        let mut a = vec!["quantize", "--model", ms, "--out", os];
        a.extend(args);
        let (code, err) = diffuse(&a);
        assert_eq!(code, 1, "{a:?}: {err}");
        assert!(err.contains(needle), "{a:?}: {err}");
        assert!(!out.exists(), "{a:?} wrote {os}");
    }
    // Quantizing a quantized folder.
    let q = dir.join("w8");
    quantize(&q);
    let (code, err) = diffuse(&["quantize", "--model", q.to_str().unwrap(), "--out", os]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("quantization_config"), "{err}");
    assert!(!out.exists());
    // An existing output folder is not overwritten.
    let (code, err) = diffuse(&["quantize", "--model", ms, "--out", q.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--out"), "{err}");
    // No temporary folder is left behind by any of these.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn loader_refuses_unknown_schemes_and_bad_scales() {
    let dir = scratch("load");
    let q = dir.join("w8");
    quantize(&q);
    let gpu = gpu();
    let load_err = |d: &Path| match UNet2DModel::from_dir(gpu, d, DType::F32) {
        Ok(_) => panic!("{} loaded", d.display()),
        Err(e) => e.to_string(),
    };
    let copy = |tag: &str| {
        let d = dir.join(tag);
        std::fs::create_dir_all(&d).unwrap();
        for f in [load::CONFIG, load::WEIGHTS] {
            std::fs::copy(q.join(f), d.join(f)).unwrap();
        }
        d
    };
    // Unknown scheme.
    let d = copy("scheme");
    let mut cfg = load::read_json(&d.join(load::CONFIG)).unwrap();
    cfg["quantization_config"]["weight_scheme"] = "int8_per_tensor".into();
    std::fs::write(d.join(load::CONFIG), cfg.to_string()).unwrap();
    let e = load_err(&d);
    assert!(e.contains("quantization_config.weight_scheme"), "{e}");
    // int8 tensors without a quantization_config.
    let d = copy("noconfig");
    let mut cfg = load::read_json(&d.join(load::CONFIG)).unwrap();
    cfg.as_object_mut().unwrap().remove("quantization_config");
    std::fs::write(d.join(load::CONFIG), cfg.to_string()).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("quantization_config") && e.contains("int8"),
        "{e}"
    );
    // A scale of the wrong shape: rewrite conv_in's scale with one value too many.
    let d = copy("scale");
    let w = Weights::open(&q.join(load::WEIGHTS)).unwrap();
    let h = header(&q.join(load::WEIGHTS));
    let mut views_data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in w.names() {
        let (dt, mut shape, raw) = w.raw(&name).unwrap();
        let mut raw = raw.to_vec();
        if name == "conv_in.weight_scale" {
            shape[0] += 1;
            raw.extend(1f32.to_le_bytes());
        }
        assert!(h.get(&name).is_some());
        views_data.push((name, dt, shape, raw));
    }
    let views: Vec<_> = views_data
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        d.join(load::WEIGHTS),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let e = load_err(&d);
    assert!(e.contains("conv_in.weight_scale"), "{e}");
}
