// Fuzz target bodies, shared by the bounded-time fuzz tests (`tests/fuzz.rs`, run by
// `cargo test`) and the coverage-guided cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, which
// `include!` this file). Each body writes the input where the CLI would read a file, runs the
// reader and what the CLI does next with its result without a GPU, and returns; an `Err` is
// the expected outcome for most inputs, a panic (or an abort) is the bug being hunted.
//
// Included, not a module: no `use` of crate items at the top so that both hosts compile it.

/// The fuzz targets, by the name of their corpus folder under `tests/fuzz/`.
pub const TARGETS: &[&str] = &[
    "safetensors",
    "unet_config",
    "scheduler_config",
    "idx",
    "png",
    "tokenizer",
    "sd_config",
];

/// Runs target `name` on `data`.
pub fn run_target(name: &str, data: &[u8]) {
    match name {
        "safetensors" => fuzz_safetensors(data),
        "unet_config" => fuzz_unet_config(data),
        "scheduler_config" => fuzz_scheduler_config(data),
        "idx" => fuzz_idx(data),
        "png" => fuzz_png(data),
        "tokenizer" => fuzz_tokenizer(data),
        "sd_config" => fuzz_sd_config(data),
        other => panic!("unknown fuzz target `{other}`"),
    }
}

/// This thread's scratch folder (the readers take paths, as the CLI gives them); the fuzz
/// tests remove it with [`remove_scratch`] when done.
fn scratch_dir() -> std::path::PathBuf {
    let thread = format!("{:?}", std::thread::current().id()).replace(['(', ')'], "");
    std::env::temp_dir().join(format!("diffuse-fuzz-{}-{thread}", std::process::id()))
}

/// The current input, written where the CLI would read a file.
fn scratch(ext: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = scratch_dir();
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(format!("input.{ext}"));
    std::fs::write(&path, data).expect("scratch write");
    path
}

/// Removes this thread's scratch folder (unused by the cargo-fuzz binaries).
#[allow(dead_code)]
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

/// `Weights::open` and every way the engine reads a tensor out of the file (weights, inputs,
/// FID statistics).
pub fn fuzz_safetensors(data: &[u8]) {
    let path = scratch("safetensors", data);
    // The same bytes as a classifier folder's FID statistics file.
    let dir = path.with_extension("classifier");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join(diffuse::eval::FID_STATS), data).expect("scratch write");
    let _ = diffuse::eval::read_reference_stats(&dir);
    let Ok(w) = diffuse::load::Weights::open(&path) else {
        return;
    };
    for name in w.names() {
        let shape = w.shape(&name).unwrap_or_default();
        let _ = w.stored_dtype(&name);
        let _ = w.raw(&name);
        let _ = w.read_f32(&name, None);
        let _ = w.read_f32(&name, Some(&shape));
        if let Ok(t) = w.read_input(&name, None) {
            assert!(
                t.data.iter().all(|v| v.is_finite()),
                "read_input let a non-finite value in"
            );
            assert_eq!(
                t.data.len(),
                t.shape.iter().product::<usize>(),
                "input values vs shape"
            );
        }
        if let Some(&cout) = shape.first() {
            let _ = w.int8_weight(&name, &shape);
            let _ = w.int8_weight(&name, &[cout]);
        }
    }
    let _ = w.check_all_used();
}

/// A model folder's `config.json` (UNet2DModel), and the sizes derived from it.
pub fn fuzz_unet_config(data: &[u8]) {
    let path = scratch("json", data);
    let Ok(c) = diffuse::nn::config::UNet2DConfig::from_file(&path) else {
        return;
    };
    let _ = c.time_embed_dim();
    let _ = c.timestep_input_dim();
    for &ch in &c.block_out_channels {
        let _ = c.groups_for(ch);
        let _ = c.head_dim(ch);
    }
}

/// A `scheduler_config.json` read by each reader that takes one, then turned into programs
/// as `sample`/`restore` would, for a few step counts.
pub fn fuzz_scheduler_config(data: &[u8]) {
    use diffuse::solvers::program::Buf;
    let path = scratch("json", data);
    if let Ok(cfg) = diffuse::schedule::config::SchedulerConfig::from_file(&path) {
        let _ = cfg.vp();
        for steps in [1, 2, 7, 50] {
            if let Ok(p) = diffuse::solvers::build(&cfg, steps) {
                let _ = p.check(false, false);
            }
            let _ = diffuse::solvers::inversion(&cfg, steps);
            let _ = diffuse::solvers::from_latents(&cfg, steps);
        }
    }
    if let Ok(mr) = diffuse::schedule::restoration::MrConfig::from_file(&path) {
        for steps in [1, 2, 10] {
            let _ = diffuse::solvers::mr_sampler::mrs_program(
                &mr.schedule,
                &mr.sampler,
                steps,
                mr.prediction,
                &[(Buf::X, 1.0)],
                false,
            );
        }
    }
    let _ = diffuse::schedule::restoration::ResidualConfig::from_file(&path);
}

/// An IDX image file (`eval`'s test set), plain or gzipped.
pub fn fuzz_idx(data: &[u8]) {
    let path = scratch("idx", data);
    if let Ok((v, n, h, w)) = diffuse::eval::read_idx_images(&path, 64) {
        assert_eq!(v.len(), n * h * w, "IDX values vs the reported size");
    }
}

/// A PNG input image (`restore`/`invert --input`).
pub fn fuzz_png(data: &[u8]) {
    let path = scratch("png", data);
    if let Ok((v, shape)) = diffuse::image_io::read_png(&path) {
        assert_eq!(
            v.len(),
            shape.iter().product::<usize>(),
            "PNG values vs shape"
        );
    }
}

/// A CLIP tokenizer folder (`txt2img --tokenizer DIR`, a pipeline's `tokenizer/`): the input is
/// split at NUL bytes into `vocab.json`, `merges.txt`, `tokenizer_config.json`,
/// `special_tokens_map.json` and, when there is a fifth part, `tokenizer.json` (which the reader
/// then prefers). A tokenizer that loads must encode any prompt, long words included.
pub fn fuzz_tokenizer(data: &[u8]) {
    const FILES: [&str; 5] = [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
    ];
    let dir = scratch_dir().join("tokenizer");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for (name, part) in FILES.iter().zip(data.split(|&b| b == 0)) {
        std::fs::write(dir.join(name), part).expect("scratch write");
    }
    let Ok(tok) = diffuse::load::clip_tokenizer::ClipTokenizer::from_dir(&dir) else {
        return;
    };
    let long = "ab".repeat(2000);
    for prompt in [
        "",
        "a photo of a cat!",
        "<|endoftext|> x <|startoftext|>",
        "ΟΔΟΣ 123 ß",
        &long,
    ] {
        let e = tok.encode_padded(prompt);
        assert_eq!(
            e.input_ids.len(),
            tok.model_max_length().max(2),
            "padded length"
        );
        let _ = tok.encode(prompt);
    }
}

/// The component configs of a Stable Diffusion pipeline folder: the same bytes as
/// `unet/config.json` (UNet2DConditionModel), `vae/config.json` (AutoencoderKL) and
/// `text_encoder/config.json` (CLIPTextModel), with the sizes derived from each.
pub fn fuzz_sd_config(data: &[u8]) {
    let path = scratch("json", data);
    if let Ok(u) = diffuse::nn::unet_2d_condition_config::UNet2DConditionConfig::from_file(&path) {
        let _ = u.time_embed_dim();
    }
    if let Ok(v) = diffuse::nn::vae_config::AutoencoderKLConfig::from_file(&path) {
        let _ = v.downscale();
        let _ = v.tile_latent_min_size();
    }
    let _ = diffuse::nn::clip_text::CLIPTextConfig::from_file(&path);
}
