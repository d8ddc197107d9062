//! UNet2DConditionModel parity with diffusers on the two random-weight tiny SD pipelines of
//! `tools/gen_sd_golden.py` (part `unet`; diffusers run in float64): the engine's output must be
//! within 1e-4·max|y| of diffusers' in f32 and 1e-2·max|y| in f16. Bad configs, missing or
//! misshapen tensors and bad sizes are errors naming the field, tensor or size. The full-size
//! SD 1.5 architecture with random weights is an `#[ignore]`d test:
//! `cargo test --release --test sd_unet -- --ignored --nocapture`.

mod common;

use diffuse::load::{HostTensor, RandomWeights, Weights};
use diffuse::nn::unet_2d_condition::UNet2DConditionModel;
use diffuse::nn::unet_2d_condition_config::UNet2DConditionConfig;
use diffuse::DType;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const PIPES: [&str; 2] = ["sd1-tiny", "sd2-tiny"];
const CASES: [&str; 2] = ["square", "wide"];

fn pipe(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/sd")
        .join(name)
}

/// Runs every case of `name` in `dtype`; returns the worst max|Δ|/max|y| over the cases.
fn run_pipe(name: &str, dtype: DType, rel_tol: f64) -> f64 {
    let gpu = common::gpu();
    let dir = pipe(name);
    let io = Weights::open(&dir.join("unet_io.safetensors")).unwrap();
    let model =
        UNet2DConditionModel::from_dir(gpu, &dir, dtype).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut worst_rel = 0f64;
    for case in CASES {
        let read = |k: &str| io.read_f32(&format!("{case}.{k}"), None).unwrap();
        let (sample, t) = (read("sample"), read("timestep"));
        let (ehs, want) = (read("encoder_hidden_states"), read("output"));
        let s = &sample.shape;
        let fwd = model
            .prepare_text_len(gpu, s[0], s[2], s[3], ehs.shape[1])
            .unwrap();
        let got = fwd
            .forward_host(gpu, &sample.data, &t.data, &ehs.data)
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
            "{name} {case} {dtype:?}: max|Δ| {worst:.3e} = {:.3e}·max|y| at [{at}] (got {} want {}), max|y| {ymax:.3}, {} dispatches, {} KiB activations, {} KiB weights",
            worst / ymax,
            got[at],
            want.data[at],
            fwd.dispatches(),
            fwd.activation_bytes >> 10,
            model.weight_bytes >> 10
        );
        assert!(
            worst <= rel_tol * ymax,
            "{name} {case} {dtype:?}: max|Δ| {worst:.3e} at flat index {at} (got {}, want {}) exceeds {rel_tol:e}·max|y| = {:.3e}",
            got[at],
            want.data[at],
            rel_tol * ymax
        );
        worst_rel = worst_rel.max(worst / ymax);
    }
    worst_rel
}

#[test]
fn matches_diffusers_in_f32() {
    for p in PIPES {
        run_pipe(p, DType::F32, 1e-4);
    }
}

#[test]
fn matches_diffusers_in_f16() {
    for p in PIPES {
        run_pipe(p, DType::F16, 1e-2);
    }
}

fn tiny_config(name: &str) -> Value {
    diffuse::load::read_json(&pipe(name).join("unet/config.json")).unwrap()
}

fn parse_err(v: &Value) -> String {
    match UNet2DConditionConfig::from_json(v, "unet/config.json") {
        Ok(c) => panic!("config accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn both_tiny_configs_and_sd15_parse_as_diffusers_builds_them() {
    let c1 = UNet2DConditionConfig::from_json(&tiny_config("sd1-tiny"), "sd1").unwrap();
    // SD 1.x: attention_head_dim 8 is eight heads in every block.
    assert_eq!(c1.num_attention_heads, vec![8, 8]);
    assert!(!c1.use_linear_projection);
    let c2 = UNet2DConditionConfig::from_json(&tiny_config("sd2-tiny"), "sd2").unwrap();
    assert_eq!(c2.num_attention_heads, vec![2, 4]);
    assert!(c2.use_linear_projection && c2.upcast_attention);
    let sd15 =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/configs/sd15/unet/config.json");
    let c = UNet2DConditionConfig::from_file(&sd15).unwrap();
    assert_eq!(c.block_out_channels, vec![320, 640, 1280, 1280]);
    assert_eq!(c.cross_attention_dim, 768);
    assert_eq!(c.num_attention_heads, vec![8; 4]);
    assert_eq!(c.layers_per_block, vec![2; 4]);
    assert_eq!(c.time_embed_dim(), 1280);
}

#[test]
fn unsupported_config_fields_are_refused_by_name() {
    let base = tiny_config("sd1-tiny");
    let cases: &[(&str, Value)] = &[
        ("class_embed_type", json!("timestep")),
        ("num_class_embeds", json!(10)),
        ("addition_embed_type", json!("text_time")),
        ("only_cross_attention", json!(true)),
        ("dual_cross_attention", json!(true)),
        ("resnet_time_scale_shift", json!("scale_shift")),
        ("time_embedding_type", json!("fourier")),
        ("num_attention_heads", json!(8)),
        ("attention_type", json!("gated")),
        ("encoder_hid_dim_type", json!("text_proj")),
        ("act_fn", json!("gelu")),
        ("mid_block_type", json!("UNetMidBlock2DSimpleCrossAttn")),
        (
            "down_block_types",
            json!(["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
        ),
        ("attention_head_dim", json!([2, 4, 8])),
        ("cross_attention_dim", json!([32, 32])),
        ("transformer_layers_per_block", json!([[1, 2], [1, 2]])),
        ("use_linear_projection", json!("yes")),
        ("norm_num_groups", json!(null)),
        ("conv_in_kernel", json!(4)),
        ("a_field_from_the_future", json!(1)),
    ];
    for (field, value) in cases {
        let mut v = base.clone();
        v[*field] = value.clone();
        let e = parse_err(&v);
        assert!(
            e.contains(field),
            "{field} = {value}: the error does not name the field: {e}"
        );
    }
    // Defaults written explicitly (null / false / "default") are accepted.
    let mut v = base.clone();
    for (k, d) in [
        ("class_embed_type", json!(null)),
        ("only_cross_attention", json!([false, false])),
        ("mid_block_only_cross_attention", json!(null)),
        ("resnet_out_scale_factor", json!(1.0)),
    ] {
        v[k] = d;
    }
    UNet2DConditionConfig::from_json(&v, "unet/config.json").unwrap();
}

/// A copy of sd1-tiny's `unet/` with its weights rewritten by `edit`.
fn edited_unet(tag: &str, edit: impl Fn(&mut Vec<(String, HostTensor)>)) -> PathBuf {
    let src = pipe("sd1-tiny").join("unet");
    let dir = std::env::temp_dir().join(format!("diffuse-sd-unet-{tag}-{}", std::process::id()));
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
    let r = UNet2DConditionModel::from_dir(common::gpu(), dir, DType::F32);
    let _ = std::fs::remove_dir_all(dir);
    match r {
        Ok(_) => panic!("{}: loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_misshapen_and_extra_tensors_are_named() {
    const T: &str = "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight";
    let e = load_err(&edited_unet("missing", |ts| ts.retain(|(n, _)| n != T)));
    assert!(e.contains(T), "missing tensor not named: {e}");
    let e = load_err(&edited_unet("shape", |ts| {
        for (n, t) in ts.iter_mut() {
            if n == T {
                // cross_attention_dim 32 → 16 columns: a text encoder of the wrong width.
                t.shape = vec![t.shape[0], 16];
                t.data.truncate(t.shape[0] * 16);
            }
        }
    }));
    assert!(e.contains(T), "misshapen tensor not named: {e}");
    const EXTRA: &str = "mid_block.attentions.0.transformer_blocks.1.norm1.weight";
    let e = load_err(&edited_unet("extra", |ts| {
        ts.push((
            EXTRA.into(),
            HostTensor {
                shape: vec![64],
                data: vec![1.0; 64],
            },
        ))
    }));
    assert!(e.contains(EXTRA), "unused tensor not named: {e}");
}

#[test]
fn bad_sizes_and_inputs_are_refused() {
    let gpu = common::gpu();
    let model = UNet2DConditionModel::from_dir(gpu, &pipe("sd2-tiny"), DType::F32).unwrap();
    for (b, h, w) in [(2, 15, 16), (2, 16, 9), (0, 16, 16), (1, 0, 16)] {
        let e = model.prepare(gpu, b, h, w).err().expect("size accepted");
        let s = e.to_string();
        assert!(s.contains("batch") || s.contains("sample size"), "{s}");
    }
    let e = model.prepare_text_len(gpu, 1, 16, 16, 0).err().unwrap();
    assert!(e.to_string().contains("encoder_hidden_states"), "{e}");
    let fwd = model.prepare_text_len(gpu, 1, 16, 16, 5).unwrap();
    let sample = vec![0.0; 4 * 16 * 16];
    let e = fwd
        .forward_host(gpu, &sample, &[1.0], &vec![0.0; 4 * 32])
        .unwrap_err();
    assert!(e.to_string().contains("encoder_hidden_states"), "{e}");
    let e = fwd
        .forward_host(gpu, &sample, &[1.0, 2.0], &vec![0.0; 5 * 32])
        .unwrap_err();
    assert!(e.to_string().contains("timestep"), "{e}");
}

/// The full-size SD 1.5 UNet (assets/configs/sd15, 859.5 M parameters) with random weights at
/// 64×64 latents, batch 2 (classifier-free guidance at 512×512), f16 and f32: records within the
/// adapter's binding limits and runs; prints seconds per forward and the activation
/// high-water mark. Minutes on lavapipe:
/// `cargo test --release --test sd_unet -- --ignored --nocapture`.
#[test]
#[ignore]
fn sd15_full_size_random_weights_runs() {
    let gpu = common::gpu();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/configs/sd15/unet");
    let cfg = UNet2DConditionConfig::from_file(&dir.join("config.json")).unwrap();
    for dtype in [DType::F16, DType::F32] {
        let t0 = std::time::Instant::now();
        let model =
            UNet2DConditionModel::load(gpu, cfg.clone(), &RandomWeights { seed: 15 }, dtype)
                .unwrap();
        let load_s = t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        let fwd = model.prepare(gpu, 2, 64, 64).unwrap();
        let rec_s = t0.elapsed().as_secs_f64();
        let n = 2 * 4 * 64 * 64;
        let sample: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let ehs: Vec<f32> = (0..2 * 77 * 768)
            .map(|i| ((i * 104729 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        // The first run compiles the kernels; the second is timed.
        let y = fwd
            .forward_host(gpu, &sample, &[999.0, 999.0], &ehs)
            .unwrap();
        let t0 = std::time::Instant::now();
        let y2 = fwd
            .forward_host(gpu, &sample, &[999.0, 999.0], &ehs)
            .unwrap();
        let fwd_s = t0.elapsed().as_secs_f64();
        assert!(
            y2.iter().all(|v| v.is_finite()),
            "{dtype:?}: non-finite output"
        );
        assert_eq!(
            y, y2,
            "{dtype:?}: replaying the recording changed the output"
        );
        let ymax = y2.iter().fold(0f32, |m, v| m.max(v.abs()));
        println!(
            "SD 1.5 UNet {dtype:?} 2×4×64×64: load {load_s:.1} s, record {rec_s:.1} s, forward {fwd_s:.1} s, {:.1} GFLOP, {} dispatches, weights {} MiB, activations {} MiB, max|y| {ymax:.3}",
            fwd.flops as f64 / 1e9,
            fwd.dispatches(),
            model.weight_bytes >> 20,
            fwd.activation_bytes >> 20
        );
    }
}
