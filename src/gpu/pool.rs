//! Buffer pool: buffers are created once per size class and recycled when the last tensor or
//! recording using them is dropped, so a sampling loop that frees what it allocates performs
//! no device allocation after its first step. `PoolStats::created` counts real allocations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// What a pooled buffer is for; each kind has its own free lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Tensor storage: STORAGE | COPY_SRC | COPY_DST.
    Storage,
    /// Kernel parameters: UNIFORM | COPY_DST.
    Uniform,
    /// Readback staging: MAP_READ | COPY_DST.
    Readback,
}

impl BufferKind {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            BufferKind::Storage => U::STORAGE | U::COPY_SRC | U::COPY_DST,
            BufferKind::Uniform => U::UNIFORM | U::COPY_DST,
            BufferKind::Readback => U::MAP_READ | U::COPY_DST,
        }
    }
}

/// Counters for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Device buffers created so far.
    pub created: u64,
    /// Requests served from the free lists.
    pub reused: u64,
    /// Bytes of all device buffers created (live or free).
    pub bytes_created: u64,
    /// Bytes currently handed out.
    pub bytes_in_use: u64,
    /// High-water mark of `bytes_in_use`.
    pub bytes_peak: u64,
}

struct Inner {
    free: Mutex<HashMap<(BufferKind, u64), Vec<wgpu::Buffer>>>,
    created: AtomicU64,
    reused: AtomicU64,
    bytes_created: AtomicU64,
    bytes_in_use: AtomicU64,
    bytes_peak: AtomicU64,
}

/// The pool. Shared by `Arc`; allocations hold a weak link back to it.
pub struct Pool {
    device: wgpu::Device,
    inner: Arc<Inner>,
}

/// A pooled device buffer, returned to the pool when dropped — or a *planned* activation: a
/// placeholder a [`Recorder`](super::Recorder) hands out while recording, given a physical
/// pooled buffer (shared with activations whose lifetimes do not overlap) when the recording
/// is finished.
pub struct Allocation {
    buffer: Option<wgpu::Buffer>,
    planned: OnceLock<Planned>,
    kind: BufferKind,
    capacity: u64,
    home: Weak<Inner>,
}

impl Allocation {
    /// A planned activation of `bytes` bytes, without a buffer until
    /// [`Allocation::assign`] gives it one.
    pub(crate) fn planned(bytes: u64) -> Arc<Allocation> {
        Arc::new(Allocation {
            buffer: None,
            planned: OnceLock::new(),
            kind: BufferKind::Storage,
            capacity: bytes,
            home: Weak::new(),
        })
    }

    /// Gives a planned activation its physical buffer (once); `output` marks an activation
    /// that outlives its recording's dispatches (the host or other recordings may use it).
    pub(crate) fn assign(&self, physical: Arc<Allocation>, output: bool) {
        debug_assert!(self.buffer.is_none() && physical.capacity >= self.capacity);
        let _ = self.planned.set(Planned { physical, output });
    }

    /// True for a planned activation (see the type's doc), assigned or not.
    pub fn is_planned(&self) -> bool {
        self.buffer.is_none()
    }

    /// True for a real buffer or a planned output of a finished recording: storage that the
    /// host and other recordings may use. An intermediate activation's buffer is shared with
    /// others once its recording is finished, so only that recording may use it.
    pub fn is_shareable(&self) -> bool {
        self.buffer.is_some() || self.planned.get().is_some_and(|p| p.output)
    }

    /// The wgpu buffer, or `None` for a planned activation whose recording is not finished.
    pub fn try_buffer(&self) -> Option<&wgpu::Buffer> {
        match &self.buffer {
            Some(b) => Some(b),
            None => self.planned.get().and_then(|p| p.physical.try_buffer()),
        }
    }

    /// The wgpu buffer. Panics for a planned activation before its recording is finished
    /// (an engine bug: recorded dispatches are the only users of an activation until then).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.try_buffer()
            .expect("activation buffer used before its recording was finished")
    }
    /// Bytes the buffer holds (the size class, ≥ the requested size).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        if let (Some(buf), Some(home)) = (self.buffer.take(), self.home.upgrade()) {
            home.bytes_in_use
                .fetch_sub(self.capacity, Ordering::Relaxed);
            if let Ok(mut free) = home.free.lock() {
                free.entry((self.kind, self.capacity))
                    .or_default()
                    .push(buf);
            }
        }
    }
}

/// The physical buffer a planned activation was given.
struct Planned {
    physical: Arc<Allocation>,
    output: bool,
}

/// Rounds a request up to its size class: multiples of 256 B below 4 KiB, then powers of two
/// with four sub-steps (waste ≤ 25 %).
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(16);
    if b <= 4096 {
        return b.div_ceil(256) * 256;
    }
    let top = 63 - b.leading_zeros() as u64; // 2^top <= b
    let step = 1u64 << (top - 2);
    b.div_ceil(step) * step
}

impl Pool {
    pub(crate) fn new(device: wgpu::Device, _queue: wgpu::Queue) -> Pool {
        Pool {
            device,
            inner: Arc::new(Inner {
                free: Mutex::new(HashMap::new()),
                created: AtomicU64::new(0),
                reused: AtomicU64::new(0),
                bytes_created: AtomicU64::new(0),
                bytes_in_use: AtomicU64::new(0),
                bytes_peak: AtomicU64::new(0),
            }),
        }
    }

    /// A buffer of at least `bytes` bytes of the given kind, reused when one is free.
    pub fn alloc(&self, bytes: u64, kind: BufferKind) -> Arc<Allocation> {
        let cap = size_class(bytes);
        let reused = self
            .inner
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.get_mut(&(kind, cap)).and_then(|v| v.pop()));
        let buffer = match reused {
            Some(b) => {
                self.inner.reused.fetch_add(1, Ordering::Relaxed);
                b
            }
            None => {
                self.inner.created.fetch_add(1, Ordering::Relaxed);
                self.inner.bytes_created.fetch_add(cap, Ordering::Relaxed);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("diffuse-pool"),
                    size: cap,
                    usage: kind.usage(),
                    mapped_at_creation: false,
                })
            }
        };
        let now = self.inner.bytes_in_use.fetch_add(cap, Ordering::Relaxed) + cap;
        self.inner.bytes_peak.fetch_max(now, Ordering::Relaxed);
        Arc::new(Allocation {
            buffer: Some(buffer),
            planned: OnceLock::new(),
            kind,
            capacity: cap,
            home: Arc::downgrade(&self.inner),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let i = &self.inner;
        PoolStats {
            created: i.created.load(Ordering::Relaxed),
            reused: i.reused.load(Ordering::Relaxed),
            bytes_created: i.bytes_created.load(Ordering::Relaxed),
            bytes_in_use: i.bytes_in_use.load(Ordering::Relaxed),
            bytes_peak: i.bytes_peak.load(Ordering::Relaxed),
        }
    }

    /// Frees every idle buffer (e.g. after changing resolution).
    pub fn trim(&self) {
        if let Ok(mut f) = self.inner.free.lock() {
            f.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_requests_with_bounded_waste() {
        for b in [
            1u64,
            15,
            16,
            255,
            256,
            257,
            4096,
            4097,
            5000,
            1 << 20,
            (1 << 20) + 1,
            3 << 27,
        ] {
            let c = size_class(b);
            assert!(c >= b, "{b} -> {c}");
            assert!(c % 16 == 0, "{b} -> {c}");
            if b > 4096 {
                assert!((c as f64) <= b as f64 * 1.25 + 1.0, "{b} -> {c}");
            }
        }
    }
}
