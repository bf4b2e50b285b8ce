//! What the store holds and hands out: files, chunks, batches of work, counts.

use std::path::PathBuf;

/// A file as it was when indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Key: path relative to the indexed root (or chunk file relative to the chunks directory).
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub content_hash: String,
}

/// A chunk as stored.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ChunkRecord {
    pub chunk_id: String,
    /// 63-bit numeric form of `chunk_id`.
    pub uid: i64,
    /// UUID form of `chunk_id` ([`crate::ids::uuid`]), derived, not stored.
    pub uuid: String,
    /// The [`FileRecord`] it came from.
    #[serde(skip)]
    pub file: String,
    /// Path shown to users: the source file's path.
    pub path: String,
    /// Position of the chunk within its file, from 0.
    pub seq: usize,
    /// The repository part of the chunk id: a tree's folder name, or the folder of the chunk
    /// file it came from (exported as `source_subdir`, the name exported points are keyed on).
    pub source: String,
    pub language: String,
    pub symbol: Option<String>,
    pub kind: Option<String>,
    pub parent: Option<String>,
    pub start_line: usize,
    pub end_line: usize,
    pub start_byte: usize,
    pub end_byte: usize,
    pub content_hash: String,
    pub text: String,
    /// Hash of the exact text embedded (header included): the key of its vector.
    #[serde(skip)]
    pub embed_hash: String,
    /// Hash of the header-and-signature text of a chunk that starts a definition: the key of
    /// its second vector (see `quiver_chunk::signature_text`).
    #[serde(skip)]
    pub signature_hash: Option<String>,
    /// The caller's own metadata, for pre-chunked input (JSON object).
    pub metadata: Option<serde_json::Value>,
}

/// Work to commit in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Files whose chunks are replaced.
    pub files: Vec<(FileRecord, Vec<ChunkRecord>)>,
    /// Files whose content is unchanged but whose size or time moved.
    pub touched: Vec<FileRecord>,
    pub vectors: Vec<(String, Vec<f32>)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.touched.is_empty() && self.vectors.is_empty()
    }
}

/// Counts for `quiver status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexStats {
    pub files: usize,
    pub chunks: usize,
    pub vectors: usize,
    pub languages: Vec<(String, usize)>,
    pub last_indexed_unix: Option<String>,
    pub database_bytes: u64,
}

/// One chunk's vectors as [`Store::for_each_vector`] hands them out.
pub struct StoredVector<'a> {
    /// The chunk's row in the store.
    pub row: i64,
    /// The numeric form of its chunk id (what exported points are keyed on).
    pub uid: i64,
    pub language: &'a str,
    pub path: &'a str,
    pub vector: &'a [f32],
    /// Its signature vector, when it starts a definition.
    pub signature: Option<&'a [f32]>,
    /// Changes whenever what the vector files hold for the chunk would (its vectors, language
    /// or path).
    pub fingerprint: u64,
}

/// What `quiver status --json` prints and Python's `Index.status()` returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexStatus {
    pub index: PathBuf,
    /// The tree the last run indexed.
    pub root: Option<String>,
    pub model: String,
    pub dimension: usize,
    pub normalize: bool,
    pub document_prompt: Option<String>,
    pub query_prompt: Option<String>,
    /// The number format's name (`none`, `int8`).
    pub quantization: &'static str,
    /// Hybrid search's keyword weight.
    pub keyword_weight: f64,
    /// How the last run cut files (its fingerprint).
    pub chunking: Option<String>,
    pub stats: IndexStats,
    /// The memory-mapped vector files search reads (`None` before a run has written them).
    pub vector_files: Option<crate::VectorFilesStatus>,
}
