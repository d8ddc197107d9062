//! The text encoder through a single file (original layout; SD 1.x CLIP and SD 2.x OpenCLIP with
//! fused in_proj) gives the folder's CLIPTextModel hidden states exactly, and diffusers'
//! (transformers') golden within 1e-4·max. The single file is built from the tiny folder's
//! weights following the golden keymap of `tools/sd_golden/single_file.py`.

mod common;

use diffuse::load::single_file::SingleFile;
use diffuse::load::Weights;
use diffuse::nn::clip_text::{CLIPTextConfig, CLIPTextModel};
use diffuse::DType;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;
use std::path::PathBuf;

fn dir(pipe: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/sd")
        .join(pipe)
}

/// Only the text encoder's original keys (the rest of the file is covered by sd_single_file.rs),
/// plus the minimal UNet/VAE keys `SingleFile::open` requires.
fn build(pipe: &str) -> PathBuf {
    let p = dir(pipe)
        .join("../single_file")
        .join(format!("{pipe}.json"));
    let g: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let w = Weights::open(&dir(pipe).join("text_encoder/model.safetensors")).unwrap();
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, e) in g["keys"].as_object().unwrap() {
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        let to = e["to"].as_array().unwrap();
        let text = to.first().is_some_and(|t| t[0] == "text_encoder");
        if !text && !key.starts_with("cond_stage_model.") {
            if key.ends_with("input_blocks.0.0.weight") || key.ends_with("decoder.conv_in.bias") {
                out.push((key.clone(), shape, vec![0; 2 * n]));
            }
            continue;
        }
        if to.is_empty() {
            let size = if e["dtype"] == "I64" { 8 } else { 2 };
            out.push((key.clone(), shape, vec![0; size * n]));
            continue;
        }
        let mut parts: Vec<(u64, Vec<f32>)> = to
            .iter()
            .map(|t| {
                (
                    t[2].as_u64().unwrap_or(0),
                    w.read_f32(t[1].as_str().unwrap(), None).unwrap().data,
                )
            })
            .collect();
        parts.sort_by_key(|p| p.0);
        let data: Vec<u8> = parts
            .into_iter()
            .flat_map(|p| p.1)
            .flat_map(|x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(data.len(), 2 * n);
        out.push((key.clone(), shape, data));
    }
    let views: Vec<(String, TensorView)> = out
        .iter()
        .map(|(k, s, b)| {
            let dt = if k.ends_with("position_ids") {
                Dtype::I64
            } else {
                Dtype::F16
            };
            let dt = if b.len() == 4 * s.iter().product::<usize>() {
                Dtype::F32
            } else {
                dt
            };
            (k.clone(), TensorView::new(dt, s.clone(), b).unwrap())
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let path = std::env::temp_dir().join(format!(
        "diffuse-text-sf-{}-{pipe}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn text_encoder_through_the_single_file() {
    let gpu = common::gpu();
    for pipe in ["sd1-tiny", "sd2-tiny"] {
        let sf = SingleFile::open(&build(pipe)).unwrap();
        let cfg = CLIPTextConfig::from_file(&dir(pipe).join("text_encoder/config.json")).unwrap();
        let io = Weights::open(&dir(pipe).join("text_io.safetensors")).unwrap();
        let ids: Vec<u32> = io
            .read_f32("input_ids", None)
            .unwrap()
            .data
            .iter()
            .map(|&v| v as u32)
            .collect();
        let batch = ids.len() / 77;
        for prefix in ["", "text_model."] {
            let src = sf.text_encoder(cfg.num_hidden_layers);
            let m_sf = CLIPTextModel::load(gpu, cfg.clone(), &src, prefix, DType::F32).unwrap();
            let m = CLIPTextModel::from_dir(gpu, &dir(pipe), DType::F32).unwrap();
            for (clip_skip, key) in [(0, "last_hidden_state"), (1, "clip_skip_1")] {
                let a = m_sf
                    .prepare(gpu, batch, clip_skip)
                    .unwrap()
                    .forward_host(gpu, &ids)
                    .unwrap();
                let b = m
                    .prepare(gpu, batch, clip_skip)
                    .unwrap()
                    .forward_host(gpu, &ids)
                    .unwrap();
                let want = io.read_f32(key, None).unwrap().data;
                let d = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                let ymax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let g = a
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                println!("{pipe} prefix {prefix:?} {key}: single file vs folder max|Δ| {d:e}; vs transformers {:.2e}·max", g / ymax);
                assert_eq!(d, 0.0);
                assert!(g <= 1e-4 * ymax);
            }
        }
    }
}
