use quiver_runtime::RuntimeError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("model `{spec}` is not available: {message}")]
    ModelNotFound { spec: String, message: String },
    #[error("unknown prompt name `{name}`; this model defines: {available}")]
    UnknownPrompt { name: String, available: String },
    #[error("unknown task `{name}`; this model has adapters for: {available}")]
    UnknownTask { name: String, available: String },
    #[error("cannot give {requested} dimensions: the model's vectors have {available}")]
    Dimensions { requested: usize, available: usize },
    #[error(
        "the model produced a NaN or infinite value for input {input} (counting from 0): its \
         activations overflow f32 on that text"
    )]
    NonFiniteOutput { input: usize },
    #[error(
        "input {input}: token id {id} at position {position} is outside the model's \
         vocabulary of {vocab} tokens"
    )]
    TokenId {
        input: usize,
        position: usize,
        id: u32,
        vocab: usize,
    },
    /// Token ids are the model's input as sent: no prompt can be put before them.
    #[error(
        "a prompt ({prompt}) cannot be applied to token-id inputs: send text, or send the \
         prompt's tokens as part of the ids"
    )]
    PromptWithTokenIds { prompt: String },
    #[error("input {input} has no tokens")]
    NoTokens { input: usize },
    #[error("max length must be at least 2 tokens (got {0})")]
    MaxLength(usize),
    /// The caller's hook asked to stop between two forward passes.
    #[error("interrupted")]
    Interrupted,
}
