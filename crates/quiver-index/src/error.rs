use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database {path}: {source}")]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no index at {0} (create one with `quiver index`)")]
    NoIndex(PathBuf),
    #[error(
        "the index at {path} holds vectors of {stored}; this asks for {requested}. Leave \
         --model/--quantize out to follow the index, or re-embed it first with `quiver index \
         --reembed`"
    )]
    ModelMismatch {
        path: PathBuf,
        stored: String,
        requested: String,
    },
    #[error(
        "the index at {path} holds {stored} vectors; this run asks for {requested}. \
         Pass --reembed to embed everything again with the new settings, or use another --index"
    )]
    SettingsChanged {
        path: PathBuf,
        stored: String,
        requested: String,
    },
    #[error(
        "the index at {path} has format {found}; this quiver writes format {expected}. \
         Delete that directory and run `quiver index` again"
    )]
    OldSchema {
        path: PathBuf,
        found: String,
        expected: u32,
    },
    #[error(
        "the index at {path} has format {found}, newer than this quiver's ({expected}): use the \
         quiver that made it, or a newer one"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "the index at {path} was made by an older quiver and must be upgraded before it can be \
         read: run `quiver index` on it once (it needs write access)"
    )]
    NeedsUpgrade { path: PathBuf },
    #[error(
        "another quiver index is running on {path}{}: wait for it to finish, or stop it",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error(
        "{path} is damaged: {what}. `quiver status --verify` reports the extent; \
         `quiver index --repair` rebuilds what is damaged"
    )]
    Damaged { path: PathBuf, what: String },
    #[error(
        "the query vector has {query} dimensions, the index's vectors {index}: embed the query \
         with the index's settings"
    )]
    QueryWidth { query: usize, index: usize },
    #[error("the index at {0} is empty: run `quiver index` first")]
    EmptyIndex(PathBuf),
    #[error("this index was opened for reading; writing it needs `Store::open_writer`")]
    NotWriter,
    #[error("{what} holds a NaN or infinite value")]
    NonFinite { what: String },
    #[error("keyword weight {0} is not a weight: it must be a number, 0 or more")]
    KeywordWeight(f64),
    #[error("index metadata field `{field}` is unreadable: {value:?}")]
    BadMetadata { field: &'static str, value: String },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("{path}, line {line}: {message}")]
    BadChunkFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("chunk id {id} appears twice (second time in {path})")]
    DuplicateChunkId { id: String, path: PathBuf },
    #[error("bad --path glob {glob:?}: {message}")]
    BadGlob { glob: String, message: String },
    #[error("{name:?} is not a language Quiver knows")]
    UnknownLanguage { name: String },
    /// The caller asked the run to stop ([`crate::IndexProgress::interrupted`]); every batch
    /// committed before stays.
    #[error("interrupted; the batches committed so far are kept: run again to finish")]
    Interrupted,
    #[error("cannot watch {path} for changes: {message}")]
    Watch { path: PathBuf, message: String },
    #[error("no indexed chunk holds {path}:{line}")]
    NoChunkAt { path: String, line: usize },
    #[error("the index holds no chunk {id:?}")]
    UnknownChunk { id: String },
    /// The keyword tokenizer, an in-memory FTS5 table ([`crate::keywords::Fts5Tokens`]).
    #[error("keyword tokenizer (in-memory SQLite): {0}")]
    Tokenizer(rusqlite::Error),
    #[error(transparent)]
    Embed(quiver_embed::EmbedError),
    #[error(transparent)]
    Chunk(#[from] quiver_chunk::ChunkError),
}

impl From<quiver_embed::EmbedError> for IndexError {
    fn from(error: quiver_embed::EmbedError) -> Self {
        match error {
            quiver_embed::EmbedError::Interrupted => IndexError::Interrupted,
            other => IndexError::Embed(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, IndexError>;
