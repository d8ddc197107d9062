//! `diffuse tokenize`: the printed ids are transformers' CLIPTokenizer ids of the golden corpus
//! (tests/golden/sd/tokenizer.json) for a pipeline folder, a tokenizer folder, `--tokenizer`
//! and the built-in default vocabulary; bad input names the flag or file and exits 1 with
//! nothing on stdout.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SD: &str = "tests/golden/sd";

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-tokenize-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// (success, stdout, stderr)
fn tokenize(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .arg("tokenize")
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{SD}/tokenizer.json")).unwrap()).unwrap()
}

/// Prompt indices checked through the CLI: empty, `!` runs, unicode, special-token text, and an
/// over-long prompt (> 77 tokens).
fn sample_prompts(g: &Value) -> Vec<usize> {
    let prompts = g["prompts"].as_array().unwrap();
    let find =
        |p: &dyn Fn(&str) -> bool| prompts.iter().position(|x| p(x.as_str().unwrap())).unwrap();
    vec![
        find(&|s| s.is_empty()),
        find(&|s| s.starts_with("wow!")),
        find(&|s| s.starts_with("café")),
        find(&|s| s.starts_with("hello<|endoftext|>")),
        find(&|s| s.split(' ').count() > 90),
    ]
}

fn check(g: &Value, golden_name: &str, model: &str, extra: &[&str]) {
    let prompts = g["prompts"].as_array().unwrap();
    let want = g["tokenizers_"][golden_name]["input_ids"]
        .as_array()
        .unwrap();
    let full = g["tokenizers_"][golden_name]["ids"].as_array().unwrap();
    for i in sample_prompts(g) {
        let p = prompts[i].as_str().unwrap();
        let mut args = vec!["--model", model, "--prompt", p];
        args.extend_from_slice(extra);
        let (ok, out, err) = tokenize(&args);
        assert!(ok, "{model} {p:?}: {err}");
        let got: Value = serde_json::from_str(out.trim()).expect("one JSON array on stdout");
        assert_eq!(
            &got, &want[i],
            "{golden_name} via {model} {extra:?}: prompt {i} {p:?}"
        );
        let long = full[i].as_array().unwrap().len() > 77;
        assert_eq!(
            err.contains("truncated"),
            long,
            "truncation warning for prompt {i}: {err:?}"
        );
    }
}

#[test]
fn prints_transformers_ids() {
    let g = golden();
    check(&g, "sd1-tiny", &format!("{SD}/sd1-tiny"), &[]);
    check(&g, "sd2-tiny", &format!("{SD}/sd2-tiny"), &[]);
    // A tokenizer folder as --model, and --tokenizer over the model's own.
    check(&g, "sd2-tiny", &format!("{SD}/sd2-tiny/tokenizer"), &[]);
    let sd2_tok = format!("{SD}/sd2-tiny/tokenizer");
    check(
        &g,
        "sd2-tiny",
        &format!("{SD}/sd1-tiny"),
        &["--tokenizer", &sd2_tok],
    );
}

#[test]
fn folder_without_tokenizer_uses_builtin_vocabulary() {
    let g = golden();
    let d = scratch("no-tokenizer");
    std::fs::copy(
        format!("{SD}/sd1-tiny/model_index.json"),
        d.join("model_index.json"),
    )
    .unwrap();
    check(&g, "sd1-tiny", d.to_str().unwrap(), &[]);
}

#[test]
fn bad_input_is_named() {
    let bad = |args: &[&str], what: &[&str]| {
        let (ok, out, err) = tokenize(args);
        assert!(!ok, "{args:?} must fail");
        assert!(out.is_empty(), "{args:?}: nothing on stdout, got {out:?}");
        for w in what {
            assert!(err.contains(w), "{args:?}: stderr {err:?} must name {w}");
        }
    };
    bad(
        &["--model", "no/such/dir", "--prompt", "x"],
        &["--model", "no/such/dir"],
    );
    let sd1 = format!("{SD}/sd1-tiny");
    bad(
        &[
            "--model",
            &sd1,
            "--prompt",
            "x",
            "--tokenizer",
            "no/such/tok",
        ],
        &["--tokenizer", "no/such/tok"],
    );
    bad(&["--model", &sd1], &["--prompt"]);
    // A corrupt vocab.json / merges.txt in the model's tokenizer folder.
    let d = scratch("corrupt");
    let tok = d.join("tokenizer");
    std::fs::create_dir_all(&tok).unwrap();
    for f in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
        std::fs::copy(
            Path::new(SD).join("sd1-tiny/tokenizer").join(f),
            tok.join(f),
        )
        .unwrap();
    }
    std::fs::write(tok.join("vocab.json"), "{\"a\": ").unwrap();
    bad(
        &["--model", d.to_str().unwrap(), "--prompt", "x"],
        &["vocab.json"],
    );
    std::fs::copy(
        Path::new(SD).join("sd1-tiny/tokenizer/vocab.json"),
        tok.join("vocab.json"),
    )
    .unwrap();
    std::fs::write(tok.join("merges.txt"), "#version: 0.2\nbad\n").unwrap();
    bad(
        &["--model", d.to_str().unwrap(), "--prompt", "x"],
        &["merges.txt", "line 2"],
    );
}
