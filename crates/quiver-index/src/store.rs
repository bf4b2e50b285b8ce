//! The index on disk: one SQLite database (`index.sqlite`) in the index directory, in WAL mode.
//!
//! Tables: `meta` (model, dimension, prompts, chunking settings), `files` (what each indexed
//! file looked like when it was indexed), `chunks` (text and metadata), `vectors` (keyed by the
//! hash of the embedded text, so unchanged chunks reuse their vector) and `chunks_fts` (an FTS5
//! table of keyword terms for BM25). Every change is one transaction, so a process killed at
//! any moment leaves the previous consistent state behind.

use crate::error::{IndexError, Result};
use crate::keywords;
use quiver_embed::Quantization;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

pub const DATABASE_FILE: &str = "index.sqlite";
const SCHEMA_VERSION: &str = "2";
/// BM25 weight of a chunk's names (path, symbol, parent) against its body's 1.0: an identifier
/// named in the query is strong evidence. Chosen with `quiver eval` (docs/evaluation.md).
const NAMES_WEIGHT: f64 = 3.0;

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

pub struct Store {
    conn: Connection,
    dir: PathBuf,
}

impl Store {
    /// Opens the index in `dir`, creating it if `create` is set.
    pub fn open(dir: &Path, create: bool) -> Result<Store> {
        let path = dir.join(DATABASE_FILE);
        if !create && !path.is_file() {
            return Err(IndexError::NoIndex(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(&path).map_err(|source| IndexError::Database {
            path: path.clone(),
            source,
        })?;
        let store = Store {
            conn,
            dir: dir.to_path_buf(),
        };
        store.init()?;
        Ok(store)
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
            .execute_batch(
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
                     USING fts5(names, body, tokenize = \"porter unicode61 tokenchars '_'\");",
            )
            .map_err(|e| self.db_error(e))?;
        self.add_signature_column()?;
        match self.meta("schema_version")? {
            None => self.set_meta("schema_version", SCHEMA_VERSION),
            Some(v) if v == SCHEMA_VERSION => Ok(()),
            Some(value) => Err(IndexError::OldSchema {
                path: self.dir.clone(),
                found: value,
                expected: SCHEMA_VERSION,
            }),
        }
    }

    /// Indexes made before signature vectors lack their column; their chunks get signatures
    /// when they are next re-chunked, and search does without until then.
    fn add_signature_column(&self) -> Result<()> {
        let present = self
            .conn
            .prepare("SELECT 1 FROM pragma_table_info('chunks') WHERE name = 'signature_hash'")
            .and_then(|mut statement| statement.exists([]))
            .map_err(|e| self.db_error(e))?;
        if !present {
            self.conn
                .execute("ALTER TABLE chunks ADD COLUMN signature_hash TEXT", [])
                .map_err(|e| self.db_error(e))?;
        }
        Ok(())
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

    /// Records `settings` on a new index; on an existing one, checks they match. With
    /// `reembed`, a mismatch empties the index (in one transaction) and records the new ones.
    pub fn adopt_settings(&mut self, settings: &IndexSettings, reembed: bool) -> Result<()> {
        match self.settings()? {
            Some(stored) if stored == *settings => return Ok(()),
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

    /// Applies a batch atomically.
    pub fn commit(&mut self, batch: &Batch) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db_error(&self.dir, e))?;
        for (hash, vector) in &batch.vectors {
            tx.execute(
                "INSERT OR IGNORE INTO vectors(embed_hash, vector) VALUES (?1, ?2)",
                params![hash, vector_bytes(vector)],
            )
            .map_err(|e| db_error(&self.dir, e))?;
        }
        for (file, chunks) in &batch.files {
            delete_file_chunks(&tx, &file.path).map_err(|e| db_error(&self.dir, e))?;
            for chunk in chunks {
                insert_chunk(&tx, chunk).map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(f, _)
                        if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        IndexError::DuplicateChunkId {
                            id: chunk.chunk_id.clone(),
                            path: PathBuf::from(&chunk.file),
                        }
                    }
                    e => db_error(&self.dir, e),
                })?;
            }
            upsert_file(&tx, file).map_err(|e| db_error(&self.dir, e))?;
        }
        for file in &batch.touched {
            upsert_file(&tx, file).map_err(|e| db_error(&self.dir, e))?;
        }
        tx.commit().map_err(|e| db_error(&self.dir, e))
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
    pub fn for_each_vector(
        &self,
        mut visit: impl FnMut(i64, &str, &str, &[f32], Option<&[f32]>),
    ) -> Result<()> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT c.id, c.language, c.path, v.vector, s.vector FROM chunks c
                 JOIN vectors v ON v.embed_hash = c.embed_hash
                 LEFT JOIN vectors s ON s.embed_hash = c.signature_hash",
            )
            .map_err(|e| self.db_error(e))?;
        let mut rows = statement.query([]).map_err(|e| self.db_error(e))?;
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
            vector.clear();
            vector.extend(vector_from_bytes(main));
            signature.clear();
            signature.extend(second.into_iter().flat_map(vector_from_bytes));
            let signature = (!signature.is_empty()).then_some(signature.as_slice());
            visit(id, &language, &path, &vector, signature);
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
                "SELECT c.id, c.language, c.path, -bm25(chunks_fts, {NAMES_WEIGHT}, 1.0) AS score
                     FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid
                     WHERE chunks_fts MATCH ?1 ORDER BY score DESC LIMIT ?2"
            ))
            .map_err(|e| self.db_error(e))?;
        statement
            .query_map(params![expression, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db_error(e))
    }

    /// Chunks by row id, in the order asked.
    pub fn chunks_by_id(&self, ids: &[i64]) -> Result<Vec<ChunkRecord>> {
        let mut statement = self
            .conn
            .prepare_cached(&format!("{CHUNK_COLUMNS} WHERE id = ?1"))
            .map_err(|e| self.db_error(e))?;
        ids.iter()
            .map(|id| {
                statement
                    .query_row([id], read_chunk)
                    .map_err(|e| db_error(&self.dir, e))
            })
            .collect()
    }

    /// Every chunk in file order, for checks and exports.
    pub fn all_chunks(&self) -> Result<Vec<ChunkRecord>> {
        let mut statement = self
            .conn
            .prepare(&format!("{CHUNK_COLUMNS} ORDER BY file, seq"))
            .map_err(|e| self.db_error(e))?;
        statement
            .query_map([], read_chunk)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db_error(e))
    }

    /// The stored vector of a chunk.
    pub fn vector_of(&self, embed_hash: &str) -> Result<Option<Vec<f32>>> {
        self.conn
            .query_row(
                "SELECT vector FROM vectors WHERE embed_hash = ?1",
                [embed_hash],
                |r| Ok(vector_from_bytes(r.get_ref(0)?.as_blob()?).collect()),
            )
            .optional()
            .map_err(|e| self.db_error(e))
    }
}

const CHUNK_COLUMNS: &str = "SELECT chunk_id, uid, file, path, seq, source, language, symbol, kind, parent,
    start_line, end_line, start_byte, end_byte, content_hash, text, embed_hash, metadata, signature_hash
    FROM chunks";

fn read_chunk(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkRecord> {
    let metadata: Option<String> = r.get(17)?;
    let chunk_id: String = r.get(0)?;
    Ok(ChunkRecord {
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
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        signature_hash: r.get(18)?,
    })
}

fn db_error(dir: &Path, source: rusqlite::Error) -> IndexError {
    IndexError::Database {
        path: dir.join(DATABASE_FILE),
        source,
    }
}

/// Vectors are stored as little-endian float32 BLOBs.
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
    tx.execute(
        "INSERT INTO chunks(chunk_id, uid, file, path, seq, source, language, symbol, kind, parent,
             start_line, end_line, start_byte, end_byte, content_hash, text, embed_hash, metadata,
             signature_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
             ?19)",
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
        ],
    )?;
    let id = tx.last_insert_rowid();
    let names = format!(
        "{} {} {}",
        chunk.path,
        chunk.symbol.as_deref().unwrap_or(""),
        chunk.parent.as_deref().unwrap_or(""),
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
