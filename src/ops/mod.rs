//! Floor 2: one launcher per shader family. Each op validates shapes and dtypes (errors name
//! the tensors), picks the kernel variant and appends dispatches to a [`Recorder`]; nothing
//! runs until the recording is submitted.

pub mod adam;
pub mod analytic;
pub mod attention;
pub mod coef;
pub mod concat;
pub mod conv2d;
pub mod conv2d_a8;
pub mod conv_pack;
pub mod degrade;
pub mod elementwise;
pub mod embedding;
pub mod fir;
pub mod gemm;
pub mod gemm_a8;
pub mod group_norm;
pub mod group_norm_banded;
pub mod langevin;
pub mod layer_norm;
pub mod reduce;
pub mod resample;
pub mod rng;
pub mod rows;
pub mod softmax;
pub mod solver_step;
pub mod threshold;
pub mod transpose;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelKey};
use crate::tensor::{DType, Tensor};

/// Invocations per workgroup of the 1-D kernels.
pub const WG_1D: u32 = 256;

/// Every kernel variant the ops can request (for the naga validation test and warm-up).
pub fn all_variants() -> Vec<KernelKey> {
    let mut v = Vec::new();
    for dt in [DType::F32, DType::F16] {
        v.extend(attention::variants(dt));
        v.extend(elementwise::variants(dt));
        v.extend(gemm::variants(dt));
        v.extend(conv2d::variants(dt));
        v.extend(conv2d_a8::variants(dt));
        v.extend(gemm_a8::variants(dt));
        v.extend(conv_pack::variants(dt));
        v.extend(group_norm::variants(dt));
        v.extend(layer_norm::variants(dt));
        v.extend(softmax::variants(dt));
        v.extend(resample::variants(dt));
        v.extend(rows::variants(dt));
        v.extend(concat::variants(dt));
        v.extend(embedding::variants(dt));
        v.extend(reduce::variants(dt));
        v.extend(rng::variants(dt));
        v.extend(transpose::variants(dt));
        v.extend(fir::variants(dt));
        v.extend(solver_step::variants(dt));
        v.extend(threshold::variants(dt));
        v.extend(langevin::variants(dt));
        v.extend(analytic::variants(dt));
        v.extend(coef::variants(dt));
        v.extend(degrade::variants(dt));
        v.extend(adam::variants(dt));
    }
    v
}

/// Workgroup grid for `groups` workgroups of a 1-D kernel: x up to the device limit, the rest
/// along y (kernels rebuild the index as `wid.y * nwg.x + wid.x`).
pub(crate) fn grid_1d(gpu: &Gpu, op: &'static str, groups: u64) -> Result<[u32; 3]> {
    let max = gpu.info().max_workgroups_per_dim as u64;
    let x = groups.clamp(1, max);
    let y = groups.div_ceil(x);
    if y > max {
        return Err(Error::TooLarge {
            op,
            what: "workgroup count".into(),
            got: groups,
            limit: max * max,
        });
    }
    Ok([x as u32, y as u32, 1])
}

pub(crate) fn nonempty(op: &'static str, t: &Tensor) -> Result<()> {
    if t.numel() == 0 {
        return Err(Error::Empty {
            op,
            tensor: t.name().into(),
            shape: t.shape().to_vec(),
        });
    }
    Ok(())
}

pub(crate) fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            tensor: b.name().into(),
            got: b.dtype(),
            other: a.name().into(),
            want: a.dtype(),
        });
    }
    Ok(())
}

pub(crate) fn same_shape(op: &'static str, want: &Tensor, got: &Tensor) -> Result<()> {
    if want.shape() != got.shape() {
        return Err(Error::Shape {
            op,
            tensor: got.name().into(),
            got: got.shape().to_vec(),
            expected: format!(
                "expected {:?} (the shape of `{}`)",
                want.shape(),
                want.name()
            ),
        });
    }
    Ok(())
}

pub(crate) fn rank(op: &'static str, t: &Tensor, r: usize, what: &str) -> Result<()> {
    if t.shape().len() != r {
        return Err(Error::Shape {
            op,
            tensor: t.name().into(),
            got: t.shape().to_vec(),
            expected: format!("expected rank {r} ({what})"),
        });
    }
    Ok(())
}

pub(crate) fn dtype_is(op: &'static str, t: &Tensor, want: DType, why: &str) -> Result<()> {
    if t.dtype() != want {
        return Err(Error::UnsupportedDType {
            op,
            tensor: t.name().into(),
            got: t.dtype(),
            reason: why.into(),
        });
    }
    Ok(())
}

pub(crate) fn shape_err(op: &'static str, t: &Tensor, expected: String) -> Error {
    Error::Shape {
        op,
        tensor: t.name().into(),
        got: t.shape().to_vec(),
        expected,
    }
}

/// Fits a u32 kernel parameter or names it in an error.
pub(crate) fn u32_param(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge {
        op,
        what: what.into(),
        got: v as u64,
        limit: u32::MAX as u64,
    })
}
