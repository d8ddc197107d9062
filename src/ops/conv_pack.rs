//! Conv weight repacking (`shaders/conv_pack.wgsl`): [Cout, Cin, kh, kw] (PyTorch layout) into
//! [⌈Cout/4⌉, Cin, kh·kw, 4], four output channels innermost and zero-padded, so the conv2d row
//! kernel loads the weights of 4 channels at one tap as one vec4 (1.15–1.2× on lavapipe,
//! benches/README.md). Done once per weight, at model load.

use super::{grid_1d, nonempty, rank, same_dtype, shape_err, u32_param, WG_1D};
use crate::error::Result;
use crate::gpu::{params, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

params! {
    /// `#uniform Params` of `shaders/conv_pack.wgsl`.
    struct Params {
        cout: u32,
        cin: u32,
        taps: u32,
        /// ⌈Cout/4⌉ · 4 · Cin · taps
        total: u32,
    }
}

/// The kernel key.
pub fn key(dt: DType) -> KernelKey {
    KernelKey::new::<Params>("conv_pack", "main", dt, [WG_1D, 1, 1])
}

/// All variants (for validation).
pub fn variants(dt: DType) -> Vec<KernelKey> {
    vec![key(dt)]
}

/// The packed shape of weights [Cout, Cin, kh, kw]: [⌈Cout/4⌉, Cin, kh·kw, 4].
pub fn packed_shape(weight_shape: &[usize]) -> [usize; 4] {
    let [cout, cin, kh, kw] = [
        weight_shape[0],
        weight_shape[1],
        weight_shape[2],
        weight_shape[3],
    ];
    [cout.div_ceil(4), cin, kh * kw, 4]
}

/// Records `packed` = the repacked `weight` (see the module doc).
pub fn pack_weights(rec: &mut Recorder<'_>, weight: &Tensor, packed: &Tensor) -> Result<()> {
    const OP: &str = "conv_pack";
    nonempty(OP, weight)?;
    rank(OP, weight, 4, "[Cout, Cin, kh, kw]")?;
    same_dtype(OP, weight, packed)?;
    let want = packed_shape(weight.shape());
    if packed.shape() != want {
        return Err(shape_err(OP, packed, format!("expected {want:?}")));
    }
    let s = weight.shape();
    let gpu = rec.gpu();
    let total = packed.numel();
    let p = Params {
        cout: u32_param(OP, "Cout", s[0])?,
        cin: u32_param(OP, "Cin", s[1])?,
        taps: u32_param(OP, "kh·kw", s[2] * s[3])?,
        total: u32_param(OP, "packed elements", total)?,
    };
    let g = grid_1d(gpu, OP, (total as u64).div_ceil(WG_1D as u64))?;
    let binds = [
        ("w", weight.binding(gpu, OP)?),
        ("packed", packed.binding(gpu, OP)?),
    ];
    rec.dispatch(&key(weight.dtype()), &p, &binds, g)?;
    Ok(())
}
