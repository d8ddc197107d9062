//! Floor 3: network blocks named after diffusers, recorded into a [`Graph`] once per
//! (batch, resolution) and replayed each call.

pub mod attention;
pub mod classifier;
pub mod config;
pub mod embeddings;
pub mod layers;
pub mod resnet;
pub mod unet_2d;
pub mod unet_2d_blocks;

use crate::error::Result;
use crate::gpu::{Allocation, Gpu, Recorder};
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

/// A forward pass being recorded, with an activation planner: a tensor released after its last
/// reader is recorded gives its buffer to the next activation that fits (dispatches in one pass
/// run in order, so the reuse is safe). The recording keeps every buffer alive.
pub struct Graph<'g> {
    pub rec: Recorder<'g>,
    pub dtype: DType,
    free: Vec<Arc<Allocation>>,
    bytes_planned: u64,
    /// Multiply-add FLOPs (2 per MAC) of the GEMMs and convolutions recorded so far.
    pub flops: u64,
}

impl<'g> Graph<'g> {
    pub fn new(gpu: &'g Gpu, dtype: DType) -> Self {
        Graph {
            rec: gpu.recorder(),
            dtype,
            free: Vec::new(),
            bytes_planned: 0,
            flops: 0,
        }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.rec.gpu()
    }

    /// An activation of the graph's dtype, reusing a released buffer when one is big enough
    /// (the smallest such).
    pub fn alloc(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.alloc_dtype(name, shape, self.dtype)
    }

    /// [`Graph::alloc`] with an explicit dtype.
    pub fn alloc_dtype(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let need = Tensor::bytes_for(shape, dtype);
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, a)| a.capacity() >= need)
            .min_by_key(|(_, a)| a.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let a = self.free.swap_remove(i);
                Tensor::from_allocation(self.gpu(), a, name, shape, dtype)
            }
            None => {
                let t = Tensor::empty(self.gpu(), name, shape, dtype)?;
                self.bytes_planned += t.capacity();
                Ok(t)
            }
        }
    }

    /// Marks `t` dead: later activations may reuse its buffer. The caller must not read `t`
    /// (or any view of it) in later recorded ops.
    pub fn release(&mut self, t: Tensor) {
        let a = t.allocation();
        // A tensor reachable under two names (e.g. a skip that is also the block input) may be
        // released twice; its buffer must enter the free list once.
        if !self.free.iter().any(|f| Arc::ptr_eq(f, &a)) {
            self.free.push(a);
        }
    }

    /// Bytes of activation buffers this graph allocated (its memory high-water mark).
    pub fn bytes_planned(&self) -> u64 {
        self.bytes_planned
    }
}
