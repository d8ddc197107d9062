//! safetensors reading (validated by the `safetensors` crate: a corrupt or truncated file is an
//! error naming the file) with dtype conversion, and f32 writing for CLI outputs.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, Metadata};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest safetensors header accepted (the `safetensors` crate's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Checks a safetensors JSON header for what the `safetensors` crate lets through — a key
/// written twice (the last would win silently) — and returns the data length it promises (the
/// largest end offset; the crate checks the offsets themselves).
fn check_header(header: &[u8], file: &str) -> Result<usize> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object of tensors")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<usize, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut end = 0usize;
            while let Some(k) = m.next_key::<String>()? {
                let v: serde_json::Value = m.next_value()?;
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!(
                        "tensor `{k}` is written twice in the header"
                    )));
                }
                if k != "__metadata__" {
                    let e = v["data_offsets"][1].as_u64().unwrap_or(0);
                    end = end.max(usize::try_from(e).unwrap_or(usize::MAX));
                }
            }
            Ok(end)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(header);
    de.deserialize_map(Keys).map_err(|e| Error::Load {
        file: file.into(),
        reason: format!("not a valid safetensors file ({e})"),
    })
}

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
    /// Reads and validates the file's header and layout. Reads are bounded by what the header
    /// promises (an endless stream such as `/dev/zero` or a file with trailing bytes is an
    /// error, never read to the end), and a tensor name written twice in the header is an
    /// error naming it (serde would keep the last silently).
    pub fn open(path: &Path) -> Result<Weights> {
        let file = path.display().to_string();
        let fail = |reason: String| Error::Load {
            file: file.clone(),
            reason,
        };
        let f = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut r = std::io::BufReader::new(f);
        let mut n8 = [0u8; 8];
        r.read_exact(&mut n8).map_err(|_| {
            fail("not a valid safetensors file (shorter than the 8-byte header length)".into())
        })?;
        let n = u64::from_le_bytes(n8);
        if n > MAX_HEADER {
            return Err(fail(format!(
                "not a valid safetensors file (header length {n} is more than {MAX_HEADER} bytes)"
            )));
        }
        let mut header = Vec::with_capacity(n as usize);
        (&mut r)
            .take(n)
            .read_to_end(&mut header)
            .map_err(|e| fail(e.to_string()))?;
        if header.len() as u64 != n {
            return Err(fail(format!(
                "not a valid safetensors file (truncated header: {} of {n} bytes)",
                header.len()
            )));
        }
        let data_len = check_header(&header, &file)?;
        let total = crate::size::add(&file, 8 + n as usize, data_len)?;
        crate::size::host_alloc(&format!("{file}: tensor data"), total, 1)?;
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(&n8);
        bytes.extend_from_slice(&header);
        // One byte more than promised tells trailing data (or an endless stream) apart.
        (&mut r)
            .take(data_len as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        if bytes.len() != total {
            return Err(fail(format!(
                "not a valid safetensors file ({} the {data_len} data bytes the header promises)",
                if bytes.len() > total {
                    "more than"
                } else {
                    "fewer than"
                }
            )));
        }
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| fail(format!("not a valid safetensors file ({e})")))?;
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
        let scales = self.read_scales(&sname, &want[..1], "quantization scales")?;
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
        let v = self.read_scales(&name, &[1], "input scales")?[0];
        Ok(Some(v))
    }

    /// The F32 scale tensor `name` of shape `shape`, every value finite and ≥ 0 (`what` names
    /// the kind in errors); missing, wrong dtype or shape, or a bad value are errors naming it.
    fn read_scales(&self, name: &str, shape: &[usize], what: &str) -> Result<Vec<f32>> {
        match self.meta.info(name) {
            None => {
                return Err(Error::MissingTensor {
                    file: self.file(),
                    tensor: name.into(),
                })
            }
            Some(si) if si.dtype != Dtype::F32 => {
                return Err(Error::TensorDType {
                    file: self.file(),
                    tensor: name.into(),
                    got: format!("{:?}", si.dtype),
                    extra: format!("; {what} must be F32"),
                })
            }
            Some(_) => {}
        }
        let v = self.read_f32(name, Some(shape))?.data;
        if let Some(i) = v.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(Error::Load {
                file: self.file(),
                reason: format!(
                    "tensor `{name}` holds {} at index {i}; {what} must be finite and >= 0",
                    v[i]
                ),
            });
        }
        Ok(v)
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

    /// Reads the float input tensor `name` (F32, F16 or BF16; an integer tensor is an error
    /// naming it, never converted silently), checking the shape when `want` is given and that
    /// every value is finite. For host inputs: samples, noise, latents, statistics, test sets.
    pub fn read_input(&self, name: &str, want: Option<&[usize]>) -> Result<HostTensor> {
        if let Some(info) = self.meta.info(name) {
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(Error::TensorDType {
                    file: self.file(),
                    tensor: name.into(),
                    got: format!("{:?}", info.dtype),
                    extra: " for a float input".into(),
                });
            }
        }
        let t = self.read_f32(name, want)?;
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Load {
                file: self.file(),
                reason: format!(
                    "tensor `{name}` holds a non-finite value ({}) at flat index {i}",
                    t.data[i]
                ),
            });
        }
        Ok(t)
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

/// Writes f32 tensors to a safetensors file atomically ([`crate::output::OutputPlan`]), so a
/// failure never leaves a half-written output.
pub fn write_f32_tensors(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    let data = f32_tensors_bytes(tensors)?;
    crate::output::OutputPlan::write_one("safetensors output", path, &data)
}

/// The safetensors bytes of f32 tensors (the content [`write_f32_tensors`] writes).
pub fn f32_tensors_bytes(tensors: &[(&str, &HostTensor)]) -> Result<Vec<u8>> {
    let fail = |name: &str, reason: String| Error::Argument {
        op: "safetensors output",
        arg: "tensors",
        reason: format!("tensor `{name}`: {reason}"),
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
                .map_err(|e| fail(name, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| fail("(all)", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{f32_tensors_bytes, HostTensor, Weights};

    fn file(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("diffuse-st-{tag}-{}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn open_err(p: &std::path::Path) -> crate::Error {
        match Weights::open(p) {
            Ok(_) => panic!("{} opened", p.display()),
            Err(e) => e,
        }
    }

    fn raw(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_are_bounded_and_headers_strict() {
        let t = HostTensor {
            shape: vec![2],
            data: vec![1.0, -2.0],
        };
        let good = f32_tensors_bytes(&[("x", &t)]).unwrap();
        let p = file("good", &good);
        assert_eq!(Weights::open(&p).unwrap().read_input("x", None).unwrap(), t);
        let mut long = good.clone();
        long.push(0);
        let e = open_err(&file("long", &long)).to_string();
        assert!(e.contains("more than the 8 data bytes"), "{e}");
        let e = open_err(&file("short", &good[..good.len() - 1])).to_string();
        assert!(e.contains("fewer than"), "{e}");
        let x = r#"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
        let dup = raw(&format!(r#"{{"x":{x},"x":{x}}}"#), &[0; 8]);
        let e = open_err(&file("dup", &dup)).to_string();
        assert!(e.contains("tensor `x` is written twice"), "{e}");
        let i = raw(
            r#"{"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            &[0; 8],
        );
        let e = Weights::open(&file("i64", &i))
            .unwrap()
            .read_input("x", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x` has dtype I64"), "{e}");
        let mut huge = (1u64 << 62).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        let e = open_err(&file("huge", &huge)).to_string();
        assert!(e.contains("header length"), "{e}");
    }
}
