//! `diffuse eval-inverse` end to end on the shipped `assets/fmnist-ddpm` and the default test
//! set: the pinv report is the PSNR of A†y against the clean images computed here on the host
//! (sr4: nearest upsampling of the block means), the blurs' baseline is the PSNR of the
//! blurred measurement itself (blur-box: the zero-padded 9×9 mean), and bad input names the
//! flag, exits 1 and writes no report.

use diffuse::load::{read_json, Weights};
use diffuse::metrics::psnr;
use std::path::PathBuf;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn diffuse(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .current_dir(ROOT)
        .args(args)
        .output()
        .expect("run diffuse");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn scratch() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-eval-inverse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn clean(k: usize) -> Vec<f32> {
    Weights::open(&PathBuf::from(ROOT).join("assets/fmnist-sr4/testset.safetensors"))
        .unwrap()
        .read_f32("clean", None)
        .unwrap()
        .data[..k * 784]
        .to_vec()
}

/// blur-box has no A†: the report has no `pinv` but the measurement itself as the baseline.
#[test]
fn blur_reports_the_measurement_as_its_baseline() {
    let d = scratch();
    let json = d.join("blur.json");
    let model = format!("{ROOT}/assets/fmnist-ddpm");
    let args = [
        "eval-inverse",
        "--model",
        &model,
        "--operator",
        "blur-box",
        "--method",
        "dds",
        "--steps",
        "2",
        "--num-samples",
        "2",
        "--json",
        json.to_str().unwrap(),
    ];
    let (code, out, err) = diffuse(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("blurred measurement"), "{out}");
    let r = read_json(&json).unwrap();
    assert!(r["pinv"].is_null(), "{r}");
    let x = clean(2);
    let mut want = 0.0;
    for img in x.chunks(784) {
        let y: Vec<f32> = (0..784)
            .map(|e| {
                let (i, j) = ((e / 28) as isize, (e % 28) as isize);
                let mut s = 0.0f64;
                for a in -4..=4isize {
                    for b in -4..=4isize {
                        let (u, v) = (i + a, j + b);
                        if (0..28).contains(&u) && (0..28).contains(&v) {
                            s += img[(u * 28 + v) as usize] as f64;
                        }
                    }
                }
                (s / 81.0) as f32
            })
            .collect();
        want += psnr(&y, img) / 2.0;
    }
    let got = r["measurement"]["psnr"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-3, "{got} vs {want}");
}

#[test]
fn pinv_report_matches_the_host_and_bad_input_writes_nothing() {
    let d = scratch();
    let json = d.join("r.json");
    let j = json.to_str().unwrap();
    let model = format!("{ROOT}/assets/fmnist-ddpm");
    let (code, out, err) = diffuse(&[
        "eval-inverse",
        "--model",
        &model,
        "--operator",
        "sr4",
        "--method",
        "pinv",
        "--num-samples",
        "4",
        "--json",
        j,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("PSNR"), "{out}");
    let r = read_json(&json).unwrap();
    // Host: A†y = nearest upsampling of the 4×4 block means of each clean image.
    let clean = Weights::open(&PathBuf::from(ROOT).join("assets/fmnist-sr4/testset.safetensors"))
        .unwrap()
        .read_f32("clean", None)
        .unwrap();
    let mut want = 0.0;
    for k in 0..4 {
        let x = &clean.data[k * 784..(k + 1) * 784];
        let up: Vec<f32> = (0..784)
            .map(|e| {
                let (i, j) = (e / 28 / 4 * 4, e % 28 / 4 * 4);
                let mut s = 0.0f64;
                for a in 0..4 {
                    for b in 0..4 {
                        s += x[(i + a) * 28 + j + b] as f64;
                    }
                }
                (s / 16.0) as f32
            })
            .collect();
        want += psnr(&up, x) / 4.0;
    }
    let got = r["result"]["psnr"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    assert_eq!(r["pinv"]["psnr"], r["result"]["psnr"]);
    assert_eq!(r["images"], 4);
    std::fs::remove_file(&json).unwrap();
    // Bad input: the flag is named, exit 1, no report.
    for (args, flag) in [
        (vec!["--operator", "sr3", "--method", "pinv"], "--operator"),
        (vec!["--operator", "sr4", "--method", "magic"], "--method"),
        (
            vec!["--operator", "sr4", "--method", "flowchef"],
            "--method",
        ),
        (
            vec![
                "--operator",
                "sr4",
                "--method",
                "pinv",
                "--num-samples",
                "0",
            ],
            "--num-samples",
        ),
        (
            vec!["--operator", "sr4", "--method", "pinv", "--sigma-y", "-1"],
            "--sigma-y",
        ),
        (
            vec!["--operator", "blur-box", "--method", "pinv"],
            "pseudo-inverse",
        ),
    ] {
        let mut a = vec!["eval-inverse", "--model", &model, "--json", j];
        a.extend(args.iter().copied());
        let (code, _, err) = diffuse(&a);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(!json.exists(), "{args:?} wrote a report");
    }
    // DDS on the rectified-flow model is refused by name.
    let flow = format!("{ROOT}/assets/fmnist-flow");
    let (code, _, err) = diffuse(&[
        "eval-inverse",
        "--model",
        &flow,
        "--operator",
        "sr4",
        "--method",
        "dds",
        "--num-samples",
        "2",
        "--json",
        j,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--method") && err.contains("rectified-flow"),
        "{err}"
    );
    assert!(!json.exists());
}
