//! The DA-CLIP restoration network (the official `ConditionalUNet`) against the official module
//! itself: random-weight instances from `tools/gen_daclip_golden.py --parts unet` (float32 on
//! the CPU), with both contexts, the degradation or the image context only, and neither, at
//! depth 3 and 4 (SpatialTransformers), at sizes that are not multiples of 2^depth. f32 must be
//! within 1e-4·max|y|, f16 within 1e-2·max|y| of the float32 golden. Bad config fields, missing
//! or misshapen tensors and bad inputs are errors naming them. The full-size network's speed
//! is an `#[ignore]`d test:
//! `cargo test --release --test daclip_unet -- --ignored --nocapture`.

mod common;

use diffuse::load::{HostTensor, RandomWeights, Weights};
use diffuse::nn::conditional_unet::ConditionalUNet;
use diffuse::nn::conditional_unet_blocks::ChannelNormEps;
use diffuse::nn::conditional_unet_config::ConditionalUNetConfig;
use diffuse::DType;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn golden(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/daclip/unet")
        .join(case)
}

/// (weight folder, config file, runs).
const CASES: [(&str, &str, &[&str]); 3] = [
    ("both4", "config.json", &["both", "no_text", "odd"]),
    ("small3", "config.json", &["degra"]),
    ("small3", "config_none.json", &["none"]),
];

/// Runs every golden case in `dtype` with the channel-norm `eps` rule against the golden
/// `output` (the official float32 run) or `output_half` (the official module under float16
/// autocast); returns the worst max|Δ|/max|y|.
fn run_cases(dtype: DType, eps: ChannelNormEps, want_key: &str, rel_tol: f64) -> f64 {
    let gpu = common::gpu();
    let mut worst_rel = 0f64;
    for (case, cfg_file, runs) in CASES {
        let dir = golden(case);
        let cfg = ConditionalUNetConfig::from_file(&dir.join(cfg_file)).unwrap();
        let w = Weights::open(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        let model = ConditionalUNet::load_with(gpu, cfg, &w, dtype, eps)
            .unwrap_or_else(|e| panic!("{case}/{cfg_file}: {e}"));
        if cfg_file == "config.json" {
            w.check_all_used().unwrap();
        }
        let io = Weights::open(&dir.join("io.safetensors")).unwrap();
        for run in runs {
            let read = |k: &str| io.read_f32(&format!("{run}.{k}"), None).ok();
            let (xt, cond) = (read("xt").unwrap(), read("cond").unwrap());
            let (time, want) = (read("time").unwrap(), read(want_key).unwrap());
            let (text, image) = (read("text_context"), read("image_context"));
            let s = &xt.shape;
            let fwd = model
                .prepare(gpu, s[0], s[2], s[3], text.is_some(), image.is_some())
                .unwrap();
            let got = fwd
                .forward_host(
                    gpu,
                    &xt.data,
                    &cond.data,
                    &time.data,
                    text.as_ref().map(|t| t.data.as_slice()),
                    image.as_ref().map(|t| t.data.as_slice()),
                )
                .unwrap();
            assert_eq!(got.len(), want.data.len());
            let ymax = want.data.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
            let (mut worst, mut at) = (0f64, 0usize);
            for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
                let d = (*g as f64 - *w as f64).abs();
                if d > worst || d.is_nan() {
                    worst = if d.is_nan() { f64::INFINITY } else { d };
                    at = i;
                }
            }
            println!(
                "{case}/{run} {dtype:?} {eps:?} vs {want_key} {s:?}: max|Δ| {worst:.3e} = {:.3e}·max|y| at [{at}] (got {} want {}), max|y| {ymax:.3}, {} dispatches, {} KiB activations, {} KiB weights",
                worst / ymax,
                got[at],
                want.data[at],
                fwd.dispatches(),
                fwd.activation_bytes >> 10,
                model.weight_bytes >> 10
            );
            assert!(
                worst <= rel_tol * ymax,
                "{case}/{run} {dtype:?}: max|Δ| {worst:.3e} at flat index {at} (got {}, want {}) exceeds {rel_tol:e}·max|y| = {:.3e}",
                got[at],
                want.data[at],
                rel_tol * ymax
            );
            worst_rel = worst_rel.max(worst / ymax);
        }
    }
    worst_rel
}

#[test]
fn matches_the_official_network_in_f32() {
    let w = run_cases(DType::F32, ChannelNormEps::Float32, "output", 1e-4);
    println!("worst f32: {w:.3e}·max|y|");
}

#[test]
fn matches_the_official_network_in_f16() {
    let w = run_cases(DType::F16, ChannelNormEps::Float32, "output", 1e-2);
    println!("worst f16: {w:.3e}·max|y|");
}

/// The dtype quirk: with the official rule applied to f16 storage (eps 1e-3), the f16 engine
/// follows the official module under float16 autocast, which is 2.4e-2…3.8e-2·max|y| from the
/// float32 run.
#[test]
fn f16_with_the_dtype_eps_rule_matches_the_official_module_under_f16_autocast() {
    let w = run_cases(DType::F16, ChannelNormEps::ByDtype, "output_half", 1e-2);
    println!("worst f16 (eps by dtype) vs autocast: {w:.3e}·max|y|");
}

/// The sampler's view: μ and the contexts written once by `DaclipUNet`, x_t written into
/// `Denoiser::input`, the network run at `ModelTime::t` (the official sampler's float
/// timestep), the output the official noise prediction.
#[test]
fn the_denoiser_passes_model_time_t_to_the_network() {
    use diffuse::models::daclip_unet::DaclipUNet;
    use diffuse::models::{Denoiser, Prediction};
    use diffuse::schedule::ModelTime;
    let gpu = common::gpu();
    let dir = golden("both4");
    let model = ConditionalUNet::from_dir(gpu, &dir, DType::F32).unwrap();
    let io = Weights::open(&dir.join("io.safetensors")).unwrap();
    let read = |k: &str| io.read_f32(&format!("odd.{k}"), None).unwrap();
    let (xt, cond, time, want) = (read("xt"), read("cond"), read("time"), read("output"));
    let (text, image) = (read("text_context"), read("image_context"));
    let s = &xt.shape;
    let fwd = model.prepare(gpu, 1, s[2], s[3], true, true).unwrap();
    let e = DaclipUNet::new(
        gpu,
        model.prepare(gpu, 1, s[2], s[3], true, true).unwrap(),
        &cond.data,
        None,
        Some(&image.data),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("text_context"), "{e}");
    let mut den =
        DaclipUNet::new(gpu, fwd, &cond.data, Some(&text.data), Some(&image.data)).unwrap();
    assert_eq!(den.prediction(), Prediction::Epsilon);
    den.input().write_f32(gpu, &xt.data).unwrap();
    let t = ModelTime {
        t: time.data[0] as f64,
        alpha: 0.5,
        sigma: 0.5,
    };
    den.run(gpu, t).unwrap();
    let got = den.output().to_vec_f32(gpu).unwrap();
    let ymax = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want.data)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    println!(
        "DaclipUNet at t = {}: max|Δ| {:.3e}·max|y|",
        t.t,
        worst / ymax
    );
    assert!(worst <= 1e-4 * ymax);
}

fn base_config() -> Value {
    diffuse::load::read_json(&golden("both4").join("config.json")).unwrap()
}

fn parse_err(v: &Value) -> String {
    match ConditionalUNetConfig::from_json(v, "unet/config.json") {
        Ok(c) => panic!("config accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn configs_parse_with_the_official_defaults_and_bad_fields_are_named() {
    let c = ConditionalUNetConfig::from_json(&base_config(), "c").unwrap();
    assert_eq!((c.depth(), c.time_dim(), c.mid_dim()), (4, 128, 64));
    assert!(c.spatial_at(3) && !c.spatial_at(2) && c.degra() && c.image());
    // The released network (mrsampler.yml's network_G).
    let full = json!({"_class_name": "ConditionalUNet", "in_nc": 3, "out_nc": 3, "nf": 64,
        "ch_mult": [1, 2, 4, 8], "context_dim": 512, "use_degra_context": true,
        "use_image_context": true});
    let c = ConditionalUNetConfig::from_json(&full, "full").unwrap();
    assert_eq!(c.level_dims(3), (256, 512));
    assert_eq!(c.pad_multiple(), 16);
    // Defaults of the official constructor.
    let c =
        ConditionalUNetConfig::from_json(&json!({"in_nc": 3, "out_nc": 3, "nf": 64}), "d").unwrap();
    assert_eq!(c.ch_mult, vec![1, 2, 4, 4]);
    assert_eq!(c.context_dim, Some(512));
    assert!(c.use_degra_context && !c.use_image_context && c.upscale == 1);
    let cases: &[(&str, Value)] = &[
        ("_class_name", json!("UNet2DModel")),
        ("nf", json!(16)),
        ("nf", json!(48)),
        ("nf", json!(null)),
        ("in_nc", json!(0)),
        ("out_nc", json!(2.5)),
        ("ch_mult", json!([])),
        ("ch_mult", json!([1, 2, 0])),
        ("ch_mult", json!([1, 1, 1, 1, 1, 1, 1, 1, 1])),
        ("context_dim", json!(0)),
        ("context_dim", json!(null)),
        ("use_image_context", json!("yes")),
        ("upscale", json!(0)),
        ("a_field_from_the_future", json!(1)),
    ];
    for (field, value) in cases {
        let mut v = base_config();
        v[*field] = value.clone();
        let e = parse_err(&v);
        assert!(
            e.contains(field),
            "{field} = {value}: the error does not name the field: {e}"
        );
    }
}

/// A copy of both4 with its weights rewritten by `edit`.
fn edited(tag: &str, edit: impl Fn(&mut Vec<(String, HostTensor)>)) -> PathBuf {
    let src = golden("both4");
    let dir =
        std::env::temp_dir().join(format!("diffuse-daclip-unet-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let w = Weights::open(&src.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut ts: Vec<(String, HostTensor)> = w
        .names()
        .into_iter()
        .map(|n| {
            let t = w.read_f32(&n, None).unwrap();
            (n, t)
        })
        .collect();
    edit(&mut ts);
    let refs: Vec<(&str, &HostTensor)> = ts.iter().map(|(n, t)| (n.as_str(), t)).collect();
    diffuse::load::write_f32_tensors(&dir.join("diffusion_pytorch_model.safetensors"), &refs)
        .unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    let r = ConditionalUNet::from_dir(common::gpu(), dir, DType::F32);
    let _ = std::fs::remove_dir_all(dir);
    match r {
        Ok(_) => panic!("{}: loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_misshapen_and_extra_tensors_are_named() {
    for t in [
        "downs.3.2.fn.fn.transformer_blocks.0.attn2.to_k.weight",
        "ups.1.2.fn.fn.to_out.1.g",
        "prompt",
        "init_conv.weight",
    ] {
        let e = load_err(&edited("missing", |ts| ts.retain(|(n, _)| n != t)));
        assert!(e.contains(t), "missing tensor not named: {e}");
    }
    const T: &str = "mid_attn.fn.fn.transformer_blocks.0.attn2.to_v.weight";
    let e = load_err(&edited("shape", |ts| {
        for (n, t) in ts.iter_mut() {
            if n == T {
                // context_dim 32 → 16: image features of the wrong width.
                t.shape = vec![t.shape[0], 16];
                t.data.truncate(t.shape[0] * 16);
            }
        }
    }));
    assert!(e.contains(T), "misshapen tensor not named: {e}");
    const EXTRA: &str = "downs.0.0.block1.proj.bias";
    let e = load_err(&edited("extra", |ts| {
        ts.push((
            EXTRA.into(),
            HostTensor {
                shape: vec![32],
                data: vec![0.0; 32],
            },
        ))
    }));
    assert!(e.contains(EXTRA), "unused tensor not named: {e}");
}

#[test]
fn bad_sizes_contexts_and_inputs_are_refused() {
    let gpu = common::gpu();
    let model = ConditionalUNet::from_dir(gpu, &golden("both4"), DType::F32).unwrap();
    // 2^4 = 16: 8 rows cannot be reflected up to 16.
    for (b, h, w) in [(0, 20, 28), (1, 0, 28), (1, 8, 28), (1, 20, 5)] {
        let e = model
            .prepare(gpu, b, h, w, true, true)
            .err()
            .expect("size accepted");
        let s = e.to_string();
        assert!(s.contains("batch") || s.contains("image size"), "{s}");
    }
    let e = model.prepare(gpu, 1, 20, 28, true, false).err().unwrap();
    assert!(e.to_string().contains("image_context"), "{e}");
    let small = golden("small3");
    let cfg = ConditionalUNetConfig::from_file(&small.join("config_none.json")).unwrap();
    let w = Weights::open(&small.join("diffusion_pytorch_model.safetensors")).unwrap();
    let none = ConditionalUNet::load(gpu, cfg, &w, DType::F32).unwrap();
    let e = none.prepare(gpu, 1, 20, 28, true, false).err().unwrap();
    assert!(e.to_string().contains("text_context"), "{e}");
    let e = none.prepare(gpu, 1, 20, 28, false, true).err().unwrap();
    assert!(e.to_string().contains("image_context"), "{e}");

    let fwd = model.prepare(gpu, 1, 20, 28, true, true).unwrap();
    let x = vec![0.0; 3 * 20 * 28];
    let ctx = vec![0.0; 32];
    let e = fwd
        .forward_host(gpu, &x, &x, &[1.0], None, Some(&ctx))
        .unwrap_err();
    assert!(e.to_string().contains("text_context"), "{e}");
    let e = fwd
        .forward_host(gpu, &x, &x, &[1.0], Some(&ctx[..16]), Some(&ctx))
        .unwrap_err();
    assert!(e.to_string().contains("text_context"), "{e}");
    let e = fwd
        .forward_host(gpu, &x, &x, &[1.0, 2.0], Some(&ctx), Some(&ctx))
        .unwrap_err();
    assert!(e.to_string().contains("time"), "{e}");
    let e = fwd
        .forward_host(gpu, &x, &x, &[f32::NAN], Some(&ctx), Some(&ctx))
        .unwrap_err();
    assert!(e.to_string().contains("time"), "{e}");
}

/// The released network's shape (nf 64, ch_mult [1, 2, 4, 8], context 512, both contexts) with
/// random weights at 256×256, batch 1, f32 and f16: seconds per forward (one NFE) and the
/// activation high-water mark. DIFFUSE_DACLIP_SIDE overrides the side, DIFFUSE_DACLIP_DTYPE
/// (f16 or f32) runs one dtype, DIFFUSE_DACLIP_PROFILE=1 adds a per-dispatch profile (seconds
/// by kernel family):
/// `cargo test --release --test daclip_unet -- --ignored --nocapture`.
#[test]
#[ignore]
fn full_size_random_weights_seconds_per_nfe() {
    let gpu = common::gpu();
    let cfg = ConditionalUNetConfig::from_json(
        &json!({"_class_name": "ConditionalUNet", "in_nc": 3, "out_nc": 3, "nf": 64,
            "ch_mult": [1, 2, 4, 8], "context_dim": 512, "use_degra_context": true,
            "use_image_context": true}),
        "full-size",
    )
    .unwrap();
    let side: usize = std::env::var("DIFFUSE_DACLIP_SIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let only = std::env::var("DIFFUSE_DACLIP_DTYPE").ok();
    println!("adapter: {:?}", gpu.info().name);
    for dtype in [DType::F32, DType::F16] {
        if only
            .as_deref()
            .is_some_and(|o| o != format!("{dtype:?}").to_lowercase())
        {
            continue;
        }
        let t0 = std::time::Instant::now();
        let model =
            ConditionalUNet::load(gpu, cfg.clone(), &RandomWeights { seed: 18 }, dtype).unwrap();
        let load_s = t0.elapsed().as_secs_f64();
        let fwd = model.prepare(gpu, 1, side, side, true, true).unwrap();
        let n = 3 * side * side;
        let xt: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let mu: Vec<f32> = (0..n)
            .map(|i| (i * 104729 % 1000) as f32 / 1000.0)
            .collect();
        let ctx: Vec<f32> = (0..512)
            .map(|i| ((i * 31 % 97) as f32 / 97.0) - 0.5)
            .collect();
        // The first run compiles the kernels; the second is the steady-state NFE.
        let t0 = std::time::Instant::now();
        let y = fwd
            .forward_host(gpu, &xt, &mu, &[50.0], Some(&ctx), Some(&ctx))
            .unwrap();
        let first_s = t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        fwd.run(gpu, &[49.0]).unwrap();
        let y2 = fwd.output.to_vec_f32(gpu).unwrap();
        let nfe_s = t0.elapsed().as_secs_f64();
        assert!(
            y.iter().chain(&y2).all(|v| v.is_finite()),
            "{dtype:?}: non-finite"
        );
        if std::env::var_os("DIFFUSE_DACLIP_PROFILE").is_some() {
            let times = fwd.profile(gpu).unwrap();
            let total: f64 = times.iter().map(|t| t.seconds).sum();
            let mut by: Vec<(String, f64, usize)> = Vec::new();
            for t in &times {
                match by.iter_mut().find(|b| b.0 == t.label) {
                    Some(b) => {
                        b.1 += t.seconds;
                        b.2 += 1
                    }
                    None => by.push((t.label.clone(), t.seconds, 1)),
                }
            }
            by.sort_by(|a, b| b.1.total_cmp(&a.1));
            println!(
                "profile {dtype:?}: {total:.2} s in {} dispatches",
                times.len()
            );
            for (label, sec, count) in by.iter().take(14) {
                println!(
                    "  {sec:8.2} s {:5.1} % ×{count:3} {label}",
                    100.0 * sec / total
                );
            }
        }
        println!(
            "ConditionalUNet full size {dtype:?} 1×3×{side}×{side}: {nfe_s:.2} s per NFE (first run {first_s:.2} s), load {load_s:.1} s, {:.1} GFLOP, {} dispatches, weights {} MiB, activations {} MiB",
            fwd.flops as f64 / 1e9,
            fwd.dispatches(),
            model.weight_bytes >> 20,
            fwd.activation_bytes >> 20
        );
    }
}
