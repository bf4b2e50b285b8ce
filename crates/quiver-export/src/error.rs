#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination exists but holds something this index must not be mixed with.
    #[error("{destination}: {message}; nothing was written")]
    Refused {
        destination: String,
        message: String,
    },
    #[error("Qdrant at {url}: {message}")]
    Qdrant { url: String, message: String },
    #[error("PostgreSQL table {table}: {source}")]
    Postgres {
        table: String,
        source: ::postgres::Error,
    },
    #[error("unknown export format {0:?}: use jsonl, npy, qdrant or postgres")]
    UnknownFormat(String),
    #[error("{0} is a file export, not a store to search: use qdrant or postgres")]
    NotAStore(String),
    #[error(
        "an export to {format} needs a {option} name (`--{option} NAME`; in Python `{option}=`)"
    )]
    MissingOption {
        format: String,
        option: &'static str,
    },
    #[error(transparent)]
    Index(#[from] quiver_index::IndexError),
    #[error("bad {what} {name:?}: {message}")]
    BadName {
        what: &'static str,
        name: String,
        message: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, ExportError>;
