//! Reads: chunks, vectors and counts, each row checked against its checksum as it is read.

use super::records::{ChunkRecord, FileRecord, IndexStats, StoredVector};
use super::{db_error, Store, DATABASE_FILE};
use crate::error::{IndexError, Result};
use rusqlite::{params, OptionalExtension};
use std::collections::{HashMap, HashSet};

impl Store {
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

    /// How many chunks the index holds.
    pub fn chunk_count(&self) -> Result<usize> {
        self.conn
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
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
            chunks: self.chunk_count()?,
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
            .prepare(&format!(
                "SELECT c.id, {FINGERPRINT_COLUMNS}
                 FROM chunks c
                 JOIN vectors v ON v.embed_hash = c.embed_hash
                 LEFT JOIN vectors s ON s.embed_hash = c.signature_hash"
            ))
            .map_err(|e| self.db_error(e))?;
        let mut rows = statement.query([]).map_err(|e| self.db_error(e))?;
        let error = |e| db_error(&self.dir, e);
        while let Some(row) = rows.next().map_err(error)? {
            visit(
                row.get(0).map_err(error)?,
                fingerprint(row, 1).map_err(error)?,
            );
        }
        Ok(())
    }

    pub(super) fn vectors_where(
        &self,
        clause: &str,
        params: impl rusqlite::Params,
        mut visit: impl FnMut(StoredVector<'_>),
    ) -> Result<()> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT c.id, c.language, c.path, v.vector, s.vector, v.checksum, s.checksum, c.uid,
                     {FINGERPRINT_COLUMNS}
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
            let fingerprint = fingerprint(row, 8).map_err(error)?;
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
                fingerprint,
            });
        }
        Ok(())
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

    pub(super) fn chunks_where(
        &self,
        column: &str,
        ids: &[i64],
    ) -> Result<Vec<Option<ChunkRecord>>> {
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

    pub(super) fn chunks_matching(
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

    pub(super) fn checked(&self, stored: StoredChunk) -> Result<ChunkRecord> {
        if stored.intact() {
            Ok(stored.chunk)
        } else {
            Err(self.damaged(format!(
                "chunk {} fails its checksum",
                stored.chunk.chunk_id
            )))
        }
    }

    pub(super) fn damaged(&self, what: String) -> IndexError {
        IndexError::Damaged {
            path: self.dir.join(DATABASE_FILE),
            what,
        }
    }

    /// A chunk by its id if it can still be read, for messages about its row.
    pub(super) fn chunk_name(&self, id: i64) -> String {
        self.conn
            .query_row("SELECT chunk_id FROM chunks WHERE id = ?1", [id], |r| {
                r.get::<_, String>(0)
            })
            .map(|chunk_id| format!("chunk {chunk_id}"))
            .unwrap_or_else(|_| format!("chunk row {id}"))
    }
}

/// Whether `bytes` still hash to the checksum stored beside them.
pub(super) fn intact(bytes: &[u8], checksum: Option<i64>) -> bool {
    checksum.is_none_or(|stored| stored as u32 == crc32fast::hash(bytes))
}

pub(super) const CHUNK_COLUMNS: &str = "SELECT chunk_id, uid, file, path, seq, source, language, symbol, kind, parent,
    start_line, end_line, start_byte, end_byte, content_hash, text, embed_hash, metadata, signature_hash,
    checksum, id
    FROM chunks";
pub(super) const CHUNK_ROW_ID: usize = 20;

/// A chunk row as read, with its checksum as stored and as computed from what was read.
pub(super) struct StoredChunk {
    pub(super) chunk: ChunkRecord,
    pub(super) stored: Option<u32>,
    pub(super) computed: u32,
}

impl StoredChunk {
    pub(super) fn intact(&self) -> bool {
        self.stored.is_none_or(|stored| stored == self.computed)
    }
}

pub(super) fn read_chunk(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredChunk> {
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
pub(super) fn chunk_checksum(chunk: &ChunkRecord, metadata: Option<&str>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    pub(super) fn optional(text: &Option<String>) -> Option<&[u8]> {
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

/// What a chunk's fingerprint covers: its vectors, language and path. The fingerprint changes
/// whenever what the vector files hold for the chunk would, so they can be brought up to date
/// by difference.
const FINGERPRINT_COLUMNS: &str = "c.embed_hash, s.embed_hash, c.language, c.path";

/// The fingerprint of the [`FINGERPRINT_COLUMNS`] that start at column `first` of `row`.
fn fingerprint(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<u64> {
    let column = |i: usize| row.get_ref(first + i).and_then(|v| Ok(v.as_str_or_null()?));
    Ok(fingerprint_of([
        column(0)?,
        column(1)?,
        column(2)?,
        column(3)?,
    ]))
}

/// The fingerprint of a chunk's [`FINGERPRINT_COLUMNS`]: its text vector's hash, its
/// signature vector's (`None` without one), its language and its path.
pub(super) fn fingerprint_of(columns: [Option<&str>; 4]) -> u64 {
    let mut fingerprint = Fnv64::default();
    for column in columns {
        fingerprint.write(column);
    }
    fingerprint.0
}

/// FNV-1a over optional strings (a `None` and each end marked), for fingerprints that must
/// stay the same across builds, which `std`'s hashers do not promise.
#[derive(Clone, Copy)]
pub(super) struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub(super) fn write(&mut self, text: Option<&str>) {
        let bytes = text.map(str::as_bytes).unwrap_or(&[0xff]);
        for &byte in bytes.iter().chain(&[0]) {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub(super) fn vector_from_bytes(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
