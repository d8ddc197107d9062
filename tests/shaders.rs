//! CPU-only: every shader variant the ops can request, preprocessed for both f16 storage modes,
//! parses and validates with naga, and its uniform struct as naga lays it out (WGSL rules)
//! matches the Rust parameter struct the kernel key names field by field. No GPU needed.

use diffuse::gpu::{F16Mode, ParamsLayout, WgslType};
use naga::valid::{Capabilities, ValidationFlags, Validator};

#[test]
fn every_variant_validates_with_naga() {
    let variants = all_keys();
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

fn all_keys() -> Vec<diffuse::gpu::KernelKey> {
    diffuse::ops::all_variants()
}

/// A family's source with its `#include`d files.
fn family_source(family: &str) -> String {
    let read = |f: &str| {
        std::fs::read_to_string(format!("{}/shaders/{f}.wgsl", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("shaders/{f}.wgsl: {e}"))
    };
    let src = read(family);
    let mut all = src.clone();
    for line in src.lines() {
        if let Some(inc) = line.trim().strip_prefix("#include ") {
            all.push_str(&read(inc.trim()));
        }
    }
    all
}

#[test]
fn defines_the_ops_set_are_the_ones_the_shaders_test() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut set: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for key in all_keys() {
        set.entry(key.family)
            .or_default()
            .extend(key.defines.keys().cloned());
    }
    let mut failures = Vec::new();
    for (family, defines) in &set {
        let src = family_source(family);
        let tested: BTreeSet<String> = src
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match w.next() {
                    Some("#if" | "#ifdef" | "#ifndef") => w.next().map(str::to_string),
                    _ => None,
                }
            })
            .collect();
        // A define the ops set is read (`#if`, `${..}`), or named in a comment where it is a
        // selector's default (reduce's OP_SUM) or redundant (solver_step's NIN).
        for d in defines {
            let named = src.lines().any(|l| {
                l.split("//").nth(1).is_some_and(|c| {
                    c.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                        .any(|w| w == d)
                })
            });
            if !tested.contains(d) && !src.contains(&format!("${{{d}}}")) && !named {
                failures.push(format!(
                    "{family}: the ops set `{d}`, the shader never names it"
                ));
            }
        }
        for d in &tested {
            if !defines.contains(d) {
                failures.push(format!(
                    "{family}: the shader tests `{d}`, no variant sets it"
                ));
            }
        }
    }
    // elementwise.wgsl's header lists its defines (it once documented a stale `OP = 0…4`).
    let header: String = family_source("elementwise")
        .lines()
        .take_while(|l| l.starts_with("//"))
        .collect();
    for d in &set["elementwise"] {
        if !header.contains(d.as_str()) {
            failures.push(format!(
                "elementwise: the header comment does not list `{d}`"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
