//! Hostile input across every subcommand (issue 17): crafted safetensors, IDX, PNG and config
//! files, out-of-domain numbers, absurd flags and odd output paths. Every case must fail with a
//! non-zero exit that is not a panic (no "panicked", exit code ≠ 101), a message naming the
//! flag, field, tensor or file that is wrong, pre-existing files byte-identical and no new file
//! anywhere in the case's folders. Most cases fail before any GPU work.

use diffuse::load::{f32_tensors_bytes, HostTensor};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn asset(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(p)
}

/// One scratch folder per test function: `in/` (crafted inputs) and `out/` (pre-existing
/// outputs that no failed run may touch).
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("hostile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::create_dir_all(root.join("out/adir")).unwrap();
        for (f, b) in [
            ("existing.png", &b"an existing png"[..]),
            ("existing.safetensors", b"an existing safetensors"),
            ("existing.json", b"{\"existing\": true}"),
        ] {
            std::fs::write(root.join("out").join(f), b).unwrap();
        }
        Scratch { root }
    }

    fn input(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.root.join("in").join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    fn out(&self, name: &str) -> String {
        self.root.join("out").join(name).display().to_string()
    }

    /// A copy of an asset model folder with `edit` applied to one JSON file of it.
    fn model(
        &self,
        name: &str,
        from: &str,
        file: &str,
        edit: &dyn Fn(&mut serde_json::Value),
    ) -> String {
        let dir = self.root.join("in").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(asset(from)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let p = dir.join(file);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        dir.display().to_string()
    }

    /// Every file under the scratch folder with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(d: &Path, m: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    m.insert(p.clone(), Vec::new());
                    walk(&p, m);
                } else {
                    m.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut m = BTreeMap::new();
        walk(&self.root, &mut m);
        m
    }

    /// Runs every case; all must hold (failures are collected and reported together).
    fn run(&self, cases: &[(&[&str], &[&str])]) {
        let mut failures = Vec::new();
        for (args, needles) in cases {
            let before = self.snapshot();
            let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
                .args(*args)
                .env("RUST_BACKTRACE", "0")
                .output()
                .expect("run diffuse");
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            let code = out.status.code();
            if std::env::var_os("HOSTILE_VERBOSE").is_some() {
                eprintln!("{:?}\n  -> {}", &args[..args.len().min(3)], err.trim());
            }
            let mut why = Vec::new();
            if out.status.success() {
                why.push("exited 0".to_string());
            }
            if code == Some(101) || code.is_none() || err.contains("panicked") {
                why.push(format!("panicked or killed (code {code:?})"));
            }
            if err.contains("cannot be used multiple times") {
                why.push("the case repeats a flag".to_string());
            }
            for n in *needles {
                if !err.contains(n) {
                    why.push(format!("message does not name `{n}`"));
                }
            }
            let after = self.snapshot();
            if after != before {
                let changed: Vec<_> = after
                    .iter()
                    .filter(|(k, v)| before.get(*k) != Some(v))
                    .map(|(k, _)| k.display().to_string())
                    .chain(
                        before
                            .keys()
                            .filter(|k| !after.contains_key(*k))
                            .map(|k| format!("removed {}", k.display())),
                    )
                    .collect();
                why.push(format!("files changed: {changed:?}"));
            }
            if !why.is_empty() {
                failures.push(format!(
                    "{args:?}: {}\n  stderr: {}",
                    why.join("; "),
                    err.trim()
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} hostile cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}

fn f32s(tensors: &[(&str, Vec<usize>, f32)]) -> Vec<u8> {
    let hosts: Vec<(String, HostTensor)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let len = s.iter().product();
            (
                n.to_string(),
                HostTensor {
                    shape: s.clone(),
                    data: vec![*v; len],
                },
            )
        })
        .collect();
    let refs: Vec<(&str, &HostTensor)> = hosts.iter().map(|(n, t)| (n.as_str(), t)).collect();
    f32_tensors_bytes(&refs).unwrap()
}

/// A safetensors file from a raw JSON header and data bytes (for what a writer would refuse).
fn raw_st(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn i64_sample(shape: &str, n: usize) -> Vec<u8> {
    raw_st(
        &format!(
            r#"{{"sample":{{"dtype":"I64","shape":{shape},"data_offsets":[0,{}]}}}}"#,
            8 * n
        ),
        &vec![0u8; 8 * n],
    )
}

fn dup_sample() -> Vec<u8> {
    let t = r#"{"dtype":"F32","shape":[1,1,28,28],"data_offsets":[0,3136]}"#;
    raw_st(&format!(r#"{{"sample":{t},"sample":{t}}}"#), &[0u8; 3136])
}

fn idx(n: u32, h: u32, w: u32, pixels: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(0u8, pixels));
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const DDPM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fmnist-ddpm");
const COND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fmnist-cond");
const SR4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fmnist-sr4");

fn sched(s: &Scratch, name: &str, json: &str) -> String {
    s.input(&format!("{name}.json"), json.as_bytes())
}

#[test]
fn hostile_sample() {
    let s = Scratch::new("sample");
    let out = s.out("new.png");
    let old = s.out("existing.png");
    let raw_old = s.out("existing.safetensors");
    let dir = s.out("adir");
    let missing = s.out("missing/x.png");
    let base = |extra: &[&str]| -> Vec<String> {
        args(
            "sample",
            &[("--model", DDPM), ("--steps", "2"), ("--out", &out)],
            extra,
        )
    };
    let ddpm = r#""_class_name": "DDPMScheduler""#;
    let sc = |name: &str, body: &str| sched(&s, name, &format!("{{{ddpm}, {body}}}"));
    let beta_neg = sc("beta_neg", r#""beta_start": -0.1"#);
    let beta_big = sc("beta_big", r#""beta_end": 1.5"#);
    let beta_order = sc("beta_order", r#""beta_start": 0.02, "beta_end": 0.001"#);
    let huge_t = sc("huge_t", r#""num_train_timesteps": 1e12"#);
    let nan_beta = sc("nan_beta", r#""beta_end": NaN"#);
    let bdia_nan = sched(
        &s,
        "bdia",
        r#"{"_class_name": "BDIAScheduler", "gamma": "NaN"}"#,
    );
    let ddim_eta = sched(&s, "ddim", r#"{"_class_name": "DDIMScheduler", "eta": 2}"#);
    let not_json = sched(&s, "not_json", "{ this is not json");
    let bad_class = sched(&s, "bad_class", r#"{"_class_name": "MysteryScheduler"}"#);
    let noise_i64 = s.input(
        "noise_i64.safetensors",
        &i64_sample("[16,1,28,28]", 16 * 784),
    );
    let noise_nan = s.input(
        "noise_nan.safetensors",
        &f32s(&[("sample", vec![16, 1, 28, 28], f32::NAN)]),
    );
    let noise_shape = s.input(
        "noise_shape.safetensors",
        &f32s(&[("sample", vec![2, 1, 28, 28], 0.0)]),
    );
    let noise_dup = s.input("noise_dup.safetensors", &dup_sample());
    let mut trunc = f32s(&[("sample", vec![16, 1, 28, 28], 0.0)]);
    trunc.truncate(trunc.len() - 100);
    let noise_trunc = s.input("noise_trunc.safetensors", &trunc);
    let latents_none = s.input(
        "latents_none.safetensors",
        &f32s(&[("sample", vec![1, 1, 28, 28], 0.0)]),
    );
    let head0 = s.model("head0", "fmnist-ddpm", "config.json", &|v| {
        v["attention_head_dim"] = 0.into()
    });
    let eps_nan = s.model("eps_nan", "fmnist-ddpm", "config.json", &|v| {
        v["norm_eps"] = "NaN".into()
    });
    let sc_in_folder = s.model(
        "sc_in_folder",
        "fmnist-ddpm",
        "scheduler_config.json",
        &|v| v["beta_start"] = (-1.0).into(),
    );
    let args: Vec<(Vec<String>, Vec<&str>)> = vec![
        (base(&["--guidance", "NaN"]), vec!["--guidance", "NaN"]),
        (base(&["--guidance", "inf"]), vec!["--guidance"]),
        (base(&["--guidance", "-inf"]), vec!["--guidance"]),
        (base(&["--seed", "-1"]), vec!["--seed"]),
        (base(&["--batch", "0"]), vec!["--batch"]),
        (base(&["--batch", "-3"]), vec!["--batch"]),
        (base(&["--steps", "0"]), vec!["--steps"]),
        (base(&["--steps", "5000"]), vec!["--steps", "1000"]),
        (base(&["--steps", "-2"]), vec!["--steps"]),
        (base(&["--class-label", "5"]), vec!["--class-label"]),
        (base(&["--dtype", "f64"]), vec!["--dtype"]),
        (base(&["--scheduler", "nonsense"]), vec!["nonsense"]),
        (
            base(&["--scheduler-config", &beta_neg]),
            vec!["beta_start", "beta_neg.json"],
        ),
        (
            base(&["--scheduler-config", &beta_big]),
            vec!["beta_end", "beta_big.json"],
        ),
        (
            base(&["--scheduler-config", &beta_order]),
            vec!["beta_end", "beta_start"],
        ),
        (
            base(&["--scheduler-config", &huge_t]),
            vec!["num_train_timesteps"],
        ),
        (
            base(&["--scheduler-config", &nan_beta]),
            vec!["beta_end", "NaN"],
        ),
        (base(&["--scheduler-config", &bdia_nan]), vec!["gamma"]),
        (base(&["--scheduler-config", &ddim_eta]), vec!["eta"]),
        (
            base(&["--scheduler-config", &not_json]),
            vec!["not_json.json"],
        ),
        (
            base(&["--scheduler-config", &bad_class]),
            vec!["_class_name"],
        ),
        (
            base(&["--noise", &noise_i64]),
            vec!["sample", "I64", "noise_i64"],
        ),
        (
            base(&["--noise", &noise_nan]),
            vec!["sample", "noise_nan", "non-finite"],
        ),
        (
            base(&["--noise", &noise_shape]),
            vec!["sample", "noise_shape"],
        ),
        (
            base(&["--noise", &noise_dup]),
            vec!["sample", "twice", "noise_dup"],
        ),
        (base(&["--noise", &noise_trunc]), vec!["noise_trunc"]),
        (base(&["--noise", "/dev/zero"]), vec!["/dev/zero"]),
        (base(&["--latents", &latents_none]), vec!["latents"]),
        (base(&["--batch", "4611686018427387904"]), vec!["--batch"]),
        (base(&["--raw", &dir]), vec!["--raw", "folder"]),
        (base(&["--raw", &out]), vec!["--raw", "--out"]),
        (
            base(&["--raw", &raw_old, "--guidance", "nan"]),
            vec!["--guidance"],
        ),
        (
            base(&["--model", "/nonexistent/model"]),
            vec!["/nonexistent/model"],
        ),
        (
            base(&["--model", "analytic:nope", "--scheduler", "ddpm"]),
            vec!["nope"],
        ),
        (base(&["--model", &head0]), vec!["attention_head_dim"]),
        (base(&["--model", &eps_nan]), vec!["norm_eps"]),
        (base(&["--model", &sc_in_folder]), vec!["beta_start"]),
    ];
    let mut cases: Vec<(Vec<String>, Vec<&str>)> = args;
    // Output paths that cannot be written: checked before any work.
    let outs = [
        (dir.clone(), vec!["--out", "folder"]),
        (missing.clone(), vec!["--out", "does not exist"]),
    ];
    for (o, n) in outs {
        cases.push((
            vec!["sample", "--model", DDPM, "--steps", "2", "--out", &o]
                .into_iter()
                .map(String::from)
                .collect(),
            n,
        ));
    }
    // An existing output with a failing run stays byte-identical.
    cases.push((
        vec![
            "sample", "--model", DDPM, "--steps", "0", "--out", &old, "--raw", &raw_old,
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        vec!["steps"],
    ));
    run_owned(&s, &cases);
}

/// `cmd` with `extra`, then each `(flag, value)` default whose flag `extra` does not give.
fn args(cmd: &str, defaults: &[(&str, &str)], extra: &[&str]) -> Vec<String> {
    let mut v = vec![cmd.to_string()];
    v.extend(extra.iter().map(|x| x.to_string()));
    for (f, d) in defaults {
        if !extra.contains(f) {
            v.push(f.to_string());
            v.push(d.to_string());
        }
    }
    v
}

/// [`Scratch::run`] for owned argument lists.
fn run_owned(s: &Scratch, cases: &[(Vec<String>, Vec<&str>)]) {
    let owned: Vec<(Vec<&str>, &[&str])> = cases
        .iter()
        .map(|(a, n)| (a.iter().map(String::as_str).collect(), n.as_slice()))
        .collect();
    let refs: Vec<(&[&str], &[&str])> = owned.iter().map(|(a, n)| (a.as_slice(), *n)).collect();
    s.run(&refs);
}

#[test]
fn hostile_cond_and_invert() {
    let s = Scratch::new("invert");
    let out = s.out("new.safetensors");
    let dir = s.out("adir");
    let x0 = s.input(
        "x0.safetensors",
        &f32s(&[("sample", vec![1, 1, 28, 28], 0.1)]),
    );
    let i64_in = s.input("x0_i64.safetensors", &i64_sample("[1,1,28,28]", 784));
    let empty = s.input(
        "x0_empty.safetensors",
        &f32s(&[("sample", vec![0, 1, 28, 28], 0.0)]),
    );
    let not_png = s.input("garbage.png", b"\x89PNG but not really");
    let nan = s.input(
        "x0_nan.safetensors",
        &f32s(&[("sample", vec![1, 1, 28, 28], f32::INFINITY)]),
    );
    let inv = |extra: &[&str]| -> Vec<String> {
        args(
            "invert",
            &[
                ("--model", COND),
                ("--steps", "2"),
                ("--scheduler", "bdia"),
                ("--out", &out),
            ],
            extra,
        )
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (inv(&["--input", &i64_in]), vec!["sample", "I64"]),
        (inv(&["--input", &empty]), vec!["sample", "batch"]),
        (inv(&["--input", &not_png]), vec!["garbage.png"]),
        (inv(&["--input", &nan]), vec!["sample", "inf"]),
        (inv(&["--input", "/dev/zero"]), vec!["/dev/zero"]),
        (
            inv(&["--input", &x0, "--scheduler", "ddpm"]),
            vec!["scheduler"],
        ),
        (inv(&["--input", &x0, "--steps", "0"]), vec!["steps"]),
        (
            inv(&["--input", &x0, "--class-label", "-1"]),
            vec!["--class-label"],
        ),
        (
            inv(&["--input", &x0, "--guidance", "NaN"]),
            vec!["--guidance"],
        ),
        (inv(&["--input", &x0, "--out", &dir]), vec!["--out"]),
        (
            vec![
                "sample",
                "--model",
                COND,
                "--steps",
                "2",
                "--class-label",
                "-1",
                "--out",
            ]
            .into_iter()
            .map(String::from)
            .chain([s.out("new.png")])
            .collect(),
            vec!["--class-label"],
        ),
        (
            vec![
                "sample",
                "--model",
                COND,
                "--steps",
                "2",
                "--class-label",
                "10",
                "--guidance",
                "2",
                "--out",
            ]
            .into_iter()
            .map(String::from)
            .chain([s.out("new.png")])
            .collect(),
            vec!["--class-label"],
        ),
    ];
    run_owned(&s, &cases);
}

#[test]
fn hostile_restore() {
    let s = Scratch::new("restore");
    let out = s.out("new.png");
    let dir = s.out("adir");
    let mu = s.input(
        "mu.safetensors",
        &f32s(&[("sample", vec![1, 1, 28, 28], 0.0)]),
    );
    let mu_nan = s.input(
        "mu_nan.safetensors",
        &f32s(&[("sample", vec![1, 1, 28, 28], f32::NAN)]),
    );
    let mu_3d = s.input(
        "mu_3d.safetensors",
        &f32s(&[("sample", vec![1, 28, 28], 0.0)]),
    );
    let step_noise = s.input(
        "steps.safetensors",
        &f32s(&[("sample", vec![3, 1, 1, 28, 28], 0.0)]),
    );
    let eps2 = s.model("eps2", "fmnist-sr4", "scheduler_config.json", &|v| {
        v["eps"] = 2.into()
    });
    let sig_nan = s.model("signan", "fmnist-sr4", "scheduler_config.json", &|v| {
        v["max_sigma"] = "NaN".into()
    });
    let rs = |extra: &[&str]| -> Vec<String> {
        args(
            "restore",
            &[("--model", SR4), ("--steps", "2"), ("--out", &out)],
            extra,
        )
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (rs(&["--input", &mu_nan]), vec!["sample", "mu_nan"]),
        (rs(&["--input", &mu_3d]), vec!["sample", "[N, C, H, W]"]),
        (
            rs(&["--input", &mu, "--lambda-min", "NaN"]),
            vec!["--lambda-min"],
        ),
        (
            rs(&["--input", &mu, "--lambda-min", "inf"]),
            vec!["--lambda-min"],
        ),
        (rs(&["--input", &mu, "--rho", "-1"]), vec!["--rho"]),
        (rs(&["--input", &mu, "--rho", "0"]), vec!["--rho"]),
        (rs(&["--input", &mu, "--order", "0"]), vec!["--order"]),
        (rs(&["--input", &mu, "--order", "-1"]), vec!["--order"]),
        (rs(&["--input", &mu, "--seed", "-5"]), vec!["--seed"]),
        (rs(&["--input", &mu, "--raw", &dir]), vec!["--raw"]),
        (rs(&["--input", &mu, "--sampler", "bogus"]), vec!["bogus"]),
        (
            rs(&[
                "--input",
                &mu,
                "--solver",
                "sde",
                "--step-noise",
                &step_noise,
            ]),
            vec!["--step-noise"],
        ),
        (rs(&["--input", &mu, "--model", DDPM]), vec!["_class_name"]),
        (rs(&["--input", &mu, "--model", &eps2]), vec!["eps"]),
        (
            rs(&["--input", &mu, "--model", &sig_nan]),
            vec!["max_sigma"],
        ),
        (rs(&["--input", "/dev/zero"]), vec!["/dev/zero"]),
        (
            vec![
                "restore",
                "--model",
                SR4,
                "--input",
                &mu,
                "--out",
                &s.out("missing/x.png"),
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec!["--out"],
        ),
    ];
    run_owned(&s, &cases);
}

#[test]
fn hostile_eval() {
    let s = Scratch::new("eval");
    let json = s.out("new.json");
    let dir = s.out("adir");
    let cls = |name: &str, stats: Option<Vec<u8>>, edit: &dyn Fn(&mut serde_json::Value)| {
        let d = s.model(name, "fmnist-classifier", "config.json", edit);
        if let Some(b) = stats {
            std::fs::write(Path::new(&d).join("fid_stats.safetensors"), b).unwrap();
        }
        d
    };
    let d = 64;
    let good = |mean: f32| {
        f32s(&[
            ("test_mean", vec![d], mean),
            ("test_cov", vec![d, d], 0.0),
            ("train_mean", vec![d], 0.0),
            ("train_cov", vec![d, d], 0.0),
        ])
    };
    let nan_stats = cls("nan_stats", Some(good(f32::NAN)), &|_| {});
    let no_cov = cls(
        "no_cov",
        Some(f32s(&[("test_mean", vec![d], 0.0)])),
        &|_| {},
    );
    let dup = {
        let t = r#"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
        raw_st(
            &format!(r#"{{"test_mean":{t},"test_mean":{t}}}"#),
            &[0u8; 8],
        )
    };
    let dup_stats = cls("dup_stats", Some(dup), &|_| {});
    let dim = cls("dim", None, &|v| v["feature_dim"] = 32.into());
    let idx_over = s.input("over.idx", &idx(u32::MAX, u32::MAX, u32::MAX, 0));
    let idx_short = s.input("short.idx", &idx(10, 28, 28, 100));
    let bomb = s.input("bomb.idx.gz", &gzip(&idx(2, 28, 28, 64 << 20)));
    let ev = |extra: &[&str]| -> Vec<String> {
        args(
            "eval",
            &[
                ("--model", DDPM),
                ("--steps", "2"),
                ("--num-samples", "4"),
                ("--batch", "2"),
            ],
            extra,
        )
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (ev(&["--batch", "0"]), vec!["--batch"]),
        (ev(&["--num-samples", "1"]), vec!["--num-samples"]),
        (ev(&["--num-samples", "-4"]), vec!["--num-samples"]),
        (ev(&["--guidance", "NaN"]), vec!["--guidance"]),
        (ev(&["--json", &dir]), vec!["--json", "folder"]),
        (ev(&["--json", &s.out("missing/r.json")]), vec!["--json"]),
        (ev(&["--json", &json, "--classifier", &nan_stats]), vec!["fid_stats", "test_mean", "NaN"]),
        (ev(&["--classifier", &no_cov]), vec!["fid_stats", "test_cov"]),
        (ev(&["--classifier", &dup_stats]), vec!["fid_stats", "test_mean", "twice"]),
        (ev(&["--classifier", &dim]), vec!["feature_dim"]),
        (ev(&["--classifier", "/nonexistent/cls"]), vec!["/nonexistent/cls"]),
        (ev(&["--real-images", &idx_over]), vec!["over.idx", "IDX header"]),
        (ev(&["--real-images", &idx_short]), vec!["short.idx", "truncated"]),
        (ev(&["--real-images", &bomb]), vec!["bomb.idx.gz", "more than"]),
        (ev(&["--real-images", "/dev/zero"]), vec!["/dev/zero", "IDX"]),
        (
            ["eval-restore", "--model", DDPM, "--testset", &s.input("t.safetensors", &f32s(&[("degraded", vec![2, 1, 28, 28], 0.0), ("clean", vec![2, 1, 28, 28], 0.0)]))]
                .iter()
                .map(|x| x.to_string())
                .collect(),
            vec!["_class_name"],
        ),
        (
            ["eval-restore", "--model", SR4, "--batch", "0"].iter().map(|x| x.to_string()).collect(),
            vec!["--batch"],
        ),
        (
            ["eval-restore", "--model", SR4, "--num-samples", "0"].iter().map(|x| x.to_string()).collect(),
            vec!["--num-samples"],
        ),
        (
            ["eval-restore", "--model", SR4, "--json", &dir].iter().map(|x| x.to_string()).collect(),
            vec!["--json"],
        ),
        (
            ["eval-restore", "--model", SR4, "--testset", &s.input("ti64.safetensors", &raw_st(r#"{"degraded":{"dtype":"I64","shape":[1,1,28,28],"data_offsets":[0,6272]},"clean":{"dtype":"F32","shape":[1,1,28,28],"data_offsets":[6272,9408]}}"#, &[0u8; 9408]))]
                .iter()
                .map(|x| x.to_string())
                .collect(),
            vec!["degraded", "I64"],
        ),
    ];
    run_owned(&s, &cases);
}

#[test]
fn hostile_forward_bench_quantize() {
    let s = Scratch::new("misc");
    let out = s.out("new.safetensors");
    let dir = s.out("adir");
    let x = s.input(
        "x.safetensors",
        &f32s(&[("sample", vec![1, 1, 28, 28], 0.0)]),
    );
    let i64_in = s.input("x_i64.safetensors", &i64_sample("[1,1,28,28]", 784));
    let empty = s.input(
        "x_empty.safetensors",
        &f32s(&[("sample", vec![0, 1, 28, 28], 0.0)]),
    );
    let mut huge_header = (1u64 << 40).to_le_bytes().to_vec();
    huge_header.extend_from_slice(b"{}");
    let huge_header = s.input("huge_header.safetensors", &huge_header);
    let overflow = s.input(
        "overflow.safetensors",
        &raw_st(r#"{"sample":{"dtype":"F32","shape":[4611686018427387904,1,28,28],"data_offsets":[0,16]}}"#, &[0u8; 16]),
    );
    let mut trailing = f32s(&[("sample", vec![1, 1, 28, 28], 0.0)]);
    trailing.extend_from_slice(b"trailing bytes");
    let trailing = s.input("trailing.safetensors", &trailing);
    let fw = |input: &str, t: &str, o: &str| -> Vec<String> {
        [
            "forward",
            "--model",
            DDPM,
            "--input",
            input,
            "--timestep",
            t,
            "--out",
            o,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let q = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["quantize", "--model", DDPM]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let b = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["bench", "--skip-kernels", "--steps", "0"]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (fw(&x, "NaN", &out), vec!["--timestep"]),
        (fw(&x, "inf", &out), vec!["--timestep"]),
        (fw(&i64_in, "10", &out), vec!["sample", "I64"]),
        (fw(&empty, "10", &out), vec!["sample", "batch"]),
        (
            fw(&huge_header, "10", &out),
            vec!["huge_header", "header length"],
        ),
        (fw(&overflow, "10", &out), vec!["overflow.safetensors"]),
        (
            fw(&trailing, "10", &out),
            vec!["trailing.safetensors", "more than"],
        ),
        (fw(&x, "10", &dir), vec!["--out", "folder"]),
        (fw(&x, "10", &s.out("existing.png/x")), vec!["--out"]),
        (fw("/dev/zero", "10", &out), vec!["/dev/zero"]),
        (q(&["--out", &dir]), vec!["--out", "exists"]),
        (q(&["--out", &s.out("missing/q")]), vec!["--out"]),
        (
            q(&["--out", &s.out("q"), "--calibration-samples", "0"]),
            vec!["--calibration-samples"],
        ),
        (
            q(&["--out", &s.out("q"), "--activations", "int4"]),
            vec!["--activations"],
        ),
        (
            q(&[
                "--out",
                &s.out("q"),
                "--activations",
                "int8",
                "--calibration",
                "lognormal",
            ]),
            vec!["--calibration"],
        ),
        (
            q(&[
                "--out",
                &s.out("q"),
                "--activations",
                "int8",
                "--calibration-samples",
                "0",
            ]),
            vec!["--calibration-samples"],
        ),
        (
            q(&["--out", &s.out("q"), "--weights", "int4"]),
            vec!["--weights"],
        ),
        (q(&["--out", &s.out("q"), "--seed", "-1"]), vec!["--seed"]),
        (b(&["--batches", "0"]), vec!["--batches"]),
        (b(&["--batches", "-1"]), vec!["--batches"]),
        (b(&["--dtype", "f64"]), vec!["--dtype"]),
        (b(&["--json", &dir]), vec!["--json"]),
        (
            b(&["--model", "/nonexistent/bench"]),
            vec!["/nonexistent/bench"],
        ),
    ];
    run_owned(&s, &cases);
}

/// Valid input the issue found refused: PNGs of any colour type and bit depth restore on a
/// 1-channel model (RGB → Rec. 709 luma, gray+alpha 16-bit → gray), and `--seed` takes its
/// full range.
#[test]
fn every_png_colour_type_is_accepted() {
    let s = Scratch::new("png");
    let rgb = s.root.join("in/rgb8.png");
    image::RgbImage::from_fn(28, 28, |x, y| {
        image::Rgb([(x * 9) as u8, (y * 9) as u8, 128])
    })
    .save(&rgb)
    .unwrap();
    let la16 = s.root.join("in/la16.png");
    image::ImageBuffer::<image::LumaA<u16>, Vec<u16>>::from_fn(28, 28, |x, y| {
        image::LumaA([(x * y * 80) as u16, 65535])
    })
    .save(&la16)
    .unwrap();
    for (input, name) in [(&rgb, "rgb8"), (&la16, "la16")] {
        let out = s.root.join(format!("out/{name}.png"));
        let o = Command::new(env!("CARGO_BIN_EXE_diffuse"))
            .args(["restore", "--model", SR4, "--steps", "2", "--seed"])
            .arg(u64::MAX.to_string())
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {err}");
        let img = image::open(&out).unwrap();
        assert!(img.width() >= 28 && img.height() >= 28, "{name}");
    }
}
