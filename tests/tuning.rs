//! Per-adapter tuning: with a cache file, a launcher times its variants once per (dtype, shape),
//! caches the winner keyed by adapter and driver, and a later context reuses it without
//! measuring; results stay correct whichever variant wins; tuning off measures nothing.
//! Variant names (the cache's values) parse back to the same variant; unknown or inapplicable
//! names from a cache file or a forced variant are errors naming the op, the name and the
//! valid ones.

mod common;

use diffuse::gpu::tuning::Variant;
use diffuse::gpu::Tuning;
use diffuse::ops::attention::AttentionKernel;
use diffuse::ops::conv2d::{Conv2dArgs, ConvKernel};
use diffuse::ops::gemm::GemmKernel;
use diffuse::ops::group_norm::GroupNormKernel;
use diffuse::ops::softmax::SoftmaxKernel;
use diffuse::selfcheck as sc;
use diffuse::{DType, GpuOptions};
use std::path::PathBuf;

fn cache(tag: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tuning-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.join("tuning.json")
}

fn tuned(path: &std::path::Path) -> diffuse::Gpu {
    common::private_gpu_with(GpuOptions {
        tuning: Tuning::Cache(path.to_path_buf()),
        ..Default::default()
    })
}

fn conv_and_softmax(gpu: &diffuse::Gpu) {
    let args = Conv2dArgs {
        stride: 1,
        padding: 1,
        extra_end: 0,
    };
    for dt in [DType::F32, DType::F16] {
        let c = sc::conv2d(gpu, [2, 8, 12, 12], 16, 3, 3, args, true, dt, 3).unwrap();
        assert!(c.ok(), "{c}");
        // Through ops::softmax::softmax (the tuned entry point) against the f64 reference.
        let xv = sc::TestRng(4).values(24 * 196, -4.0, 4.0, dt);
        let x = diffuse::Tensor::from_f32(gpu, "x", &[24, 196], &xv, dt).unwrap();
        let y = diffuse::Tensor::empty(gpu, "y", &[24, 196], dt).unwrap();
        gpu.run(|rec| diffuse::ops::softmax::softmax(rec, &x, &y, 0.5))
            .unwrap();
        let xd: Vec<f64> = xv.iter().map(|&v| v as f64).collect();
        let want = diffuse::reference::softmax(&xd, 196, 0.5);
        let got = y.to_vec_f32(gpu).unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2e-3, "softmax {dt:?}: {worst}");
    }
}

#[test]
fn tuning_measures_once_caches_per_adapter_and_stays_correct() {
    let path = cache("roundtrip");
    let gpu = tuned(&path);
    conv_and_softmax(&gpu);
    // Every conv variant (general/row kernel × 4/8 channels, and the tile kernel) for each of
    // the 2 conv keys (3×3 stride 1) and two layouts (three with subgroups) for each of the 2
    // softmax keys.
    let layouts = 2 + diffuse::ops::softmax::subgroup_ok(gpu.info()) as u64;
    let expected = 2 * ConvKernel::ALL.len() as u64 + 2 * layouts;
    assert_eq!(gpu.tuner().measurements(), expected);
    let table: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(table.len(), 4, "{table:?}");
    let adapter = &gpu.info().name;
    for (k, v) in &table {
        assert!(k.starts_with(adapter.as_str()), "key {k} names the adapter");
        assert!(
            [
                "cb4",
                "cb8",
                "row3-cb4",
                "row3-cb8",
                "tile64",
                "workgroup",
                "row-per-thread",
                "subgroup"
            ]
            .contains(&v.as_str()),
            "{k} → {v}"
        );
    }
    // A new context reads the cache: no measurement, same results.
    let again = tuned(&path);
    conv_and_softmax(&again);
    assert_eq!(again.tuner().measurements(), 0);
    // A corrupt cache is replaced, not fatal.
    std::fs::write(&path, b"{ not json").unwrap();
    let fresh = tuned(&path);
    conv_and_softmax(&fresh);
    assert_eq!(fresh.tuner().measurements(), expected);
    assert!(
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&path).unwrap()).is_ok()
    );
}

#[test]
fn tuning_off_uses_the_defaults_and_writes_nothing() {
    let path = cache("off");
    let gpu = common::private_gpu_with(GpuOptions {
        tuning: Tuning::Off,
        ..Default::default()
    });
    conv_and_softmax(&gpu);
    assert_eq!(gpu.tuner().measurements(), 0);
    assert!(!gpu.tuner().enabled());
    assert!(!path.exists());
}

#[test]
fn a_tuned_unet_still_matches_diffusers() {
    // With tuning on, the attention path (fused or GEMM), conv blocks and softmax layouts are
    // whatever this adapter measures fastest; the output must still match diffusers' golden.
    let path = cache("unet");
    let gpu = tuned(&path);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/unet_ddpm_like");
    let io = diffuse::load::Weights::open(&dir.join("io.safetensors")).unwrap();
    let sample = io.read_f32("sample", None).unwrap();
    let t = io.read_f32("timestep", None).unwrap();
    let want = io.read_f32("output", None).unwrap();
    let model = diffuse::nn::unet_2d::UNet2DModel::from_dir(&gpu, &dir, DType::F32).unwrap();
    let s = &sample.shape;
    let fwd = model.prepare(&gpu, s[0], s[2], s[3]).unwrap();
    let got = fwd.forward_host(&gpu, &sample.data, &t.data, None).unwrap();
    let ymax = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4 * ymax, "{worst} vs {ymax}");
    let table = std::fs::read_to_string(&path).unwrap();
    assert!(table.contains("attention|"), "{table}");
    assert!(table.contains("conv2d|"), "{table}");
}

/// Every variant's name parses back to it, names are unique within the op, and an unknown name
/// is an error naming the op and the name and listing every valid name. (No GPU needed.)
fn names_round_trip<V: Variant>(expect: &[&str]) {
    let all = V::all();
    let names: Vec<String> = all.iter().map(|v| v.to_string()).collect();
    assert_eq!(
        names,
        expect,
        "{}: the stable names the tuning cache stores",
        V::OP
    );
    for (v, n) in all.iter().zip(&names) {
        assert_eq!(n.parse::<V>().unwrap(), *v, "{n}");
    }
    for bad in ["", "tile32", "Workgroup", "reg4x4 ", "cb4+packed"] {
        if expect.contains(&bad) {
            continue;
        }
        let e = bad.parse::<V>().unwrap_err().to_string();
        assert!(e.contains(V::OP), "{e}");
        assert!(e.contains(&format!("`{bad}`")), "{e}");
        for n in &names {
            assert!(e.contains(n.as_str()), "{e} lists {n}");
        }
    }
}

#[test]
fn variant_names_are_stable_and_unknown_names_are_errors() {
    names_round_trip::<ConvKernel>(&["cb4", "cb8", "row3-cb4", "row3-cb8", "tile64"]);
    names_round_trip::<GemmKernel>(&["reg4x4", "reg8x4", "tile64"]);
    names_round_trip::<GroupNormKernel>(&[
        "wg16", "wg16-sg", "wg64", "wg64-sg", "wg256", "wg256-sg",
    ]);
    names_round_trip::<SoftmaxKernel>(&["workgroup", "row-per-thread", "subgroup"]);
    names_round_trip::<AttentionKernel>(&["gemm", "fused"]);
}

#[test]
fn a_forced_variant_that_does_not_apply_is_an_error() {
    let gpu = common::gpu();
    let args = Conv2dArgs {
        stride: 2,
        padding: 1,
        extra_end: 0,
    };
    let e = sc::conv2d_forced(
        gpu,
        [1, 2, 8, 8],
        4,
        3,
        args,
        None,
        DType::F32,
        1,
        ConvKernel::Row3 { cb: 4 },
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("conv2d") && e.contains("`row3-cb4`") && e.contains("stride-2"),
        "{e}"
    );
    let bad = GroupNormKernel {
        wg: 32,
        subgroup: false,
    };
    let e = sc::group_norm_variant(gpu, [1, 4, 3, 3], 2, false, DType::F32, 1, Some(bad), 0.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("group_norm") && e.contains("`wg32`"), "{e}");
}

#[test]
fn unknown_or_inapplicable_names_in_a_tuning_cache_are_errors() {
    // Cache entries for the conv `conv_and_softmax` runs (its key, as the launcher writes it),
    // the stride-2 conv on the same input, and its softmax.
    let info = common::gpu().info();
    let adapter = format!("{} {}", info.name, info.driver_info);
    let conv =
        |stride: usize| format!("{adapter}|conv2d|F32|2x8x12x12|16|k3x3|s{stride}p1e0|packedfalse");
    let write = |path: &std::path::Path, entries: &[(String, &str)]| {
        let table: std::collections::BTreeMap<&str, &str> =
            entries.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_string(&table).unwrap()).unwrap();
    };
    let run = |gpu: &diffuse::Gpu, stride: usize| {
        let args = Conv2dArgs {
            stride,
            padding: 1,
            extra_end: 0,
        };
        sc::conv2d(gpu, [2, 8, 12, 12], 16, 3, 3, args, true, DType::F32, 3)
    };
    // A name that is no conv kernel (a softmax layout; a typo).
    for bad in ["row-per-thread", "row3-cb16"] {
        let path = cache(&format!("bad-{bad}"));
        write(&path, &[(conv(1), bad)]);
        let gpu = tuned(&path);
        let e = run(&gpu, 1).unwrap_err().to_string();
        assert!(
            e.contains("conv2d") && e.contains(&format!("`{bad}`")),
            "{e}"
        );
        assert!(e.contains("cb4, cb8, row3-cb4, row3-cb8, tile64"), "{e}");
        assert!(
            e.contains(&path.display().to_string()),
            "{e} names the file"
        );
        assert_eq!(gpu.tuner().measurements(), 0);
    }
    // A conv kernel that cannot run the conv its key names: the row kernel for stride 2.
    let path = cache("inapplicable");
    write(&path, &[(conv(1), "row3-cb8"), (conv(2), "row3-cb8")]);
    let gpu = tuned(&path);
    let c = run(&gpu, 1).unwrap();
    assert!(c.ok(), "{c}");
    let e = run(&gpu, 2).unwrap_err().to_string();
    assert!(
        e.contains("conv2d") && e.contains("`row3-cb8`") && e.contains("does not apply"),
        "{e}"
    );
    assert_eq!(gpu.tuner().measurements(), 0);
}
