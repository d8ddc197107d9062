//! safetensors reading (validated by the `safetensors` crate: a corrupt or truncated file is an
//! error naming the file) with dtype conversion, and f32 writing for CLI outputs.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, Metadata};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// An opened safetensors file. Tensors are converted and uploaded one at a time; the file's
/// bytes are dropped with this value, so the host keeps no copy of the weights.
pub struct Weights {
    path: PathBuf,
    bytes: Vec<u8>,
    header_len: usize,
    meta: Metadata,
    used: RefCell<BTreeSet<String>>,
    /// The folder's `quantization_config` (int8 weights are accepted only with one).
    quant: Option<super::quant::QuantConfig>,
}

/// A tensor read to the host as f32 (inputs of the CLI, goldens in tests).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Weights {
    /// Reads and validates the file's header and layout.
    pub fn open(path: &Path) -> Result<Weights> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::Load {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let (header_len, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Load {
                file,
                reason: format!("not a valid safetensors file ({e})"),
            })?;
        Ok(Weights {
            path: path.to_path_buf(),
            bytes,
            header_len,
            meta,
            used: RefCell::new(BTreeSet::new()),
            quant: None,
        })
    }

    /// With the model folder's `quantization_config` (see [`super::quant`]).
    pub fn with_quantization(mut self, q: Option<super::quant::QuantConfig>) -> Weights {
        self.quant = q;
        self
    }

    /// The int8 weight `name` ([`super::quant`] layout, shape `want`) and its per-output-channel
    /// scales `name_scale` [want[0]], or None when `name` is stored as a float. Int8 without a
    /// `quantization_config`, a scale tensor of the wrong shape or dtype, and negative or
    /// non-finite scales are errors naming the tensor.
    pub fn int8_weight(&self, name: &str, want: &[usize]) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
        let Some(info) = self.meta.info(name) else {
            return Ok(None);
        };
        if info.dtype != Dtype::I8 {
            return Ok(None);
        }
        let fail = |reason: String| Error::Load {
            file: self.file(),
            reason,
        };
        if self.quant.is_none() {
            return Err(fail(format!(
                "tensor `{name}` is int8 but the folder's config.json has no quantization_config"
            )));
        }
        if info.shape != want {
            return Err(Error::TensorShape {
                file: self.file(),
                tensor: name.into(),
                got: info.shape.clone(),
                want: want.to_vec(),
            });
        }
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = 8 + self.header_len + info.data_offsets.1;
        let q: Vec<i8> = self.bytes[start..end].iter().map(|&b| b as i8).collect();
        if let Some(i) = q.iter().position(|&v| v == i8::MIN) {
            return Err(fail(format!(
                "tensor `{name}` holds -128 at flat index {i}; the symmetric scheme uses -127..=127"
            )));
        }
        let sname = format!("{name}{}", super::quant::SCALE_SUFFIX);
        match self.meta.info(&sname) {
            None => {
                return Err(Error::MissingTensor {
                    file: self.file(),
                    tensor: sname,
                })
            }
            Some(si) if si.dtype != Dtype::F32 => {
                return Err(Error::TensorDType {
                    file: self.file(),
                    tensor: sname,
                    got: format!("{:?}", si.dtype),
                    extra: "; quantization scales must be F32".into(),
                })
            }
            Some(_) => {}
        }
        let scales = self.read_f32(&sname, Some(&want[..1]))?.data;
        if let Some(i) = scales.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(fail(format!(
                "tensor `{sname}` holds {} at index {i}; scales must be finite and >= 0",
                scales[i]
            )));
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok(Some((q, scales)))
    }

    /// The input scale `P.input_scale` ([1], F32, finite, ≥ 0) of the quantized layer whose
    /// weight is `weight`, when the folder quantizes activations (W8A8); None otherwise. A
    /// missing tensor, a wrong shape or dtype and a bad value are errors naming the tensor.
    pub fn input_scale(&self, weight: &str) -> Result<Option<f32>> {
        use super::quant::Activations;
        if self.quant.as_ref().map(|q| q.activations) != Some(Activations::Int8) {
            return Ok(None);
        }
        let name = super::quant::input_scale_name(weight);
        match self.meta.info(&name) {
            None => {
                return Err(Error::MissingTensor {
                    file: self.file(),
                    tensor: name,
                })
            }
            Some(si) if si.dtype != Dtype::F32 => {
                return Err(Error::TensorDType {
                    file: self.file(),
                    tensor: name,
                    got: format!("{:?}", si.dtype),
                    extra: "; input scales must be F32".into(),
                })
            }
            Some(_) => {}
        }
        let v = self.read_f32(&name, Some(&[1]))?.data[0];
        if !v.is_finite() || v < 0.0 {
            return Err(Error::Load {
                file: self.file(),
                reason: format!("tensor `{name}` holds {v}; input scales must be finite and >= 0"),
            });
        }
        Ok(Some(v))
    }

    fn file(&self) -> String {
        self.path.display().to_string()
    }

    /// True when the file holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.meta.info(name).is_some()
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.meta.tensors().keys().cloned().collect();
        v.sort();
        v
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.meta.info(name).map(|i| i.shape.clone())
    }

    /// Reads `name` as f32 values (any supported dtype), checking the shape when `want` is given.
    pub fn read_f32(&self, name: &str, want: Option<&[usize]>) -> Result<HostTensor> {
        let info = self.meta.info(name).ok_or_else(|| Error::MissingTensor {
            file: self.file(),
            tensor: name.into(),
        })?;
        if let Some(w) = want {
            if info.shape != w {
                return Err(Error::TensorShape {
                    file: self.file(),
                    tensor: name.into(),
                    got: info.shape.clone(),
                    want: w.to_vec(),
                });
            }
        }
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = 8 + self.header_len + info.data_offsets.1;
        let raw = &self.bytes[start..end];
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(Error::TensorDType {
                    file: self.file(),
                    tensor: name.into(),
                    got: format!("{other:?}"),
                    extra: String::new(),
                })
            }
        };
        self.used.borrow_mut().insert(name.to_string());
        Ok(HostTensor {
            shape: info.shape.clone(),
            data,
        })
    }

    /// The stored dtype, shape and raw little-endian bytes of `name` (copied unchanged into a
    /// quantized folder).
    pub fn raw(&self, name: &str) -> Option<(Dtype, Vec<usize>, &[u8])> {
        let info = self.meta.info(name)?;
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = 8 + self.header_len + info.data_offsets.1;
        Some((info.dtype, info.shape.clone(), &self.bytes[start..end]))
    }

    /// The dtype `name` is stored in, as safetensors spells it.
    pub fn stored_dtype(&self, name: &str) -> Option<String> {
        self.meta.info(name).map(|i| format!("{:?}", i.dtype))
    }

    /// Uploads `name` (which must have shape `want`) as a `dtype` tensor. Weights must be
    /// floating point (F32, F16 or BF16) and finite.
    pub fn tensor(&self, gpu: &Gpu, name: &str, want: &[usize], dtype: DType) -> Result<Tensor> {
        if let Some(info) = self.meta.info(name) {
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(Error::TensorDType {
                    file: self.file(),
                    tensor: name.into(),
                    got: format!("{:?}", info.dtype),
                    extra: " for weights".into(),
                });
            }
        }
        let h = self.read_f32(name, Some(want))?;
        if let Some(i) = h.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Load {
                file: self.file(),
                reason: format!("tensor `{name}` holds a non-finite value at flat index {i}"),
            });
        }
        Tensor::from_f32(gpu, name, want, &h.data, dtype)
    }

    /// Errors when the file holds tensors nobody read (the config does not match the weights).
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !used.contains(n))
            .collect();
        if let Some(first) = unused.first() {
            return Err(Error::UnexpectedTensors {
                file: self.file(),
                count: unused.len(),
                first: first.clone(),
            });
        }
        Ok(())
    }
}

/// Writes f32 tensors to a safetensors file atomically (a temporary file renamed into place),
/// so a failure never leaves a half-written output.
pub fn write_f32_tensors(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    let file = path.display().to_string();
    let fail = |reason: String| Error::Write {
        file: file.clone(),
        reason,
    };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|v| (name.to_string(), v))
                .map_err(|e| fail(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, None).map_err(|e| fail(e.to_string()))?;
    let tmp = path.with_extension("safetensors.partial");
    std::fs::write(&tmp, &data).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e.to_string())
    })
}
