//! CPU-only: every shader variant the ops can request, preprocessed for both f16 storage modes,
//! parses and validates with naga, and its uniform struct as naga lays it out (WGSL rules)
//! matches the Rust parameter struct the kernel key names field by field. No GPU needed.

use diffuse::gpu::{F16Mode, ParamsLayout, WgslType};
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
            if let Err(e) = uniform_matches(&module, key.params) {
                failures.push(format!("{label}: params: {e}"));
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

/// The struct bound at `@binding(0)` as naga lays it out against the Rust layout: same field
/// names, offsets and sizes in order, same total size.
fn uniform_matches(module: &naga::Module, rust: &ParamsLayout) -> Result<(), String> {
    let var = module
        .global_variables
        .iter()
        .map(|(_, v)| v)
        .find(|v| {
            v.space == naga::AddressSpace::Uniform
                && v.binding.as_ref().map(|b| (b.group, b.binding)) == Some((0, 0))
        })
        .ok_or("no uniform at binding 0")?;
    let naga::TypeInner::Struct { members, span } = &module.types[var.ty].inner else {
        return Err("the uniform is not a struct".into());
    };
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| format!("layout: {e}"))?;
    let got: Vec<(String, u32, u32)> = members
        .iter()
        .map(|m| {
            (
                m.name.clone().unwrap_or_default(),
                m.offset,
                layouter[m.ty].size,
            )
        })
        .collect();
    let want: Vec<(String, u32, u32)> = rust
        .fields
        .iter()
        .map(|f| (f.name.to_string(), f.offset as u32, f.ty.size() as u32))
        .collect();
    if got != want || *span as usize != rust.size {
        return Err(format!(
            "WGSL {got:?} ({span} bytes) != {} {want:?} ({} bytes)",
            rust.path, rust.size
        ));
    }
    Ok(())
}

#[test]
fn params_mismatch_is_detected() {
    // The check above is not vacuous: a shader whose struct differs from the layout fails it.
    let src = "struct Params { n: u32, c: vec4<f32> }\n\
               @group(0) @binding(0) var<uniform> p: Params;\n\
               @compute @workgroup_size(1) fn main() { _ = p.n; }\n";
    let module = naga::front::wgsl::parse_str(src).unwrap();
    static FIELDS: [diffuse::gpu::ParamField; 2] = [
        diffuse::gpu::ParamField {
            name: "n",
            ty: WgslType::U32,
            offset: 0,
        },
        diffuse::gpu::ParamField {
            name: "c",
            ty: WgslType::Vec4F32,
            offset: 4,
        },
    ];
    let layout = ParamsLayout {
        path: "test",
        fields: &FIELDS,
        size: 20,
    };
    let e = uniform_matches(&module, &layout).unwrap_err();
    assert!(e.contains("\"c\", 16, 16"), "{e}");
}
