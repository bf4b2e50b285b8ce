//! Writes: every change is one transaction, and bumps the generation the vector files follow.

use super::read::{chunk_checksum, fingerprint_of};
use super::records::{Batch, ChunkRecord, FileRecord, StoredVector};
use super::schema::{CHUNK_INDEXES, DROP_CHUNK_INDEXES};
use super::{db_error, Store, GENERATION};
use crate::error::{IndexError, Result};
use crate::keywords;
use crate::vectors::FreshFiles;
use rusqlite::params;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

impl Store {
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
        let dimension = self.settings()?.map(|settings| settings.dimension);
        let tx = self.conn.transaction().map_err(|e| db_error(&dir, e))?;
        let mut sink = BatchSink {
            tx: &tx,
            dir: &dir,
            replaced: HashSet::new(),
            deferred: false,
            dimension,
            vector_files: None,
        };
        fill(&mut sink)?;
        let vector_files = sink.vector_files.take();
        if sink.deferred {
            tx.execute_batch(CHUNK_INDEXES)
                .map_err(|e| db_error(&dir, e))?;
        }
        let started = std::time::Instant::now();
        // The load's vector files are flushed and their IVF built while the transaction
        // commits: the one waits on the disk, the other on the processor.
        let (committed, prepared) = std::thread::scope(|scope| {
            let preparing = vector_files.map(|files| scope.spawn(|| files.prepare()));
            let committed = bump_generation(&tx)
                .and_then(|()| tx.commit())
                .map_err(|e| db_error(&dir, e));
            let prepared = preparing.map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (committed, prepared)
        });
        committed?;
        if let Some(prepared) = prepared {
            // The load is committed whatever becomes of its files: the next sync writes them
            // from the database.
            match prepared.and_then(|files| {
                let (store, generation) = self.vector_generation()?;
                files.publish(&store, generation)
            }) {
                Ok(rows) => tracing::info!(
                    "committed, with {rows} rows of vector files, in {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
                Err(error) => tracing::warn!("the load's vector files were not finished: {error}"),
            }
        }
        Ok(())
    }

    /// Loads an index that has no chunks yet: [`Store::commit_batches`] with the sink's
    /// indexes deferred ([`BatchSink::defer_indexes`]). The transaction goes through a rollback
    /// journal rather than the WAL when no other connection has the database open: in WAL
    /// mode a load larger than the page cache is written twice, to the WAL and then into the
    /// database, and until the WAL is checkpointed the index takes 1.6 times its size on disk
    /// (7.9 GB for the 4.9 GB index of a million chunks). Loading an empty index, the journal
    /// holds next to nothing. A reader that opens the index during the load may be told it is
    /// busy until the load commits; the WAL comes back once it has.
    pub fn bulk_load(&mut self, fill: impl FnOnce(&mut BatchSink<'_>) -> Result<()>) -> Result<()> {
        let empty = !holds_chunks(&self.conn).map_err(|e| self.db_error(e))?;
        let mut journal = empty && self.journal_mode("DELETE") == Some("delete".into());
        // With a rollback journal, NORMAL risks a damaged database on power loss (with the
        // WAL, only the last commits): FULL costs a few syncs per load. Without it, the load
        // goes through the WAL after all.
        if journal
            && self
                .conn
                .execute_batch("PRAGMA synchronous = FULL")
                .is_err()
        {
            journal = self.journal_mode("WAL") != Some("wal".into());
        }
        let loaded = self.commit_batches(|sink| {
            sink.defer_indexes()?;
            fill(sink)
        });
        if journal
            && (self.journal_mode("WAL") != Some("wal".into())
                || self
                    .conn
                    .execute_batch("PRAGMA synchronous = NORMAL")
                    .is_err())
        {
            // The next writer to open the index sets WAL again.
            tracing::warn!(
                "{}: the index stays in rollback-journal mode until it is next opened for \
                 writing (another connection holds it)",
                self.dir.display()
            );
        }
        loaded
    }

    /// Sets the journal mode and returns the one in force (SQLite keeps the old one, or fails
    /// with `SQLITE_BUSY`, when another connection holds the database).
    fn journal_mode(&self, mode: &str) -> Option<String> {
        self.conn
            .query_row(&format!("PRAGMA journal_mode = {mode}"), [], |row| {
                row.get::<_, String>(0)
            })
            .ok()
            .map(|mode| mode.to_ascii_lowercase())
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
}

/// Whether the index holds any chunk.
fn holds_chunks(conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM chunks LIMIT 1")?.exists([])
}

/// Vectors are stored as little-endian float32 BLOBs.
/// Where [`Store::commit_batches`] applies batches, inside its transaction.
pub struct BatchSink<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    dir: &'a Path,
    /// Files whose old chunks this transaction has already deleted: their later chunks add to
    /// the new ones.
    replaced: HashSet<String>,
    /// Whether [`BatchSink::defer_indexes`] dropped the chunks' secondary indexes, to be built
    /// again before the transaction commits.
    deferred: bool,
    /// The index's vector width, once it has settings.
    dimension: Option<usize>,
    /// In a bulk load, the vector files written as its chunks go in; dropped (to be written
    /// from the database by the next sync) if a chunk's vector is not in its own batch.
    vector_files: Option<FreshFiles>,
}

impl BatchSink<'_> {
    /// For a bulk load (an import): when the index has no chunks yet, drops the chunks'
    /// secondary indexes until the end of the transaction, which builds each in one sorted
    /// pass. Inserting a million chunks into them one at a time touched their pages at random,
    /// and once they outgrew the page cache, each insert read pages back from the WAL.
    /// Nothing of this is visible outside the transaction. To be called before any batch.
    ///
    /// The load also writes the index's vector files anew as it goes, from its batches, and
    /// makes them current once it commits.
    pub fn defer_indexes(&mut self) -> Result<()> {
        let error = |e| db_error(self.dir, e);
        let empty = !holds_chunks(self.tx).map_err(error)?;
        if empty && self.replaced.is_empty() {
            self.tx.execute_batch(DROP_CHUNK_INDEXES).map_err(error)?;
            self.deferred = true;
            self.vector_files = match self.dimension.map(|d| FreshFiles::create(self.dir, d)) {
                Some(Ok(files)) => Some(files),
                Some(Err(error)) => {
                    tracing::warn!("vector files not written during the load: {error}");
                    None
                }
                None => None,
            };
        }
        Ok(())
    }

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
                .prepare_cached(
                    "INSERT OR IGNORE INTO vectors(embed_hash, vector, checksum) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut insert| insert.execute(params![hash, bytes, crc32fast::hash(&bytes)]))
                .map_err(error)?;
        }
        let vectors: HashMap<&str, &[f32]> = match self.vector_files {
            Some(_) => batch
                .vectors
                .iter()
                .map(|(hash, vector)| (hash.as_str(), vector.as_slice()))
                .collect(),
            None => HashMap::new(),
        };
        for (file, chunks) in &batch.files {
            // A deferred load began with no chunks: whatever a file has is this load's own.
            if self.replaced.insert(file.path.clone()) && !self.deferred {
                delete_file_chunks(self.tx, &file.path).map_err(error)?;
            }
            for chunk in chunks {
                let row = insert_chunk(self.tx, chunk).map_err(|e| match e {
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
                if self.vector_files.is_some() {
                    self.add_to_vector_files(row, chunk, &vectors);
                }
            }
            upsert_file(self.tx, file).map_err(error)?;
        }
        for file in &batch.touched {
            upsert_file(self.tx, file).map_err(error)?;
        }
        Ok(())
    }

    /// Writes the rows of the chunk stored as `row` to the load's vector files, as a sync
    /// would read them back: its vector, and its signature's when the signature has one.
    fn add_to_vector_files(
        &mut self,
        row: i64,
        chunk: &ChunkRecord,
        vectors: &HashMap<&str, &[f32]>,
    ) {
        let signature = chunk.signature_hash.as_deref();
        let signature_vector = match signature {
            None => Some(None),
            Some(hash) => vectors.get(hash).map(|vector| Some(*vector)),
        };
        let (Some(vector), Some(signature_vector)) =
            (vectors.get(chunk.embed_hash.as_str()), signature_vector)
        else {
            // A vector from an earlier batch: only the database has it.
            tracing::debug!(
                "vector files left to the next sync: {} has no vector in its batch",
                chunk.chunk_id
            );
            self.vector_files = None;
            return;
        };
        let fingerprint = fingerprint_of([
            Some(&chunk.embed_hash),
            signature,
            Some(&chunk.language),
            Some(&chunk.path),
        ]);
        let stored = StoredVector {
            row,
            uid: chunk.uid,
            language: &chunk.language,
            path: &chunk.path,
            vector,
            signature: signature_vector,
            fingerprint,
        };
        if let Some(Err(error)) = self.vector_files.as_mut().map(|files| files.push(&stored)) {
            tracing::warn!("vector files not written during the load: {error}");
            self.vector_files = None;
        }
    }
}

pub(super) fn bump_generation(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [GENERATION],
    )
    .map(|_| ())
}

pub(super) fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn delete_file_chunks(
    tx: &rusqlite::Transaction<'_>,
    file: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE file = ?1)",
    )?
    .execute([file])?;
    tx.prepare_cached("DELETE FROM chunks WHERE file = ?1")?
        .execute([file])?;
    Ok(())
}

/// Inserts the chunk; returns its row id.
pub(super) fn insert_chunk(
    tx: &rusqlite::Transaction<'_>,
    chunk: &ChunkRecord,
) -> rusqlite::Result<i64> {
    let metadata = chunk.metadata.as_ref().map(|m| m.to_string());
    let checksum = chunk_checksum(chunk, metadata.as_deref());
    tx.prepare_cached(
        "INSERT INTO chunks(chunk_id, uid, file, path, seq, source, language, symbol, kind, parent,
             start_line, end_line, start_byte, end_byte, content_hash, text, embed_hash, metadata,
             signature_hash, checksum)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
             ?19, ?20)",
    )?
    .execute(params![
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
    ])?;
    let id = tx.last_insert_rowid();
    let names = keywords::names(
        &chunk.path,
        chunk.symbol.as_deref(),
        chunk.parent.as_deref(),
    );
    tx.prepare_cached("INSERT INTO chunks_fts(rowid, names, body) VALUES (?1, ?2, ?3)")?
        .execute(params![
            id,
            keywords::terms(&names),
            keywords::terms(&chunk.text)
        ])?;
    Ok(id)
}

pub(super) fn upsert_file(
    tx: &rusqlite::Transaction<'_>,
    file: &FileRecord,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO files(path, size, mtime_ns, content_hash) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
             content_hash = excluded.content_hash",
    )?
    .execute(params![
        file.path,
        file.size as i64,
        file.mtime_ns,
        file.content_hash
    ])?;
    Ok(())
}
