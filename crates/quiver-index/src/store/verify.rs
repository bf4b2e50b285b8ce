//! Checking every row against its checksum, and dropping what is damaged.

use super::read::{intact, read_chunk, CHUNK_COLUMNS};
use super::write::bump_generation;
use super::{db_error, lock_writer, Store, DATABASE_FILE};
use crate::error::{IndexError, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

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
pub(super) const MAX_REPORTED: usize = 20;

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

    pub(super) fn drop_damaged(self) -> Result<(Store, Repair)> {
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
    pub(super) fn start_anew(self) -> Result<(Store, Repair)> {
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
