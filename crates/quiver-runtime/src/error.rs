use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("tensor `{name}` is missing from the weights in {dir}")]
    MissingTensor { name: String, dir: PathBuf },
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?} (from config.json)")]
    TensorShape {
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` has dtype {dtype}, which Quiver cannot read (F32, F16, BF16 only)")]
    TensorDtype { name: String, dtype: String },
    #[error("{path}: tensor `{name}` holds a NaN or infinite value (element {index})")]
    NonFiniteWeight {
        path: PathBuf,
        name: String,
        index: usize,
    },
    #[error("invalid model config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unsupported architecture `{found}` in {path}; supported: {supported}")]
    UnsupportedArchitecture {
        found: String,
        path: PathBuf,
        supported: String,
    },
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error("device `{0}` is not available in this build; Quiver runs on `cpu`")]
    DeviceUnavailable(String),
    #[error(
        "{what} ({library}) could not be loaded: install it, or add its folder to LD_LIBRARY_PATH"
    )]
    CudaLibrary {
        library: &'static str,
        what: &'static str,
    },
    #[error("cuda:{ordinal}: this machine has {count} NVIDIA GPU(s)")]
    NoSuchGpu { ordinal: usize, count: usize },
    #[error("{device}: {message}")]
    Cuda { device: String, message: String },
    #[error("Quiver's CUDA kernels did not compile (kernels.cu): {message}")]
    KernelCompile { message: String },
    /// A device had no room for a batch's activations: the batch can run again in smaller
    /// parts ([`RuntimeError::is_out_of_memory`]).
    #[error("{device} ran out of memory on a batch of {tokens} tokens")]
    OutOfMemory { device: String, tokens: usize },
    #[error(
        "{0}: this model runs on the CPU only (SPLADE's masked-language-model head has no GPU \
         path yet); use `--device cpu`"
    )]
    NoGpuArchitecture(String),
}

impl RuntimeError {
    /// Whether running the same work in smaller batches may succeed.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, RuntimeError::OutOfMemory { .. })
    }
}
