//! GPU tensors: a pooled buffer, an NCHW-style row-major shape, a dtype and a name that
//! errors quote. Upload and download convert between host f32/f16 and device storage.

use crate::error::{Error, Result};
use crate::gpu::pool::BufferKind;
use crate::gpu::{Allocation, Binding, Gpu};
use half::f16;
use std::sync::Arc;

/// Storage element type. Arithmetic is always f32; f16 halves memory traffic. `I8` holds
/// quantized weights only (symmetric int8, four per `u32` word little-endian, dequantised by
/// the kernels with a per-output-channel f32 scale; see `load::quant`): no kernel is keyed by
/// it and the host cannot write f32 values into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    I8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
            DType::I8 => 1,
        }
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" | "F32" => Ok(DType::F32),
            "f16" | "F16" => Ok(DType::F16),
            o => Err(format!("unknown dtype `{o}` (expected f32 or f16)")),
        }
    }
}

/// A tensor in device memory. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    alloc: Arc<Allocation>,
    shape: Vec<usize>,
    dtype: DType,
    name: Arc<str>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(`{}` {:?} {:?})",
            self.name, self.shape, self.dtype
        )
    }
}

/// Bytes a tensor of `n` elements occupies: rounded up to 16 so vec4 views and 4-byte copy
/// alignment always fit.
fn storage_bytes(n: usize, dtype: DType) -> u64 {
    ((n * dtype.size()) as u64).div_ceil(16) * 16
}

/// A shape must be non-empty, and fit the device's buffer limit and u32 indexing.
fn check_alloc(gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<()> {
    let what = || format!("tensor `{name}` {shape:?} ({dtype:?})");
    let n = crate::size::elements(&what(), shape)?;
    let bytes = crate::size::bytes(&what(), n, dtype.size())? as u64;
    if bytes == 0 || shape.is_empty() {
        return Err(Error::Empty {
            op: "allocate",
            tensor: name.into(),
            shape: shape.to_vec(),
        });
    }
    let limit = gpu.info().max_buffer_size;
    if bytes > limit || bytes / dtype.size() as u64 > u32::MAX as u64 {
        return Err(Error::TooLarge {
            op: "allocate",
            what: format!("tensor `{name}` {shape:?} ({dtype:?}) in bytes"),
            got: bytes,
            limit,
        });
    }
    Ok(())
}

impl Tensor {
    /// An uninitialised tensor from the pool. Zero-sized shapes and sizes beyond the device's
    /// buffer limit are errors naming the tensor.
    pub fn empty(gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        check_alloc(gpu, name, shape, dtype)?;
        let n: usize = shape.iter().product();
        Ok(Tensor {
            alloc: gpu
                .pool()
                .alloc(storage_bytes(n, dtype), BufferKind::Storage),
            shape: shape.to_vec(),
            dtype,
            name: name.into(),
        })
    }

    /// A planned activation of `rec`: it gets a physical buffer, possibly shared with
    /// activations whose lifetimes do not overlap, when the recording is finished (see
    /// [`crate::gpu::plan`]). Until then only `rec`'s dispatches may use it.
    pub fn activation(
        rec: &mut crate::gpu::Recorder<'_>,
        name: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        check_alloc(rec.gpu(), name, shape, dtype)?;
        let bytes = storage_bytes(shape.iter().product(), dtype);
        Ok(Tensor {
            alloc: rec.activation(bytes),
            shape: shape.to_vec(),
            dtype,
            name: name.into(),
        })
    }

    /// Bytes of storage a tensor of this shape and dtype needs.
    pub fn bytes_for(shape: &[usize], dtype: DType) -> u64 {
        storage_bytes(shape.iter().product(), dtype)
    }

    /// The pooled buffer behind the tensor.
    pub fn allocation(&self) -> Arc<Allocation> {
        self.alloc.clone()
    }

    /// Capacity of the underlying buffer in bytes.
    pub fn capacity(&self) -> u64 {
        self.alloc.capacity()
    }

    /// A tensor filled with zeros.
    pub fn zeros(gpu: &Gpu, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = Self::empty(gpu, name, shape, dtype)?;
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.clear_buffer(t.buffer()?, 0, Some(t.storage_bytes()));
        gpu.queue().submit([enc.finish()]);
        Ok(t)
    }

    /// Uploads host f32 values, converting to `dtype`.
    pub fn from_f32(
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        data: &[f32],
        dtype: DType,
    ) -> Result<Tensor> {
        let t = Self::empty(gpu, name, shape, dtype)?;
        t.write_f32(gpu, data)?;
        Ok(t)
    }

    /// Uploads host f16 values into an f16 tensor.
    pub fn from_f16(gpu: &Gpu, name: &str, shape: &[usize], data: &[f16]) -> Result<Tensor> {
        let t = Self::empty(gpu, name, shape, DType::F16)?;
        t.check_len(data.len())?;
        t.write_bytes(gpu, bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// Uploads int8 values (quantized weights) into an `I8` tensor, four per word.
    pub fn from_i8(gpu: &Gpu, name: &str, shape: &[usize], data: &[i8]) -> Result<Tensor> {
        let t = Self::empty(gpu, name, shape, DType::I8)?;
        t.check_len(data.len())?;
        t.write_bytes(gpu, bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// Overwrites the contents from host f32 values (converted to the tensor's dtype). `I8`
    /// tensors are an error: quantizing needs a scale ([`Tensor::from_i8`]).
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        self.check_len(data.len())?;
        match self.dtype {
            DType::F32 => self.write_bytes(gpu, bytemuck::cast_slice(data)),
            DType::F16 => {
                let h: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
                self.write_bytes(gpu, bytemuck::cast_slice(&h))
            }
            DType::I8 => Err(Error::UnsupportedDType {
                op: "write_f32",
                tensor: self.name.to_string(),
                got: DType::I8,
                reason: "int8 tensors hold quantized weights; upload them with from_i8".into(),
            }),
        }
    }

    fn check_len(&self, got: usize) -> Result<()> {
        if got != self.numel() {
            return Err(Error::HostLength {
                tensor: self.name.to_string(),
                got,
                want: self.numel(),
                shape: self.shape.clone(),
            });
        }
        Ok(())
    }

    /// The device buffer for host access; an error for an intermediate activation of a
    /// recording (see [`crate::gpu::Recorder::activation`]): its buffer is shared.
    fn buffer(&self) -> Result<&wgpu::Buffer> {
        match self.alloc.try_buffer() {
            Some(b) if self.alloc.is_shareable() => Ok(b),
            _ => Err(Error::Argument {
                op: "tensor",
                arg: "tensor",
                reason: format!(
                    "`{}` is an intermediate activation of a recording; only a finished \
                     recording's outputs can be read or written by the host",
                    self.name
                ),
            }),
        }
    }

    fn write_bytes(&self, gpu: &Gpu, bytes: &[u8]) -> Result<()> {
        let buf = self.buffer()?;
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            gpu.queue().write_buffer(buf, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            gpu.queue().write_buffer(buf, whole as u64, &tail);
        }
        Ok(())
    }

    /// Downloads the contents as f32 (waits for all submitted work).
    pub fn to_vec_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let raw = self.read_bytes(gpu)?;
        Ok(match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&raw[..self.numel() * 4]),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(&raw[..self.numel() * 2])
                .into_iter()
                .map(f16::to_f32)
                .collect(),
            DType::I8 => raw[..self.numel()]
                .iter()
                .map(|&b| b as i8 as f32)
                .collect(),
        })
    }

    /// Downloads the raw storage words as u32 (for bit-exact comparisons).
    pub fn to_vec_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        let raw = self.read_bytes(gpu)?;
        let n = (self.numel() * self.dtype.size()).div_ceil(4);
        Ok(bytemuck::pod_collect_to_vec::<u8, u32>(&raw[..n * 4]))
    }

    fn read_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let size = self.storage_bytes();
        let buf = self.buffer()?;
        let staging = gpu.pool().alloc(size, BufferKind::Readback);
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(buf, 0, staging.buffer(), 0, size);
        gpu.queue().submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        let slice = staging.buffer().slice(..size);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let fail = |reason: String| Error::Readback {
            tensor: self.name.to_string(),
            reason,
        };
        gpu.wait().map_err(|e| fail(e.to_string()))?;
        rx.recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let out = {
            let view = slice.get_mapped_range().map_err(|e| fail(e.to_string()))?;
            view.to_vec()
        };
        staging.buffer().unmap();
        Ok(out)
    }

    /// The same storage under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::Shape {
                op: "reshape",
                tensor: self.name.to_string(),
                got: self.shape.clone(),
                expected: format!("{} elements to view as {shape:?}", n),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// The same tensor under a new name (for error messages).
    pub fn named(mut self, name: &str) -> Tensor {
        self.name = name.into();
        self
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes the tensor's storage spans (padded to 16).
    pub fn storage_bytes(&self) -> u64 {
        storage_bytes(self.numel(), self.dtype)
    }
    /// True when both tensors use the same device buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.alloc, &other.alloc)
    }

    /// The whole tensor as one binding; an error naming the tensor when it exceeds the
    /// device's storage-binding limit (ops that can split use [`Tensor::chunk_bindings`]).
    pub fn binding(&self, gpu: &Gpu, op: &'static str) -> Result<Binding> {
        let size = self.storage_bytes();
        if size > gpu.max_binding() {
            return Err(Error::TooLarge {
                op,
                what: format!(
                    "tensor `{}` {:?} for one storage binding (this op does not split)",
                    self.name, self.shape
                ),
                got: size,
                limit: gpu.max_binding(),
            });
        }
        Ok(Binding {
            alloc: self.alloc.clone(),
            offset: 0,
            size,
        })
    }

    /// Splits a tensor of rank ≥ 1 into ranges of its first dimension ("rows") that each fit
    /// one binding with an aligned offset. Returns (first row, rows, binding) per range; an
    /// error naming the tensor when one row alone exceeds the binding limit.
    pub fn row_chunk_bindings(
        &self,
        gpu: &Gpu,
        op: &'static str,
    ) -> Result<Vec<(usize, usize, Binding)>> {
        if self.storage_bytes() <= gpu.max_binding() {
            let rows = self.shape.first().copied().unwrap_or(1);
            return Ok(vec![(0, rows, self.binding(gpu, op)?)]);
        }
        let esz = self.dtype.size() as u64;
        let rows = self.shape[0];
        let row_bytes = (self.numel() / rows.max(1)) as u64 * esz;
        let align = gpu.storage_offset_alignment().max(16);
        // Rows per range: a multiple of the rows that make the offset aligned.
        let mut gcd = (row_bytes.max(1), align);
        while gcd.1 != 0 {
            gcd = (gcd.1, gcd.0 % gcd.1);
        }
        let step = align / gcd.0;
        let per = gpu.max_binding() / row_bytes.max(1) / step * step;
        if per == 0 {
            return Err(Error::TooLarge {
                op,
                what: format!(
                    "tensor `{}` {:?}: {step} row(s) of {row_bytes} bytes for one storage binding",
                    self.name, self.shape
                ),
                got: step * row_bytes,
                limit: gpu.max_binding(),
            });
        }
        let mut out = Vec::new();
        let mut start = 0usize;
        while start < rows {
            let n = (per as usize).min(rows - start);
            let offset = start as u64 * row_bytes;
            let size = (n as u64 * row_bytes).div_ceil(16) * 16;
            out.push((
                start,
                n,
                Binding {
                    alloc: self.alloc.clone(),
                    offset,
                    size: size.min(self.alloc.capacity() - offset),
                },
            ));
            start += n;
        }
        Ok(out)
    }

    /// Splits the tensor into element ranges that each fit one binding, honouring the
    /// storage-offset alignment. Returns (first element, element count, binding) per chunk.
    pub fn chunk_bindings(&self, gpu: &Gpu) -> Vec<(usize, usize, Binding)> {
        let esz = self.dtype.size() as u64;
        let align = gpu.storage_offset_alignment().max(16);
        let max = gpu.max_binding() / align * align;
        let per = (max / esz) as usize;
        let n = self.numel();
        let mut out = Vec::new();
        let mut start = 0usize;
        while start < n {
            let count = per.min(n - start);
            let offset = start as u64 * esz;
            let size = (count as u64 * esz).div_ceil(16) * 16;
            out.push((
                start,
                count,
                Binding {
                    alloc: self.alloc.clone(),
                    offset,
                    size: size.min(self.alloc.capacity() - offset),
                },
            ));
            start += count;
        }
        out
    }
}
