//! `diffuse quantize` (PTQ4DM W8A32 and W8A8) on the shipped model: the folder it writes, the
//! loader's int8 path against an f32 folder holding the dequantized weights s·q, the calibrated
//! input scales of W8A8 and NDTC's time-step law, and bad input that must fail with an error
//! naming the field, exit 1 and write nothing.

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
        (
            vec!["--activations", "int8", "--calibration-samples", "0"],
            "--calibration-samples",
        ),
        (
            vec!["--activations", "int8", "--calibration", "log"],
            "--calibration",
        ),
        (
            vec!["--activations", "int8", "--calibration-steps", "0"],
            "--calibration-steps",
        ),
        (
            vec![
                "--activations",
                "int8",
                "--calibration-scheduler",
                "no-such",
            ],
            "--calibration-scheduler",
        ),
        (
            vec!["--activations", "int8", "--activation-range", "l3"],
            "--activation-range",
        ),
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

/// Rewrites the weights of folder `d` with `edit(name, shape, bytes)` applied to every tensor
/// (returning false drops it).
fn rewrite_weights(d: &Path, edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<u8>) -> bool) {
    let w = Weights::open(&d.join(load::WEIGHTS)).unwrap();
    let mut data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in w.names() {
        let (dt, mut shape, raw) = w.raw(&name).unwrap();
        let mut raw = raw.to_vec();
        if edit(&name, &mut shape, &mut raw) {
            data.push((name, dt, shape, raw));
        }
    }
    let views: Vec<_> = data
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    drop(w);
    std::fs::write(d.join(load::WEIGHTS), bytes).unwrap();
}

/// `--activation-range mse` on the same calibration inputs as absmax: every layer's range is
/// one of the candidate fractions 1 − i/100 (i < 80) of the absmax range, most clip below it,
/// and the config records the method.
#[test]
fn mse_ranges_are_clipped_absmax_ranges() {
    let dir = scratch("mse");
    let ms = model();
    let mut scales = Vec::new();
    for range in ["absmax", "mse"] {
        let out = dir.join(range);
        let (code, err) = diffuse(&[
            "quantize",
            "--model",
            ms.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--activations",
            "int8",
            "--calibration-samples",
            "4",
            "--activation-range",
            range,
        ]);
        assert_eq!(code, 0, "{err}");
        let cfg = load::read_json(&out.join(load::CONFIG)).unwrap();
        assert_eq!(cfg["quantization_config"]["calibration"]["range"], range);
        let w = Weights::open(&out.join(load::WEIGHTS)).unwrap();
        let mut s = std::collections::BTreeMap::new();
        for name in w
            .names()
            .into_iter()
            .filter(|n| n.ends_with(".input_scale"))
        {
            s.insert(name.clone(), w.read_f32(&name, Some(&[1])).unwrap().data[0]);
        }
        scales.push(s);
    }
    assert_eq!(scales[0].len(), scales[1].len());
    let mut clipped = 0;
    for (name, &a) in &scales[0] {
        let r = scales[1][name] as f64 / a as f64;
        let i = ((1.0 - r) * 100.0).round();
        assert!(
            (0.0..80.0).contains(&i) && (r - (1.0 - i / 100.0)).abs() < 1e-5,
            "{name}: mse range {r} of absmax is not a candidate fraction"
        );
        clipped += (i > 0.0) as usize;
    }
    assert!(
        2 * clipped > scales[0].len(),
        "only {clipped} of {} ranges clipped",
        scales[0].len()
    );
}

#[test]
fn w8a8_folder_has_calibrated_input_scales_and_runs_close_to_w8a32() {
    let dir = scratch("a8");
    let (a8, w8) = (dir.join("a8"), dir.join("w8"));
    let ms = model();
    let (code, err) = diffuse(&[
        "quantize",
        "--model",
        ms.to_str().unwrap(),
        "--out",
        a8.to_str().unwrap(),
        "--activations",
        "int8",
        "--calibration",
        "uniform",
        "--calibration-samples",
        "3",
        "--seed",
        "5",
    ]);
    assert_eq!(code, 0, "{err}");
    quantize(&w8);
    let cfg = load::read_json(&a8.join(load::CONFIG)).unwrap();
    let qc = &cfg["quantization_config"];
    assert_eq!(qc["activations"], "int8");
    assert_eq!(qc["activation_scheme"], "int8_symmetric_per_tensor");
    assert_eq!(qc["calibration"]["timesteps"], "uniform");
    assert_eq!(qc["calibration"]["samples"], 3);
    assert_eq!(qc["calibration"]["seed"], 5);
    // Every int8 weight has a positive input scale [1]; nothing else has one.
    let h = header(&a8.join(load::WEIGHTS));
    let mut n = 0;
    for (name, v) in h.as_object().unwrap() {
        if v["dtype"] == "I8" {
            let s = diffuse::load::quant::input_scale_name(name);
            assert_eq!(h[&s]["dtype"], "F32", "{s}");
            assert_eq!(h[&s]["shape"], serde_json::json!([1]), "{s}");
            n += 1;
        }
        if name.ends_with(".input_scale") {
            let w = format!("{}.weight", name.strip_suffix(".input_scale").unwrap());
            assert_eq!(h[&w]["dtype"], "I8", "{name} without an int8 weight");
        }
    }
    assert!(n > 10, "{n} int8 weights");
    let w = Weights::open(&a8.join(load::WEIGHTS)).unwrap();
    let s = w.read_f32("conv_in.input_scale", Some(&[1])).unwrap().data[0];
    // conv_in sees x_t: |x| of the noisiest input is a few units.
    assert!(
        s > 1.0 / 127.0 && s < 10.0 / 127.0,
        "conv_in input scale {s}"
    );
    // The W8A8 network stays close to W8A32 on an input like the calibration's.
    let gpu = gpu();
    let x: Vec<f32> = (0..2 * 28 * 28)
        .map(|i| diffuse::reference::philox_normal(9, 0, i as u64) as f32)
        .collect();
    let mut outs = Vec::new();
    for d in [&a8, &w8] {
        let m = UNet2DModel::from_dir(gpu, d, DType::F32).unwrap();
        let f = m.prepare(gpu, 2, 28, 28).unwrap();
        f.sample.write_f32(gpu, &x).unwrap();
        f.run(gpu, &[999.0, 999.0], None).unwrap();
        outs.push(f.output.to_vec_f32(gpu).unwrap());
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in outs[0].iter().zip(&outs[1]) {
        num += ((a - b) as f64).powi(2);
        den += (*b as f64).powi(2);
    }
    let rel = (num / den).sqrt();
    assert!(rel < 0.1, "W8A8 vs W8A32 relative RMS difference {rel}");
    assert!(rel > 0.0, "the activations were not quantized");

    // Loader checks of the input scales: a wrong shape and a missing one, each named.
    let load_err = |d: &Path| match UNet2DModel::from_dir(gpu, d, DType::F32) {
        Ok(_) => panic!("{} loaded", d.display()),
        Err(e) => e.to_string(),
    };
    let copy = |tag: &str| {
        let d = dir.join(tag);
        std::fs::create_dir_all(&d).unwrap();
        for f in [load::CONFIG, load::WEIGHTS] {
            std::fs::copy(a8.join(f), d.join(f)).unwrap();
        }
        d
    };
    let d = copy("shape");
    rewrite_weights(&d, |name, shape, raw| {
        if name == "conv_in.input_scale" {
            shape[0] = 2;
            raw.extend(1f32.to_le_bytes());
        }
        true
    });
    let e = load_err(&d);
    assert!(e.contains("conv_in.input_scale"), "{e}");
    let d = copy("missing");
    rewrite_weights(&d, |name, _, _| name != "conv_out.input_scale");
    let e = load_err(&d);
    assert!(e.contains("conv_out.input_scale"), "{e}");
    // An unknown calibration scheme in the config.
    let d = copy("scheme");
    let mut cfg = load::read_json(&d.join(load::CONFIG)).unwrap();
    cfg["quantization_config"]["calibration"]["timesteps"] = "lognormal".into();
    std::fs::write(d.join(load::CONFIG), cfg.to_string()).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("quantization_config.calibration.timesteps"),
        "{e}"
    );
    // Quantizing the W8A8 folder again is refused; nothing is written.
    let out = dir.join("again");
    let (code, err) = diffuse(&[
        "quantize",
        "--model",
        a8.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--activations",
        "int8",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("quantization_config"), "{err}");
    assert!(!out.exists());
}

#[test]
fn ndtc_and_uniform_step_indices_follow_the_official_rules() {
    use diffuse::pipeline::calibrate::{step_indices, Calibration, ND_MEAN, ND_STD};
    // Uniform: torch.linspace(0, S, n).round() clamped to S − 1.
    assert_eq!(
        step_indices(Calibration::Uniform, 5, 20, 0),
        vec![0, 5, 10, 15, 19]
    );
    assert_eq!(step_indices(Calibration::Uniform, 1, 20, 0), vec![0]);
    // NDTC: trunc(S · N(0.4, 0.4)) clamped to [0, S − 1]; the empirical law of 20 000 draws.
    let s = 20;
    let ks = step_indices(Calibration::Nd, 20_000, s, 7);
    let frac = |f: &dyn Fn(usize) -> bool| ks.iter().filter(|&&k| f(k)).count() as f64 / 2e4;
    let phi = |z: f64| 0.5 * (1.0 + libm_erf(z / std::f64::consts::SQRT_2));
    // k = 0 collects z < 1/S (trunc toward zero, negatives clamped).
    let p0 = phi((1.0 / s as f64 - ND_MEAN) / ND_STD);
    assert!(
        (frac(&|k| k == 0) - p0).abs() < 0.01,
        "{} vs {p0}",
        frac(&|k| k == 0)
    );
    let plast = 1.0 - phi(((s - 1) as f64 / s as f64 - ND_MEAN) / ND_STD);
    assert!((frac(&|k| k == s - 1) - plast).abs() < 0.01);
    assert!(ks.iter().all(|&k| k < s));
}

/// erf by its Abramowitz–Stegun 7.1.26 approximation (|error| < 1.5e-7).
fn libm_erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
            + 0.254829592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}
