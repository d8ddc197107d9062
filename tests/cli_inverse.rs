//! `diffuse inverse` end to end on the shipped `assets/fmnist-ddpm`: pinv and a short DDS and
//! RED-diff run write the PNG and the raw `sample`/`measurement`; pinv on sr4 is the nearest
//! upsampling of the block means, DDS on noiseless inpainting ends data-consistent; bad input
//! names the flag or tensor, exits 1 and writes nothing.

use diffuse::load::{write_f32_tensors, HostTensor, Weights};
use std::path::{Path, PathBuf};
use std::process::Command;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fmnist-ddpm");

fn scratch(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-inverse-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn diffuse(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A smooth [2, 1, h, w] test image in [−1, 1] written as `sample`.
fn clean(d: &Path, h: usize, w: usize) -> (PathBuf, Vec<f32>) {
    let data: Vec<f32> = (0..2 * h * w)
        .map(|e| {
            let (n, i, j) = (e / (h * w), (e / w) % h, e % w);
            ((i as f32 * 0.3 + n as f32).sin() * (j as f32 * 0.2).cos()).clamp(-1.0, 1.0)
        })
        .collect();
    let p = d.join("clean.safetensors");
    let t = HostTensor {
        shape: vec![2, 1, h, w],
        data: data.clone(),
    };
    write_f32_tensors(&p, &[("sample", &t)]).unwrap();
    (p, data)
}

fn read(p: &Path, name: &str) -> HostTensor {
    Weights::open(p).unwrap().read_f32(name, None).unwrap()
}

#[test]
fn pinv_sr4_is_nearest_upsampling_of_block_means() {
    let d = scratch("pinv");
    let (c, x) = clean(&d, 28, 28);
    let (out, raw) = (d.join("x.png"), d.join("x.safetensors"));
    let (code, err) = diffuse(&[
        "inverse",
        "--model",
        MODEL,
        "--operator",
        "sr4",
        "--method",
        "pinv",
        "--clean",
        s(&c),
        "--raw",
        s(&raw),
        "--out",
        s(&out),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.is_file());
    let (xs, ys) = (read(&raw, "sample"), read(&raw, "measurement"));
    assert_eq!(xs.shape, vec![2, 1, 28, 28]);
    assert_eq!(ys.shape, vec![2, 1, 7, 7]);
    // Block (1, 2) of sample 1.
    let mean: f32 = (0..16)
        .map(|k| x[28 * 28 + (4 + k / 4) * 28 + 8 + k % 4])
        .sum::<f32>()
        / 16.0;
    assert!((ys.data[49 + 7 + 2] - mean).abs() < 1e-6);
    for k in 0..16 {
        assert_eq!(
            xs.data[28 * 28 + (4 + k / 4) * 28 + 8 + k % 4],
            ys.data[49 + 7 + 2]
        );
    }
}

#[test]
fn dds_and_red_diff_run_and_dds_is_data_consistent() {
    let d = scratch("methods");
    let (c, _) = clean(&d, 28, 28);
    for method in ["dds", "red-diff"] {
        let (out, raw) = (
            d.join(format!("{method}.png")),
            d.join(format!("{method}.safetensors")),
        );
        let (code, err) = diffuse(&[
            "inverse",
            "--model",
            MODEL,
            "--operator",
            "inpaint-box",
            "--method",
            method,
            "--clean",
            s(&c),
            "--steps",
            "4",
            "--raw",
            s(&raw),
            "--out",
            s(&out),
        ]);
        assert_eq!(code, Some(0), "{method}: {err}");
        let (xs, ys) = (read(&raw, "sample"), read(&raw, "measurement"));
        assert!(xs.data.iter().all(|v| v.is_finite()));
        if method == "dds" {
            // Noiseless inpainting: the last CG solve makes the kept pixels equal y.
            let m = diffuse::ops::degrade::Operator::InpaintBox
                .mask(28, 28)
                .unwrap();
            for (e, (a, b)) in xs.data.iter().zip(&ys.data).enumerate() {
                if m[e % 784] == 1.0 {
                    assert!((a - b).abs() < 1e-4, "pixel {e}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn bad_input_names_the_flag_and_writes_nothing() {
    let d = scratch("bad");
    let (c, _) = clean(&d, 28, 28);
    let (c30, _) = {
        let e = scratch("bad30");
        clean(&e, 30, 30)
    };
    let bad_meas = d.join("y.safetensors");
    let t = HostTensor {
        shape: vec![1, 1, 8, 8],
        data: vec![0.0; 64],
    };
    write_f32_tensors(&bad_meas, &[("measurement", &t)]).unwrap();
    let out = d.join("x.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--operator", "sr3", "--method", "pinv", "--clean", s(&c)],
            "--operator",
        ),
        (
            vec!["--operator", "sr4", "--method", "magic", "--clean", s(&c)],
            "--method",
        ),
        (
            vec![
                "--operator",
                "sr4",
                "--method",
                "flowchef",
                "--clean",
                s(&c),
            ],
            "--method",
        ),
        (
            vec![
                "--operator",
                "sr4",
                "--method",
                "pinv",
                "--clean",
                s(&c),
                "--sigma-y",
                "-1",
            ],
            "--sigma-y",
        ),
        (
            vec!["--operator", "sr4", "--method", "pinv", "--clean", s(&c30)],
            "divisible by 4",
        ),
        (
            vec![
                "--operator",
                "sr4",
                "--method",
                "dds",
                "--measurement",
                s(&bad_meas),
            ],
            "measurement",
        ),
        (
            vec![
                "--operator",
                "blur-gauss",
                "--method",
                "pinv",
                "--clean",
                s(&c),
            ],
            "pseudo-inverse",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["inverse", "--model", MODEL, "--out", s(&out)];
        all.extend(args.iter().copied());
        let (code, err) = diffuse(&all);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
