//! Stable Diffusion text-to-image parity with diffusers' `StableDiffusionPipeline` on the two
//! random-weight tiny pipelines of `tools/gen_sd_golden.py` (part `pipeline`): 10 steps with
//! fixed noise, prompts and negative prompts, guided and unguided, the folder's scheduler (PNDM
//! for sd1-tiny, DDIM v-prediction for sd2-tiny) and Euler. The final latents and the VAE
//! output must be within 1e-3·max of diffusers' (f32), 1e-2·max (f16).

mod common;

use diffuse::load::clip_tokenizer::ClipTokenizer;
use diffuse::load::Weights;
use diffuse::pipeline::stable_diffusion::{PipelineFolder, StableDiffusion, Txt2Img};
use diffuse::schedule::config::SchedulerConfig;
use diffuse::DType;
use std::ops::ControlFlow;
use std::path::PathBuf;

fn dir(pipe: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/sd")
        .join(pipe)
}

fn worst(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let max = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let d = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            let d = (*g as f64 - *w as f64).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        })
        .fold(0f64, f64::max);
    (d, max)
}

fn run_pipe(pipe: &str, dtype: DType, tol: f64) {
    let gpu = common::gpu();
    let folder = PipelineFolder::read(&dir(pipe)).unwrap();
    let tok = ClipTokenizer::from_dir(&dir(pipe).join("tokenizer")).unwrap();
    let sd = StableDiffusion::load(gpu, folder, tok, dtype).unwrap();
    let io = Weights::open(&dir(pipe).join("pipeline_io.safetensors")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir(pipe).join("pipeline_cases.json")).unwrap(),
    )
    .unwrap();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        };
        let noise = io.read_f32(&format!("{name}.noise"), None).unwrap();
        let req = Txt2Img {
            prompts: strings(&case["prompt"]).unwrap(),
            negative_prompts: strings(&case["negative_prompt"]),
            steps: case["steps"].as_u64().unwrap() as usize,
            guidance: case["guidance"].as_f64().unwrap() as f32,
            width: case["width"].as_u64().unwrap() as usize,
            height: case["height"].as_u64().unwrap() as usize,
            seed: 0,
            noise: Some(noise.data),
            clip_skip: None,
        };
        let sched = SchedulerConfig::from_json(&case["scheduler_config"], name).unwrap();
        let out = sd
            .txt2img(gpu, &sched, &req, |_, _| ControlFlow::Continue(()))
            .unwrap_or_else(|e| panic!("{pipe}/{name}: {e}"));
        let want_l = io.read_f32(&format!("{name}.latents"), None).unwrap();
        let want_i = io.read_f32(&format!("{name}.image"), None).unwrap();
        assert_eq!(out.latent_shape.to_vec(), want_l.shape);
        assert_eq!(out.image_shape.to_vec(), want_i.shape);
        let (dl, ml) = worst(&out.latents, &want_l.data);
        let (di, mi) = worst(&out.image, &want_i.data);
        println!(
            "{pipe}/{name} {dtype:?}: latents max|Δ| {dl:.3e} of max {ml:.3}, image max|Δ| {di:.3e} of max {mi:.3}"
        );
        assert!(dl <= tol * ml, "{pipe}/{name}: latents off by {dl:.3e}");
        assert!(di <= tol * mi, "{pipe}/{name}: image off by {di:.3e}");
    }
}

#[test]
fn sd1_tiny_matches_diffusers_f32() {
    run_pipe("sd1-tiny", DType::F32, 1e-3);
}

#[test]
fn sd2_tiny_matches_diffusers_f32() {
    run_pipe("sd2-tiny", DType::F32, 1e-3);
}

#[test]
fn sd_tiny_f16_within_1e2() {
    run_pipe("sd1-tiny", DType::F16, 1e-2);
    run_pipe("sd2-tiny", DType::F16, 1e-2);
}

#[test]
fn folder_errors_name_the_component() {
    let tmp = std::env::temp_dir().join(format!("diffuse-sd-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // A copy of the tiny pipeline without its VAE.
    let src = dir("sd1-tiny");
    for c in ["unet", "text_encoder", "scheduler"] {
        std::fs::create_dir_all(tmp.join(c)).unwrap();
        for e in std::fs::read_dir(src.join(c)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), tmp.join(c).join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(src.join("model_index.json"), tmp.join("model_index.json")).unwrap();
    let e = PipelineFolder::read(&tmp).unwrap_err().to_string();
    assert!(e.contains("vae"), "{e}");
    // Mismatched components: the UNet's cross_attention_dim ≠ the text hidden size.
    std::fs::create_dir_all(tmp.join("vae")).unwrap();
    std::fs::copy(src.join("vae/config.json"), tmp.join("vae/config.json")).unwrap();
    let cfg = tmp.join("unet/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = text.replace("\"cross_attention_dim\": 32", "\"cross_attention_dim\": 48");
    assert_ne!(text, bad, "the golden config changed shape");
    std::fs::write(&cfg, bad).unwrap();
    let e = PipelineFolder::read(&tmp).unwrap_err().to_string();
    assert!(e.contains("cross_attention_dim"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Full-size Stable Diffusion 1.5 (the shipped `assets/configs/sd15`, random weights,
/// `load::RandomWeights`) end to end: 2 PLMS steps of txt2img with guidance at 512×512 (set
/// `DIFFUSE_SD_SIZE` for another size, `DIFFUSE_SD_DTYPE=f16|f32`), on lavapipe within its
/// binding limits (the VAE decodes in row bands where needed). Minutes to hours on a CPU
/// adapter, so ignored in CI:
/// `cargo test --release --test sd_pipeline sd15_full_size -- --ignored --nocapture`.
#[test]
#[ignore]
fn sd15_full_size_random_weights_two_steps() {
    use diffuse::load::RandomWeights;
    use diffuse::pipeline::stable_diffusion::ComponentSources;
    let size: usize = std::env::var("DIFFUSE_SD_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let dtype = match std::env::var("DIFFUSE_SD_DTYPE").as_deref() {
        Ok("f32") => DType::F32,
        _ => DType::F16,
    };
    let gpu = common::gpu();
    let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/configs/sd15");
    let folder = PipelineFolder::read(&cfg).unwrap();
    let sched = folder.scheduler.clone();
    let tok = ClipTokenizer::from_dir(&dir("sd1-tiny").join("tokenizer")).unwrap();
    let t0 = std::time::Instant::now();
    let (u, v, t) = (
        RandomWeights { seed: 1 },
        RandomWeights { seed: 2 },
        RandomWeights { seed: 3 },
    );
    let sources = ComponentSources {
        unet: &u,
        vae: &v,
        text_encoder: &t,
    };
    let sd = StableDiffusion::load_from(gpu, folder, sources, tok, dtype).unwrap();
    let load = t0.elapsed().as_secs_f64();
    let req = Txt2Img {
        prompts: vec!["a photograph of an astronaut riding a horse".into()],
        negative_prompts: None,
        steps: 2,
        guidance: 7.5,
        width: size,
        height: size,
        seed: 0,
        noise: None,
        clip_skip: None,
    };
    // Model evaluations per step of the folder's scheduler (PLMS: 2 + 1 for 2 steps).
    let program = diffuse::solvers::build(&sched, req.steps).unwrap();
    let nfe: Vec<usize> = program
        .steps
        .iter()
        .map(|s| {
            s.iter()
                .filter(|o| matches!(o, diffuse::solvers::program::Op::Model(_)))
                .count()
        })
        .collect();
    let t1 = std::time::Instant::now();
    let mut marks = Vec::new();
    let out = sd
        .txt2img(gpu, &sched, &req, |_, _| {
            // Wait for everything submitted, so each mark is the end of a step on the GPU
            // (the pipeline itself keeps one step in flight).
            let _ = gpu.device().poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            });
            marks.push(t1.elapsed().as_secs_f64());
            ControlFlow::Continue(())
        })
        .unwrap();
    let total = t1.elapsed().as_secs_f64();
    assert!(out.image.iter().all(|v| v.is_finite()));
    assert_eq!(out.image_shape, [1, 3, size, size]);
    let last = marks.last().copied().unwrap_or(0.0);
    println!(
        "SD 1.5 {dtype:?} {size}×{size}: load {load:.1} s; steps end at {marks:.1?} s \
         (model evaluations per step {nfe:?}; the first includes the text encoder and recording); \
         VAE decode + readback {:.1} s; total {total:.1} s; VAE plan {:?}",
        total - last,
        sd.vae.last_run()
    );
}
