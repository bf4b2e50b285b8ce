//! The database's tables and their versions. Each change to them is a migration that brings a
//! database from one `schema_version` to the next; a writer applies those a database lacks when
//! it opens it, each in one transaction with the version it reaches.

use super::read::{read_chunk, CHUNK_COLUMNS, CHUNK_ROW_ID};
use super::{Store, STORE_ID};
use crate::error::{IndexError, Result};
use crate::keywords;
use rusqlite::params;

/// The version of the tables this build creates and reads.
pub(super) const SCHEMA_VERSION: u32 = 5;
/// The oldest version [`MIGRATIONS`] lead on from.
const FIRST_MIGRATED: u32 = 2;

/// One change to the tables: `apply` brings a database at version `to - 1` to `to`, inside
/// the transaction that records `to`. Version 2 databases may already have a later column (they
/// were added before versions counted them), so each migration changes only what is missing.
struct Migration {
    to: u32,
    apply: fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
}

const MIGRATIONS: &[Migration] = &[
    // Signature vectors: chunks made before them get signatures when next re-chunked, and
    // search does without until then.
    Migration {
        to: 3,
        apply: |tx| add_column(tx, "chunks", "signature_hash", "TEXT"),
    },
    // Checksums, computed from what the database holds now.
    Migration {
        to: 4,
        apply: add_checksums,
    },
    // The query adapter fitted on the repository's doc comments ([`crate::adapter`]); a reader
    // of an older index finds no table and searches without one.
    Migration {
        to: 5,
        apply: |tx| tx.execute_batch(ADAPTERS_TABLE),
    },
];

/// The chunks table's secondary indexes: a bulk load into an empty index drops them and builds
/// them once at its end ([`super::BatchSink::defer_indexes`]).
pub(super) const CHUNK_INDEXES: &str = "CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks(file);
     CREATE INDEX IF NOT EXISTS chunks_by_embed_hash ON chunks(embed_hash);";
pub(super) const DROP_CHUNK_INDEXES: &str =
    "DROP INDEX IF EXISTS chunks_by_file; DROP INDEX IF EXISTS chunks_by_embed_hash;";

pub(super) const ADAPTERS_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS adapters (name TEXT PRIMARY KEY, value BLOB NOT NULL);";

/// The columns a reader needs that versions before [`SCHEMA_VERSION`] may lack.
const MIGRATED_COLUMNS: &[(&str, &str)] = &[
    ("chunks", "signature_hash"),
    ("chunks", "checksum"),
    ("vectors", "checksum"),
];

impl Store {
    /// Creates the tables of a new database, or brings an older one to [`SCHEMA_VERSION`].
    pub(super) fn init(&self) -> Result<()> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| self.db_error(e))?;
        self.conn
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(|e| self.db_error(e))?;
        if self.is_writer() {
            // A run's transaction dirties more pages than SQLite's default 2 MB cache holds,
            // and each one it spills to the WAL it reads back to change again: at 100k chunks,
            // a fifth of `quiver import`'s time.
            self.conn
                .execute_batch("PRAGMA cache_size = -262144;")
                .map_err(|e| self.db_error(e))?;
        }
        match self.schema_version()? {
            None => self.create_tables()?,
            Some(version) => self.migrate(version)?,
        }
        if self.meta(STORE_ID)?.is_none() {
            self.set_meta(STORE_ID, &new_store_id())?;
        }
        Ok(())
    }

    /// Creates what is missing of the tables. A database whose creation was cut short before
    /// it recorded a version may hold some of them, in an older shape: the migrations, which
    /// change only what is missing, bring those up to date in the same transaction.
    fn create_tables(&self) -> Result<()> {
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
                     signature_hash TEXT,
                     checksum INTEGER
                 );
                 {}
                 CREATE TABLE IF NOT EXISTS vectors (
                     embed_hash TEXT PRIMARY KEY,
                     vector BLOB NOT NULL,
                     checksum INTEGER
                 );
                 CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(names, body, tokenize = \"{}\");",
                CHUNK_INDEXES,
                keywords::TOKENIZER
            ))?;
            for migration in MIGRATIONS {
                (migration.apply)(&tx)?;
            }
            put_meta(&tx, SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_string())?;
            tx.commit()
        };
        run().map_err(|e| self.db_error(e))
    }

    /// Applies the migrations a database at `version` lacks, each in its own transaction.
    fn migrate(&self, version: u32) -> Result<()> {
        self.check_version(version)?;
        for migration in MIGRATIONS.iter().filter(|m| m.to > version) {
            let run = || -> rusqlite::Result<()> {
                let tx = self.conn.unchecked_transaction()?;
                (migration.apply)(&tx)?;
                put_meta(&tx, SCHEMA_VERSION_KEY, &migration.to.to_string())?;
                tx.commit()
            };
            run().map_err(|e| self.db_error(e))?;
            tracing::info!(
                "{}: index format {} -> {}",
                self.dir.display(),
                migration.to - 1,
                migration.to
            );
        }
        Ok(())
    }

    /// Whether the database has the table `name`.
    pub(super) fn has_table(&self, name: &str) -> Result<bool> {
        self.conn
            .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
            .and_then(|mut statement| statement.exists([name]))
            .map_err(|e| self.db_error(e))
    }

    /// The database's `schema_version`; `None` for a database with no tables yet.
    fn schema_version(&self) -> Result<Option<u32>> {
        if !self.has_table("meta")? {
            return Ok(None);
        }
        let Some(text) = self.meta(SCHEMA_VERSION_KEY)? else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|_| IndexError::OldSchema {
            path: self.dir.clone(),
            found: text,
            expected: SCHEMA_VERSION,
        })
    }

    /// Refuses versions no migration leads on from, and versions a later build wrote.
    fn check_version(&self, version: u32) -> Result<()> {
        if version > SCHEMA_VERSION {
            return Err(IndexError::NewerSchema {
                path: self.dir.clone(),
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        if version < FIRST_MIGRATED {
            return Err(IndexError::OldSchema {
                path: self.dir.clone(),
                found: version.to_string(),
                expected: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// A reader's check that it can read this index as it is: an older version whose tables
    /// already have every column a reader needs is read without a write.
    pub(super) fn check_schema(&self) -> Result<()> {
        let version = self
            .schema_version()?
            .ok_or_else(|| IndexError::NoIndex(self.dir.clone()))?;
        self.check_version(version)?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        for &(table, column) in MIGRATED_COLUMNS {
            if !has_column(&self.conn, table, column).map_err(|e| self.db_error(e))? {
                return Err(IndexError::NeedsUpgrade {
                    path: self.dir.clone(),
                });
            }
        }
        Ok(())
    }
}

const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Sets a `meta` key: the one statement every write of the index's settings and counters uses.
pub(super) fn put_meta(
    conn: &rusqlite::Connection,
    key: &str,
    value: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )
    .map(|_| ())
}

fn has_column(conn: &rusqlite::Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")
        .and_then(|mut statement| statement.exists([table, column]))
}

/// Adds a column unless the table has it.
fn add_column(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    column: &str,
    kind: &str,
) -> rusqlite::Result<()> {
    if !has_column(tx, table, column)? {
        tx.execute(
            &format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"),
            [],
        )?;
    }
    Ok(())
}

/// Checksums of every chunk and vector that has none, computed from what they hold now.
fn add_checksums(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    add_column(tx, "chunks", "checksum", "INTEGER")?;
    add_column(tx, "vectors", "checksum", "INTEGER")?;
    let mut read = tx.prepare(&format!("{CHUNK_COLUMNS} WHERE checksum IS NULL"))?;
    let mut write = tx.prepare("UPDATE chunks SET checksum = ?1 WHERE id = ?2")?;
    let rows: Vec<(i64, u32)> = read
        .query_map([], |r| Ok((r.get(CHUNK_ROW_ID)?, read_chunk(r)?.computed)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, checksum) in rows {
        write.execute(params![checksum, id])?;
    }
    let mut read = tx.prepare("SELECT embed_hash, vector FROM vectors WHERE checksum IS NULL")?;
    let mut write = tx.prepare("UPDATE vectors SET checksum = ?1 WHERE embed_hash = ?2")?;
    let rows: Vec<(String, u32)> = read
        .query_map([], |r| {
            Ok((r.get(0)?, crc32fast::hash(r.get_ref(1)?.as_blob()?)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (hash, checksum) in rows {
        write.execute(params![checksum, hash])?;
    }
    Ok(())
}

/// An id no other database will have: a rebuilt database restarts its generation count, and
/// vector files written from the one before must not look current for it.
pub(super) fn new_store_id() -> String {
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
