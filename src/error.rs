//! Error types. One enum for the engine's lower floors (GPU context, tensors, kernels, ops);
//! every variant names the thing that was wrong so a user can act on the message.

use crate::tensor::DType;

/// Errors raised by the GPU context, tensors, the kernel system and the ops.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched the request (backend, name filter) or none exists.
    #[error(
        "no GPU adapter found ({wanted}). diffuse needs a Vulkan, Metal or DX12 driver; on a \
         Linux machine without a GPU install Mesa's software Vulkan driver (lavapipe): \
         `apt-get install mesa-vulkan-drivers libvulkan1` (or run tools/install-lavapipe.sh). \
         Adapters seen: {seen}"
    )]
    NoAdapter { wanted: String, seen: String },

    /// The adapter refused to create a device.
    #[error("could not create a device on adapter `{adapter}`: {reason}")]
    Device { adapter: String, reason: String },

    /// A WGSL source failed preprocessing (unknown directive, unbalanced `#if`, missing define).
    #[error("shader `{shader}` line {line}: {reason}")]
    Preprocess {
        shader: String,
        line: usize,
        reason: String,
    },

    /// The driver or wgpu's validation rejected a shader or pipeline.
    #[error("kernel `{kernel}` failed to compile: {reason}")]
    Compile { kernel: String, reason: String },

    /// A tensor has a shape the op cannot accept.
    #[error("{op}: tensor `{tensor}` has shape {got:?}, {expected}")]
    Shape {
        op: &'static str,
        tensor: String,
        got: Vec<usize>,
        expected: String,
    },

    /// Two tensors of an op disagree in dtype.
    #[error("{op}: tensor `{tensor}` is {got:?} but `{other}` is {want:?}; dtypes must match")]
    DTypeMismatch {
        op: &'static str,
        tensor: String,
        got: DType,
        other: String,
        want: DType,
    },

    /// A dtype the op does not support.
    #[error(
        "{op}: tensor `{tensor}` has dtype {got:?}, which this op does not support ({reason})"
    )]
    UnsupportedDType {
        op: &'static str,
        tensor: String,
        got: DType,
        reason: String,
    },

    /// A tensor with a zero-sized dimension was passed where elements are needed.
    #[error("{op}: tensor `{tensor}` is empty (shape {shape:?})")]
    Empty {
        op: &'static str,
        tensor: String,
        shape: Vec<usize>,
    },

    /// A host slice's length disagrees with the tensor shape.
    #[error("tensor `{tensor}`: {got} host values for shape {shape:?} ({want} elements)")]
    HostLength {
        tensor: String,
        got: usize,
        want: usize,
        shape: Vec<usize>,
    },

    /// A size or parameter beyond what the device or the kernel can address.
    #[error("{op}: {what} is too large: {got} > limit {limit}")]
    TooLarge {
        op: &'static str,
        what: String,
        got: u64,
        limit: u64,
    },

    /// An invalid scalar argument (negative group count, zero stride, ...).
    #[error("{op}: invalid argument `{arg}`: {reason}")]
    Argument {
        op: &'static str,
        arg: &'static str,
        reason: String,
    },

    /// A size computed from file, config or flag numbers overflows or exceeds a bound
    /// ([`crate::size`]).
    #[error("{what}: {reason}")]
    Size { what: String, reason: String },

    /// A file could not be read or is not what it claims to be (corrupt, truncated, bad JSON).
    #[error("{file}: {reason}")]
    Load { file: String, reason: String },

    /// An output file could not be written (encoding, I/O, or the final rename).
    #[error("cannot write {file}: {reason}")]
    Write { file: String, reason: String },

    /// A run was stopped by its caller (the progress callback returned `ControlFlow::Break`)
    /// after `step` of `total` steps had been submitted; no result was produced.
    #[error("{op}: cancelled after step {step} of {total}")]
    Cancelled {
        op: &'static str,
        step: usize,
        total: usize,
    },

    /// A tensor the model needs is not in the checkpoint (or input file).
    #[error("{file}: missing tensor `{tensor}`")]
    MissingTensor { file: String, tensor: String },

    /// A checkpoint tensor's shape disagrees with the config.
    #[error("{file}: tensor `{tensor}` has shape {got:?}, the config implies {want:?}")]
    TensorShape {
        file: String,
        tensor: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },

    /// A checkpoint tensor's dtype is not supported.
    #[error("{file}: tensor `{tensor}` has dtype {got}, supported are F32, F16 and BF16{extra}")]
    TensorDType {
        file: String,
        tensor: String,
        got: String,
        extra: String,
    },

    /// The checkpoint holds tensors the config does not account for (a config/weights mismatch).
    #[error("{file}: {count} tensor(s) not used by the config, e.g. `{first}`")]
    UnexpectedTensors {
        file: String,
        count: usize,
        first: String,
    },

    /// A config field is missing, malformed or not supported.
    #[error("{file}: config field `{field}`: {reason}")]
    Config {
        file: String,
        field: String,
        reason: String,
    },

    /// Mapping a buffer for readback failed or the device was lost.
    #[error("GPU readback of `{tensor}` failed: {reason}")]
    Readback { tensor: String, reason: String },
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
