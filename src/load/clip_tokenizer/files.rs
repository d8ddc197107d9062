//! Reading a CLIP tokenizer from files: a transformers tokenizer folder (`vocab.json` +
//! `merges.txt`, or `tokenizer.json`, with `tokenizer_config.json` / `special_tokens_map.json`)
//! or OpenAI CLIP's / open_clip's merges file `bpe_simple_vocab_16e6.txt`.

use super::{bytes_to_unicode, ClipTokenizer, MODEL_MAX_LENGTH};
use crate::error::{Error, Result};
use crate::load::read_json;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Token → id.
type Vocab = HashMap<String, u32>;
/// Merge pairs in rank order.
type Merges = Vec<(String, String)>;

/// The special tokens of a tokenizer and its sequence length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: String,
    pub pad: String,
    pub unk: Option<String>,
    /// Further added tokens (`added_tokens_decoder`, tokenizer.json's `added_tokens`).
    pub extra: Vec<String>,
    /// Contents of added tokens matched in normalised text (`"normalized": true`).
    pub normalized: Vec<String>,
    pub model_max_length: usize,
}

impl Default for SpecialTokens {
    /// CLIP's, as SD 1.x tokenizers have them: pad is `<|endoftext|>`.
    fn default() -> Self {
        Self {
            bos: "<|startoftext|>".into(),
            eos: "<|endoftext|>".into(),
            pad: "<|endoftext|>".into(),
            unk: Some("<|endoftext|>".into()),
            extra: Vec::new(),
            normalized: Vec::new(),
            model_max_length: MODEL_MAX_LENGTH,
        }
    }
}

impl SpecialTokens {
    /// Every added token as (content, normalized); duplicates are dropped by the caller.
    pub(super) fn added_tokens(&self) -> Vec<(String, bool)> {
        let mut all: Vec<&String> = vec![&self.bos, &self.eos, &self.pad];
        all.extend(self.unk.iter());
        all.extend(self.extra.iter());
        all.into_iter()
            .map(|t| (t.clone(), self.normalized.contains(t)))
            .collect()
    }
}

/// The tokenizer folder for `--model DIR`: `DIR/tokenizer/` of a pipeline folder, or DIR itself
/// when it holds `vocab.json` or `tokenizer.json`; None when neither (the caller then uses the
/// default vocabulary).
pub fn resolve_tokenizer_dir(model: &Path) -> Option<PathBuf> {
    let sub = model.join("tokenizer");
    if sub.is_dir() {
        return Some(sub);
    }
    if model.join("vocab.json").is_file() || model.join("tokenizer.json").is_file() {
        return Some(model.to_path_buf());
    }
    None
}

fn load_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Load {
        file: path.display().to_string(),
        reason: reason.into(),
    }
}

fn config_err(path: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        file: path.display().to_string(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// A token field: a string, or an `AddedToken` object (`{"content": …, "normalized": …}`).
/// Returns (content, normalized).
fn token_field(path: &Path, field: &str, v: &Value) -> Result<Option<(String, bool)>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some((s.clone(), false))),
        Value::Object(o) => {
            check_added_token(path, field, o)?;
            let content = o.get("content").and_then(Value::as_str).ok_or_else(|| {
                config_err(path, field, "an AddedToken without a string `content`")
            })?;
            Ok(Some((
                content.to_string(),
                o.get("normalized")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            )))
        }
        _ => Err(config_err(
            path,
            field,
            "expected a string or an AddedToken object",
        )),
    }
}

/// lstrip/rstrip/single_word change where a token matches; CLIP's tokens never set them.
fn check_added_token(path: &Path, field: &str, o: &serde_json::Map<String, Value>) -> Result<()> {
    for flag in ["lstrip", "rstrip", "single_word"] {
        if o.get(flag).and_then(Value::as_bool).unwrap_or(false) {
            return Err(config_err(
                path,
                &format!("{field}.{flag}"),
                "true is not supported (CLIP tokenizers never set it)",
            ));
        }
    }
    Ok(())
}

/// The token fields a config file sets explicitly: (field, content, normalized) with field one
/// of bos/eos/unk/pad_token (an explicit null unk_token is ("unk_token", "", false)), and the
/// `added_tokens_decoder` entries.
type Fields = Vec<(String, String, bool)>;

fn token_fields(path: &Path, cfg: &Value, fields: &mut Fields) -> Result<()> {
    for field in ["bos_token", "eos_token", "unk_token", "pad_token"] {
        let Some(v) = cfg.get(field) else { continue };
        let (content, normalized) = token_field(path, field, v)?.unwrap_or_default();
        if content.is_empty() && field != "unk_token" {
            return Err(config_err(path, field, "null or empty"));
        }
        fields.retain(|(f, _, _)| f != field);
        fields.push((field.to_string(), content, normalized));
    }
    if let Some(Value::Object(dec)) = cfg.get("added_tokens_decoder") {
        for (id, v) in dec {
            let field = format!("added_tokens_decoder.{id}");
            if let Some((content, normalized)) = token_field(path, &field, v)? {
                fields.push((field, content, normalized));
            }
        }
    }
    Ok(())
}

/// The special tokens and `model_max_length` of a tokenizer folder: tokenizer_config.json,
/// then special_tokens_map.json over it (as transformers loads them); CLIP's defaults for what
/// neither sets. A missing `model_max_length` is 77 (the CLIP text encoder's positions).
///
/// Which added tokens match in normalised (lowercased) text follows what transformers 5.24
/// does with legacy configs holding `"normalized": true` AddedToken objects (as the published
/// SD 1.5 / 2.1 tokenizer folders do), found by testing it: the flags of the explicitly set
/// unk_token, pad_token and added_tokens_decoder entries, in that order, the last one for a
/// content winning; eos_token's own flag is dropped (it always registers as not normalised);
/// bos_token keeps its flag.
pub fn read_special_tokens(dir: &Path) -> Result<SpecialTokens> {
    let mut sp = SpecialTokens::default();
    let mut fields = Fields::new();
    let cfg_path = dir.join("tokenizer_config.json");
    if cfg_path.is_file() {
        let cfg = read_json(&cfg_path)?;
        if !cfg.is_object() {
            return Err(load_err(&cfg_path, "expected a JSON object"));
        }
        token_fields(&cfg_path, &cfg, &mut fields)?;
        if let Some(v) = cfg.get("model_max_length") {
            let n = v
                .as_f64()
                .filter(|n| *n >= 3.0 && n.fract() == 0.0)
                .ok_or_else(|| {
                    config_err(
                        &cfg_path,
                        "model_max_length",
                        format!("expected an integer ≥ 3, got {v}"),
                    )
                })?;
            // transformers writes 1e30 ("very large") when a tokenizer has no limit.
            sp.model_max_length = if n > 1e9 {
                MODEL_MAX_LENGTH
            } else {
                n as usize
            };
        }
        if let Some(cls) = cfg.get("tokenizer_class").and_then(Value::as_str) {
            if !matches!(cls, "CLIPTokenizer" | "CLIPTokenizerFast") {
                return Err(config_err(
                    &cfg_path,
                    "tokenizer_class",
                    format!("{cls:?} is not a CLIP tokenizer"),
                ));
            }
        }
    }
    let map_path = dir.join("special_tokens_map.json");
    if map_path.is_file() {
        let map = read_json(&map_path)?;
        if !map.is_object() {
            return Err(load_err(&map_path, "expected a JSON object"));
        }
        let dec: Fields = fields
            .iter()
            .filter(|f| f.0.starts_with("added_tokens_decoder"))
            .cloned()
            .collect();
        fields.retain(|f| !f.0.starts_with("added_tokens_decoder"));
        token_fields(&map_path, &map, &mut fields)?;
        fields.extend(dec);
    }
    let mut flags: Vec<(String, bool)> = Vec::new();
    let mut set_flag = |content: &str, normalized: bool| {
        flags.retain(|(c, _)| c != content);
        flags.push((content.to_string(), normalized));
    };
    for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
        if let Some((_, content, normalized)) = fields.iter().find(|f| f.0 == key) {
            match key {
                "bos_token" => sp.bos = content.clone(),
                "eos_token" => sp.eos = content.clone(),
                "unk_token" => sp.unk = (!content.is_empty()).then(|| content.clone()),
                _ => sp.pad = content.clone(),
            }
            if !content.is_empty() {
                set_flag(content, *normalized && key != "eos_token");
            }
        }
    }
    for (_, content, normalized) in fields
        .iter()
        .filter(|f| f.0.starts_with("added_tokens_decoder"))
    {
        set_flag(content, *normalized);
        sp.extra.push(content.clone());
    }
    sp.normalized = flags.into_iter().filter(|f| f.1).map(|f| f.0).collect();
    Ok(sp)
}

/// `vocab.json`: token → id.
pub fn read_vocab_json(path: &Path) -> Result<HashMap<String, u32>> {
    let v = read_json(path)?;
    vocab_from_value(path, &v)
}

fn vocab_from_value(path: &Path, v: &Value) -> Result<HashMap<String, u32>> {
    let obj = v
        .as_object()
        .ok_or_else(|| load_err(path, "the vocabulary is not a JSON object of token → id"))?;
    let mut vocab = HashMap::with_capacity(obj.len());
    for (tok, id) in obj {
        let id = id
            .as_u64()
            .filter(|&i| i < u32::MAX as u64)
            .ok_or_else(|| {
                load_err(
                    path,
                    format!("token {tok:?}: id {id} is not a non-negative integer"),
                )
            })?;
        vocab.insert(tok.clone(), id as u32);
    }
    if vocab.is_empty() {
        return Err(load_err(path, "empty vocabulary"));
    }
    Ok(vocab)
}

/// `merges.txt`: one `a b` pair a line in rank order; a leading `#version` line and empty lines
/// are skipped.
pub fn read_merges_txt(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| load_err(path, e.to_string()))?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if (n == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        merges.push(merge_pair(line).ok_or_else(|| {
            load_err(
                path,
                format!("line {}: {line:?} is not a merge `a b`", n + 1),
            )
        })?);
    }
    if merges.is_empty() {
        return Err(load_err(path, "no merges"));
    }
    Ok(merges)
}

fn merge_pair(line: &str) -> Option<(String, String)> {
    let mut it = line.split(' ');
    let (a, b) = (it.next()?, it.next()?);
    (it.next().is_none() && !a.is_empty() && !b.is_empty()).then(|| (a.to_string(), b.to_string()))
}

/// tokenizer.json (tokenizers' format): vocabulary, merges and added tokens of a BPE model.
fn read_tokenizer_json(path: &Path, sp: &mut SpecialTokens) -> Result<(Vocab, Merges)> {
    let v = read_json(path)?;
    let model = v
        .get("model")
        .ok_or_else(|| config_err(path, "model", "missing"))?;
    let ty = model.get("type").and_then(Value::as_str);
    if ty != Some("BPE") {
        return Err(config_err(
            path,
            "model.type",
            format!("{ty:?}: a CLIP tokenizer is a BPE model"),
        ));
    }
    for (field, want) in [
        ("end_of_word_suffix", "</w>"),
        ("continuing_subword_prefix", ""),
    ] {
        match model.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == want => {}
            Some(other) => {
                return Err(config_err(
                    path,
                    &format!("model.{field}"),
                    format!("{other}: CLIP's is {want:?}"),
                ))
            }
        }
    }
    let vocab = vocab_from_value(
        path,
        model
            .get("vocab")
            .ok_or_else(|| config_err(path, "model.vocab", "missing"))?,
    )?;
    check_text_pipeline(path, &v)?;
    let list = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| config_err(path, "model.merges", "missing or not a list"))?;
    let mut merges = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let pair = match m {
            Value::String(s) => merge_pair(s),
            Value::Array(a) if a.len() == 2 => a[0]
                .as_str()
                .zip(a[1].as_str())
                .map(|(x, y)| (x.to_string(), y.to_string())),
            _ => None,
        };
        merges.push(pair.ok_or_else(|| {
            config_err(
                path,
                &format!("model.merges[{i}]"),
                format!("{m} is not a merge pair"),
            )
        })?);
    }
    if let Some(added) = v.get("added_tokens").and_then(Value::as_array) {
        for (i, a) in added.iter().enumerate() {
            let field = format!("added_tokens[{i}]");
            // These are the tokenizer's own added tokens: their flags win over the configs'.
            if let Some((content, normalized)) = token_field(path, &field, a)? {
                sp.normalized.retain(|c| *c != content);
                if normalized {
                    sp.normalized.push(content.clone());
                }
                sp.extra.push(content);
            }
        }
    }
    Ok((vocab, merges))
}

/// tokenizer.json's normaliser and pre-tokenizer must be CLIP's (NFC, `\s+` → " ", lowercase;
/// CLIP's split pattern, with or without the special-token alternatives transformers 5 adds,
/// then byte-level); another text pipeline would change the ids, so it is refused by name.
fn check_text_pipeline(path: &Path, v: &Value) -> Result<()> {
    let clip_norm = serde_json::json!([{"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Lowercase"}]);
    if let Some(n) = v.get("normalizer").filter(|n| !n.is_null()) {
        if n.get("normalizers") != Some(&clip_norm) {
            return Err(config_err(
                path,
                "normalizer",
                "not CLIP's (NFC, whitespace runs to one space, lowercase)",
            ));
        }
    }
    if let Some(p) = v.get("pre_tokenizer").filter(|p| !p.is_null()) {
        let steps = p
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // transformers 4 wrote the pattern without the two special-token alternatives.
        let short = super::CLIP_PATTERN
            .split_once("|'s")
            .map(|(_, rest)| format!("'s{rest}"));
        let split_ok = steps.first().is_some_and(|s| {
            let pat = s.pointer("/pattern/Regex").and_then(Value::as_str);
            s.get("type").and_then(Value::as_str) == Some("Split")
                && pat
                    .is_some_and(|pat| pat == super::CLIP_PATTERN || Some(pat) == short.as_deref())
                && s.get("invert").and_then(Value::as_bool) == Some(true)
        });
        let byte_ok = steps.len() == 2
            && steps[1].get("type").and_then(Value::as_str) == Some("ByteLevel")
            && steps[1].get("add_prefix_space").and_then(Value::as_bool) != Some(true)
            && steps[1].get("use_regex").and_then(Value::as_bool) != Some(false);
        if !(split_ok && byte_ok) {
            return Err(config_err(
                path,
                "pre_tokenizer",
                "not CLIP's (its split pattern, then byte-level)",
            ));
        }
    }
    Ok(())
}

impl ClipTokenizer {
    /// A transformers tokenizer folder: `tokenizer.json` when present (as transformers prefers
    /// it), else `vocab.json` + `merges.txt`; special tokens from `tokenizer_config.json` and
    /// `special_tokens_map.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(load_err(dir, "no such tokenizer folder"));
        }
        let mut sp = read_special_tokens(dir)?;
        let tj = dir.join("tokenizer.json");
        let (vocab, merges, source) = if tj.is_file() {
            let (v, m) = read_tokenizer_json(&tj, &mut sp)?;
            (v, m, tj)
        } else {
            let (vj, mt) = (dir.join("vocab.json"), dir.join("merges.txt"));
            for f in [&vj, &mt] {
                if !f.is_file() {
                    return Err(load_err(f, "missing (a CLIP tokenizer folder has vocab.json + merges.txt, or tokenizer.json)"));
                }
            }
            (
                read_vocab_json(&vj)?,
                read_merges_txt(&mt)?,
                dir.join("vocab.json + merges.txt"),
            )
        };
        Self::new(vocab, merges, &sp, &source.display().to_string())
    }

    /// OpenAI CLIP's merges file (`bpe_simple_vocab_16e6.txt`, decompressed), vocabulary built as
    /// CLIP's `SimpleTokenizer` builds it: the 256 byte characters, the same with `</w>`, the
    /// first 48 894 merges (lines 2..) joined, `<|startoftext|>`, `<|endoftext|>` — the ids of
    /// transformers' `openai/clip-vit-large-patch14` vocab.json. `source` names it in errors.
    pub fn from_clip_bpe_merges(text: &str, special: &SpecialTokens, source: &str) -> Result<Self> {
        const MERGES: usize = 49152 - 256 - 2;
        let err = |reason: String| Error::Load {
            file: source.into(),
            reason,
        };
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < MERGES + 1 {
            return Err(err(format!(
                "{} lines; CLIP's BPE file has at least {}",
                lines.len(),
                MERGES + 1
            )));
        }
        let mut merges = Vec::with_capacity(MERGES);
        for (n, line) in lines[1..=MERGES].iter().enumerate() {
            merges
                .push(merge_pair(line).ok_or_else(|| {
                    err(format!("line {}: {line:?} is not a merge `a b`", n + 2))
                })?);
        }
        // CLIP's table lists the printable bytes first (as themselves), then the others.
        let mut chars: Vec<char> = bytes_to_unicode().to_vec();
        chars.sort_by_key(|&c| (c as u32) >= 0x100);
        let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        tokens.extend(chars.iter().map(|c| format!("{c}</w>")));
        tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        tokens.push("<|startoftext|>".into());
        tokens.push("<|endoftext|>".into());
        let vocab: HashMap<String, u32> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        if vocab.len() != 49408 {
            return Err(err(format!(
                "{} distinct tokens; CLIP's vocabulary has 49408",
                vocab.len()
            )));
        }
        Self::new(vocab, merges, special, source)
    }
}
