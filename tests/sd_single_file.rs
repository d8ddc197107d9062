//! Single-file (original LDM layout) Stable Diffusion checkpoints, `load::single_file`, against
//! diffusers' single-file loader. The goldens (`tools/sd_golden/single_file.py` →
//! `tests/golden/sd/single_file/<name>.json`) hold, per original key, its shape and which
//! diffusers parameters (rows, squeeze) diffusers' converters take from it — asked of diffusers
//! on tagged tensors, and for the two tiny pipelines verified with `from_single_file`
//! reproducing the folders' weights exactly. Here:
//! - the engine's key mapping equals diffusers' on every key of both tiny pipelines and of the
//!   full SD 1.5 and SD 2.1 architectures (shapes only);
//! - a single file built from each tiny folder's weights *following the golden keymap* (not
//!   our mapping) loads through `SingleFile`, serves every UNet/VAE/text-encoder parameter
//!   bit-identical to the folder, and gives UNet and VAE outputs identical to the folder's;
//! - bad files (unknown layout, missing key, wrong shape, unaccounted key) are errors naming
//!   the file and the key.

mod common;

use diffuse::load::single_file::keymap::{self, Take, TextLayout, UNetLayout};
use diffuse::load::single_file::{SdVersion, SingleFile};
use diffuse::load::{WeightSource, Weights};
use diffuse::nn::autoencoder_kl::AutoencoderKL;
use diffuse::nn::unet_2d_condition::UNet2DConditionModel;
use diffuse::nn::unet_2d_condition_config::{CrossUpBlockType, UNet2DConditionConfig};
use diffuse::nn::vae_config::AutoencoderKLConfig;
use diffuse::schedule::config::SchedulerConfig;
use diffuse::DType;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TINY: [&str; 2] = ["sd1-tiny", "sd2-tiny"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(name: &str) -> Value {
    let p = root().join(format!("tests/golden/sd/single_file/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The pipeline folder (tiny) or the shipped config folder (full size) of a golden.
fn config_dir(name: &str) -> PathBuf {
    match name {
        "sd15" | "sd21" => root().join("assets/configs").join(name),
        _ => root().join("tests/golden/sd").join(name),
    }
}

fn unet_config(dir: &Path) -> UNet2DConditionConfig {
    UNet2DConditionConfig::from_file(&dir.join("unet/config.json")).unwrap()
}

fn vae_config(dir: &Path) -> AutoencoderKLConfig {
    AutoencoderKLConfig::from_file(&dir.join("vae/config.json")).unwrap()
}

fn text_layers(dir: &Path) -> usize {
    let v = diffuse::load::read_json(&dir.join("text_encoder/config.json")).unwrap();
    v["num_hidden_layers"].as_u64().unwrap() as usize
}

fn layout(c: &UNet2DConditionConfig) -> UNetLayout {
    UNetLayout {
        layers_per_block: c.layers_per_block.clone(),
        up_cross_attention: c
            .up_block_types
            .iter()
            .map(|t| matches!(t, CrossUpBlockType::CrossAttnUpBlock2D))
            .collect(),
    }
}

fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// (component, diffusers name, rows, squeeze) of one golden target.
fn target(t: &Value) -> (String, String, Option<(usize, usize)>, bool) {
    let rows = t[2]
        .as_u64()
        .map(|a| (a as usize, t[3].as_u64().unwrap() as usize));
    (
        t[0].as_str().unwrap().to_string(),
        t[1].as_str().unwrap().to_string(),
        rows,
        t[4].as_bool().unwrap(),
    )
}

#[test]
fn keymap_equals_diffusers_on_tiny_and_full_sd15_sd21() {
    for name in ["sd1-tiny", "sd2-tiny", "sd15", "sd21"] {
        let g = golden(name);
        let dir = config_dir(name);
        let (ucfg, vcfg) = (unet_config(&dir), vae_config(&dir));
        let (ul, blocks, layers) = (
            layout(&ucfg),
            vcfg.block_out_channels.len(),
            text_layers(&dir),
        );
        let text = match g["text"].as_str().unwrap() {
            "clip" => TextLayout::Clip,
            _ => TextLayout::OpenClip,
        };
        let (mut mapped, mut unused) = (0, 0);
        for (key, e) in g["keys"].as_object().unwrap() {
            let to = e["to"].as_array().unwrap();
            let shape = shape_of(&e["shape"]);
            if to.is_empty() {
                assert!(
                    keymap::known_unused(key, Some(layers)).is_some(),
                    "{name}: `{key}` feeds no parameter in diffusers but is not known-unused here"
                );
                unused += 1;
                continue;
            }
            assert_eq!(
                keymap::known_unused(key, Some(layers)),
                None,
                "{name}: {key}"
            );
            for t in to {
                let (comp, pname, rows, squeeze) = target(t);
                let src = match comp.as_str() {
                    "unet" => keymap::unet_source(&pname, &ul),
                    "vae" => keymap::vae_source(&pname, blocks),
                    _ => keymap::text_source(&pname, text),
                };
                let src = src.unwrap_or_else(|| panic!("{name}: no source for {comp} `{pname}`"));
                assert_eq!(&src.key, key, "{name}: {comp} `{pname}`");
                let want = match (rows, squeeze) {
                    (None, false) => Take::Whole,
                    (None, true) => Take::Squeeze,
                    (Some((r0, r1)), _) => {
                        let third = shape[0] / 3;
                        assert_eq!(r1 - r0, third, "{name}: {key} rows");
                        Take::Third(r0 / third)
                    }
                };
                assert_eq!(src.take, want, "{name}: {comp} `{pname}` from `{key}`");
                // the name with transformers' `text_model.` level maps the same
                if comp == "text_encoder" {
                    let s2 = keymap::text_source(&format!("text_model.{pname}"), text).unwrap();
                    assert_eq!(s2, src);
                }
                mapped += 1;
            }
        }
        println!("{name}: {mapped} parameters map to diffusers' keys, {unused} keys known-unused");
        assert!(mapped > 400 && unused >= 14, "{name}: golden too small");
    }
}

/// A tensor of a built file: dtype, shape, little-endian bytes.
type Entry = (Dtype, Vec<usize>, Vec<u8>);

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// The original-layout tensors of tiny pipeline `name`, gathered from its folder's weights
/// following the golden keymap; keys feeding nothing get zeros of their golden dtype/shape.
fn build_from_golden(name: &str) -> BTreeMap<String, Entry> {
    let g = golden(name);
    let dir = config_dir(name);
    let files = [
        (
            "unet",
            Weights::open(&dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap(),
        ),
        (
            "vae",
            Weights::open(&dir.join("vae/diffusion_pytorch_model.safetensors")).unwrap(),
        ),
        (
            "text_encoder",
            Weights::open(&dir.join("text_encoder/model.safetensors")).unwrap(),
        ),
    ];
    let mut out = BTreeMap::new();
    for (key, e) in g["keys"].as_object().unwrap() {
        let shape = shape_of(&e["shape"]);
        let n: usize = shape.iter().product();
        let to = e["to"].as_array().unwrap();
        if to.is_empty() {
            let (dt, size) = match e["dtype"].as_str().unwrap() {
                "F32" => (Dtype::F32, 4),
                "I64" => (Dtype::I64, 8),
                "I32" => (Dtype::I32, 4),
                _ => (Dtype::F16, 2),
            };
            out.insert(key.clone(), (dt, shape, vec![0u8; n * size]));
            continue;
        }
        let mut parts: Vec<(usize, Vec<f32>)> = to
            .iter()
            .map(|t| {
                let (comp, pname, rows, _) = target(t);
                let w = &files.iter().find(|(c, _)| *c == comp).unwrap().1;
                (
                    rows.map_or(0, |r| r.0),
                    w.read_f32(&pname, None).unwrap().data,
                )
            })
            .collect();
        parts.sort_by_key(|p| p.0);
        let data: Vec<f32> = parts.into_iter().flat_map(|p| p.1).collect();
        assert_eq!(data.len(), n, "{name}: {key}");
        out.insert(key.clone(), (Dtype::F16, shape, f16_bytes(&data)));
    }
    out
}

fn write(tensors: &BTreeMap<String, Entry>, file: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diffuse-sd-single-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (dt, s, b))| (k.clone(), TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let p = dir.join(file);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiny_single_files_load_like_their_folders() {
    let gpu = common::gpu();
    for name in TINY {
        let dir = config_dir(name);
        let path = write(&build_from_golden(name), &format!("{name}.safetensors"));
        let sf = SingleFile::open(&path).unwrap();
        let want_text = if name == "sd1-tiny" {
            TextLayout::Clip
        } else {
            TextLayout::OpenClip
        };
        assert_eq!(sf.text_layout(), want_text);
        // cross-attention width 32 identifies neither SD 1.x nor 2.x
        assert_eq!(sf.version(), None);
        let e = sf.default_config_dir().unwrap_err().to_string();
        assert!(
            e.contains("attn2.to_k.weight") && e.contains("--config"),
            "{e}"
        );

        let (ucfg, vcfg) = (unet_config(&dir), vae_config(&dir));
        let usrc = sf.unet(layout(&ucfg));
        let vsrc = sf.vae(vcfg.block_out_channels.len());
        let tsrc = sf.text_encoder(text_layers(&dir));
        // every folder parameter is served bit-identical
        for (sub, file, src) in [
            ("unet", "diffusion_pytorch_model.safetensors", &usrc),
            ("vae", "diffusion_pytorch_model.safetensors", &vsrc),
            ("text_encoder", "model.safetensors", &tsrc),
        ] {
            let w = Weights::open(&dir.join(sub).join(file)).unwrap();
            for p in w.names() {
                let want = w.read_f32(&p, None).unwrap();
                let got = src.read_f32(&p, &want.shape).unwrap();
                assert_eq!(got, want, "{name}: {sub} `{p}`");
            }
            println!(
                "{name}: {sub}: {} parameters identical to the folder's",
                w.names().len()
            );
        }
        // the models load through the single file; outputs identical to the folder's
        let unet_sf = UNet2DConditionModel::load(gpu, ucfg, &usrc, DType::F32).unwrap();
        let vae_sf = AutoencoderKL::load(gpu, vcfg, &vsrc, DType::F32).unwrap();
        sf.check_all_used().unwrap();
        let unet = UNet2DConditionModel::from_dir(gpu, &dir, DType::F32).unwrap();
        let vae = AutoencoderKL::from_dir(gpu, &dir, DType::F32).unwrap();
        let io = Weights::open(&dir.join("unet_io.safetensors")).unwrap();
        let r = |k: &str| io.read_f32(k, None).unwrap();
        let (x, t, ehs) = (
            r("square.sample"),
            r("square.timestep"),
            r("square.encoder_hidden_states"),
        );
        let run = |m: &UNet2DConditionModel| {
            let s = &x.shape;
            m.prepare_text_len(gpu, s[0], s[2], s[3], ehs.shape[1])
                .unwrap()
                .forward_host(gpu, &x.data, &t.data, &ehs.data)
                .unwrap()
        };
        let (a, b) = (run(&unet_sf), run(&unet));
        let d = max_abs_diff(&a, &b);
        let ymax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        println!("{name}: UNet single file vs folder: max|Δ| {d:e} (max|y| {ymax:.3})");
        assert_eq!(d, 0.0, "{name}: UNet outputs differ");
        let io = Weights::open(&dir.join("vae_io.safetensors")).unwrap();
        let z = io.read_f32("decode_latents", None).unwrap();
        let (a, _) = vae_sf.decode_host(gpu, &z.data, &z.shape).unwrap();
        let (b, _) = vae.decode_host(gpu, &z.data, &z.shape).unwrap();
        let d = max_abs_diff(&a, &b);
        println!("{name}: VAE decode single file vs folder: max|Δ| {d:e}");
        assert_eq!(d, 0.0, "{name}: VAE outputs differ");
        let img = io.read_f32("encode_image", None).unwrap();
        let (m1, l1, _) = vae_sf.encode_host(gpu, &img.data, &img.shape).unwrap();
        let (m2, l2, _) = vae.encode_host(gpu, &img.data, &img.shape).unwrap();
        assert_eq!(
            max_abs_diff(&m1, &m2),
            0.0,
            "{name}: VAE encode mean differs"
        );
        assert_eq!(
            max_abs_diff(&l1, &l2),
            0.0,
            "{name}: VAE encode logvar differs"
        );
    }
}

/// Loads all three components of `sf` (tiny pipeline `name`) on the host, then the
/// accounting; the first error.
fn load_all(name: &str, sf: &SingleFile) -> Result<(), diffuse::Error> {
    let gpu = common::gpu();
    let dir = config_dir(name);
    let (ucfg, vcfg) = (unet_config(&dir), vae_config(&dir));
    UNet2DConditionModel::load(gpu, ucfg, &sf.unet(layout(&unet_config(&dir))), DType::F32)?;
    AutoencoderKL::load(
        gpu,
        vcfg.clone(),
        &sf.vae(vcfg.block_out_channels.len()),
        DType::F32,
    )?;
    let t = sf.text_encoder(text_layers(&dir));
    let w = Weights::open(&dir.join("text_encoder/model.safetensors")).unwrap();
    for p in w.names() {
        t.tensor(gpu, &p, &w.shape(&p).unwrap(), DType::F32)?;
    }
    sf.check_all_used()
}

fn err_of(name: &str, edit: impl FnOnce(&mut BTreeMap<String, Entry>), file: &str) -> String {
    let mut t = build_from_golden(name);
    edit(&mut t);
    let path = write(&t, file);
    let e = match SingleFile::open(&path) {
        Err(e) => e,
        Ok(sf) => load_all(name, &sf).expect_err("a bad file was accepted"),
    };
    let s = e.to_string();
    assert!(s.contains(file), "error does not name the file: {s}");
    println!("{file}: {s}");
    s
}

#[test]
fn bad_files_are_errors_naming_the_key() {
    // unknown layouts
    let unet_folder = config_dir("sd1-tiny").join("unet/diffusion_pytorch_model.safetensors");
    let e = SingleFile::open(&unet_folder).err().unwrap().to_string();
    assert!(
        e.contains("diffusers-layout") && e.contains("diffusion_pytorch_model"),
        "{e}"
    );
    let e = err_of(
        "sd1-tiny",
        |t| {
            let v: Vec<(String, Entry)> = std::mem::take(t).into_iter().collect();
            for (k, e) in v {
                t.insert(k.replace("model.diffusion_model.", "net."), e);
            }
        },
        "layout.safetensors",
    );
    assert!(
        e.contains("not an original-layout") && e.contains("net.input_blocks.*"),
        "{e}"
    );
    let e = err_of(
        "sd2-tiny",
        |t| t.retain(|k, _| !k.starts_with("cond_stage_model.")),
        "notext.safetensors",
    );
    assert!(
        e.contains("no text encoder") && e.contains("no cond_stage_model"),
        "{e}"
    );
    let e = err_of(
        "sd1-tiny",
        |t| {
            let x = t["betas"].clone();
            t.insert("control_model.zero_convs.0.0.weight".into(), x);
        },
        "foreign.safetensors",
    );
    assert!(e.contains("`control_model.zero_convs.0.0.weight`"), "{e}");
    // a missing key
    let k = "model.diffusion_model.output_blocks.2.1.conv.weight";
    let e = err_of("sd1-tiny", |t| drop(t.remove(k)), "missing.safetensors");
    assert!(
        e.contains(k) && e.contains("up_blocks.0.upsamplers.0.conv.weight"),
        "{e}"
    );
    // a wrong shape (OpenCLIP in_proj for a wider model)
    let k = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias";
    let e = err_of(
        "sd2-tiny",
        |t| {
            let x = t.get_mut(k).unwrap();
            x.1 = vec![99];
            x.2 = vec![0; 99 * 2];
        },
        "shape.safetensors",
    );
    assert!(
        e.contains(k) && e.contains("[99]") && e.contains("[96]"),
        "{e}"
    );
    // a VAE attention weight neither 1×1 conv nor linear
    let k = "first_stage_model.decoder.mid.attn_1.v.weight";
    let e = err_of(
        "sd1-tiny",
        |t| {
            let x = t.get_mut(k).unwrap();
            x.1 = vec![64, 64, 1, 1, 1];
        },
        "vshape.safetensors",
    );
    assert!(e.contains(k), "{e}");
    // unaccounted keys inside a component's group
    let e = err_of(
        "sd1-tiny",
        |t| {
            let x = t["model.diffusion_model.out.0.bias"].clone();
            t.insert(
                "model.diffusion_model.input_blocks.1.0.lora_up.weight".into(),
                x,
            );
        },
        "extra.safetensors",
    );
    assert!(
        e.contains("`model.diffusion_model.input_blocks.1.0.lora_up.weight`"),
        "{e}"
    );
    // OpenCLIP: one block past num_hidden_layers is known-unused (SD 2.x), two are not
    let e = err_of(
        "sd2-tiny",
        |t| {
            let add: Vec<(String, Entry)> = t
                .iter()
                .filter(|(k, _)| k.contains("resblocks.2."))
                .map(|(k, v)| (k.replace("resblocks.2.", "resblocks.3."), v.clone()))
                .collect();
            t.extend(add);
        },
        "blocks.safetensors",
    );
    assert!(e.contains("resblocks.3."), "{e}");
    // non-float weights
    let k = "first_stage_model.encoder.conv_in.bias";
    let e = err_of(
        "sd1-tiny",
        |t| {
            let x = t.get_mut(k).unwrap();
            x.0 = Dtype::I16;
        },
        "dtype.safetensors",
    );
    assert!(e.contains(k) && e.contains("I16"), "{e}");
}

/// A small file with the keys diffusers' version inference reads (and one of each group).
fn probe_file(cross: usize, cin: usize, text: &str, file: &str) -> PathBuf {
    let z = |s: &[usize]| {
        (
            Dtype::F16,
            s.to_vec(),
            vec![0u8; 2 * s.iter().product::<usize>()],
        )
    };
    let mut t = BTreeMap::new();
    t.insert(
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight".into(),
        z(&[320, cross]),
    );
    t.insert(
        "model.diffusion_model.input_blocks.0.0.weight".into(),
        z(&[320, cin, 3, 3]),
    );
    t.insert("first_stage_model.decoder.conv_in.bias".into(), z(&[512]));
    t.insert(text.into(), z(&[77, 8]));
    write(&t, file)
}

#[test]
fn version_and_default_config_from_the_keys() {
    let clip = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight";
    let open_clip = "cond_stage_model.model.token_embedding.weight";
    let v1 = SingleFile::open(&probe_file(768, 4, clip, "v1.safetensors")).unwrap();
    assert_eq!(v1.version(), Some(SdVersion::V1));
    assert_eq!(
        v1.default_config_dir().unwrap(),
        root().join("assets/configs/sd15")
    );
    let v2 = SingleFile::open(&probe_file(1024, 4, open_clip, "v2.safetensors")).unwrap();
    assert_eq!(v2.version(), Some(SdVersion::V2));
    assert_eq!(v2.text_layout(), TextLayout::OpenClip);
    assert_eq!(
        v2.default_config_dir().unwrap(),
        root().join("assets/configs/sd21")
    );
    let inpaint = SingleFile::open(&probe_file(768, 9, clip, "inpaint.safetensors")).unwrap();
    assert_eq!(inpaint.version(), None);
    let e = inpaint.default_config_dir().unwrap_err().to_string();
    assert!(
        e.contains("inpaint.safetensors") && e.contains("[320, 9, 3, 3]"),
        "{e}"
    );
}

#[test]
fn shipped_configs_parse_and_match_the_published_architectures() {
    for (name, cross, layers, act, prediction) in [
        ("sd15", 768, 12, "quick_gelu", None),
        ("sd21", 1024, 23, "gelu", Some("v_prediction")),
    ] {
        let dir = root().join("assets/configs").join(name);
        let u = unet_config(&dir);
        assert_eq!(u.cross_attention_dim, cross, "{name}");
        assert_eq!(u.block_out_channels, vec![320, 640, 1280, 1280]);
        assert_eq!(u.use_linear_projection, name == "sd21");
        let v = vae_config(&dir);
        assert_eq!(v.block_out_channels, vec![128, 256, 512, 512]);
        assert!((v.scaling_factor - 0.18215).abs() < 1e-12);
        let t = diffuse::load::read_json(&dir.join("text_encoder/config.json")).unwrap();
        assert_eq!(t["hidden_size"].as_u64(), Some(cross as u64));
        assert_eq!(t["num_hidden_layers"].as_u64(), Some(layers));
        assert_eq!(t["hidden_act"].as_str(), Some(act));
        let s = dir.join("scheduler/scheduler_config.json");
        SchedulerConfig::from_file(&s).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sv = diffuse::load::read_json(&s).unwrap();
        assert_eq!(sv["prediction_type"].as_str(), prediction);
        let mi = diffuse::load::read_json(&dir.join("model_index.json")).unwrap();
        assert_eq!(mi["unet"][1].as_str(), Some("UNet2DConditionModel"));
        let tk = diffuse::load::read_json(&dir.join("tokenizer/special_tokens_map.json")).unwrap();
        let pad = if name == "sd21" { "!" } else { "<|endoftext|>" };
        assert_eq!(tk["pad_token"].as_str(), Some(pad));
    }
}

/// The whole text-to-image pipeline from a single file with the folder's configs
/// (`StableDiffusion::load_single_file`, what `diffuse txt2img --model FILE --config DIR` runs)
/// reproduces diffusers' run of the folder (the golden `noguide` case of tools/sd_golden/pipeline.py).
#[test]
fn txt2img_from_a_single_file_matches_diffusers() {
    use diffuse::load::clip_tokenizer::ClipTokenizer;
    use diffuse::pipeline::stable_diffusion::{PipelineFolder, StableDiffusion, Txt2Img};
    let gpu = common::gpu();
    for name in TINY {
        let dir = config_dir(name);
        let path = write(
            &build_from_golden(name),
            &format!("{name}-pipe.safetensors"),
        );
        let sf = SingleFile::open(&path).unwrap();
        let folder = PipelineFolder::read(&dir).unwrap();
        let sched = folder.scheduler.clone();
        let tok = ClipTokenizer::from_dir(&dir.join("tokenizer")).unwrap();
        let sd = StableDiffusion::load_single_file(gpu, folder, &sf, tok, DType::F32).unwrap();
        let io = Weights::open(&dir.join("pipeline_io.safetensors")).unwrap();
        let req = Txt2Img {
            prompts: vec!["a red cube".into()],
            negative_prompts: None,
            steps: 10,
            guidance: 1.0,
            width: 48,
            height: 32,
            seed: 0,
            noise: Some(io.read_f32("noguide.noise", None).unwrap().data),
            clip_skip: None,
        };
        let out = sd
            .txt2img(
                gpu,
                &sched,
                &req,
                |_, _| std::ops::ControlFlow::Continue(()),
            )
            .unwrap();
        let want = io.read_f32("noguide.latents", None).unwrap();
        let m = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(&out.latents, &want.data);
        println!("{name}: txt2img from the single file: latents max|Δ| {d:.3e} of max {m:.3}");
        assert!(d <= 1e-3 * m, "{name}: {d}");
    }
}
