//! The keyword side of the store: the FTS5 table's BM25 matches and the documents hybrid search
//! scores.

use super::Store;
use crate::error::Result;
use crate::keywords;
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;

/// The keyword side of an index, as [`Store::keyword_documents`] reads it.
#[derive(Debug, Clone, Default)]
pub struct KeywordDocuments {
    /// By [`ChunkRecord::uid`]; a chunk with no tokens has no entry.
    pub documents: HashMap<i64, keywords::KeywordDocument>,
    /// Tokens per chunk over the whole index: BM25's average document length.
    pub average_length: f64,
}

impl Store {
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

    /// Rows of the FTS5 table and the tokens they hold in all (both columns): BM25's
    /// document count and, divided, its average document length. Read from FTS5's own totals
    /// record, which every write keeps current, rather than counted.
    pub fn keyword_totals(&self) -> Result<(u64, u64)> {
        let record: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT block FROM chunks_fts_data WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.db_error(e))?;
        let Some(record) = record else {
            return Ok((0, 0));
        };
        // FTS5's "averages" record: varints of the row count, then each column's tokens.
        let mut at = 0;
        let mut next = || {
            let (value, used) = sqlite_varint(&record[at.min(record.len())..])?;
            at += used;
            Some(value)
        };
        let totals = next().and_then(|rows| Some((rows, next()? + next()?)));
        totals.ok_or_else(|| {
            self.db_error(rusqlite::Error::InvalidColumnType(
                0,
                "chunks_fts_data (the FTS5 totals record)".into(),
                rusqlite::types::Type::Blob,
            ))
        })
    }

    /// How many rows of the FTS5 table hold `token` (a stemmed token): BM25's document
    /// frequency, as `bm25()` counts it.
    pub fn keyword_rows(&self, token: &str) -> Result<u64> {
        let db = |e| self.db_error(e);
        self.conn
            .execute_batch(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_fts_rows
                     USING fts5vocab(main, chunks_fts, row);",
            )
            .map_err(db)?;
        let rows: Option<i64> = self
            .conn
            .prepare_cached("SELECT doc FROM temp.chunks_fts_rows WHERE term = ?1")
            .and_then(|mut s| s.query_row([token], |r| r.get(0)).optional())
            .map_err(db)?;
        Ok(rows.unwrap_or(0).max(0) as u64)
    }

    /// The FTS5 rows (names and body, as tokenised) of chunks, by row id; a missing one is
    /// left out.
    pub fn keyword_texts(&self, ids: &[i64]) -> Result<Vec<(i64, String, String)>> {
        let db = |e| self.db_error(e);
        let mut statement = self
            .conn
            .prepare_cached("SELECT names, body FROM chunks_fts WHERE rowid = ?1")
            .map_err(db)?;
        let mut texts = Vec::with_capacity(ids.len());
        for &id in ids {
            let row = statement
                .query_row([id], |r| Ok((id, r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            texts.extend(row);
        }
        Ok(texts)
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
        let rows = self.chunk_count()?;
        let tokens: usize = documents.values().map(|d| d.length).sum();
        Ok(KeywordDocuments {
            average_length: tokens as f64 / rows.max(1) as f64,
            documents,
        })
    }
}

/// SQLite's varint (big-endian groups of 7 bits, the ninth byte whole): the value and the
/// bytes it took, or `None` when `bytes` ends inside it.
fn sqlite_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Some(((value << 8) | u64::from(byte), 9));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::sqlite_varint;

    #[test]
    fn reads_sqlite_varints() {
        assert_eq!(sqlite_varint(&[0x05]), Some((5, 1)));
        assert_eq!(sqlite_varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(sqlite_varint(&[0xbd, 0x84, 0x40]), Some((1_000_000, 3)));
        assert_eq!(sqlite_varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(sqlite_varint(&[0x81]), None);
    }
}
