//! CPU-only: every shader variant the ops can request, preprocessed for both f16 storage modes,
//! parses and validates with naga. No GPU needed.

use diffuse::gpu::F16Mode;
use naga::valid::{Capabilities, ValidationFlags, Validator};

#[test]
fn every_variant_validates_with_naga() {
    let mut variants = diffuse::ops::all_variants();
    variants.extend(diffuse::solvers::executor::variants());
    for dt in [diffuse::DType::F32, diffuse::DType::F16] {
        variants.extend(diffuse::models::analytic::variants(dt));
    }
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
