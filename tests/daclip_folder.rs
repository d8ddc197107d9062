//! The converted DA-CLIP folder on the host (no GPU): the tensor layouts against the official
//! state dicts (tests/golden/daclip/manifests.json, tools/daclip_golden/manifests.py), the
//! converter's tiny folder (tests/golden/daclip/tiny, written by tools/convert_daclip.py from
//! official checkpoint files), and bad folders → errors naming the file and field or tensor.

use diffuse::error::Error;
use diffuse::pipeline::daclip_folder::{is_daclip_folder, read_header, DaclipFolder};
use diffuse::pipeline::daclip_tensors::{conditional_unet, daclip_visual, UNetDims, VisionDims};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/daclip")
}

fn as_map(v: &[(String, Vec<usize>)]) -> BTreeMap<String, Vec<usize>> {
    let m: BTreeMap<_, _> = v.iter().cloned().collect();
    assert_eq!(m.len(), v.len(), "a name listed twice");
    m
}

fn official(v: &serde_json::Value) -> BTreeMap<String, Vec<usize>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let shape = e[1].as_array().unwrap();
            (
                e[0].as_str().unwrap().to_string(),
                shape.iter().map(|d| d.as_u64().unwrap() as usize).collect(),
            )
        })
        .collect()
}

fn assert_same(
    ours: &BTreeMap<String, Vec<usize>>,
    theirs: &BTreeMap<String, Vec<usize>>,
    what: &str,
) {
    for (k, s) in theirs {
        assert_eq!(ours.get(k), Some(s), "{what}: `{k}`");
    }
    for k in ours.keys() {
        assert!(
            theirs.contains_key(k),
            "{what}: `{k}` is not in the official state dict"
        );
    }
}

#[test]
fn layouts_match_the_official_state_dicts() {
    let text = std::fs::read_to_string(golden().join("manifests.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let unets = m["conditional_unet"].as_array().unwrap();
    assert!(unets.len() >= 5);
    for u in unets {
        let c = &u["config"];
        let d = UNetDims {
            in_nc: c["in_nc"].as_u64().unwrap() as usize,
            out_nc: c["out_nc"].as_u64().unwrap() as usize,
            nf: c["nf"].as_u64().unwrap() as usize,
            ch_mult: c["ch_mult"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect(),
            context_dim: c["context_dim"].as_u64().map(|x| x as usize),
            use_degra_context: c["use_degra_context"].as_bool().unwrap(),
            use_image_context: c["use_image_context"].as_bool().unwrap(),
        };
        assert_same(
            &as_map(&conditional_unet(&d)),
            &official(&u["tensors"]),
            &format!("{d:?}"),
        );
    }
    let visions = m["daclip_visual"].as_array().unwrap();
    assert!(visions.len() >= 3);
    for v in visions {
        let c = &v["vision_cfg"];
        let width = c["width"].as_u64().unwrap() as usize;
        let d = VisionDims {
            width,
            layers: c["layers"].as_u64().unwrap() as usize,
            patch_size: c["patch_size"].as_u64().unwrap() as usize,
            image_size: c["image_size"].as_u64().unwrap() as usize,
            mlp_width: (width as f64 * c["mlp_ratio"].as_f64().unwrap()) as usize,
            embed_dim: v["embed_dim"].as_u64().unwrap() as usize,
        };
        assert_same(
            &as_map(&daclip_visual(&d)),
            &official(&v["tensors"]),
            &format!("{d:?}"),
        );
    }
}

#[test]
fn the_converted_tiny_folder_reads() {
    let dir = golden().join("tiny");
    assert!(is_daclip_folder(&dir));
    assert!(!is_daclip_folder(&golden()));
    let f = DaclipFolder::read(&dir).unwrap();
    assert_eq!(f.sample_range, (0.0, 1.0));
    assert_eq!(
        f.unet,
        UNetDims {
            in_nc: 3,
            out_nc: 3,
            nf: 32,
            ch_mult: vec![1, 1, 1, 1],
            context_dim: Some(256),
            use_degra_context: true,
            use_image_context: true,
        }
    );
    assert_eq!(
        f.vision,
        VisionDims {
            width: 128,
            layers: 2,
            patch_size: 16,
            image_size: 224,
            mlp_width: 512,
            embed_dim: 256,
        }
    );
    // The released process and the MR Sampler defaults of mrsampler.yml.
    assert_eq!(f.scheduler.schedule.theta.len(), 101);
    assert!((f.scheduler.schedule.max_sigma - 50.0 / 255.0).abs() < 1e-15);
    let s = f.scheduler.sampler;
    assert_eq!((s.order, s.lambda_min, s.denoise_last), (2, -5.0, false));
    // Stored as F16 (the golden's weights are F16-rounded official values).
    let h = read_header(&dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    assert!(h.iter().all(|(_, d, _)| d == "F16"));
}

/// A copy of the tiny folder in a fresh temp dir.
fn copy_tiny(tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("diffuse-daclip-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    let src = golden().join("tiny");
    for sub in ["", "unet", "daclip", "scheduler"] {
        std::fs::create_dir_all(dst.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), dst.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    dst
}

/// Rewrites a safetensors file's header with `edit` (the data bytes are kept).
pub fn edit_header(
    path: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) {
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

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn read_err(dir: &Path) -> (Error, String) {
    let e = DaclipFolder::read(dir).unwrap_err();
    let s = e.to_string();
    let _ = std::fs::remove_dir_all(dir);
    (e, s)
}

#[test]
fn a_missing_tensor_is_named() {
    let d = copy_tiny("missing");
    edit_header(&d.join("unet/diffusion_pytorch_model.safetensors"), |h| {
        h.remove("downs.3.2.fn.fn.transformer_blocks.0.attn2.to_k.weight");
    });
    let (e, s) = read_err(&d);
    assert!(matches!(e, Error::MissingTensor { .. }), "{s}");
    assert!(
        s.contains("downs.3.2.fn.fn.transformer_blocks.0.attn2.to_k.weight") && s.contains("unet"),
        "{s}"
    );

    let d = copy_tiny("missing-zero");
    edit_header(&d.join("daclip/model.safetensors"), |h| {
        h.remove("visual_control.transformer.zero_modules.1.bias");
    });
    let (_, s) = read_err(&d);
    assert!(
        s.contains("visual_control.transformer.zero_modules.1.bias")
            && s.contains("model.safetensors"),
        "{s}"
    );
}

#[test]
fn a_wrong_shape_is_named() {
    let d = copy_tiny("shape");
    edit_header(&d.join("daclip/model.safetensors"), |h| {
        h.get_mut("visual.proj").unwrap()["shape"] = serde_json::json!([256, 128]);
    });
    let (e, s) = read_err(&d);
    assert!(matches!(e, Error::TensorShape { .. }), "{s}");
    assert!(
        s.contains("visual.proj") && s.contains("[256, 128]") && s.contains("[128, 256]"),
        "{s}"
    );
}

#[test]
fn an_extra_tensor_is_named() {
    let d = copy_tiny("extra");
    edit_header(&d.join("unet/diffusion_pytorch_model.safetensors"), |h| {
        let t = h["final_conv.bias"].clone();
        h.insert("final_conv.extra".into(), t);
    });
    let (_, s) = read_err(&d);
    assert!(s.contains("final_conv.extra"), "{s}");
}

#[test]
fn a_context_dim_that_is_not_the_embed_dim_is_named() {
    let d = copy_tiny("ctx");
    edit_json(&d.join("unet/config.json"), |v| {
        v["context_dim"] = 512.into()
    });
    let (_, s) = read_err(&d);
    assert!(
        s.contains("context_dim") && s.contains("embed_dim 256") && s.contains("unet"),
        "{s}"
    );
}

#[test]
fn bad_index_and_components_are_named() {
    let d = copy_tiny("class");
    edit_json(&d.join("model_index.json"), |v| {
        v["_class_name"] = "StableDiffusionPipeline".into()
    });
    let (_, s) = read_err(&d);
    assert!(
        s.contains("_class_name") && s.contains("model_index.json"),
        "{s}"
    );

    let d = copy_tiny("component");
    std::fs::remove_dir_all(d.join("daclip")).unwrap();
    let (_, s) = read_err(&d);
    assert!(s.contains("image_encoder") && s.contains("daclip"), "{s}");

    let d = copy_tiny("range");
    edit_json(&d.join("model_index.json"), |v| {
        v["sample_range"] = serde_json::json!([1.0, 0.0])
    });
    let (_, s) = read_err(&d);
    assert!(s.contains("sample_range"), "{s}");

    let d = copy_tiny("sched");
    edit_json(&d.join("scheduler/scheduler_config.json"), |v| {
        v["solver_order"] = 7.into()
    });
    let (_, s) = read_err(&d);
    assert!(
        s.contains("solver_order") && s.contains("scheduler_config.json"),
        "{s}"
    );

    let d = copy_tiny("weights");
    std::fs::remove_file(d.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let (_, s) = read_err(&d);
    assert!(s.contains("diffusion_pytorch_model.safetensors"), "{s}");
}
