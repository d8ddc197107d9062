//! Kernel parameter structs, declared once in Rust. `params!` emits the
//! `#[repr(C)]` `Pod` struct the host writes into the uniform buffer *and* its [`ParamsLayout`]
//! (field names, WGSL types, byte offsets); the shader preprocessor turns `#uniform Params`
//! into the WGSL `struct Params` generated from that layout, so the two cannot drift. A
//! compile-time assertion checks that `repr(C)` places every field where WGSL's uniform layout
//! rules do (a `vec4` is 16-byte aligned, the struct size a multiple of 16): padding is explicit
//! `u32` fields, as in WGSL.

use std::fmt::Write;

/// The WGSL type of one parameter field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WgslType {
    U32,
    I32,
    F32,
    Vec4U32,
    Vec4F32,
    /// `array<vec4<u32>, N>` (uniform arrays need a 16-byte stride).
    ArrayVec4U32(usize),
    /// `array<vec4<f32>, N>`.
    ArrayVec4F32(usize),
}

impl WgslType {
    /// Alignment under WGSL's uniform address-space rules.
    pub const fn align(self) -> usize {
        match self {
            WgslType::U32 | WgslType::I32 | WgslType::F32 => 4,
            _ => 16,
        }
    }

    /// Size in bytes.
    pub const fn size(self) -> usize {
        match self {
            WgslType::U32 | WgslType::I32 | WgslType::F32 => 4,
            WgslType::Vec4U32 | WgslType::Vec4F32 => 16,
            WgslType::ArrayVec4U32(n) | WgslType::ArrayVec4F32(n) => 16 * n,
        }
    }

    /// The WGSL spelling.
    pub fn wgsl(self) -> String {
        match self {
            WgslType::U32 => "u32".into(),
            WgslType::I32 => "i32".into(),
            WgslType::F32 => "f32".into(),
            WgslType::Vec4U32 => "vec4<u32>".into(),
            WgslType::Vec4F32 => "vec4<f32>".into(),
            WgslType::ArrayVec4U32(n) => format!("array<vec4<u32>, {n}>"),
            WgslType::ArrayVec4F32(n) => format!("array<vec4<f32>, {n}>"),
        }
    }
}

/// A Rust type usable as a parameter field, with its WGSL counterpart. Deliberately not
/// implemented for `[u32; 2]`/`[u32; 3]` (WGSL would align those as vectors): pad with `u32`s.
pub trait WgslField {
    const TYPE: WgslType;
}

impl WgslField for u32 {
    const TYPE: WgslType = WgslType::U32;
}
impl WgslField for i32 {
    const TYPE: WgslType = WgslType::I32;
}
impl WgslField for f32 {
    const TYPE: WgslType = WgslType::F32;
}
impl WgslField for [u32; 4] {
    const TYPE: WgslType = WgslType::Vec4U32;
}
impl WgslField for [f32; 4] {
    const TYPE: WgslType = WgslType::Vec4F32;
}
impl<const N: usize> WgslField for [[u32; 4]; N] {
    const TYPE: WgslType = WgslType::ArrayVec4U32(N);
}
impl<const N: usize> WgslField for [[f32; 4]; N] {
    const TYPE: WgslType = WgslType::ArrayVec4F32(N);
}

/// One field of a parameter struct.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamField {
    pub name: &'static str,
    pub ty: WgslType,
    /// Byte offset in the Rust `repr(C)` struct (checked equal to WGSL's).
    pub offset: usize,
}

/// A parameter struct's layout, as `params!` records it.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamsLayout {
    /// The Rust type's path, for error messages.
    pub path: &'static str,
    pub fields: &'static [ParamField],
    /// `size_of` the Rust struct (checked equal to WGSL's).
    pub size: usize,
}

impl ParamsLayout {
    /// True when every field lies at the offset WGSL's uniform layout gives it and the sizes
    /// agree (a multiple of 16). `params!` asserts this at compile time.
    pub const fn matches_wgsl(&self) -> bool {
        let mut end: usize = 0;
        let mut i = 0;
        while i < self.fields.len() {
            let f = &self.fields[i];
            let at = end.div_ceil(f.ty.align()) * f.ty.align();
            if at != f.offset {
                return false;
            }
            end = at + f.ty.size();
            i += 1;
        }
        end.div_ceil(16) * 16 == self.size && self.size == end
    }

    /// The WGSL declaration `struct <name> { field: type, ... }`.
    pub fn wgsl(&self, name: &str) -> String {
        let mut s = format!("struct {name} {{ // generated from {}\n", self.path);
        for f in self.fields {
            writeln!(s, "  {}: {},", f.name, f.ty.wgsl()).ok();
        }
        s.push_str("}\n");
        s
    }
}

/// A kernel parameter struct (implemented by `params!`).
pub trait Uniform: bytemuck::Pod {
    const LAYOUT: &'static ParamsLayout;
}

/// Declares a kernel parameter struct: a `#[repr(C)]` `Pod` struct plus its [`Uniform`] layout,
/// which the `#uniform` directive turns into the shader's WGSL struct. Field names are the WGSL
/// names; field types are `u32`, `i32`, `f32`, `[f32; 4]`/`[u32; 4]` (`vec4`) and arrays of
/// those (`array<vec4<..>, N>`); padding is explicit `u32` fields. A field placed differently
/// from WGSL's uniform layout (or a size not a multiple of 16) fails to compile.
macro_rules! params {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fattr:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, ::bytemuck::Pod, ::bytemuck::Zeroable)]
        $vis struct $name {
            $( $(#[$fattr])* $field: $ty ),*
        }
        impl $crate::gpu::Uniform for $name {
            const LAYOUT: &'static $crate::gpu::ParamsLayout = &$crate::gpu::ParamsLayout {
                path: concat!(module_path!(), "::", stringify!($name)),
                fields: &[$(
                    $crate::gpu::ParamField {
                        name: stringify!($field),
                        ty: <$ty as $crate::gpu::WgslField>::TYPE,
                        offset: ::core::mem::offset_of!($name, $field),
                    }
                ),*],
                size: ::core::mem::size_of::<$name>(),
            };
        }
        const _: () = assert!(
            <$name as $crate::gpu::Uniform>::LAYOUT.matches_wgsl(),
            concat!(
                "params struct `", stringify!($name), "`: a field is not where WGSL's uniform ",
                "layout puts it, or the size is not a multiple of 16; pad with u32 fields"
            )
        );
    };
}
pub(crate) use params;

#[cfg(test)]
mod tests {
    use super::*;

    params! {
        struct Mixed {
            n: u32,
            alpha: f32,
            _p0: u32,
            _p1: u32,
            c: [f32; 4],
            taps: [[f32; 4]; 2],
        }
    }

    #[test]
    fn layout_records_offsets_and_wgsl() {
        let l = <Mixed as Uniform>::LAYOUT;
        assert_eq!(l.size, 64);
        let offs: Vec<usize> = l.fields.iter().map(|f| f.offset).collect();
        assert_eq!(offs, [0, 4, 8, 12, 16, 32]);
        let w = l.wgsl("Params");
        assert!(w.starts_with("struct Params {"), "{w}");
        assert!(w.contains("  c: vec4<f32>,\n"), "{w}");
        assert!(w.contains("  taps: array<vec4<f32>, 2>,\n"), "{w}");
        assert!(w.contains("tests::Mixed"), "{w}");
    }

    #[test]
    fn wgsl_rules_reject_unaligned_vec4_and_short_size() {
        // repr(C) would put a [f32; 4] right after one u32 (offset 4); WGSL aligns it to 16.
        static BAD: [ParamField; 2] = [
            ParamField {
                name: "n",
                ty: WgslType::U32,
                offset: 0,
            },
            ParamField {
                name: "c",
                ty: WgslType::Vec4F32,
                offset: 4,
            },
        ];
        let bad = ParamsLayout {
            path: "bad",
            fields: &BAD,
            size: 20,
        };
        assert!(!bad.matches_wgsl());
        // Three u32 (12 bytes): WGSL would round the uniform struct to 16.
        static THREE: [ParamField; 3] = [
            ParamField {
                name: "a",
                ty: WgslType::U32,
                offset: 0,
            },
            ParamField {
                name: "b",
                ty: WgslType::U32,
                offset: 4,
            },
            ParamField {
                name: "c",
                ty: WgslType::U32,
                offset: 8,
            },
        ];
        let short = ParamsLayout {
            path: "short",
            fields: &THREE,
            size: 12,
        };
        assert!(!short.matches_wgsl());
    }
}
