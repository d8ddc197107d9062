//! WGSL preprocessing: a few line directives on top of plain WGSL, so that one `.wgsl` file per
//! kernel family can be specialised by dtype, storage mode and defines. Errors, never panics.
//!
//! Directives (each on its own line; `//` comments after them are kept as documentation):
//! - `#if NAME` / `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` — `#if` is true when
//!   NAME is defined and not `0`/`false`.
//! - `#uniform Struct` — declares `struct Struct`, generated from the kernel key's Rust
//!   [`ParamsLayout`] (see [`super::params`]), and `p: Struct` at binding 0 (every kernel has
//!   its parameters there). Shaders never write the struct by hand.
//! - `#tensor <binding> <name> <read|write|rw> [vec4] [f32|f16]` — declares a tensor binding
//!   and its accessors `name_ld(i) -> f32`, `name_st(i, v: f32)`, and for `vec4`
//!   `name_ld4(i4) -> vec4<f32>` (index in units of 4 elements). The element type is the
//!   kernel dtype unless given. All arithmetic is f32; storage may be f32, f16, or f16 packed
//!   two per `u32` when the device lacks SHADER_F16 (writes then use atomics on the word).
//!   `i8` declares signed bytes packed four per `u32` (quantized weights and inputs):
//!   `name_ld(i)` is byte i as f32, `name_ld4(i4)` the four bytes of word i4 (`unpack4xI8`),
//!   and `name_word(i4)` the raw word (for `dot4I8Packed`); written (`write`, not `vec4`) only
//!   whole words at a time, `name_stw(i4, word)`.
//! - `${NAME}` anywhere is replaced by the define's value; an unknown NAME is an error.

use super::params::ParamsLayout;
use crate::error::{Error, Result};
use crate::tensor::DType;
use std::collections::BTreeMap;
use std::fmt::Write;

/// How f16 tensors are stored on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum F16Mode {
    /// `array<f16>` with the SHADER_F16 feature.
    Native,
    /// Two f16 per `u32`, converted with `unpack2x16float` / `pack2x16float`.
    Packed,
}

/// The kind of one binding, used to build the bind-group layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// One declared binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingDecl {
    pub binding: u32,
    pub name: String,
    pub kind: BindingKind,
}

/// A preprocessed shader: WGSL text plus its bindings in binding order.
#[derive(Debug, Clone)]
pub struct Processed {
    pub source: String,
    pub bindings: Vec<BindingDecl>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
}

/// Preprocesses `src` (the file `name`) for `dtype` and `f16` storage with `defines`; `params`
/// is the layout `#uniform` declares.
pub fn preprocess(
    name: &str,
    src: &str,
    defines: &BTreeMap<String, String>,
    dtype: DType,
    f16: F16Mode,
    params: Option<&ParamsLayout>,
) -> Result<Processed> {
    let err = |line: usize, reason: String| Error::Preprocess {
        shader: name.to_string(),
        line,
        reason,
    };
    let mut body = String::new();
    let mut bindings: Vec<BindingDecl> = Vec::new();
    let mut needs_f16 = false;
    // Stack of (this branch active, parent active, seen #else).
    let mut stack: Vec<(bool, bool, bool)> = Vec::new();
    let active = |stack: &Vec<(bool, bool, bool)>| stack.last().map(|s| s.0 && s.1).unwrap_or(true);
    let truthy = |n: &str| {
        defines
            .get(n)
            .map(|v| v != "0" && v != "false")
            .unwrap_or(false)
    };

    for (i, raw) in src.lines().enumerate() {
        let ln = i + 1;
        let line = raw.trim_start();
        let code = line.split("//").next().unwrap_or("").trim();
        // Defines are substituted in directive lines too (e.g. `#tensor 2 x read ${DT_X}`),
        // but only where the line is active: an inactive branch may name undefined defines.
        let is_branch = ["#if", "#ifdef", "#ifndef", "#else", "#endif"]
            .iter()
            .any(|d| code.split_whitespace().next() == Some(d));
        let code = if code.starts_with('#') && code.contains("${") && (is_branch || active(&stack))
        {
            substitute(code, defines).map_err(|r| err(ln, r))?
        } else {
            code.to_string()
        };
        if let Some(rest) = code.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            let dir = words.next().unwrap_or("");
            let args: Vec<&str> = words.collect();
            match dir {
                "if" | "ifdef" | "ifndef" => {
                    let n = *args
                        .first()
                        .ok_or_else(|| err(ln, format!("#{dir} needs a name")))?;
                    let v = match dir {
                        "if" => truthy(n),
                        "ifdef" => defines.contains_key(n),
                        _ => !defines.contains_key(n),
                    };
                    let parent = active(&stack);
                    stack.push((v, parent, false));
                }
                "else" => {
                    let top = stack
                        .last_mut()
                        .ok_or_else(|| err(ln, "#else without #if".into()))?;
                    if top.2 {
                        return Err(err(ln, "second #else for one #if".into()));
                    }
                    top.0 = !top.0;
                    top.2 = true;
                }
                "endif" => {
                    stack
                        .pop()
                        .ok_or_else(|| err(ln, "#endif without #if".into()))?;
                }
                "uniform" if active(&stack) => {
                    let s = args
                        .first()
                        .ok_or_else(|| err(ln, "#uniform needs a struct name".into()))?;
                    if bindings.iter().any(|b| b.binding == 0) {
                        return Err(err(ln, "binding 0 declared twice".into()));
                    }
                    let layout = params.ok_or_else(|| {
                        err(
                            ln,
                            format!("#uniform {s}: the kernel has no parameter layout"),
                        )
                    })?;
                    body.push_str(&layout.wgsl(s));
                    bindings.push(BindingDecl {
                        binding: 0,
                        name: "p".into(),
                        kind: BindingKind::Uniform,
                    });
                    writeln!(body, "@group(0) @binding(0) var<uniform> p: {s};").ok();
                }
                "tensor" if active(&stack) => {
                    let (decl, is_f16) = tensor_decl(&args, dtype, f16).map_err(|r| err(ln, r))?;
                    if bindings.iter().any(|b| b.binding == decl.0.binding) {
                        return Err(err(
                            ln,
                            format!("binding {} declared twice", decl.0.binding),
                        ));
                    }
                    needs_f16 |= is_f16 && f16 == F16Mode::Native;
                    bindings.push(decl.0);
                    body.push_str(&decl.1);
                }
                "uniform" | "tensor" => {}
                other => return Err(err(ln, format!("unknown directive #{other}"))),
            }
            continue;
        }
        if !active(&stack) {
            continue;
        }
        body.push_str(&substitute(raw, defines).map_err(|r| err(ln, r))?);
        body.push('\n');
    }
    if !stack.is_empty() {
        return Err(err(src.lines().count(), "unterminated #if".into()));
    }
    bindings.sort_by_key(|b| b.binding);
    let mut source = String::new();
    if needs_f16 {
        source.push_str("enable f16;\n");
    }
    source.push_str(&body);
    Ok(Processed { source, bindings })
}

fn substitute(
    line: &str,
    defines: &BTreeMap<String, String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(pos) = rest.find("${") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${".to_string())?;
        let key = &after[..end];
        let val = defines
            .get(key)
            .ok_or_else(|| format!("undefined define `{key}`"))?;
        out.push_str(val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Builds the declaration and accessors for one `#tensor` line.
fn tensor_decl(
    args: &[&str],
    dtype: DType,
    f16: F16Mode,
) -> std::result::Result<((BindingDecl, String), bool), String> {
    if args.len() < 3 {
        return Err("#tensor needs <binding> <name> <read|write|rw>".into());
    }
    let binding: u32 = args[0]
        .parse()
        .map_err(|_| format!("bad binding number `{}`", args[0]))?;
    if binding == 0 {
        return Err("binding 0 is reserved for #uniform".into());
    }
    let name = args[1];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("bad tensor name `{name}`"));
    }
    let access = match args[2] {
        "read" => Access::Read,
        "write" => Access::Write,
        "rw" => Access::ReadWrite,
        o => return Err(format!("access must be read, write or rw, not `{o}`")),
    };
    let mut vec4 = false;
    let mut dt = dtype;
    for a in &args[3..] {
        match *a {
            "vec4" => vec4 = true,
            "f32" => dt = DType::F32,
            "f16" => dt = DType::F16,
            "i8" => dt = DType::I8,
            o => return Err(format!("unknown #tensor option `{o}`")),
        }
    }
    if vec4 && access != Access::Read {
        return Err("vec4 views are read-only".into());
    }
    let kind = if access == Access::Read {
        BindingKind::StorageRead
    } else {
        BindingKind::StorageReadWrite
    };
    let space = if access == Access::Read {
        "read"
    } else {
        "read_write"
    };
    let head = format!("@group(0) @binding({binding}) var<storage, {space}> {name}");
    let mut s = String::new();
    if dt == DType::I8 && access == Access::Write && !vec4 {
        writeln!(s, "{head}: array<u32>;").ok();
        writeln!(s, "fn {name}_stw(i: u32, v: u32) {{ {name}[i] = v; }}").ok();
        let decl = BindingDecl {
            binding,
            name: name.to_string(),
            kind,
        };
        return Ok(((decl, s), false));
    }
    if dt == DType::I8 && access != Access::Read {
        return Err("i8 tensors are read or write, not rw".into());
    }
    let packed = dt == DType::F16 && f16 == F16Mode::Packed;
    match (dt, packed, vec4) {
        (DType::I8, _, _) => {
            writeln!(s, "{head}: array<u32>;").ok();
            writeln!(s, "fn {name}_word(i: u32) -> u32 {{ return {name}[i]; }}").ok();
            writeln!(
                s,
                "fn {name}_ld4(i: u32) -> vec4<f32> {{ return vec4<f32>(unpack4xI8({name}[i])); }}"
            )
            .ok();
            writeln!(
                s,
                "fn {name}_ld(i: u32) -> f32 {{ \
                 return f32(extractBits(bitcast<i32>({name}[i >> 2u]), (i & 3u) * 8u, 8u)); }}"
            )
            .ok();
        }
        (DType::F32, _, false) => {
            writeln!(s, "{head}: array<f32>;").ok();
            writeln!(s, "fn {name}_ld(i: u32) -> f32 {{ return {name}[i]; }}").ok();
            if access != Access::Read {
                writeln!(s, "fn {name}_st(i: u32, v: f32) {{ {name}[i] = v; }}").ok();
            }
        }
        (DType::F32, _, true) => {
            writeln!(s, "{head}: array<vec4<f32>>;").ok();
            writeln!(
                s,
                "fn {name}_ld4(i: u32) -> vec4<f32> {{ return {name}[i]; }}"
            )
            .ok();
            writeln!(
                s,
                "fn {name}_ld(i: u32) -> f32 {{ return {name}[i >> 2u][i & 3u]; }}"
            )
            .ok();
        }
        (DType::F16, false, false) => {
            writeln!(s, "{head}: array<f16>;").ok();
            writeln!(
                s,
                "fn {name}_ld(i: u32) -> f32 {{ return f32({name}[i]); }}"
            )
            .ok();
            if access != Access::Read {
                writeln!(s, "fn {name}_st(i: u32, v: f32) {{ {name}[i] = f16(v); }}").ok();
            }
        }
        (DType::F16, false, true) => {
            writeln!(s, "{head}: array<vec4<f16>>;").ok();
            writeln!(
                s,
                "fn {name}_ld4(i: u32) -> vec4<f32> {{ return vec4<f32>({name}[i]); }}"
            )
            .ok();
            writeln!(
                s,
                "fn {name}_ld(i: u32) -> f32 {{ return f32({name}[i >> 2u][i & 3u]); }}"
            )
            .ok();
        }
        (DType::F16, true, true) => {
            writeln!(s, "{head}: array<vec2<u32>>;").ok();
            writeln!(
                s,
                "fn {name}_ld4(i: u32) -> vec4<f32> {{ let w = {name}[i]; \
                 return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }}"
            )
            .ok();
            writeln!(
                s,
                "fn {name}_ld(i: u32) -> f32 {{ let w = {name}[i >> 2u]; \
                 return unpack2x16float(select(w.x, w.y, (i & 2u) != 0u))[i & 1u]; }}"
            )
            .ok();
        }
        (DType::F16, true, false) if access == Access::Read => {
            writeln!(s, "{head}: array<u32>;").ok();
            writeln!(
                s,
                "fn {name}_ld(i: u32) -> f32 {{ return unpack2x16float({name}[i >> 1u])[i & 1u]; }}"
            )
            .ok();
        }
        (DType::F16, true, false) => {
            // Two invocations may own the two halves of one word: update them atomically.
            writeln!(s, "{head}: array<atomic<u32>>;").ok();
            writeln!(
                s,
                "fn {name}_ld(i: u32) -> f32 {{ \
                 return unpack2x16float(atomicLoad(&{name}[i >> 1u]))[i & 1u]; }}"
            )
            .ok();
            writeln!(
                s,
                "fn {name}_st(i: u32, v: f32) {{ let sh = (i & 1u) * 16u; \
                 let bits = pack2x16float(vec2<f32>(v, 0.0)) & 0xffffu; \
                 atomicAnd(&{name}[i >> 1u], ~(0xffffu << sh)); \
                 atomicOr(&{name}[i >> 1u], bits << sh); }}"
            )
            .ok();
        }
    }
    Ok((
        (
            BindingDecl {
                binding,
                name: name.to_string(),
                kind,
            },
            s,
        ),
        dt == DType::F16,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn conditionals_and_substitution() {
        let src = "#if A\nx ${N}\n#else\ny\n#endif\n#ifndef B\nz\n#endif\n";
        let p = preprocess(
            "t",
            src,
            &defs(&[("A", "1"), ("N", "7")]),
            DType::F32,
            F16Mode::Native,
            None,
        )
        .unwrap();
        assert_eq!(p.source, "x 7\nz\n");
        let p = preprocess(
            "t",
            src,
            &defs(&[("A", "0"), ("N", "7"), ("B", "")]),
            DType::F32,
            F16Mode::Native,
            None,
        )
        .unwrap();
        assert_eq!(p.source, "y\n");
    }

    #[test]
    fn errors_name_the_line() {
        let d = defs(&[]);
        let e = preprocess("k", "a\n#endif\n", &d, DType::F32, F16Mode::Native, None).unwrap_err();
        assert!(e.to_string().contains("shader `k` line 2"), "{e}");
        let e = preprocess("k", "#if A\n", &d, DType::F32, F16Mode::Native, None).unwrap_err();
        assert!(e.to_string().contains("unterminated"), "{e}");
        let e = preprocess("k", "x ${NOPE}\n", &d, DType::F32, F16Mode::Native, None).unwrap_err();
        assert!(e.to_string().contains("NOPE"), "{e}");
        let e = preprocess(
            "k",
            "#tensor 1 x sideways\n",
            &d,
            DType::F32,
            F16Mode::Native,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("sideways"), "{e}");
        let e =
            preprocess("k", "#frobnicate\n", &d, DType::F32, F16Mode::Native, None).unwrap_err();
        assert!(e.to_string().contains("#frobnicate"), "{e}");
        let e = preprocess(
            "k",
            "#tensor 1 x read\n#tensor 1 y read\n",
            &d,
            DType::F32,
            F16Mode::Native,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn f16_enables_extension_only_when_native() {
        let src = "#tensor 1 x read\n";
        let n = preprocess("t", src, &defs(&[]), DType::F16, F16Mode::Native, None).unwrap();
        assert!(n.source.starts_with("enable f16;"));
        let p = preprocess("t", src, &defs(&[]), DType::F16, F16Mode::Packed, None).unwrap();
        assert!(!p.source.contains("enable f16"));
        assert!(p.source.contains("unpack2x16float"));
    }

    crate::gpu::params! {
        struct Demo {
            n: u32,
            alpha: f32,
            _p0: u32,
            _p1: u32,
        }
    }

    #[test]
    fn uniform_pastes_the_generated_struct() {
        use crate::gpu::Uniform;
        let src = "#uniform Params\n";
        let layout = Some(<Demo as Uniform>::LAYOUT);
        let p = preprocess("t", src, &defs(&[]), DType::F32, F16Mode::Native, layout).unwrap();
        assert!(p.source.starts_with("struct Params {"), "{}", p.source);
        assert!(
            p.source.contains("  alpha: f32,\n  _p0: u32,\n"),
            "{}",
            p.source
        );
        assert!(p.source.contains("var<uniform> p: Params;"), "{}", p.source);
        assert_eq!(p.bindings[0].kind, BindingKind::Uniform);
        let e = preprocess("k", src, &defs(&[]), DType::F32, F16Mode::Native, None).unwrap_err();
        assert!(e.to_string().contains("no parameter layout"), "{e}");
    }
}
