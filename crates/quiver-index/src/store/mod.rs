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
//!
//! One file per job: `schema` (the tables and their versioned migrations), `settings` (what
//! the vectors were made with, typed), `records` (what is stored and handed out), `write`
//! (transactions), `read` (checked reads), `keyword` (the FTS5 side) and `verify` (checking
//! and repairing).

use crate::error::{IndexError, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub const DATABASE_FILE: &str = "index.sqlite";
/// Locked by the one process writing the index; holds its pid.
pub const LOCK_FILE: &str = "index.lock";
/// Meta keys of [`Store::vector_generation`]: a random id given to each new database, and a
/// counter every transaction that changes chunks or vectors increments.
const STORE_ID: &str = "store_id";
const GENERATION: &str = "generation";

mod adapter;
mod keyword;
mod read;
mod records;
mod schema;
mod settings;
mod verify;
mod write;

pub use records::{Batch, ChunkRecord, FileRecord, IndexStats, IndexStatus, StoredVector};
pub use settings::IndexSettings;
pub use verify::{Repair, Verification};
pub use write::BatchSink;

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

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.db_error(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        schema::put_meta(&self.conn, key, value).map_err(|e| self.db_error(e))
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

/// A new index in `dir` open for writing, with the settings of a test model of `dimension`.
#[cfg(test)]
pub(crate) fn test_writer(dir: &Path, dimension: usize) -> Store {
    let mut store = Store::open_writer(dir).unwrap();
    let settings = IndexSettings {
        model: "test".into(),
        dimension,
        normalize: true,
        document_prompt: None,
        query_prompt: None,
        quantization: Default::default(),
        keyword_weight: crate::DEFAULT_KEYWORD_WEIGHT,
    };
    store.adopt_settings(&settings, false).unwrap();
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("quiver-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_keyword_weight_is_the_recorded_one_else_the_models() {
        let dir = scratch("keyword-weight");
        let store = test_writer(&dir, 4);
        assert_eq!(store.settings().unwrap().unwrap().keyword_weight, 0.75);
        // An index from before the weight was recorded searches with its model's.
        store
            .conn
            .execute("DELETE FROM meta WHERE key = 'keyword_weight'", [])
            .unwrap();
        store
            .set_meta("model", "google/embeddinggemma-300m")
            .unwrap();
        assert_eq!(store.settings().unwrap().unwrap().keyword_weight, 0.25);
        store.set_meta("keyword_weight", "-0.5").unwrap();
        let error = store.settings().unwrap_err();
        assert!(error.to_string().contains("keyword_weight"), "{error}");
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

    /// Rewinds an index to what version 2 wrote before signature vectors and checksums.
    fn rewind_to_version_2(dir: &Path) {
        let raw = Connection::open(dir.join(DATABASE_FILE)).unwrap();
        raw.execute_batch(
            "ALTER TABLE chunks DROP COLUMN checksum; ALTER TABLE vectors DROP COLUMN checksum;
             ALTER TABLE chunks DROP COLUMN signature_hash; DROP TABLE adapters;
             UPDATE meta SET value = '2' WHERE key = 'schema_version';",
        )
        .unwrap();
    }

    fn schema_version(dir: &Path) -> String {
        Connection::open(dir.join(DATABASE_FILE))
            .unwrap()
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn the_query_adapter_is_stored_replaced_and_removed() {
        use crate::adapter::{FitOptions, QueryAdapter, MIN_PAIRS};
        let dir = scratch("adapter");
        let store = Store::open_writer(&dir).unwrap();
        assert_eq!(store.query_adapter().unwrap(), None);
        let d = 4;
        let queries: Vec<f32> = (0..MIN_PAIRS * d).map(|i| ((i * 7) % 5) as f32).collect();
        let targets: Vec<f32> = (0..MIN_PAIRS * d).map(|i| ((i * 3) % 7) as f32).collect();
        let options = FitOptions {
            epochs: 1,
            ..FitOptions::default()
        };
        let adapter = QueryAdapter::fit(&queries, &targets, d, &options).unwrap();
        store.set_query_adapter(Some(&adapter)).unwrap();
        store.set_query_adapter(Some(&adapter)).unwrap();
        assert_eq!(
            Store::open(&dir).unwrap().query_adapter().unwrap(),
            Some(adapter)
        );
        store.set_query_adapter(None).unwrap();
        assert_eq!(store.query_adapter().unwrap(), None);
        // An index from before the table: no adapter, and no error.
        Connection::open(dir.join(DATABASE_FILE))
            .unwrap()
            .execute_batch("DROP TABLE adapters")
            .unwrap();
        assert_eq!(Store::open(&dir).unwrap().query_adapter().unwrap(), None);
    }

    #[test]
    fn an_index_of_an_older_version_is_migrated_when_opened() {
        let dir = scratch("upgrade");
        let mut store = Store::open_writer(&dir).unwrap();
        one_file(&mut store);
        drop(store);
        rewind_to_version_2(&dir);
        let reader = Store::open(&dir).unwrap();
        assert_eq!(schema_version(&dir), schema::SCHEMA_VERSION.to_string());
        let report = reader.verify().unwrap();
        assert!(report.is_sound(), "{report:?}");
        assert_eq!((report.chunks, report.vectors), (1, 1));
        assert_eq!(reader.all_chunks().unwrap()[0].text, "def f(): pass");
        drop(reader);
        // Migrated once: a second writer finds nothing to do and the data as it was.
        let writer = Store::open_writer(&dir).unwrap();
        assert_eq!(writer.all_chunks().unwrap().len(), 1);
    }

    #[test]
    fn versions_no_migration_reaches_are_refused_by_name() {
        let dir = scratch("versions");
        let mut store = Store::open_writer(&dir).unwrap();
        one_file(&mut store);
        drop(store);
        let set_version = |version: &str| {
            Connection::open(dir.join(DATABASE_FILE))
                .unwrap()
                .execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                    [version],
                )
                .unwrap();
        };
        set_version("99");
        for error in [
            Store::open(&dir).err().expect("refused"),
            Store::open_writer(&dir).err().expect("refused"),
        ] {
            assert!(
                matches!(
                    error,
                    IndexError::NewerSchema {
                        found: 99,
                        expected: schema::SCHEMA_VERSION,
                        ..
                    }
                ),
                "{error:?}"
            );
            assert!(
                error.to_string().contains("newer than this quiver"),
                "{error}"
            );
        }
        set_version("1");
        let error = Store::open_writer(&dir).err().expect("refused");
        assert!(
            matches!(&error, IndexError::OldSchema { found, .. } if found == "1"),
            "{error:?}"
        );
        assert!(error.to_string().contains("has format 1"), "{error}");
        // Nothing was changed by the refusals.
        assert_eq!(schema_version(&dir), "1");
    }

    fn index_names(dir: &Path) -> Vec<String> {
        let raw = Connection::open(dir.join(DATABASE_FILE)).unwrap();
        let mut statement = raw
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'chunks_by_%' ORDER BY name")
            .unwrap();
        let names = statement.query_map([], |r| r.get(0)).unwrap();
        names.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn a_bulk_load_builds_its_deferred_indexes_by_commit_and_only_into_an_empty_index() {
        let dir = scratch("deferred");
        let mut store = Store::open_writer(&dir).unwrap();
        let expected = vec!["chunks_by_embed_hash".to_string(), "chunks_by_file".into()];
        let file = file_record();
        let two = |first: &str| Batch {
            files: vec![(
                file.clone(),
                vec![chunk(first, "def f(): pass"), chunk("c:1", "def g(): pass")],
            )],
            touched: vec![],
            vectors: vec![
                (format!("e-{first}"), vec![0.6, 0.8]),
                ("e-c:1".into(), vec![0.8, 0.6]),
            ],
        };
        // A failed load leaves the indexes as they were.
        let failed = store.commit_batches(|sink| {
            sink.defer_indexes()?;
            sink.apply(&two("c:0"))?;
            Err(IndexError::NotWriter)
        });
        assert!(failed.is_err());
        assert_eq!(index_names(&dir), expected);
        store
            .commit_batches(|sink| {
                sink.defer_indexes()?;
                sink.apply(&two("c:0"))
            })
            .unwrap();
        assert_eq!(index_names(&dir), expected);
        assert_eq!(store.chunks_of_file("a.py").unwrap().len(), 2);
        // Into an index with chunks, nothing is deferred: a file's chunks are replaced.
        store
            .commit_batches(|sink| {
                sink.defer_indexes()?;
                sink.apply(&two("c:2"))
            })
            .unwrap();
        let ids: Vec<String> = store
            .chunks_of_file("a.py")
            .unwrap()
            .into_iter()
            .map(|c| c.chunk_id)
            .collect();
        assert_eq!(ids, ["c:2", "c:1"]);
        assert_eq!(index_names(&dir), expected);
    }

    #[test]
    fn a_bulk_load_into_an_empty_index_bypasses_the_wal_and_restores_it() {
        let journal_mode = |dir: &Path| -> String {
            Connection::open(dir.join(DATABASE_FILE))
                .unwrap()
                .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                .unwrap()
        };
        let wal = |dir: &Path| dir.join(format!("{DATABASE_FILE}-wal")).exists();
        let rollback_journal = |dir: &Path| dir.join(format!("{DATABASE_FILE}-journal")).exists();
        let batch = |id: &str| Batch {
            files: vec![(file_record(), vec![chunk(id, "def f(): pass")])],
            touched: vec![],
            vectors: vec![(format!("e-{id}"), vec![0.6, 0.8])],
        };
        let dir = scratch("bulk-journal");
        let mut store = Store::open_writer(&dir).unwrap();
        // A failed load leaves the index empty, in WAL mode.
        let failed = store.bulk_load(|sink| {
            sink.apply(&batch("c:0"))?;
            assert!(rollback_journal(&dir) && !wal(&dir));
            Err(IndexError::NotWriter)
        });
        assert!(failed.is_err());
        assert_eq!(store.stats().unwrap().chunks, 0);
        assert_eq!(journal_mode(&dir), "wal");
        store
            .bulk_load(|sink| {
                sink.apply(&batch("c:0"))?;
                assert!(rollback_journal(&dir) && !wal(&dir));
                Ok(())
            })
            .unwrap();
        assert_eq!(journal_mode(&dir), "wal");
        assert_eq!(Store::open(&dir).unwrap().stats().unwrap().chunks, 1);

        // Into an index with chunks, or while a reader holds the database, the load goes
        // through the WAL as any transaction does.
        store
            .bulk_load(|sink| {
                assert!(wal(&dir) && !rollback_journal(&dir));
                sink.apply(&batch("c:1"))
            })
            .unwrap();
        let dir = scratch("bulk-journal-reader");
        let mut store = Store::open_writer(&dir).unwrap();
        let reader = Store::open(&dir).unwrap();
        assert_eq!(reader.stats().unwrap().chunks, 0);
        store
            .bulk_load(|sink| {
                assert!(wal(&dir) && !rollback_journal(&dir));
                sink.apply(&batch("c:0"))
            })
            .unwrap();
        assert_eq!(reader.stats().unwrap().chunks, 1);
        assert_eq!(journal_mode(&dir), "wal");
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
