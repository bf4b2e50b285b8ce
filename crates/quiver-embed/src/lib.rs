//! Quiver's embedding pipeline: text in, vectors out, exactly as sentence-transformers makes them.
//!
//! What it does: finds a model folder ([`resolve_model`]: a path, the Hugging Face cache, or a
//! hub download), reads its sentence-transformers configuration ([`SentenceTransformerConfig`]:
//! pooling, `Dense` modules, normalisation, max length, named prompts), tokenises, sorts and batches texts by a
//! token budget, runs the model through `quiver-runtime`, then pools, projects (`Dense`),
//! truncates (Matryoshka) and normalises.
//! What it does not: walk files, chunk code or store vectors (those are the index's job).
//!
//! Entry point: [`Embedder::load`] then [`Embedder::embed`].

mod dense;
mod embedder;
mod error;
mod postprocess;
mod registry;
mod rerank;
mod resolve;
mod st_config;
pub mod testing;
mod tokenize;

pub use dense::{DenseActivation, DenseSpec};
pub use embedder::{
    BatchBudget, EmbedInput, EmbedOptions, Embedder, EmbedderOptions, EncodedTexts, InputText,
    OutputOptions, SequenceSetup,
};
pub use error::EmbedError;
pub use postprocess::{l2_normalize, truncate_dimensions};
pub use quiver_runtime::{Device, Pooling, Quantization};
pub use registry::{
    find_model, find_model_at, ModelCard, RecommendedDevice, RerankerCard, KNOWN_MODELS,
    KNOWN_RERANKERS,
};
pub use rerank::{sigmoid, EncodedPairs, Reranker};
pub use resolve::{resolve_local_model, resolve_model, DEFAULT_MODEL};
pub use st_config::SentenceTransformerConfig;
pub use tokenize::{TextTokenizer, Token, TruncationSide};

pub type Result<T> = std::result::Result<T, EmbedError>;
