//! `CLIPTextModel` against transformers on the two tiny SD pipelines (goldens from
//! `tools/gen_sd_golden.py text`): the last hidden state and diffusers' `clip_skip=1`, f32 within
//! 1e-4·max|y| and f16 within 1e-2·max|y|; bad checkpoints, configs and ids are errors naming
//! the tensor, field or argument.

mod common;

use diffuse::load::{HostTensor, Weights};
use diffuse::nn::clip_text::{CLIPTextConfig, CLIPTextModel};
use diffuse::DType;
use std::path::{Path, PathBuf};

fn golden(pipe: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/sd")
        .join(pipe)
}

/// max |got − want| / max |want|.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let max = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let d = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    if got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    d / max
}

#[test]
fn text_encoder_matches_transformers() {
    let gpu = common::gpu();
    for pipe in ["sd1-tiny", "sd2-tiny"] {
        let io = Weights::open(&golden(pipe).join("text_io.safetensors")).unwrap();
        let ids: Vec<u32> = io
            .read_f32("input_ids", None)
            .unwrap()
            .data
            .iter()
            .map(|&v| v as u32)
            .collect();
        let batch = ids.len() / 77;
        for (dt, tol) in [(DType::F32, 1e-4), (DType::F16, 1e-2)] {
            let model = CLIPTextModel::from_dir(gpu, &golden(pipe), dt).unwrap();
            for (clip_skip, key) in [(0, "last_hidden_state"), (1, "clip_skip_1")] {
                let want = io.read_f32(key, None).unwrap().data;
                let fwd = model.prepare(gpu, batch, clip_skip).unwrap();
                let got = fwd.forward_host(gpu, &ids).unwrap();
                let e = rel_err(&got, &want);
                println!("{pipe} {dt:?} {key}: max|Δ|/max|y| = {e:.2e} (tol {tol:.0e})");
                assert!(e <= tol, "{pipe} {dt:?} {key}: {e:.3e} > {tol:.0e}");
            }
        }
    }
}

/// A copy of sd1-tiny's text encoder with the tensors rewritten by `edit`, in f32.
fn edited_copy(name: &str, edit: impl Fn(&mut Vec<(String, HostTensor)>)) -> PathBuf {
    let src = golden("sd1-tiny").join("text_encoder");
    let dir = std::env::temp_dir().join(format!("diffuse-text-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let w = Weights::open(&src.join("model.safetensors")).unwrap();
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
    diffuse::load::write_f32_tensors(&dir.join("model.safetensors"), &refs).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match CLIPTextModel::from_dir(common::gpu(), dir, DType::F32) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_checkpoints_name_the_tensor() {
    let missing = edited_copy("missing", |ts| {
        ts.retain(|(n, _)| n != "encoder.layers.1.mlp.fc2.bias")
    });
    let e = load_err(&missing);
    assert!(e.contains("encoder.layers.1.mlp.fc2.bias"), "{e}");
    let shape = edited_copy("shape", |ts| {
        for (n, t) in ts.iter_mut() {
            if n == "encoder.layers.0.self_attn.k_proj.weight" {
                t.data.truncate(32 * 31);
                t.shape = vec![31, 32];
            }
        }
    });
    let e = load_err(&shape);
    assert!(
        e.contains("encoder.layers.0.self_attn.k_proj.weight") && e.contains("[31, 32]"),
        "{e}"
    );
    let extra = edited_copy("extra", |ts| {
        let t = HostTensor {
            shape: vec![1],
            data: vec![0.0],
        };
        ts.push(("encoder.layers.2.layer_norm1.weight".into(), t));
    });
    let e = load_err(&extra);
    assert!(e.contains("encoder.layers.2.layer_norm1.weight"), "{e}");
    for d in [missing, shape, extra] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn bad_configs_and_ids_are_refused_by_name() {
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden("sd1-tiny").join("text_encoder/config.json")).unwrap(),
    )
    .unwrap();
    let parse = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        edit(&mut v);
        CLIPTextConfig::from_json(&v, "config.json").map_err(|e| e.to_string())
    };
    assert!(parse(&|_| {}).is_ok());
    let e = parse(&|v| v["hidden_act"] = "relu".into()).unwrap_err();
    assert!(e.contains("hidden_act") && e.contains("relu"), "{e}");
    let e = parse(&|v| v["use_rotary_embeddings"] = true.into()).unwrap_err();
    assert!(e.contains("use_rotary_embeddings"), "{e}");
    let e = parse(&|v| v["num_attention_heads"] = 5.into()).unwrap_err();
    assert!(e.contains("num_attention_heads"), "{e}");
    let e = parse(&|v| v["model_type"] = "clip".into()).unwrap_err();
    assert!(e.contains("model_type"), "{e}");

    let gpu = common::gpu();
    let model = CLIPTextModel::from_dir(gpu, &golden("sd1-tiny"), DType::F32).unwrap();
    let fwd = model.prepare(gpu, 1, 0).unwrap();
    let mut ids = vec![49407u32; 77];
    ids[5] = 49408;
    let e = fwd.run(gpu, &ids).unwrap_err().to_string();
    assert!(e.contains("input_ids") && e.contains("49408"), "{e}");
    let e = fwd.run(gpu, &ids[..76]).unwrap_err().to_string();
    assert!(e.contains("input_ids"), "{e}");
    let e = model
        .prepare(gpu, 1, 3)
        .err()
        .map(|e| e.to_string())
        .unwrap();
    assert!(e.contains("clip_skip"), "{e}");
}

/// The key layout transformers 4 saves (every key under `text_model.`, plus the
/// `embeddings.position_ids` buffer), which real SD checkpoints have, loads and gives the same
/// hidden states; position ids other than 0..n are refused by name.
#[test]
fn transformers4_key_layout_loads() {
    let prefixed = |name: &str, ids: Vec<f32>| {
        edited_copy(name, move |ts| {
            for (n, _) in ts.iter_mut() {
                *n = format!("text_model.{n}");
            }
            let t = HostTensor {
                shape: vec![1, 77],
                data: ids.clone(),
            };
            ts.push(("text_model.embeddings.position_ids".into(), t));
        })
    };
    let dir = prefixed("tf4", (0..77).map(|i| i as f32).collect());
    let gpu = common::gpu();
    let io = Weights::open(&golden("sd1-tiny").join("text_io.safetensors")).unwrap();
    let ids: Vec<u32> = io
        .read_f32("input_ids", None)
        .unwrap()
        .data
        .iter()
        .map(|&v| v as u32)
        .collect();
    let want = io.read_f32("last_hidden_state", None).unwrap().data;
    let model = CLIPTextModel::from_dir(gpu, &dir, DType::F32).unwrap();
    let got = model
        .prepare(gpu, ids.len() / 77, 0)
        .unwrap()
        .forward_host(gpu, &ids)
        .unwrap();
    let e = rel_err(&got, &want);
    assert!(e <= 1e-4, "text_model. layout: {e:.3e}");
    let bad = prefixed("tf4-bad", (0..77).map(|i| (76 - i) as f32).collect());
    let e = load_err(&bad);
    assert!(e.contains("text_model.embeddings.position_ids"), "{e}");
    for d in [dir, bad] {
        std::fs::remove_dir_all(d).ok();
    }
}
