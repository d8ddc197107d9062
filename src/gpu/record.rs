//! Command recording. Ops validate their arguments and append dispatches to a [`Recorder`];
//! `finish` packs every dispatch's parameters into one uniform buffer and builds the bind
//! groups once, giving a [`Recording`] that can be submitted any number of times. Replaying a
//! recording creates no buffers and no pipelines; only parameters may be rewritten in place.

use super::kernels::{Kernel, KernelKey};
use super::params::Uniform;
use super::pool::{Allocation, BufferKind};
use super::shader::{BindingDecl, BindingKind};
use super::Gpu;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// A storage range bound to a kernel: a pooled buffer, byte offset and size.
#[derive(Clone)]
pub struct Binding {
    pub alloc: Arc<Allocation>,
    pub offset: u64,
    pub size: u64,
}

struct Pending {
    kernel: Arc<Kernel>,
    storage: Vec<Binding>,
    params: std::ops::Range<usize>,
    groups: [u32; 3],
}

/// Collects dispatches; see the module doc.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    items: Vec<Pending>,
    params: Vec<u8>,
    activations: Vec<Arc<Allocation>>,
    own: HashMap<*const Allocation, usize>,
    outputs: Vec<bool>,
    /// A recorder that only times kernels (tuning): see [`Recorder::for_timing`].
    timing: bool,
}

const PARAM_ALIGN: usize = 256;

impl<'g> Recorder<'g> {
    pub(crate) fn new(gpu: &'g Gpu) -> Self {
        Recorder {
            gpu,
            items: Vec::new(),
            params: Vec::new(),
            activations: Vec::new(),
            own: HashMap::new(),
            outputs: Vec::new(),
            timing: false,
        }
    }

    /// A recorder for timing candidate kernels while another recording is being made
    /// (tuning): bindings of that recording's unfinished activations — which have no storage
    /// yet — are given scratch buffers of the same size. The results are meaningless; only the
    /// time is used.
    pub(crate) fn for_timing(gpu: &'g Gpu) -> Self {
        Recorder {
            timing: true,
            ..Recorder::new(gpu)
        }
    }

    /// A planned activation buffer of `bytes` bytes: it gets physical storage when the
    /// recording is finished (see the module doc). Use it only in dispatches of this recorder
    /// until then; [`crate::Tensor::activation`] wraps it as a tensor.
    pub fn activation(&mut self, bytes: u64) -> Arc<Allocation> {
        let a = Allocation::planned(bytes);
        self.own.insert(Arc::as_ptr(&a), self.activations.len());
        self.activations.push(a.clone());
        self.outputs.push(false);
        a
    }

    /// Marks one of this recorder's activations as an output: it keeps its own storage until
    /// the end of the recording and may be read by the host and bound by other recordings.
    pub fn output(&mut self, alloc: &Arc<Allocation>) -> Result<()> {
        match self.own.get(&Arc::as_ptr(alloc)) {
            Some(&i) => {
                self.outputs[i] = true;
                Ok(())
            }
            None if !alloc.is_planned() => Ok(()),
            None => Err(Error::Argument {
                op: "output",
                arg: "tensor",
                reason: "an activation of another recording cannot be this recording's output"
                    .into(),
            }),
        }
    }

    /// The context being recorded for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Number of dispatches so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends one dispatch of kernel `key` with uniform `params` (the key's parameter struct)
    /// and its storage bindings given by the names its `#tensor` lines declare, in any order.
    /// An unknown, missing or repeated name is an error naming the kernel and the binding.
    /// Returns the dispatch index (for [`Recording::set_params`]).
    pub fn dispatch<P: Uniform>(
        &mut self,
        key: &KernelKey,
        params: &P,
        storage: &[(&str, Binding)],
        groups: [u32; 3],
    ) -> Result<usize> {
        if key.params != P::LAYOUT {
            return Err(Error::Argument {
                op: "dispatch",
                arg: "params",
                reason: format!(
                    "kernel {} takes `{}`, not `{}`",
                    key.label(),
                    key.params.path,
                    P::LAYOUT.path
                ),
            });
        }
        let params = bytemuck::bytes_of(params);
        let kernel = self.gpu.kernels().get(self.gpu.device(), key)?;
        let mut storage = by_name(&kernel.bindings, storage, &key.label())?;
        if self.timing {
            for b in storage.iter_mut() {
                if b.alloc.is_planned() && b.alloc.try_buffer().is_none() {
                    let scratch = self
                        .gpu
                        .pool()
                        .alloc(b.alloc.capacity(), BufferKind::Storage);
                    b.alloc = scratch;
                }
            }
        }
        let max = self.gpu.info().max_workgroups_per_dim;
        for (axis, g) in groups.iter().enumerate() {
            if *g > max {
                return Err(Error::TooLarge {
                    op: "dispatch",
                    what: format!("{} workgroups along axis {axis}", key.label()),
                    got: *g as u64,
                    limit: max as u64,
                });
            }
        }
        check_aliasing(&kernel, &storage, key)?;
        self.check_shareable(&kernel, &storage, key)?;
        let start = self.params.len();
        self.params.extend_from_slice(params);
        let padded = params.len().max(16).div_ceil(16) * 16;
        self.params.resize(start + padded, 0);
        let range = start..start + padded;
        let next = self.params.len().div_ceil(PARAM_ALIGN) * PARAM_ALIGN;
        self.params.resize(next, 0);
        self.items.push(Pending {
            kernel,
            storage,
            params: range,
            groups,
        });
        Ok(self.items.len() - 1)
    }

    /// A planned activation may be bound only by its own recorder, or once its recording is
    /// finished, when it is an output.
    fn check_shareable(&self, kernel: &Kernel, storage: &[Binding], key: &KernelKey) -> Result<()> {
        let decls = kernel
            .bindings
            .iter()
            .filter(|b| b.kind != BindingKind::Uniform);
        for (s, d) in storage.iter().zip(decls) {
            if s.alloc.is_planned()
                && !self.own.contains_key(&Arc::as_ptr(&s.alloc))
                && !s.alloc.is_shareable()
            {
                return Err(Error::Argument {
                    op: "dispatch",
                    arg: "bindings",
                    reason: format!(
                        "{}: `{}` is bound to an intermediate activation of another recording \
                         (only a recording's outputs outlive it)",
                        key.label(),
                        d.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// Assigns physical buffers to the planned activations (see the module doc); returns the
    /// bytes allocated for them.
    fn plan_activations(&mut self) -> u64 {
        let acts = std::mem::take(&mut self.activations);
        let index = std::mem::take(&mut self.own);
        let end = self.items.len();
        let mut first = vec![usize::MAX; acts.len()];
        let mut last = vec![0usize; acts.len()];
        let mut bound = vec![0usize; acts.len()];
        for (d, it) in self.items.iter().enumerate() {
            for b in &it.storage {
                if let Some(&i) = index.get(&Arc::as_ptr(&b.alloc)) {
                    first[i] = first[i].min(d);
                    last[i] = last[i].max(d);
                    bound[i] += 1;
                }
            }
        }
        let mut usages = Vec::new();
        let mut owner = Vec::new();
        for (i, a) in acts.iter().enumerate() {
            let output = self.outputs[i];
            if bound[i] == 0 && !output {
                continue;
            }
            let f = first[i].min(end);
            let l = if output { end } else { last[i] };
            usages.push(super::plan::Usage {
                bytes: a.capacity(),
                first: f,
                last: l,
            });
            owner.push(i);
        }
        let plan = super::plan::plan(&usages);
        let physical: Vec<Arc<Allocation>> = plan
            .slot_bytes
            .iter()
            .map(|&b| self.gpu.pool().alloc(b, BufferKind::Storage))
            .collect();
        for (u, &i) in owner.iter().enumerate() {
            acts[i].assign(physical[plan.slot[u]].clone(), self.outputs[i]);
        }
        physical.iter().map(|p| p.capacity()).sum()
    }

    /// Plans the activations, builds the uniform buffer and bind groups.
    pub fn finish(mut self) -> Result<Recording> {
        let activation_bytes = self.plan_activations();
        let gpu = self.gpu;
        let uniform = if self.params.is_empty() {
            None
        } else {
            let u = gpu
                .pool()
                .alloc(self.params.len() as u64, BufferKind::Uniform);
            gpu.queue().write_buffer(u.buffer(), 0, &self.params);
            Some(u)
        };
        // wgpu reports invalid bindings through an error scope; turn them into errors instead
        // of the default handler's panic.
        let scope = gpu.device().push_error_scope(wgpu::ErrorFilter::Validation);
        let mut items = Vec::with_capacity(self.items.len());
        let mut offsets = Vec::with_capacity(self.items.len());
        let mut keep: Vec<Arc<Allocation>> = Vec::new();
        for it in self.items {
            let mut entries = Vec::new();
            let mut storage = it.storage.iter();
            for b in &it.kernel.bindings {
                let res = match b.kind {
                    BindingKind::Uniform => {
                        let u = uniform.as_ref().expect("params recorded");
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: u.buffer(),
                            offset: it.params.start as u64,
                            size: std::num::NonZeroU64::new(
                                (it.params.end - it.params.start) as u64,
                            ),
                        })
                    }
                    _ => {
                        let s = storage.next().expect("counted in dispatch");
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: s.alloc.buffer(),
                            offset: s.offset,
                            size: std::num::NonZeroU64::new(s.size),
                        })
                    }
                };
                entries.push(wgpu::BindGroupEntry {
                    binding: b.binding,
                    resource: res,
                });
            }
            let bg = gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &it.kernel.layout,
                entries: &entries,
            });
            keep.extend(it.storage.iter().map(|s| s.alloc.clone()));
            offsets.push(it.params.start as u64);
            items.push((it.kernel, bg, it.groups));
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Argument {
                op: "finish",
                arg: "bindings",
                reason: e.to_string(),
            });
        }
        Ok(Recording {
            items,
            uniform,
            param_offsets: offsets,
            activation_bytes,
            _keep: keep,
        })
    }
}

/// Orders `given` (name, binding) pairs by the kernel's declared storage bindings.
fn by_name<T: Clone>(bindings: &[BindingDecl], given: &[(&str, T)], label: &str) -> Result<Vec<T>> {
    let err = |reason: String| Error::Argument {
        op: "dispatch",
        arg: "bindings",
        reason: format!("kernel {label}: {reason}"),
    };
    let decls: Vec<&str> = bindings
        .iter()
        .filter(|b| b.kind != BindingKind::Uniform)
        .map(|b| b.name.as_str())
        .collect();
    for (i, (name, _)) in given.iter().enumerate() {
        if !decls.contains(name) {
            return Err(err(format!(
                "no binding `{name}` (it declares {})",
                decls
                    .iter()
                    .map(|d| format!("`{d}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if given[..i].iter().any(|(n, _)| n == name) {
            return Err(err(format!("binding `{name}` given twice")));
        }
    }
    decls
        .iter()
        .map(|d| {
            given
                .iter()
                .find(|(n, _)| n == d)
                .map(|(_, b)| b.clone())
                .ok_or_else(|| err(format!("binding `{d}` not given")))
        })
        .collect()
}

/// A buffer range written by a dispatch must not overlap any other range of that dispatch
/// (wgpu would reject the usage conflict; we report it with the kernel's binding names).
fn check_aliasing(kernel: &Kernel, storage: &[Binding], key: &KernelKey) -> Result<()> {
    let decls: Vec<_> = kernel
        .bindings
        .iter()
        .filter(|b| b.kind != BindingKind::Uniform)
        .collect();
    for (i, a) in storage.iter().enumerate() {
        if decls[i].kind != BindingKind::StorageReadWrite {
            continue;
        }
        for (j, b) in storage.iter().enumerate() {
            if i != j
                && Arc::ptr_eq(&a.alloc, &b.alloc)
                && a.offset < b.offset + b.size
                && b.offset < a.offset + a.size
            {
                return Err(Error::Argument {
                    op: "dispatch",
                    arg: "bindings",
                    reason: format!(
                        "{}: output `{}` overlaps input `{}` in one buffer",
                        key.label(),
                        decls[i].name,
                        decls[j].name
                    ),
                });
            }
        }
    }
    Ok(())
}

/// One dispatch's GPU time from [`Recording::profile`].
#[derive(Debug, Clone)]
pub struct DispatchTime {
    /// The kernel variant (family, entry, dtype, defines).
    pub label: String,
    pub family: &'static str,
    pub workgroups: u64,
    pub seconds: f64,
}

/// A finished batch of dispatches; see the module doc.
pub struct Recording {
    items: Vec<(Arc<Kernel>, wgpu::BindGroup, [u32; 3])>,
    uniform: Option<Arc<Allocation>>,
    param_offsets: Vec<u64>,
    activation_bytes: u64,
    // Buffers stay alive (and out of the pool) while a recording may still use them.
    _keep: Vec<Arc<Allocation>>,
}

impl Recording {
    /// Bytes of the physical buffers planned for the recording's activations (its activation
    /// memory high-water mark).
    pub fn activation_bytes(&self) -> u64 {
        self.activation_bytes
    }

    /// Number of dispatches.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Encodes every dispatch into one compute pass and submits it (does not wait).
    pub fn submit(&self, gpu: &Gpu) {
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        self.encode(&mut enc);
        gpu.queue().submit([enc.finish()]);
    }

    /// Encodes into a caller's encoder (to combine with copies or other recordings).
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("diffuse"),
            timestamp_writes: None,
        });
        for (k, bg, g) in &self.items {
            pass.set_pipeline(&k.pipeline);
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(g[0], g[1], g[2]);
        }
    }

    /// Runs the recording once with a GPU timestamp around every dispatch (each in its own
    /// compute pass) and returns (kernel label, workgroups, seconds) per dispatch, in order.
    /// Needs the adapter's TIMESTAMP_QUERY feature; waits for the device.
    pub fn profile(&self, gpu: &Gpu) -> Result<Vec<DispatchTime>> {
        let dev_err = |reason: String| Error::Device {
            adapter: gpu.info().name.clone(),
            reason,
        };
        if !gpu.info().timestamps {
            return Err(dev_err(
                "the adapter has no timestamp queries (TIMESTAMP_QUERY); profiling needs them"
                    .into(),
            ));
        }
        let period = gpu.queue().get_timestamp_period() as f64 * 1e-9;
        let mut out = Vec::with_capacity(self.items.len());
        // Query sets hold at most 4096 timestamps: profile in chunks of 2048 dispatches.
        for chunk in self.items.chunks(2048) {
            let count = 2 * chunk.len() as u32;
            let qs = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("diffuse-profile"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            let bytes = 8 * count as u64;
            let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("diffuse-profile-resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let read = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("diffuse-profile-read"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = gpu
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            for (i, (k, bg, g)) in chunk.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("diffuse-profile"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &qs,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                pass.set_pipeline(&k.pipeline);
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(g[0], g[1], g[2]);
            }
            enc.resolve_query_set(&qs, 0..count, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
            gpu.queue().submit([enc.finish()]);
            let (tx, rx) = std::sync::mpsc::channel();
            read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            gpu.wait()?;
            rx.recv()
                .map_err(|e| dev_err(e.to_string()))?
                .map_err(|e| dev_err(e.to_string()))?;
            let ticks: Vec<u64> = {
                let view = read
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| dev_err(e.to_string()))?;
                bytemuck::pod_collect_to_vec(&view[..])
            };
            for (i, (k, _, g)) in chunk.iter().enumerate() {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
                out.push(DispatchTime {
                    label: k.key.label(),
                    family: k.key.family,
                    workgroups: g[0] as u64 * g[1] as u64 * g[2] as u64,
                    seconds: dt,
                });
            }
        }
        Ok(out)
    }

    /// Rewrites the parameters of dispatch `index` (the bytes of its kernel's parameter struct)
    /// before a replay.
    pub fn set_params(&self, gpu: &Gpu, index: usize, params: &[u8]) -> Result<()> {
        let (Some(u), Some(off)) = (&self.uniform, self.param_offsets.get(index)) else {
            return Err(Error::Argument {
                op: "set_params",
                arg: "index",
                reason: format!("no dispatch {index} in a recording of {}", self.items.len()),
            });
        };
        let layout = self.items[index].0.key.params;
        if params.len() != layout.size {
            return Err(Error::Argument {
                op: "set_params",
                arg: "params",
                reason: format!(
                    "{} bytes for dispatch {index} ({}), whose `{}` has {}",
                    params.len(),
                    self.items[index].0.key.label(),
                    layout.path,
                    layout.size
                ),
            });
        }
        gpu.queue().write_buffer(u.buffer(), *off, params);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls(names: &[(&str, BindingKind)]) -> Vec<BindingDecl> {
        let mut v = vec![BindingDecl {
            binding: 0,
            name: "p".into(),
            kind: BindingKind::Uniform,
        }];
        v.extend(names.iter().enumerate().map(|(i, (n, k))| BindingDecl {
            binding: i as u32 + 1,
            name: n.to_string(),
            kind: *k,
        }));
        v
    }

    #[test]
    fn bindings_are_ordered_by_declared_name() {
        let d = decls(&[
            ("a", BindingKind::StorageRead),
            ("b", BindingKind::StorageRead),
            ("out", BindingKind::StorageReadWrite),
        ]);
        let got = by_name(&d, &[("out", 3), ("a", 1), ("b", 2)], "k").unwrap();
        assert_eq!(got, [1, 2, 3]);
    }

    #[test]
    fn unknown_missing_and_repeated_names_are_errors() {
        let d = decls(&[
            ("x", BindingKind::StorageRead),
            ("y", BindingKind::StorageReadWrite),
        ]);
        let e = by_name(&d, &[("x", 1), ("z", 2)], "fam/main").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("fam/main") && m.contains("`z`") && m.contains("`y`"),
            "{m}"
        );
        let e = by_name(&d, &[("x", 1)], "fam/main").unwrap_err();
        assert!(e.to_string().contains("`y` not given"), "{e}");
        let e = by_name(&d, &[("x", 1), ("y", 2), ("x", 3)], "fam/main").unwrap_err();
        assert!(e.to_string().contains("`x` given twice"), "{e}");
        // The uniform is not a storage binding.
        let e = by_name(&d, &[("p", 0), ("x", 1), ("y", 2)], "fam/main").unwrap_err();
        assert!(e.to_string().contains("no binding `p`"), "{e}");
    }
}
