//! Quiver's model runtime: turns packed token sequences into hidden states and pooled vectors.
//!
//! What it does: reads safetensors weights and a Hugging Face `config.json`, runs an encoder
//! forward pass on the CPU (one file per architecture under [`models`]), and pools token states
//! into one vector per sequence ([`pooling`]).
//! What it does not: tokenise, batch, apply prompts or normalise: that is `quiver-embed`'s job.
//!
//! Sequences travel as a [`PackedBatch`]: every token of every sequence concatenated, with
//! offsets marking where each sequence starts. Dense layers see one `[tokens, hidden]` matrix
//! with no padding; attention runs per sequence. This is the layout the throughput goal needs.
//!
//! Entry points: [`models::load_model_with`] (from a model folder) and [`EncoderModel::forward`].

pub mod backend;
pub mod batch;
#[cfg(feature = "cudarc")]
pub mod cuda;
#[cfg(any(test, feature = "cudarc"))]
mod cuda_plan;
pub mod error;
#[cfg(test)]
mod gpu_reference;
pub mod kernels;
pub mod layers;
pub mod models;
pub mod pooling;
pub mod weights;

pub use backend::{CardSet, DataParallel, Device};
pub use batch::PackedBatch;
pub use error::RuntimeError;
pub use models::classifier::{AnswerTokens, SequenceClassifier, CLASSIFIER_ARCHITECTURES};
pub use models::{load_model_with, EncoderModel, LoadOptions, ModelConfig, Quantization};
pub use pooling::Pooling;

pub type Result<T> = std::result::Result<T, RuntimeError>;
