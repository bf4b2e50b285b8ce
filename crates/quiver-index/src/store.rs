//! The index on disk: one SQLite database (`index.sqlite`) in the index directory, in WAL mode.
//!
//! Tables: `meta` (model, dimension, prompts, chunking settings), `files` (what each indexed
//! file looked like when it was indexed), `chunks` (text and metadata), `vectors` (keyed by the
//! hash of the embedded text, so unchanged chunks reuse their vector) and `chunks_fts` (an FTS5
//! table of keyword terms for BM25). Every change is one transaction, so a process killed at
//! any moment leaves the previous consistent state behind.
//!
//! One writer at a time: [`Store::open_writer`] holds an exclusive lock on `index.lock` for as
//! long as the store lives, and a second writer is refused naming the first one's pid. Readers
//! ([`Store::open`]) take no lock and open the database read-only, so an index on a read-only
//! mount, or another user's, can still be searched, inspected and exported.
//!
//! Every chunk row and every vector carries a CRC-32 of its contents (`checksum`), checked
//! whenever it is read, so bits flipped on disk are reported as damage instead of silently
//! changing answers; [`Store::verify`] checks everything, and [`Store::repair`] removes
//! what is damaged so the next run embeds it again.

use crate::error::{IndexError, Result};
use crate::keywords;
use quiver_embed::{EmbedOptions, Quantization};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub const DATABASE_FILE: &str = "index.sqlite";
/// Locked by the one process writing the index; holds its pid.
pub const LOCK_FILE: &str = "index.lock";
const SCHEMA_VERSION: &str = "2";
/// Meta keys of [`Store::vector_generation`]: a random id given to each new database, and a
/// counter every transaction that changes chunks or vectors increments.
const STORE_ID: &str = "store_id";
const GENERATION: &str = "generation";

/// The keyword side of an index, as [`Store::keyword_documents`] reads it.
#[derive(Debug, Clone, Default)]
pub struct KeywordDocuments {
    /// By [`ChunkRecord::uid`]; a chunk with no tokens has no entry.
    pub documents: HashMap<i64, keywords::KeywordDocument>,
    /// Tokens per chunk over the whole index: BM25's average document length.
    pub average_length: f64,
}

/// What every vector in an index was made with. Two runs with different settings must not
/// mix their vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSettings {
    pub model: String,
    pub dimension: usize,
    pub normalize: bool,
    pub document_prompt: Option<String>,
    pub query_prompt: Option<String>,
    /// The number format the model ran in: queries must be embedded the same way.
    pub quantization: Quantization,
}

impl IndexSettings {
    /// How every text stored in this index (chunk, signature) is embedded. With
    /// [`IndexSettings::query_options`], the one statement of the index's embedding rule: the
    /// indexer, every search front end and `quiver eval` embed through these two.
    pub fn document_options(&self) -> EmbedOptions {
        self.options(self.document_prompt.clone())
    }

    /// How a query searching this index must be embedded.
    pub fn query_options(&self) -> EmbedOptions {
        self.options(self.query_prompt.clone())
    }

    fn options(&self, prompt_name: Option<String>) -> EmbedOptions {
        EmbedOptions {
            prompt_name,
            dimensions: Some(self.dimension),
            normalize: Some(self.normalize),
            ..EmbedOptions::default()
        }
    }

    fn describe(&self) -> String {
        format!(
            "model {}{} with {} dimensions (normalize {}, document prompt {:?})",
            self.model,
            match self.quantization {
                Quantization::None => String::new(),
                other => format!(" ({})", other.name()),
            },
            self.dimension,
            self.normalize,
            self.document_prompt
        )
    }
}

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
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
    /// How the last run cut files (its fingerprint).
    pub chunking: Option<String>,
    pub stats: IndexStats,
    /// The memory-mapped vector files search reads (`None` before a run has written them).
    pub vector_files: Option<crate::VectorFilesStatus>,
}

pub struct Store {
    conn: Connection,
    dir: PathBuf,
    /// The writer's lock on [`LOCK_FILE`], released when the store is dropped; `None` for a
    /// reader.
    lock: Option<File>,
}

impl Store {
    /// Opens the index in `dir` for reading. The database is opened read-only; where even that
    /// needs a write (a read-only directory with no shared-memory file beside the database), it
    /// is read as immutable, which sees everything a finished run committed.
    ///
    /// An index made before checksums is upgraded first (one write, under the writer's lock)
    /// where it can be; where it cannot, the error says how.
    pub fn open(dir: &Path) -> Result<Store> {
        match Store::open_reader(dir) {
            Err(IndexError::NeedsUpgrade { .. }) if Store::open_writer(dir).is_ok() => {
                Store::open_reader(dir)
            }
            opened => opened,
        }
    }

    fn open_reader(dir: &Path) -> Result<Store> {
        let path = dir.join(DATABASE_FILE);
        if !path.is_file() {
            return Err(IndexError::NoIndex(dir.to_path_buf()));
        }
        let open = |uri: String| {
            Connection::open_with_flags(
                uri,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| db_error(dir, e))
        };
        let uri = file_uri(&path);
        let store = Store {
            conn: open(uri.clone())?,
            dir: dir.to_path_buf(),
            lock: None,
        };
        match store.check_schema() {
            Err(IndexError::Database { source, .. }) if cannot_open_read_only(&source) => {
                tracing::debug!("{}: read as immutable ({source})", path.display());
                let store = Store {
                    conn: open(format!("{uri}?immutable=1"))?,
                    ..store
                };
                store.check_schema()?;
                Ok(store)
            }
            checked => checked.map(|()| store),
        }
    }

    /// Opens the index in `dir` for writing, creating it if missing. Refused while another
    /// process writes it.
    pub fn open_writer(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = Store::connect_writer(dir.to_path_buf(), lock_writer(dir)?)?;
        store.init()?;
        Ok(store)
    }

    /// The database of `dir` opened read-write under `lock`, not yet initialised.
    fn connect_writer(dir: PathBuf, lock: File) -> Result<Store> {
        let path = dir.join(DATABASE_FILE);
        let conn =
            Connection::open(&path).map_err(|source| IndexError::Database { path, source })?;
        Ok(Store {
            conn,
            dir,
            lock: Some(lock),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn db_error(&self, source: rusqlite::Error) -> IndexError {
        db_error(&self.dir, source)
    }

    fn init(&self) -> Result<()> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| self.db_error(e))?;
        self.conn
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS files (
                     path TEXT PRIMARY KEY,
                     size INTEGER NOT NULL,
                     mtime_ns INTEGER NOT NULL,
                     content_hash TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS chunks (
                     id INTEGER PRIMARY KEY,
                     chunk_id TEXT NOT NULL UNIQUE,
                     uid INTEGER NOT NULL,
                     file TEXT NOT NULL,
                     path TEXT NOT NULL,
                     seq INTEGER NOT NULL,
                     source TEXT NOT NULL,
                     language TEXT NOT NULL,
                     symbol TEXT,
                     kind TEXT,
                     parent TEXT,
                     start_line INTEGER NOT NULL,
                     end_line INTEGER NOT NULL,
                     start_byte INTEGER NOT NULL,
                     end_byte INTEGER NOT NULL,
                     content_hash TEXT NOT NULL,
                     text TEXT NOT NULL,
                     embed_hash TEXT NOT NULL,
                     metadata TEXT,
                     signature_hash TEXT
                 );
                 CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks(file);
                 CREATE INDEX IF NOT EXISTS chunks_by_embed_hash ON chunks(embed_hash);
                 CREATE TABLE IF NOT EXISTS vectors (embed_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
                 CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts
                     USING fts5(names, body, tokenize = \"{}\");",
                keywords::TOKENIZER
            ))
            .map_err(|e| self.db_error(e))?;
        // Indexes made before signature vectors lack their column; their chunks get signatures
        // when they are next re-chunked, and search does without until then.
        self.add_column("chunks", "signature_hash", "TEXT")?;
        self.add_checksums()?;
        if self.meta(STORE_ID)?.is_none() {
            self.set_meta(STORE_ID, &new_store_id())?;
        }
        match self.meta("schema_version")? {
            None => self.set_meta("schema_version", SCHEMA_VERSION),
            Some(_) => self.check_schema(),
        }
    }

    /// A reader's check that it can read this index as it is.
    fn check_schema(&self) -> Result<()> {
        match self.meta("schema_version")? {
            Some(v) if v == SCHEMA_VERSION => {}
            None => return Err(IndexError::NoIndex(self.dir.clone())),
            Some(value) => {
                return Err(IndexError::OldSchema {
                    path: self.dir.clone(),
                    found: value,
                    expected: SCHEMA_VERSION,
                })
            }
        }
        for (table, column) in [
            ("chunks", "signature_hash"),
            ("chunks", "checksum"),
            ("vectors", "checksum"),
        ] {
            if !self.has_column(table, column)? {
                return Err(IndexError::NeedsUpgrade {
                    path: self.dir.clone(),
                });
            }
        }
        Ok(())
    }

    fn has_column(&self, table: &str, column: &str) -> Result<bool> {
        self.conn
            .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")
            .and_then(|mut statement| statement.exists([table, column]))
            .map_err(|e| self.db_error(e))
    }

    fn add_column(&self, table: &str, column: &str, kind: &str) -> Result<bool> {
        if self.has_column(table, column)? {
            return Ok(false);
        }
        self.conn
            .execute(
                &format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"),
                [],
            )
            .map_err(|e| self.db_error(e))?;
        Ok(true)
    }

    /// Indexes made before checksums get them, computed from what they hold now, in one
    /// transaction.
    fn add_checksums(&self) -> Result<()> {
        let chunks_added = self.add_column("chunks", "checksum", "INTEGER")?;
        let vectors_added = self.add_column("vectors", "checksum", "INTEGER")?;
        if !chunks_added && !vectors_added {
            return Ok(());
        }
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut read = tx.prepare(&format!("{CHUNK_COLUMNS} WHERE checksum IS NULL"))?;
                let mut write = tx.prepare("UPDATE chunks SET checksum = ?1 WHERE id = ?2")?;
                let rows: Vec<(i64, u32)> = read
                    .query_map([], |r| Ok((r.get(CHUNK_ROW_ID)?, read_chunk(r)?.computed)))?
                    .collect::<rusqlite::Result<_>>()?;
                for (id, checksum) in rows {
                    write.execute(params![checksum, id])?;
                }
                let mut read =
                    tx.prepare("SELECT embed_hash, vector FROM vectors WHERE checksum IS NULL")?;
                let mut write =
                    tx.prepare("UPDATE vectors SET checksum = ?1 WHERE embed_hash = ?2")?;
                let rows: Vec<(String, u32)> = read
                    .query_map([], |r| {
                        Ok((r.get(0)?, crc32fast::hash(r.get_ref(1)?.as_blob()?)))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                for (hash, checksum) in rows {
                    write.execute(params![checksum, hash])?;
                }
            }
            tx.commit()
        };
        run().map_err(|e| self.db_error(e))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.db_error(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| self.db_error(e))
    }

    /// Which database this is and how many times its chunks or vectors have changed: the
    /// vector files ([`crate::VectorIndex`]) record the pair they were written from, so a
    /// search knows whether they still hold what the database holds.
    pub fn vector_generation(&self) -> Result<(String, i64)> {
        let id = self.meta(STORE_ID)?.unwrap_or_default();
        let generation = self
            .meta(GENERATION)?
            .map(|value| {
                value.parse().map_err(|_| IndexError::BadMetadata {
                    field: GENERATION,
                    value,
                })
            })
            .transpose()?
            .unwrap_or(0);
        Ok((id, generation))
    }

    /// Whether this store holds the writer's lock.
    pub fn is_writer(&self) -> bool {
        self.lock.is_some()
    }

    /// A number that changes whenever another connection commits to the database: a long-lived
    /// reader (the server) compares it to know when to reload.
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.db_error(e))
    }

    pub fn settings(&self) -> Result<Option<IndexSettings>> {
        let Some(model) = self.meta("model")? else {
            return Ok(None);
        };
        let dimension_text = self.meta("dimension")?.unwrap_or_default();
        let dimension = dimension_text
            .parse()
            .map_err(|_| IndexError::BadMetadata {
                field: "dimension",
                value: dimension_text,
            })?;
        Ok(Some(IndexSettings {
            model,
            dimension,
            normalize: self.meta("normalize")?.as_deref() != Some("false"),
            document_prompt: self.meta("document_prompt")?.filter(|p| !p.is_empty()),
            query_prompt: self.meta("query_prompt")?.filter(|p| !p.is_empty()),
            // Indexes made before int8 indexing have no such key: they are f32.
            quantization: match self.meta("quantization")? {
                None => Quantization::None,
                Some(name) => Quantization::from_name(&name).ok_or(IndexError::BadMetadata {
                    field: "quantization",
                    value: name,
                })?,
            },
        }))
    }

    /// The settings of an index that holds vectors; an empty one is an error naming it.
    pub fn indexed_settings(&self) -> Result<IndexSettings> {
        self.settings()?
            .ok_or_else(|| IndexError::EmptyIndex(self.dir.clone()))
    }

    /// What the index holds and how it was made.
    pub fn status(&self) -> Result<IndexStatus> {
        let settings = self.indexed_settings()?;
        Ok(IndexStatus {
            index: self.dir.clone(),
            root: self.meta("root")?,
            model: settings.model,
            dimension: settings.dimension,
            normalize: settings.normalize,
            document_prompt: settings.document_prompt,
            query_prompt: settings.query_prompt,
            quantization: settings.quantization.name(),
            chunking: self.meta("chunking")?,
            stats: self.stats()?,
            vector_files: crate::vectors::status(self)?,
        })
    }

    /// Records `settings` on a new index; on an existing one, checks they match. With
    /// `reembed`, a mismatch empties the index (in one transaction) and records the new ones.
    pub fn adopt_settings(&mut self, settings: &IndexSettings, reembed: bool) -> Result<()> {
        match self.settings()? {
            Some(stored) if stored == *settings => return Ok(()),
            // The query prompt touches no stored vector: it is recorded, nothing re-embedded.
            Some(stored)
                if IndexSettings {
                    query_prompt: settings.query_prompt.clone(),
                    ..stored.clone()
                } == *settings =>
            {
                return self.set_meta(
                    "query_prompt",
                    settings.query_prompt.as_deref().unwrap_or_default(),
                );
            }
            Some(stored) if !reembed => {
                return Err(IndexError::SettingsChanged {
                    path: self.dir.clone(),
                    stored: stored.describe(),
                    requested: settings.describe(),
                })
            }
            _ => {}
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db_error(&self.dir, e))?;
        let run = || -> rusqlite::Result<()> {
            tx.execute_batch("DELETE FROM chunks; DELETE FROM chunks_fts; DELETE FROM vectors; DELETE FROM files;")?;
            bump_generation(&tx)?;
            let pairs = [
                ("model", settings.model.clone()),
                ("dimension", settings.dimension.to_string()),
                ("normalize", settings.normalize.to_string()),
                (
                    "document_prompt",
                    settings.document_prompt.clone().unwrap_or_default(),
                ),
                (
                    "query_prompt",
                    settings.query_prompt.clone().unwrap_or_default(),
                ),
                ("quantization", settings.quantization.name().to_string()),
            ];
            for (key, value) in pairs {
                tx.execute(
                    "INSERT INTO meta(key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )?;
            }
            Ok(())
        };
        run().map_err(|e| db_error(&self.dir, e))?;
        tx.commit().map_err(|e| db_error(&self.dir, e))
    }

    /// Every indexed file, by path.
    pub fn files(&self) -> Result<HashMap<String, FileRecord>> {
        let mut statement = self
            .conn
            .prepare("SELECT path, size, mtime_ns, content_hash FROM files")
            .map_err(|e| self.db_error(e))?;
        let rows = statement
            .query_map([], |r| {
                Ok(FileRecord {
                    path: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    content_hash: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.db_error(e))?;
        Ok(rows.into_iter().map(|f| (f.path.clone(), f)).collect())
    }

    /// Which of `hashes` already have a vector.
    pub fn vectors_present(&self, hashes: &[&str]) -> Result<HashSet<String>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT 1 FROM vectors WHERE embed_hash = ?1")
            .map_err(|e| self.db_error(e))?;
        let mut present = HashSet::new();
        for hash in hashes {
            if statement.exists([hash]).map_err(|e| self.db_error(e))? {
                present.insert(hash.to_string());
            }
        }
        Ok(present)
    }

    /// Applies a batch atomically. A vector with a NaN or infinite value is refused, and
    /// nothing of the batch is written.
    pub fn commit(&mut self, batch: &Batch) -> Result<()> {
        self.commit_batches(|sink| sink.apply(batch))
    }

    /// Applies every batch `fill` hands its sink as one transaction: all of them, or (when
    /// `fill` or a batch fails) none. For input too large to hold as one batch (an import);
    /// a file's chunks may arrive over several batches.
    pub fn commit_batches(
        &mut self,
        fill: impl FnOnce(&mut BatchSink<'_>) -> Result<()>,
    ) -> Result<()> {
        let dir = self.dir.clone();
        let tx = self.conn.transaction().map_err(|e| db_error(&dir, e))?;
        let mut sink = BatchSink {
            tx: &tx,
            dir: &dir,
            replaced: HashSet::new(),
        };
        fill(&mut sink)?;
        bump_generation(&tx).map_err(|e| db_error(&dir, e))?;
        tx.commit().map_err(|e| db_error(&dir, e))
    }

    /// Drops files (and their chunks) in one transaction.
    pub fn remove_files(&mut self, paths: &[String]) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db_error(&self.dir, e))?;
        for path in paths {
            delete_file_chunks(&tx, path).map_err(|e| db_error(&self.dir, e))?;
            tx.execute("DELETE FROM files WHERE path = ?1", [path])
                .map_err(|e| db_error(&self.dir, e))?;
        }
        bump_generation(&tx).map_err(|e| db_error(&self.dir, e))?;
        tx.commit().map_err(|e| db_error(&self.dir, e))
    }

    /// Deletes vectors no chunk uses any more; returns how many.
    pub fn collect_garbage(&self) -> Result<usize> {
        self.conn
            .execute(
                "DELETE FROM vectors WHERE embed_hash NOT IN (SELECT embed_hash FROM chunks)
                     AND embed_hash NOT IN
                         (SELECT signature_hash FROM chunks WHERE signature_hash IS NOT NULL)",
                [],
            )
            .map_err(|e| self.db_error(e))
    }

    pub fn stats(&self) -> Result<IndexStats> {
        let count = |sql: &str| -> Result<usize> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
                .map_err(|e| self.db_error(e))
        };
        let mut statement = self
            .conn
            .prepare(
                "SELECT language, COUNT(*) FROM chunks GROUP BY language ORDER BY COUNT(*) DESC",
            )
            .map_err(|e| self.db_error(e))?;
        let languages = statement
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.db_error(e))?;
        let database_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                std::fs::metadata(self.dir.join(format!("{DATABASE_FILE}{suffix}"))).ok()
            })
            .map(|m| m.len())
            .sum();
        Ok(IndexStats {
            files: count("SELECT COUNT(*) FROM files")?,
            chunks: count("SELECT COUNT(*) FROM chunks")?,
            vectors: count("SELECT COUNT(*) FROM vectors")?,
            languages,
            last_indexed_unix: self.meta("last_indexed_unix")?,
            database_bytes,
        })
    }

    /// Every chunk's row id, language, path, vector and signature vector (when it has one),
    /// for exhaustive vector search.
    pub fn for_each_vector(&self, visit: impl FnMut(StoredVector<'_>)) -> Result<()> {
        self.vectors_where("", [], visit)
    }

    /// [`Store::for_each_vector`] for the chunks of these row ids only (those with a vector).
    pub fn for_each_vector_of(
        &self,
        rows: &[i64],
        mut visit: impl FnMut(StoredVector<'_>),
    ) -> Result<()> {
        // One statement per slice keeps each under SQLite's limit on bound parameters.
        for slice in rows.chunks(500) {
            let marks = vec!["?"; slice.len()].join(",");
            self.vectors_where(
                &format!("WHERE c.id IN ({marks})"),
                rusqlite::params_from_iter(slice),
                &mut visit,
            )?;
        }
        Ok(())
    }

    /// Every chunk with a vector, as `(row id, fingerprint)`: the fingerprint changes whenever
    /// what the vector files hold for the chunk would (its vectors, language or path), so
    /// they can be brought up to date by difference.
    pub(crate) fn for_each_vector_key(&self, mut visit: impl FnMut(i64, u64)) -> Result<()> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT c.id, c.embed_hash, s.embed_hash, c.language, c.path
                 FROM chunks c
                 JOIN vectors v ON v.embed_hash = c.embed_hash
                 LEFT JOIN vectors s ON s.embed_hash = c.signature_hash",
            )
            .map_err(|e| self.db_error(e))?;
        let mut rows = statement.query([]).map_err(|e| self.db_error(e))?;
        let error = |e| db_error(&self.dir, e);
        while let Some(row) = rows.next().map_err(error)? {
            let mut fingerprint = Fnv64::default();
            for column in 1..5 {
                let value = row.get_ref(column).map_err(error)?;
                fingerprint.write(value.as_str_or_null().map_err(|e| error(e.into()))?);
            }
            visit(row.get(0).map_err(error)?, fingerprint.0);
        }
        Ok(())
    }

    fn vectors_where(
        &self,
        clause: &str,
        params: impl rusqlite::Params,
        mut visit: impl FnMut(StoredVector<'_>),
    ) -> Result<()> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT c.id, c.language, c.path, v.vector, s.vector, v.checksum, s.checksum, c.uid
                 FROM chunks c
                 JOIN vectors v ON v.embed_hash = c.embed_hash
                 LEFT JOIN vectors s ON s.embed_hash = c.signature_hash
                 {clause}"
            ))
            .map_err(|e| self.db_error(e))?;
        let mut rows = statement.query(params).map_err(|e| self.db_error(e))?;
        let (mut vector, mut signature) = (Vec::new(), Vec::new());
        let error = |e| db_error(&self.dir, e);
        while let Some(row) = rows.next().map_err(error)? {
            let id: i64 = row.get(0).map_err(error)?;
            let language: String = row.get(1).map_err(error)?;
            let path: String = row.get(2).map_err(error)?;
            let main = row
                .get_ref(3)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(error)?;
            let second = row
                .get_ref(4)
                .and_then(|v| v.as_blob_or_null().map_err(Into::into))
                .map_err(error)?;
            let checksums: (Option<i64>, Option<i64>) =
                (row.get(5).map_err(error)?, row.get(6).map_err(error)?);
            let uid: i64 = row.get(7).map_err(error)?;
            if !intact(main, checksums.0) || second.is_some_and(|bytes| !intact(bytes, checksums.1))
            {
                return Err(self.damaged(format!(
                    "the vector of {} fails its checksum",
                    self.chunk_name(id)
                )));
            }
            vector.clear();
            vector.extend(vector_from_bytes(main));
            signature.clear();
            signature.extend(second.into_iter().flat_map(vector_from_bytes));
            let signature = (!signature.is_empty()).then_some(signature.as_slice());
            visit(StoredVector {
                row: id,
                uid,
                language: &language,
                path: &path,
                vector: &vector,
                signature,
            });
        }
        Ok(())
    }

    /// Best BM25 matches for an FTS5 expression: (row id, language, path, score), higher
    /// scores better.
    pub fn keyword_matches(
        &self,
        expression: &str,
        limit: usize,
    ) -> Result<Vec<(i64, String, String, f64)>> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                // Ranked inside FTS5 first, so only the best `limit` rows are looked up in
                // `chunks` (a third faster on 100k chunks than joining every match).
                "SELECT c.id, c.language, c.path, best.score
                     FROM (SELECT rowid, -bm25(chunks_fts, {}, 1.0) AS score FROM chunks_fts
                           WHERE chunks_fts MATCH ?1 ORDER BY score DESC, rowid LIMIT ?2) best
                     JOIN chunks c ON c.id = best.rowid
                     ORDER BY best.score DESC, c.id",
                keywords::NAMES_WEIGHT
            ))
            .map_err(|e| self.db_error(e))?;
        statement
            .query_map(params![expression, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db_error(e))
    }

    /// Chunks by row id, in the order asked; `None` for a row a later commit removed (a
    /// reader's vectors can be one commit behind the database).
    pub fn chunks_by_id(&self, ids: &[i64]) -> Result<Vec<Option<ChunkRecord>>> {
        self.chunks_where("id", ids)
    }

    /// Chunks by the numeric form of their chunk id ([`ChunkRecord::uid`], what
    /// [`Store::for_each_vector`] and exported points carry), in the order asked; `None` for
    /// one the index does not hold.
    pub fn chunks_by_uid(&self, uids: &[i64]) -> Result<Vec<Option<ChunkRecord>>> {
        self.chunks_where("uid", uids)
    }

    fn chunks_where(&self, column: &str, ids: &[i64]) -> Result<Vec<Option<ChunkRecord>>> {
        let mut statement = self
            .conn
            .prepare_cached(&format!("{CHUNK_COLUMNS} WHERE {column} = ?1"))
            .map_err(|e| self.db_error(e))?;
        ids.iter()
            .map(|id| {
                let stored = statement
                    .query_row([id], read_chunk)
                    .optional()
                    .map_err(|e| db_error(&self.dir, e))?;
                stored.map(|stored| self.checked(stored)).transpose()
            })
            .collect()
    }

    /// The chunk with this id, if the index holds it.
    pub fn chunk_by_chunk_id(&self, chunk_id: &str) -> Result<Option<ChunkRecord>> {
        Ok(self
            .chunks_matching("WHERE chunk_id = ?1", params![chunk_id])?
            .pop())
    }

    /// The chunks of one indexed file (its [`FileRecord`] key), in file order.
    pub fn chunks_of_file(&self, file: &str) -> Result<Vec<ChunkRecord>> {
        self.chunks_matching("WHERE file = ?1 ORDER BY seq", params![file])
    }

    /// The chunks that hold `line` of the source file shown as `path`, in file order.
    pub fn chunks_at_line(&self, path: &str, line: usize) -> Result<Vec<ChunkRecord>> {
        self.chunks_matching(
            "WHERE path = ?1 AND start_line <= ?2 AND end_line >= ?2 ORDER BY seq",
            params![path, line as i64],
        )
    }

    /// Chunks whose symbol or enclosing definitions mention `word` (ASCII case ignored), at
    /// most `limit`, in path order: the candidates of [`crate::find_symbols`].
    pub fn chunks_mentioning(&self, word: &str, limit: usize) -> Result<Vec<ChunkRecord>> {
        let escaped = word
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        self.chunks_matching(
            "WHERE symbol LIKE ?1 ESCAPE '\\' OR parent LIKE ?1 ESCAPE '\\'
             ORDER BY path, seq LIMIT ?2",
            params![format!("%{escaped}%"), limit as i64],
        )
    }

    fn chunks_matching(
        &self,
        clause: &str,
        parameters: impl rusqlite::Params,
    ) -> Result<Vec<ChunkRecord>> {
        let mut statement = self
            .conn
            .prepare_cached(&format!("{CHUNK_COLUMNS} {clause}"))
            .map_err(|e| self.db_error(e))?;
        let rows: Vec<StoredChunk> = statement
            .query_map(parameters, read_chunk)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db_error(e))?;
        rows.into_iter().map(|row| self.checked(row)).collect()
    }

    /// Every chunk in file order, for checks.
    pub fn all_chunks(&self) -> Result<Vec<ChunkRecord>> {
        let mut chunks = Vec::new();
        self.for_each_chunk(|chunk| {
            chunks.push(chunk);
            Ok(())
        })?;
        Ok(chunks)
    }

    /// Every chunk in file order, one at a time (an export of any size); stops at the first
    /// error `visit` returns.
    pub fn for_each_chunk(&self, mut visit: impl FnMut(ChunkRecord) -> Result<()>) -> Result<()> {
        let mut statement = self
            .conn
            .prepare(&format!("{CHUNK_COLUMNS} ORDER BY file, seq"))
            .map_err(|e| self.db_error(e))?;
        let mut rows = statement.query([]).map_err(|e| self.db_error(e))?;
        while let Some(row) = rows.next().map_err(|e| self.db_error(e))? {
            let stored = read_chunk(row).map_err(|e| self.db_error(e))?;
            visit(self.checked(stored)?)?;
        }
        Ok(())
    }

    /// Runs `read` inside one read transaction, so every query it makes sees the same commit
    /// (a count and the rows it counts agree while a run writes the index).
    pub fn in_one_snapshot<T>(&self, read: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        self.conn
            .execute_batch("BEGIN")
            .map_err(|e| self.db_error(e))?;
        let outcome = read(self);
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| self.db_error(e))?;
        outcome
    }

    /// Every chunk's keyword tokens as the FTS5 index holds them, by [`ChunkRecord::uid`], with
    /// the index's average row length: what the store exports turn into BM25 sparse vectors.
    pub fn keyword_documents(&self) -> Result<KeywordDocuments> {
        let db = |e| self.db_error(e);
        self.conn
            .execute_batch(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_fts_tokens
                     USING fts5vocab(main, chunks_fts, instance);",
            )
            .map_err(db)?;
        let mut statement = self
            .conn
            .prepare(
                "SELECT c.uid, t.term, t.col = 'names' FROM temp.chunks_fts_tokens t
                     JOIN chunks c ON c.id = t.doc",
            )
            .map_err(db)?;
        let mut documents: HashMap<i64, keywords::KeywordDocument> = HashMap::new();
        let mut rows = statement.query([]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let uid: i64 = row.get(0).map_err(db)?;
            let token: String = row.get(1).map_err(db)?;
            let names: bool = row.get(2).map_err(db)?;
            documents.entry(uid).or_default().add(&token, names);
        }
        let rows: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))
            .map_err(db)?;
        let tokens: usize = documents.values().map(|d| d.length).sum();
        Ok(KeywordDocuments {
            average_length: tokens as f64 / rows.max(1) as f64,
            documents,
        })
    }

    /// The stored vector of a chunk.
    pub fn vector_of(&self, embed_hash: &str) -> Result<Option<Vec<f32>>> {
        let found = self
            .conn
            .query_row(
                "SELECT vector, checksum FROM vectors WHERE embed_hash = ?1",
                [embed_hash],
                |r| {
                    let bytes = r.get_ref(0)?.as_blob()?;
                    let vector = vector_from_bytes(bytes).collect::<Vec<f32>>();
                    Ok((vector, intact(bytes, r.get(1)?)))
                },
            )
            .optional()
            .map_err(|e| self.db_error(e))?;
        match found {
            Some((_, false)) => Err(self.damaged(format!(
                "the vector of text {embed_hash} fails its checksum"
            ))),
            found => Ok(found.map(|(vector, _)| vector)),
        }
    }

    fn checked(&self, stored: StoredChunk) -> Result<ChunkRecord> {
        if stored.intact() {
            Ok(stored.chunk)
        } else {
            Err(self.damaged(format!(
                "chunk {} fails its checksum",
                stored.chunk.chunk_id
            )))
        }
    }

    fn damaged(&self, what: String) -> IndexError {
        IndexError::Damaged {
            path: self.dir.join(DATABASE_FILE),
            what,
        }
    }

    /// A chunk by its id if it can still be read, for messages about its row.
    fn chunk_name(&self, id: i64) -> String {
        self.conn
            .query_row("SELECT chunk_id FROM chunks WHERE id = ?1", [id], |r| {
                r.get::<_, String>(0)
            })
            .map(|chunk_id| format!("chunk {chunk_id}"))
            .unwrap_or_else(|_| format!("chunk row {id}"))
    }
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    pub chunks: usize,
    pub vectors: usize,
    /// SQLite's own check of every page (`PRAGMA integrity_check`): empty when sound.
    pub structure: Vec<String>,
    /// Chunks whose contents fail their checksum, by id (or row, when the id is unreadable).
    pub damaged_chunks: Vec<String>,
    /// Vectors that fail their checksum, by the hash of the text they embed.
    pub damaged_vectors: Vec<String>,
    /// Chunks whose vector is missing.
    pub missing_vectors: Vec<String>,
    /// Keyword-index rows that are not one per chunk.
    pub keyword_rows_mismatch: Option<(usize, usize)>,
}

impl Verification {
    pub fn is_sound(&self) -> bool {
        self.structure.is_empty()
            && self.damaged_chunks.is_empty()
            && self.damaged_vectors.is_empty()
            && self.missing_vectors.is_empty()
            && self.keyword_rows_mismatch.is_none()
    }
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub enum Repair {
    /// Nothing was damaged.
    Sound,
    /// Damaged rows were dropped; the next indexing run re-chunks every file and embeds what
    /// is missing.
    Dropped { chunks: usize, vectors: usize },
    /// The database's structure was damaged: it was moved aside to `set_aside` and a new,
    /// empty index started, which the next run fills from the sources.
    Rebuilt { set_aside: PathBuf },
}

/// Most damaged rows named in a report; the counts say the rest.
const MAX_REPORTED: usize = 20;

impl Store {
    /// Reads everything in the index and checks it: the database's pages, every chunk's and
    /// every vector's checksum, that every chunk has its vector and keyword row.
    pub fn verify(&self) -> Result<Verification> {
        let error = |e| db_error(&self.dir, e);
        let mut report = Verification::default();
        let mut statement = self.conn.prepare("PRAGMA integrity_check").map_err(error)?;
        report.structure = statement
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(error)?
            .into_iter()
            .filter(|line| line != "ok")
            .take(MAX_REPORTED)
            .collect();
        // Damage the page check already found can make the rows below unreadable.
        if !report.structure.is_empty() {
            return Ok(report);
        }
        let mut statement = self
            .conn
            .prepare(&format!("{CHUNK_COLUMNS} ORDER BY id"))
            .map_err(error)?;
        let mut rows = statement.query([]).map_err(error)?;
        let mut vector_hashes = Vec::new();
        while let Some(row) = rows.next().map_err(error)? {
            let stored = read_chunk(row).map_err(error)?;
            report.chunks += 1;
            if stored.intact() {
                vector_hashes.push((stored.chunk.chunk_id.clone(), stored.chunk.embed_hash));
            } else {
                report.damaged_chunks.push(stored.chunk.chunk_id);
            }
        }
        let mut statement = self
            .conn
            .prepare("SELECT embed_hash, vector, checksum FROM vectors")
            .map_err(error)?;
        let mut rows = statement.query([]).map_err(error)?;
        let mut present = HashSet::new();
        while let Some(row) = rows.next().map_err(error)? {
            let hash: String = row.get(0).map_err(error)?;
            let bytes = row
                .get_ref(1)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(error)?;
            report.vectors += 1;
            if intact(bytes, row.get(2).map_err(error)?) {
                present.insert(hash);
            } else {
                report.damaged_vectors.push(hash);
            }
        }
        let damaged: HashSet<&String> = report.damaged_vectors.iter().collect();
        report.missing_vectors = vector_hashes
            .into_iter()
            .filter(|(_, hash)| !present.contains(hash) && !damaged.contains(hash))
            .map(|(chunk_id, _)| chunk_id)
            .collect();
        let keyword_rows = self
            .conn
            .query_row("SELECT COUNT(*) FROM chunks_fts", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(error)? as usize;
        if keyword_rows != report.chunks {
            report.keyword_rows_mismatch = Some((keyword_rows, report.chunks));
        }
        Ok(report)
    }

    /// Drops what [`Store::verify`] finds damaged so that the next indexing run rebuilds it
    /// from the sources: damaged chunks and vectors are deleted and every file is marked for
    /// re-chunking (which reuses every intact vector, so only what was lost is embedded
    /// again). A database whose structure is damaged is moved aside whole and started anew.
    ///
    /// Opens the index for writing as [`Store::open_writer`] does, even when its database can
    /// no longer be opened at all.
    pub fn repair(dir: &Path) -> Result<(Store, Repair)> {
        let path = dir.join(DATABASE_FILE);
        if !path.is_file() {
            return Err(IndexError::NoIndex(dir.to_path_buf()));
        }
        let store = Store::connect_writer(dir.to_path_buf(), lock_writer(dir)?)?;
        match store.init() {
            Ok(()) => store.drop_damaged(),
            Err(IndexError::Damaged { .. }) => store.start_anew(),
            Err(error) => Err(error),
        }
    }

    fn drop_damaged(self) -> Result<(Store, Repair)> {
        let report = self.verify();
        let structural = match &report {
            Ok(report) => !report.structure.is_empty(),
            Err(IndexError::Database { .. } | IndexError::Damaged { .. }) => true,
            Err(_) => false,
        };
        if structural {
            return self.start_anew();
        }
        let report = report?;
        if report.is_sound() {
            return Ok((self, Repair::Sound));
        }
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            for hash in &report.damaged_vectors {
                tx.execute("DELETE FROM vectors WHERE embed_hash = ?1", [hash])?;
            }
            for chunk_id in &report.damaged_chunks {
                tx.execute(
                    "DELETE FROM chunks_fts WHERE rowid IN
                         (SELECT id FROM chunks WHERE chunk_id = ?1)",
                    [chunk_id],
                )?;
                tx.execute("DELETE FROM chunks WHERE chunk_id = ?1", [chunk_id])?;
            }
            tx.execute(
                "DELETE FROM chunks_fts WHERE rowid NOT IN (SELECT id FROM chunks)",
                [],
            )?;
            // A changed chunking fingerprint makes the next run re-chunk every file.
            tx.execute("DELETE FROM meta WHERE key = 'chunking'", [])?;
            bump_generation(&tx)?;
            tx.commit()
        };
        run().map_err(|e| self.db_error(e))?;
        let repair = Repair::Dropped {
            chunks: report.damaged_chunks.len(),
            vectors: report.damaged_vectors.len(),
        };
        Ok((self, repair))
    }

    /// Moves the database aside and opens a new, empty one in its place, keeping the lock.
    fn start_anew(self) -> Result<(Store, Repair)> {
        let Store { conn, dir, lock } = self;
        drop(conn);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let set_aside = dir.join(format!("{DATABASE_FILE}.damaged-{stamp}"));
        for suffix in ["", "-wal", "-shm"] {
            let from = dir.join(format!("{DATABASE_FILE}{suffix}"));
            let to = PathBuf::from(format!("{}{suffix}", set_aside.display()));
            match std::fs::rename(&from, &to) {
                Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                    return Err(IndexError::Io { path: from, source })
                }
                _ => {}
            }
        }
        let store = Store::connect_writer(dir, lock.ok_or(IndexError::NotWriter)?)?;
        store.init()?;
        Ok((store, Repair::Rebuilt { set_aside }))
    }
}

/// Takes the index's writer lock, or says who holds it.
fn lock_writer(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let io_error = |source| IndexError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(IndexError::Locked {
                path: dir.to_path_buf(),
                pid: holder.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(io_error(source)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io_error)?;
    Ok(file)
}

/// SQLite's URI form of a path, so `?immutable=1` can follow it.
fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                uri.push(*byte as char)
            }
            other => uri.push_str(&format!("%{other:02X}")),
        }
    }
    uri
}

/// The errors of a read-only connection that would need to write beside the database (its
/// shared-memory file) to read it.
fn cannot_open_read_only(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
    )
}

/// Whether `bytes` still hash to the checksum stored beside them.
fn intact(bytes: &[u8], checksum: Option<i64>) -> bool {
    checksum.is_none_or(|stored| stored as u32 == crc32fast::hash(bytes))
}

const CHUNK_COLUMNS: &str = "SELECT chunk_id, uid, file, path, seq, source, language, symbol, kind, parent,
    start_line, end_line, start_byte, end_byte, content_hash, text, embed_hash, metadata, signature_hash,
    checksum, id
    FROM chunks";
const CHUNK_ROW_ID: usize = 20;

/// A chunk row as read, with its checksum as stored and as computed from what was read.
struct StoredChunk {
    chunk: ChunkRecord,
    stored: Option<u32>,
    computed: u32,
}

impl StoredChunk {
    fn intact(&self) -> bool {
        self.stored.is_none_or(|stored| stored == self.computed)
    }
}

fn read_chunk(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredChunk> {
    let metadata: Option<String> = r.get(17)?;
    let chunk_id: String = r.get(0)?;
    let chunk = ChunkRecord {
        uuid: crate::ids::uuid(&chunk_id),
        chunk_id,
        uid: r.get(1)?,
        file: r.get(2)?,
        path: r.get(3)?,
        seq: r.get::<_, i64>(4)? as usize,
        source: r.get(5)?,
        language: r.get(6)?,
        symbol: r.get(7)?,
        kind: r.get(8)?,
        parent: r.get(9)?,
        start_line: r.get::<_, i64>(10)? as usize,
        end_line: r.get::<_, i64>(11)? as usize,
        start_byte: r.get::<_, i64>(12)? as usize,
        end_byte: r.get::<_, i64>(13)? as usize,
        content_hash: r.get(14)?,
        text: r.get(15)?,
        embed_hash: r.get(16)?,
        metadata: metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        signature_hash: r.get(18)?,
    };
    Ok(StoredChunk {
        computed: chunk_checksum(&chunk, metadata.as_deref()),
        stored: r.get::<_, Option<i64>>(19)?.map(|c| c as u32),
        chunk,
    })
}

/// CRC-32 of every stored field of a chunk, each preceded by its length so that no two rows
/// hash the same text; `metadata` as stored (JSON text).
fn chunk_checksum(chunk: &ChunkRecord, metadata: Option<&str>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    fn optional(text: &Option<String>) -> Option<&[u8]> {
        text.as_deref().map(str::as_bytes)
    }
    for text in [
        &chunk.chunk_id,
        &chunk.file,
        &chunk.path,
        &chunk.source,
        &chunk.language,
        &chunk.content_hash,
        &chunk.text,
        &chunk.embed_hash,
    ] {
        field(text.as_bytes());
    }
    for text in [
        optional(&chunk.symbol),
        optional(&chunk.kind),
        optional(&chunk.parent),
        optional(&chunk.signature_hash),
        metadata.map(str::as_bytes),
    ] {
        // Absent and empty must differ.
        field(&[u8::from(text.is_some())]);
        field(text.unwrap_or_default());
    }
    for number in [
        chunk.uid,
        chunk.seq as i64,
        chunk.start_line as i64,
        chunk.end_line as i64,
        chunk.start_byte as i64,
        chunk.end_byte as i64,
    ] {
        field(&number.to_le_bytes());
    }
    hasher.finalize()
}

fn db_error(dir: &Path, source: rusqlite::Error) -> IndexError {
    if matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    ) {
        return IndexError::Damaged {
            path: dir.join(DATABASE_FILE),
            what: format!("SQLite cannot read its pages ({source})"),
        };
    }
    IndexError::Database {
        path: dir.join(DATABASE_FILE),
        source,
    }
}

/// Vectors are stored as little-endian float32 BLOBs.
/// Where [`Store::commit_batches`] applies batches, inside its transaction.
pub struct BatchSink<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    dir: &'a Path,
    /// Files whose old chunks this transaction has already deleted: their later chunks add to
    /// the new ones.
    replaced: HashSet<String>,
}

impl BatchSink<'_> {
    pub fn apply(&mut self, batch: &Batch) -> Result<()> {
        if let Some((hash, _)) = batch
            .vectors
            .iter()
            .find(|(_, vector)| vector.iter().any(|x| !x.is_finite()))
        {
            let chunk = batch
                .files
                .iter()
                .flat_map(|(_, chunks)| chunks)
                .find(|c| c.embed_hash == *hash || c.signature_hash.as_ref() == Some(hash));
            return Err(IndexError::NonFinite {
                what: match chunk {
                    Some(chunk) => format!("the vector of chunk {}", chunk.chunk_id),
                    None => format!("the vector of text {hash}"),
                },
            });
        }
        let error = |e| db_error(self.dir, e);
        for (hash, vector) in &batch.vectors {
            let bytes = vector_bytes(vector);
            self.tx
                .execute(
                    "INSERT OR IGNORE INTO vectors(embed_hash, vector, checksum) VALUES (?1, ?2, ?3)",
                    params![hash, bytes, crc32fast::hash(&bytes)],
                )
                .map_err(error)?;
        }
        for (file, chunks) in &batch.files {
            if self.replaced.insert(file.path.clone()) {
                delete_file_chunks(self.tx, &file.path).map_err(error)?;
            }
            for chunk in chunks {
                insert_chunk(self.tx, chunk).map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(f, _)
                        if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        IndexError::DuplicateChunkId {
                            id: chunk.chunk_id.clone(),
                            path: PathBuf::from(&chunk.file),
                        }
                    }
                    e => error(e),
                })?;
            }
            upsert_file(self.tx, file).map_err(error)?;
        }
        for file in &batch.touched {
            upsert_file(self.tx, file).map_err(error)?;
        }
        Ok(())
    }
}

/// FNV-1a over optional strings (a `None` and each end marked), for fingerprints that must
/// stay the same across builds, which `std`'s hashers do not promise.
#[derive(Clone, Copy)]
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, text: Option<&str>) {
        let bytes = text.map(str::as_bytes).unwrap_or(&[0xff]);
        for &byte in bytes.iter().chain(&[0]) {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn bump_generation(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [GENERATION],
    )
    .map(|_| ())
}

/// An id no other database will have: a rebuilt database restarts its generation count, and
/// vector files written from the one before must not look current for it.
fn new_store_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from_bytes(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn delete_file_chunks(tx: &rusqlite::Transaction<'_>, file: &str) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE file = ?1)",
        [file],
    )?;
    tx.execute("DELETE FROM chunks WHERE file = ?1", [file])?;
    Ok(())
}

fn insert_chunk(tx: &rusqlite::Transaction<'_>, chunk: &ChunkRecord) -> rusqlite::Result<()> {
    let metadata = chunk.metadata.as_ref().map(|m| m.to_string());
    let checksum = chunk_checksum(chunk, metadata.as_deref());
    tx.execute(
        "INSERT INTO chunks(chunk_id, uid, file, path, seq, source, language, symbol, kind, parent,
             start_line, end_line, start_byte, end_byte, content_hash, text, embed_hash, metadata,
             signature_hash, checksum)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
             ?19, ?20)",
        params![
            chunk.chunk_id,
            chunk.uid,
            chunk.file,
            chunk.path,
            chunk.seq as i64,
            chunk.source,
            chunk.language,
            chunk.symbol,
            chunk.kind,
            chunk.parent,
            chunk.start_line as i64,
            chunk.end_line as i64,
            chunk.start_byte as i64,
            chunk.end_byte as i64,
            chunk.content_hash,
            chunk.text,
            chunk.embed_hash,
            metadata,
            chunk.signature_hash,
            checksum,
        ],
    )?;
    let id = tx.last_insert_rowid();
    let names = keywords::names(
        &chunk.path,
        chunk.symbol.as_deref(),
        chunk.parent.as_deref(),
    );
    tx.execute(
        "INSERT INTO chunks_fts(rowid, names, body) VALUES (?1, ?2, ?3)",
        params![id, keywords::terms(&names), keywords::terms(&chunk.text)],
    )?;
    Ok(())
}

fn upsert_file(tx: &rusqlite::Transaction<'_>, file: &FileRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO files(path, size, mtime_ns, content_hash) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
             content_hash = excluded.content_hash",
        params![
            file.path,
            file.size as i64,
            file.mtime_ns,
            file.content_hash
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("quiver-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn chunk(id: &str, text: &str) -> ChunkRecord {
        ChunkRecord {
            chunk_id: id.into(),
            uid: 1,
            uuid: String::new(),
            file: "a.py".into(),
            path: "a.py".into(),
            seq: 0,
            source: "repo".into(),
            language: "python".into(),
            symbol: Some("f".into()),
            kind: None,
            parent: None,
            start_line: 1,
            end_line: 2,
            start_byte: 0,
            end_byte: text.len(),
            content_hash: "c".into(),
            text: text.into(),
            embed_hash: format!("e-{id}"),
            signature_hash: None,
            metadata: None,
        }
    }

    fn file_record() -> FileRecord {
        FileRecord {
            path: "a.py".into(),
            size: 1,
            mtime_ns: 1,
            content_hash: "h".into(),
        }
    }

    fn one_file(store: &mut Store) {
        let file = file_record();
        let batch = Batch {
            files: vec![(file, vec![chunk("c:0", "def f(): pass")])],
            touched: vec![],
            vectors: vec![("e-c:0".into(), vec![0.6, 0.8])],
        };
        store.commit(&batch).unwrap();
    }

    #[test]
    fn an_index_from_before_checksums_is_upgraded_when_opened() {
        let dir = scratch("upgrade");
        let mut store = Store::open_writer(&dir).unwrap();
        one_file(&mut store);
        drop(store);
        let raw = Connection::open(dir.join(DATABASE_FILE)).unwrap();
        raw.execute_batch(
            "ALTER TABLE chunks DROP COLUMN checksum; ALTER TABLE vectors DROP COLUMN checksum;",
        )
        .unwrap();
        drop(raw);
        let reader = Store::open(&dir).unwrap();
        let report = reader.verify().unwrap();
        assert!(report.is_sound(), "{report:?}");
        assert_eq!((report.chunks, report.vectors), (1, 1));
        assert_eq!(reader.all_chunks().unwrap()[0].text, "def f(): pass");
    }

    #[test]
    fn a_non_finite_vector_is_refused_and_nothing_of_its_batch_is_written() {
        let dir = scratch("nan");
        let mut store = Store::open_writer(&dir).unwrap();
        let file = file_record();
        let batch = Batch {
            files: vec![(file, vec![chunk("c:0", "def f(): pass")])],
            touched: vec![],
            vectors: vec![("e-c:0".into(), vec![f32::NAN, 0.8])],
        };
        let error = store.commit(&batch).unwrap_err().to_string();
        assert!(
            error.contains("chunk c:0") && error.contains("NaN"),
            "{error}"
        );
        assert_eq!(store.stats().unwrap().chunks, 0);
    }

    #[test]
    fn one_writer_at_a_time_and_readers_alongside() {
        let dir = scratch("lock");
        let mut writer = Store::open_writer(&dir).unwrap();
        one_file(&mut writer);
        let error = Store::open_writer(&dir).err().expect("refused").to_string();
        assert!(error.contains("another quiver index is running"), "{error}");
        assert!(
            error.contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
        assert_eq!(Store::open(&dir).unwrap().stats().unwrap().chunks, 1);
        drop(writer);
        assert!(Store::open_writer(&dir).is_ok());
    }
}
