//! `diffuse tokenize`: a prompt's CLIP input ids as the Stable Diffusion pipeline's text encoder
//! takes them (padded to 77), printed as one JSON array; and the tokenizer look-up the SD
//! subcommands share (`--tokenizer DIR`, the model folder's `tokenizer/`, or the shipped
//! default vocabulary).

use super::arg_error;
use clap::Args;
use diffuse::load::clip_tokenizer::{
    read_special_tokens, resolve_tokenizer_dir, ClipTokenizer, SpecialTokens,
};
use diffuse::Error;
use std::io::Read;
use std::path::{Path, PathBuf};

/// OpenAI CLIP's BPE merges (MIT; assets/clip/LICENSE), built into the binary so that it works
/// from any directory.
const DEFAULT_BPE_GZ: &[u8] = include_bytes!("../../../assets/clip/bpe_simple_vocab_16e6.txt.gz");
const DEFAULT_BPE_NAME: &str = "assets/clip/bpe_simple_vocab_16e6.txt.gz (built in)";

#[derive(Args)]
pub(crate) struct TokenizeArgs {
    /// A diffusers Stable Diffusion pipeline folder (its `tokenizer/` is used), or a tokenizer
    /// folder itself (vocab.json + merges.txt, or tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The prompt.
    #[arg(long, allow_hyphen_values = true)]
    prompt: String,
    /// A tokenizer folder to use instead of the model's.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

/// The built-in CLIP vocabulary with CLIP's special tokens and `pad` as the pad token
/// (`<|endoftext|>` in SD 1.x tokenizers, `!` in SD 2.x ones).
pub(crate) fn default_tokenizer(pad: &str) -> Result<ClipTokenizer, Error> {
    let special = SpecialTokens {
        pad: pad.into(),
        ..SpecialTokens::default()
    };
    default_vocabulary(&special)
}

/// The built-in CLIP vocabulary with the given special tokens.
fn default_vocabulary(special: &SpecialTokens) -> Result<ClipTokenizer, Error> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DEFAULT_BPE_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::Load {
            file: DEFAULT_BPE_NAME.into(),
            reason: e.to_string(),
        })?;
    ClipTokenizer::from_clip_bpe_merges(&text, special, DEFAULT_BPE_NAME)
}

/// The tokenizer of a Stable Diffusion run: `--tokenizer DIR` when given, else `model`'s
/// `tokenizer/` (or `model` itself when it is a tokenizer folder), else the built-in default
/// (SD 1.x's pad token). `op` names the subcommand in errors.
pub(crate) fn load_tokenizer(
    op: &'static str,
    model: &Path,
    tokenizer: Option<&Path>,
) -> Result<ClipTokenizer, Error> {
    if let Some(dir) = tokenizer {
        if !dir.is_dir() {
            return Err(arg_error(
                op,
                "--tokenizer",
                format!("{}: no such folder", dir.display()),
            ));
        }
        return ClipTokenizer::from_dir(dir);
    }
    if !model.exists() {
        return Err(arg_error(
            op,
            "--model",
            format!("{}: no such file or folder", model.display()),
        ));
    }
    match model
        .is_dir()
        .then(|| resolve_tokenizer_dir(model))
        .flatten()
    {
        // A config-only tokenizer folder (the shipped `assets/configs/*/tokenizer/`: special
        // tokens, no vocabulary) takes the built-in vocabulary with its special tokens.
        Some(dir) if !dir.join("vocab.json").is_file() && !dir.join("tokenizer.json").is_file() => {
            default_vocabulary(&read_special_tokens(&dir)?)
        }
        Some(dir) => ClipTokenizer::from_dir(&dir),
        None => {
            log::info!(
                "{}: no tokenizer folder; using the built-in CLIP vocabulary",
                model.display()
            );
            default_tokenizer("<|endoftext|>")
        }
    }
}

pub(crate) fn tokenize(a: TokenizeArgs) -> Result<(), Error> {
    let tok = load_tokenizer("tokenize", &a.model, a.tokenizer.as_deref())?;
    let enc = tok.encode_padded(&a.prompt);
    if enc.truncated > 0 {
        // As diffusers warns: the prompt is cut, the run goes on.
        eprintln!(
            "warning: the prompt was truncated: {} of its tokens are past CLIP's {} (bos and eos included)",
            enc.truncated,
            tok.model_max_length()
        );
    }
    let ids: Vec<String> = enc.input_ids.iter().map(u32::to_string).collect();
    println!("[{}]", ids.join(", "));
    Ok(())
}
