//! diffuse — a GPU compute-shader engine that samples diffusion models, on wgpu.
//!
//! Floors, each using only the ones above it:
//! 1. [`gpu`] — adapter and device, buffer pool, kernel cache, command recording;
//!    [`tensor`] — GPU tensors on that floor.
//! 2. [`ops`] — one launcher per WGSL kernel family in `shaders/`.
//!
//! [`reference`] holds plain-Rust f64 references of every kernel (tests and self-checks).
//!
//! Cargo features (all on by default through `cli`; an app embedding the engine takes
//! `default-features = false`): `cli` (the `diffuse` binary: clap, indicatif, env_logger),
//! `png` (`image_io`, the `image` crate), `eval` (FID-FMNIST, accuracy, PSNR/SSIM; flate2),
//! `bench` (benchmark rows) and `selfcheck` (kernel-vs-reference checks). See
//! `examples/embed.rs` for sampling on a worker thread with progress and cancellation.
//!
//! ```no_run
//! use diffuse::{Gpu, GpuOptions, Tensor, DType, ops};
//! let gpu = Gpu::new(&GpuOptions::default())?;
//! let x = Tensor::from_f32(&gpu, "x", &[2, 3], &[1., -2., 3., -4., 5., -6.], DType::F32)?;
//! let y = Tensor::empty(&gpu, "y", &[2, 3], DType::F32)?;
//! gpu.run(|rec| ops::elementwise::unary(rec, ops::elementwise::Unary::Silu, &x, &y))?;
//! println!("{:?}", y.to_vec_f32(&gpu)?);
//! # Ok::<(), diffuse::Error>(())
//! ```

#[cfg(feature = "bench")]
pub mod bench;
pub mod domain;
pub mod error;
#[cfg(feature = "eval")]
pub mod eval;
pub mod gpu;
#[cfg(feature = "png")]
pub mod image_io;
pub mod load;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod reference;
pub mod resample;
pub mod schedule;
#[cfg(feature = "selfcheck")]
pub mod selfcheck;
pub mod size;
pub mod solvers;
pub mod tensor;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuInfo, GpuOptions, Recorder, Recording};
pub use tensor::{DType, Tensor};
