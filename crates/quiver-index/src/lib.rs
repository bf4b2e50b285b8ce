//! Quiver's index: turns a source tree (or pre-chunked JSON) into a local, incrementally
//! updated, crash-safe index of chunks and vectors, and searches it.
//!
//! What it does: walks a tree with the skip rules of [`walk`]; chunks changed files with
//! `quiver-chunk`; embeds only chunks whose embedded text has no vector yet; stores files,
//! chunks, vectors and BM25 terms in one SQLite database ([`Store`]) a transaction per batch;
//! searches by vector, keyword or both ([`search()`]). Exports and imports are `quiver-export`'s.
//! What it does not: run models (`quiver-embed` does) or print anything (the CLI does).
//!
//! Entry points: [`Store::open`], [`index`], [`search()`], and [`IndexReader`] for a front end
//! that answers many searches.

pub mod adapter;
mod bm25;
pub mod chunk_files;
mod definition;
mod error;
pub mod ids;
mod indexer;
pub mod keywords;
mod reader;
mod run;
mod search;
mod store;
mod vectors;
pub mod walk;
mod watch;

pub use bm25::PostingsCache;
pub use definition::{
    chunk_at, definition_of, find_symbols, pack, Definition, FoundSymbol, Packed, PackedDefinition,
    PACK_CANDIDATES,
};
pub use error::{IndexError, Result};
pub use indexer::{
    index, settings_for, Chunking, IndexOptions, IndexProgress, IndexReport, Input, ModelTokens,
    NoProgress, HEADER_RESERVE_TOKENS, LISTED_FILES,
};
pub use reader::{IndexReader, Snapshot};
pub use run::{
    recorded_model_id, RunModel, DEFAULT_COMMIT_EVERY, DEFAULT_ID_PREFIX, DEFAULT_MAX_FILE_BYTES,
};
pub use search::{
    fused_score, is_keyword_weight, keyword_side, model_keyword_weight, rerank_hits,
    rescale_bounds, search, search_with, search_with_keywords, KeywordSide, SearchFilter,
    SearchHit, SearchMode, SearchRequest, DEFAULT_KEYWORD_WEIGHT, FUSION_DEPTH, KEYWORD_OVERLAP,
    RERANK_CANDIDATES,
};
pub use store::{
    Batch, BatchSink, ChunkRecord, FileRecord, IndexSettings, IndexStats, IndexStatus, Repair,
    Store, StoredVector, Verification, DATABASE_FILE, LOCK_FILE,
};
pub use vectors::{
    sync as sync_vectors, Synced, VectorFilesStatus, VectorIndex, DIR as VECTORS_DIR,
};
pub use watch::{watch, IndexUpdater, UpdateState, WatchOptions, Watcher};

/// Name of the index directory created under an indexed root when `--index` is not given.
pub const DEFAULT_INDEX_DIR: &str = ".quiver";

/// Locks a mutex whose holders never leave its data half-written, so a panic in one of them
/// (poisoning) is no reason to fail every later caller. Each mutex says why this holds for it.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
