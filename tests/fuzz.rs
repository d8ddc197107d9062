//! Bounded-time fuzzing of every reader a user's file reaches: safetensors, `config.json`,
//! `scheduler_config.json` (all three readers), IDX test sets, PNG inputs, CLIP tokenizer
//! folders and Stable Diffusion component configs. Each test first
//! replays its corpus (`tests/fuzz/<target>/`: seeds plus every crash ever found, kept as
//! regression cases), then mutates the corpus for `DIFFUSE_FUZZ_SECS` seconds (default 60) with
//! a deterministic, seeded havoc mutator (`DIFFUSE_FUZZ_SEED`, default 0) that knows the
//! formats' weak spots: little/big-endian size fields, JSON numbers and strings, gzip framing.
//! A panic fails the test and saves the input under `target/tmp/fuzz-crashes/`; add it to the
//! corpus once fixed. The same target bodies run under cargo-fuzz (`fuzz/`) for
//! coverage-guided runs.

#[path = "fuzz/targets.rs"]
mod targets;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// xorshift64*: deterministic, seeded per target.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING_U64: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    16,
    255,
    256,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0001,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

const INTERESTING_TEXT: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "-0",
    "0.5",
    "1e12",
    "1e308",
    "-1e308",
    "1e-320",
    "NaN",
    "Infinity",
    "-Infinity",
    "4294967297",
    "4611686018427387904",
    "18446744073709551615",
    "18446744073709551616",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "[0,0]",
    "[1,2,3,4,5,6,7,8,9]",
    "\"F32\"",
    "\"F16\"",
    "\"BF16\"",
    "\"I8\"",
    "\"I64\"",
    "\"U8\"",
    "\"F64\"",
    "\"linear\"",
    "\"squaredcos_cap_v2\"",
    "\"scaled_linear\"",
    "\"epsilon\"",
    "\"v_prediction\"",
    "\"sample\"",
    "\"trailing\"",
    "\"leading\"",
    "\"karras\"",
];

/// One havoc mutation of `data` (`other` is a second corpus entry to splice with).
fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.below(11) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = [0u8, 1, 0x7f, 0x80, 0xff, b'"', b',', b'-', b'9'][rng.below(9)];
        }
        2 if len >= 8 => {
            // A size field: 4 or 8 bytes, either endianness.
            let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
            let wide = rng.below(2) == 0;
            let w = if wide { 8 } else { 4 };
            let i = rng.below(len - w + 1);
            let bytes: Vec<u8> = match (wide, rng.below(2) == 0) {
                (true, true) => v.to_le_bytes().to_vec(),
                (true, false) => v.to_be_bytes().to_vec(),
                (false, true) => (v as u32).to_le_bytes().to_vec(),
                (false, false) => (v as u32).to_be_bytes().to_vec(),
            };
            data[i..i + w].copy_from_slice(&bytes);
        }
        3 if len > 1 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            data.drain(a..b);
        }
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            let chunk = data[a..b].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        5 if len > 0 => data.truncate(rng.below(len)),
        6 if !other.is_empty() => {
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        7 | 8 => {
            // A JSON token: a number or a string value replaced by an interesting one.
            let tokens = json_tokens(data);
            if let Some(&(a, b)) = tokens.get(rng.below(tokens.len().max(1))) {
                let t = INTERESTING_TEXT[rng.below(INTERESTING_TEXT.len())];
                data.splice(a..b, t.bytes());
            }
        }
        9 => {
            // A JSON key duplicated (`"k": v, "k": v`).
            if let Some(open) = data.iter().position(|&c| c == b'{') {
                let tokens = json_tokens(data);
                if let Some(&(a, b)) = tokens.get(rng.below(tokens.len().max(1))) {
                    if a > open {
                        let t = data[a..b].to_vec();
                        let mut ins = b"\"dup\":".to_vec();
                        ins.extend_from_slice(&t);
                        ins.push(b',');
                        data.splice(open + 1..open + 1, ins);
                    }
                }
            }
        }
        _ => {
            let n = 1 + rng.below(16);
            for _ in 0..n {
                data.push(rng.next() as u8);
            }
        }
    }
}

/// Byte ranges of JSON-looking number and string tokens (quotes included) in `data`.
fn json_tokens(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() && out.len() < 4096 {
        let c = data[i];
        if c == b'"' {
            let start = i;
            i += 1;
            while i < data.len() && data[i] != b'"' {
                i += 1;
            }
            if i < data.len() {
                out.push((start, i + 1));
            }
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < data.len() && (data[i].is_ascii_alphanumeric() || b"-+.".contains(&data[i])) {
                i += 1;
            }
            out.push((start, i));
            continue;
        }
        i += 1;
    }
    out
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// FNV-1a, for crash file names and per-target seeds.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn save_crash(target: &str, data: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
    std::fs::create_dir_all(&dir).expect("crash dir");
    let path = dir.join(format!("{target}-{:016x}", fnv1a(data)));
    std::fs::write(&path, data).expect("crash file");
    path
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz(target: &str) {
    let seeds = corpus(target);
    // Every corpus entry (seeds and past crashes) must pass before any mutation.
    for (name, data) in &seeds {
        if catch_unwind(AssertUnwindSafe(|| targets::run_target(target, data))).is_err() {
            panic!("corpus entry tests/fuzz/{target}/{name} panics");
        }
    }
    let budget = Duration::from_secs(env_u64("DIFFUSE_FUZZ_SECS", 60));
    let mut rng = Rng::new(env_u64("DIFFUSE_FUZZ_SEED", 0) ^ fnv1a(target.as_bytes()));
    let start = Instant::now();
    let (mut runs, mut crashes) = (0u64, Vec::new());
    while start.elapsed() < budget && crashes.len() < 8 {
        let (_, base) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let mut data = base.clone();
        for _ in 0..1 + rng.below(6) {
            mutate_once(&mut rng, &mut data, other);
        }
        if target == "idx" && rng.below(4) == 0 {
            data = gzip(&data);
        }
        runs += 1;
        if catch_unwind(AssertUnwindSafe(|| targets::run_target(target, &data))).is_err() {
            crashes.push(save_crash(target, &data));
        }
    }
    targets::remove_scratch();
    eprintln!(
        "fuzz {target}: {runs} inputs in {:.1} s, {} crashes",
        start.elapsed().as_secs_f64(),
        crashes.len()
    );
    assert!(
        crashes.is_empty(),
        "fuzz {target}: inputs that panic: {crashes:?}"
    );
}

#[test]
fn fuzz_safetensors() {
    fuzz("safetensors");
}

#[test]
fn fuzz_unet_config() {
    fuzz("unet_config");
}

#[test]
fn fuzz_scheduler_config() {
    fuzz("scheduler_config");
}

#[test]
fn fuzz_idx() {
    fuzz("idx");
}

#[test]
fn fuzz_png() {
    fuzz("png");
}

#[test]
fn fuzz_tokenizer() {
    fuzz("tokenizer");
}

#[test]
fn fuzz_sd_config() {
    fuzz("sd_config");
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    for t in targets::TARGETS {
        assert!(!corpus(t).is_empty());
    }
}
