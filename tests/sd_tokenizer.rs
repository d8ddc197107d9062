//! The CLIP BPE tokenizer against transformers' `CLIPTokenizer` (tests/golden/sd/tokenizer.json,
//! from tools/gen_sd_golden.py part `tokenizer`): identical ids on the whole prompt corpus for
//! both tiny pipelines' tokenizer folders, for the legacy (SD 1.5 / 2.1 style) config files and
//! for a tokenizer.json folder; the shipped default vocabulary gives sd1-tiny's ids; bad files
//! are refused by name.

use diffuse::load::clip_tokenizer::{ClipTokenizer, SpecialTokens, MODEL_MAX_LENGTH};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

const SD: &str = "tests/golden/sd";
/// CLIP's split pattern as transformers 5 writes it in tokenizer.json, and as transformers 4 did.
const CLIP_PATTERN_5: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const CLIP_PATTERN_4: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

struct Golden {
    prompts: Vec<String>,
    tokenizers: serde_json::Map<String, Value>,
}

fn golden() -> Golden {
    let text =
        std::fs::read_to_string(format!("{SD}/tokenizer.json")).expect("golden tokenizer.json");
    let v: Value = serde_json::from_str(&text).expect("golden JSON");
    let prompts = v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    Golden {
        prompts,
        tokenizers: v["tokenizers_"].as_object().unwrap().clone(),
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Every prompt of the corpus: untruncated ids, padded ids and the truncated count as
/// transformers gives them. Returns how many prompts were checked.
fn check_corpus(tok: &ClipTokenizer, g: &Golden, name: &str) -> usize {
    let want = &g.tokenizers[name];
    assert_eq!(
        tok.pad_token_id() as u64,
        want["pad_token_id"].as_u64().unwrap(),
        "{name}: pad id"
    );
    assert_eq!(
        tok.model_max_length() as u64,
        want["model_max_length"].as_u64().unwrap(),
        "{name}: max length"
    );
    let (full, padded) = (
        want["ids"].as_array().unwrap(),
        want["input_ids"].as_array().unwrap(),
    );
    assert_eq!(full.len(), g.prompts.len());
    for (i, p) in g.prompts.iter().enumerate() {
        let (f, pd) = (ids(&full[i]), ids(&padded[i]));
        assert_eq!(tok.encode(p), f, "{name}: prompt {i} {p:?}");
        let enc = tok.encode_padded(p);
        assert_eq!(enc.input_ids, pd, "{name}: padded prompt {i} {p:?}");
        assert_eq!(enc.input_ids.len(), MODEL_MAX_LENGTH);
        assert_eq!(
            enc.truncated,
            f.len().saturating_sub(MODEL_MAX_LENGTH),
            "{name}: truncated count, prompt {i}"
        );
    }
    g.prompts.len()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "diffuse-sd-tokenizer-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_vocab(to: &Path) {
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(format!("{SD}/sd1-tiny/tokenizer/{f}"), to.join(f)).unwrap();
    }
}

fn err_text(r: diffuse::Result<ClipTokenizer>) -> String {
    r.map(|_| ()).expect_err("expected an error").to_string()
}

#[test]
fn corpus_matches_transformers_for_both_pipelines() {
    let g = golden();
    assert!(
        g.prompts.len() >= 30,
        "corpus of {} prompts",
        g.prompts.len()
    );
    for name in ["sd1-tiny", "sd2-tiny"] {
        let tok = ClipTokenizer::from_dir(Path::new(&format!("{SD}/{name}/tokenizer"))).unwrap();
        let n = check_corpus(&tok, &g, name);
        eprintln!("{name}: {n} prompts identical");
    }
}

#[test]
fn sd2_pad_token_splits_every_exclamation_mark() {
    let sd1 = ClipTokenizer::from_dir(Path::new(&format!("{SD}/sd1-tiny/tokenizer"))).unwrap();
    let sd2 = ClipTokenizer::from_dir(Path::new(&format!("{SD}/sd2-tiny/tokenizer"))).unwrap();
    let (bang, wow) = (
        sd1.token_to_id("!</w>").unwrap(),
        sd1.token_to_id("wow</w>").unwrap(),
    );
    assert_eq!(
        sd1.encode("wow!!"),
        vec![49406, wow, sd1.token_to_id("!!</w>").unwrap(), 49407],
        "sd1: `!!` is one BPE word"
    );
    assert_eq!(sd1.encode("wow !"), vec![49406, wow, bang, 49407]);
    assert_eq!(sd2.token_to_id("!"), Some(0));
    assert_eq!(
        sd2.encode("wow!!"),
        vec![49406, wow, 0, 0, 49407],
        "sd2: each `!` is the pad token, id 0"
    );
    assert_eq!(
        sd2.encode_padded("wow!").input_ids[..5],
        [49406, wow, 0, 49407, 0]
    );
}

#[test]
fn legacy_configs_match_transformers() {
    let g = golden();
    let names: Vec<String> = g
        .tokenizers
        .keys()
        .filter_map(|k| k.strip_prefix("legacy-"))
        .map(String::from)
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    for name in names {
        let d = scratch(&format!("legacy-{name}"));
        for f in ["tokenizer_config.json", "special_tokens_map.json"] {
            let src = format!("{SD}/tokenizer-legacy/{name}/{f}");
            if Path::new(&src).is_file() {
                std::fs::copy(&src, d.join(f)).unwrap();
            }
        }
        copy_vocab(&d);
        let tok = ClipTokenizer::from_dir(&d).unwrap();
        check_corpus(&tok, &g, &format!("legacy-{name}"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A tokenizer.json as tokenizers writes it (added tokens, BPE model with vocab and merges as
/// pairs or as "a b" strings) built from sd2-tiny's vocab.json/merges.txt: the same ids.
#[test]
fn tokenizer_json_folder_matches_vocab_folder() {
    let g = golden();
    let src = format!("{SD}/sd2-tiny/tokenizer");
    let vocab: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{src}/vocab.json")).unwrap())
            .unwrap();
    let merges: Vec<String> = std::fs::read_to_string(format!("{src}/merges.txt"))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for as_pairs in [true, false] {
        let m: Vec<Value> = merges
            .iter()
            .map(|l| {
                if as_pairs {
                    let (a, b) = l.split_once(' ').unwrap();
                    serde_json::json!([a, b])
                } else {
                    serde_json::json!(l)
                }
            })
            .collect();
        let added = |id: u32, c: &str| serde_json::json!({"id": id, "content": c, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
        let tj = serde_json::json!({
            "version": "1.0",
            "added_tokens": [added(0, "!"), added(49406, "<|startoftext|>"), added(49407, "<|endoftext|>")],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": if as_pairs { CLIP_PATTERN_5 } else { CLIP_PATTERN_4 }}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>", "continuing_subword_prefix": "",
                      "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": m},
        });
        let d = scratch(&format!("tj-{as_pairs}"));
        std::fs::write(
            d.join("tokenizer.json"),
            serde_json::to_string(&tj).unwrap(),
        )
        .unwrap();
        std::fs::copy(
            format!("{src}/tokenizer_config.json"),
            d.join("tokenizer_config.json"),
        )
        .unwrap();
        let tok = ClipTokenizer::from_dir(&d).unwrap();
        check_corpus(&tok, &g, "sd2-tiny");
        // Another text pipeline (no lowercasing, another split pattern) is refused by name.
        let mut other = tj.clone();
        other["normalizer"]["normalizers"]
            .as_array_mut()
            .unwrap()
            .pop();
        std::fs::write(
            d.join("tokenizer.json"),
            serde_json::to_string(&other).unwrap(),
        )
        .unwrap();
        let e = err_text(ClipTokenizer::from_dir(&d));
        assert!(
            e.contains("tokenizer.json") && e.contains("normalizer"),
            "{e}"
        );
        let mut other = tj.clone();
        other["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = serde_json::json!(r"\w+");
        std::fs::write(
            d.join("tokenizer.json"),
            serde_json::to_string(&other).unwrap(),
        )
        .unwrap();
        let e = err_text(ClipTokenizer::from_dir(&d));
        assert!(
            e.contains("tokenizer.json") && e.contains("pre_tokenizer"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

fn shipped_bpe() -> String {
    let gz = std::fs::read("assets/clip/bpe_simple_vocab_16e6.txt.gz").expect("shipped vocabulary");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn shipped_default_vocabulary_matches_sd1_tokenizer() {
    let g = golden();
    let tok = ClipTokenizer::from_clip_bpe_merges(
        &shipped_bpe(),
        &SpecialTokens::default(),
        "bpe_simple_vocab_16e6.txt.gz",
    )
    .unwrap();
    // The same vocabulary, id for id, as transformers' vocab.json of the tiny pipelines.
    let vocab: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{SD}/sd1-tiny/tokenizer/vocab.json")).unwrap(),
    )
    .unwrap();
    let vocab = vocab.as_object().unwrap();
    assert_eq!(tok.vocab_size(), vocab.len());
    for (t, id) in vocab {
        assert_eq!(
            tok.token_to_id(t).map(u64::from),
            id.as_u64(),
            "token {t:?}"
        );
    }
    check_corpus(&tok, &g, "sd1-tiny");
}

#[test]
fn bad_files_are_named() {
    // Missing folder, missing merges.txt.
    let e = err_text(ClipTokenizer::from_dir(Path::new(
        "tests/golden/sd/no-such-tokenizer",
    )));
    assert!(e.contains("no-such-tokenizer"), "{e}");
    let d = scratch("bad");
    std::fs::copy(
        format!("{SD}/sd1-tiny/tokenizer/vocab.json"),
        d.join("vocab.json"),
    )
    .unwrap();
    let e = err_text(ClipTokenizer::from_dir(&d));
    assert!(e.contains("merges.txt") && e.contains("missing"), "{e}");
    // A corrupt merges line names the file and the line.
    std::fs::write(
        d.join("merges.txt"),
        "#version: 0.2\ni n\nthree part line\n",
    )
    .unwrap();
    let e = err_text(ClipTokenizer::from_dir(&d));
    assert!(e.contains("merges.txt") && e.contains("line 3"), "{e}");
    // A merge whose tokens are not in the vocabulary.
    copy_vocab(&d);
    std::fs::write(
        d.join("merges.txt"),
        "#version: 0.2\ni n\n\u{3b1}\u{3b1} \u{3b2}\n",
    )
    .unwrap();
    let e = err_text(ClipTokenizer::from_dir(&d));
    assert!(
        e.contains("merges.txt") && e.contains("merge 2") && e.contains("not in the vocabulary"),
        "{e}"
    );
    // Corrupt vocab.json: not JSON, not an object of ids, missing the byte alphabet.
    copy_vocab(&d);
    for (bad, what) in [
        ("{\"a\": 1,", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("{\"a\": -1}", "id"),
        ("{\"a\": 0}", "byte-level"),
    ] {
        std::fs::write(d.join("vocab.json"), bad).unwrap();
        let e = err_text(ClipTokenizer::from_dir(&d));
        assert!(e.contains("vocab.json") && e.contains(what), "{bad}: {e}");
    }
    copy_vocab(&d);
    // Config files: a non-CLIP tokenizer class, a bad model_max_length, a pad token not in the
    // vocabulary is added (as transformers does) but a token field of the wrong type is refused.
    for (cfg, field) in [
        (r#"{"tokenizer_class": "T5Tokenizer"}"#, "tokenizer_class"),
        (r#"{"model_max_length": "77"}"#, "model_max_length"),
        (r#"{"pad_token": 5}"#, "pad_token"),
        (
            r#"{"pad_token": {"__type": "AddedToken", "content": "!", "lstrip": true}}"#,
            "pad_token.lstrip",
        ),
        ("{not json", "tokenizer_config.json"),
    ] {
        std::fs::write(d.join("tokenizer_config.json"), cfg).unwrap();
        let e = err_text(ClipTokenizer::from_dir(&d));
        assert!(
            e.contains("tokenizer_config.json") && e.contains(field),
            "{cfg}: {e}"
        );
    }
    std::fs::remove_file(d.join("tokenizer_config.json")).unwrap();
    std::fs::write(d.join("special_tokens_map.json"), r#"{"eos_token": null}"#).unwrap();
    let e = err_text(ClipTokenizer::from_dir(&d));
    assert!(
        e.contains("special_tokens_map.json") && e.contains("eos_token"),
        "{e}"
    );
    std::fs::remove_file(d.join("special_tokens_map.json")).unwrap();
    // tokenizer.json of another model type.
    std::fs::write(
        d.join("tokenizer.json"),
        r#"{"model": {"type": "WordPiece", "vocab": {}}}"#,
    )
    .unwrap();
    let e = err_text(ClipTokenizer::from_dir(&d));
    assert!(
        e.contains("tokenizer.json") && e.contains("model.type"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
    // A truncated CLIP BPE file names its source.
    let text = shipped_bpe();
    let e = err_text(ClipTokenizer::from_clip_bpe_merges(
        &text[..1000],
        &SpecialTokens::default(),
        "cut.txt",
    ));
    assert!(e.contains("cut.txt"), "{e}");
}
