//! CPU-only: every shader variant the ops can request, preprocessed for both f16 storage modes,
//! parses and validates with naga. No GPU needed.

use diffuse::gpu::F16Mode;
use naga::valid::{Capabilities, ValidationFlags, Validator};

#[test]
fn every_variant_validates_with_naga() {
    let variants = diffuse::ops::all_variants();
    // `ops` launches every kernel: each shader family (but the `philox` include) has variants.
    let mut families: Vec<&str> = variants.iter().map(|k| k.family).collect();
    families.sort();
    families.dedup();
    let mut files: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|f| f != "philox")
        .collect();
    files.sort();
    assert_eq!(families, files, "shader families without an ops launcher");
    assert!(
        variants.len() > 50,
        "expected the full variant list, got {}",
        variants.len()
    );
    let mut failures = Vec::new();
    for key in &variants {
        for mode in [F16Mode::Native, F16Mode::Packed] {
            let label = format!("{} [{mode:?}]", key.label());
            let src = match key.preprocess(mode) {
                Ok(p) => p.source,
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    continue;
                }
            };
            let module = match naga::front::wgsl::parse_str(&src) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{label}: parse: {}", e.emit_to_string(&src)));
                    continue;
                }
            };
            if let Err(e) =
                Validator::new(ValidationFlags::all(), Capabilities::all()).validate(&module)
            {
                failures.push(format!("{label}: validate: {}", e.emit_to_string(&src)));
            }
            if mode == F16Mode::Packed && src.contains("enable f16") {
                failures.push(format!("{label}: packed mode must not need SHADER_F16"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} variants failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
