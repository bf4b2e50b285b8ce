//! The keyword side of the store: the FTS5 table's BM25 matches, and what scoring outside
//! FTS5 reads of it (posting lists, row lengths, totals).

use super::Store;
use crate::error::Result;
use crate::keywords;
use rusqlite::{params, OptionalExtension};

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

    /// Tokens per chunk over the whole index: BM25's average document length, as FTS5's
    /// `bm25()` and the store exports' sparse vectors use it.
    pub fn keyword_average_length(&self) -> Result<f64> {
        let (rows, tokens) = self.keyword_totals()?;
        Ok(tokens as f64 / rows.max(1) as f64)
    }

    /// Rows of the FTS5 table and the tokens they hold in all (both columns): BM25's
    /// document count and, divided, its average document length. Read from FTS5's own totals
    /// record, which every write keeps current, rather than counted.
    pub(crate) fn keyword_totals(&self) -> Result<(u64, u64)> {
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
        totals.ok_or_else(|| self.bad_fts_record())
    }

    /// How many rows of the FTS5 table hold `token` (a stemmed token): BM25's document
    /// frequency, as `bm25()` counts it.
    pub(crate) fn keyword_rows(&self, token: &str) -> Result<u64> {
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

    /// Calls `each` with every occurrence of `token` (a stemmed token) in the FTS5 table, in
    /// row order: (row id, whether in the names column). FTS5's own posting list, read
    /// through `fts5vocab` without scoring anything.
    pub(crate) fn keyword_postings(
        &self,
        token: &str,
        mut each: impl FnMut(i64, bool),
    ) -> Result<()> {
        let db = |e| self.db_error(e);
        self.create_token_table()?;
        let mut statement = self
            .conn
            .prepare_cached("SELECT doc, col = 'names' FROM temp.chunks_fts_tokens WHERE term = ?1")
            .map_err(db)?;
        let mut rows = statement.query([token]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            each(row.get(0).map_err(db)?, row.get(1).map_err(db)?);
        }
        Ok(())
    }

    /// A row's length in tokens (both columns), as FTS5 keeps it for BM25; `None` for a row
    /// it does not hold.
    pub(crate) fn keyword_length(&self, id: i64) -> Result<Option<u64>> {
        let sizes: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT sz FROM chunks_fts_docsize WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| self.db_error(e))?;
        sizes.map(|sizes| self.row_length(&sizes)).transpose()
    }

    /// Calls `each` with every row's length in tokens (both columns), as
    /// [`Store::keyword_length`] gives one.
    pub(crate) fn keyword_lengths(&self, mut each: impl FnMut(i64, u64)) -> Result<()> {
        let db = |e| self.db_error(e);
        let mut statement = self
            .conn
            .prepare("SELECT id, sz FROM chunks_fts_docsize")
            .map_err(db)?;
        let mut rows = statement.query([]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let sizes = row
                .get_ref(1)
                .map_err(db)?
                .as_blob()
                .map_err(|e| db(e.into()))?;
            each(row.get(0).map_err(db)?, self.row_length(sizes)?);
        }
        Ok(())
    }

    /// The sum of a docsize record's varints, one per column.
    fn row_length(&self, sizes: &[u8]) -> Result<u64> {
        let (mut at, mut length) = (0, 0);
        while at < sizes.len() {
            let (size, used) = sqlite_varint(&sizes[at..]).ok_or_else(|| self.bad_fts_record())?;
            length += size;
            at += used;
        }
        Ok(length)
    }

    /// Language and path of chunks by row id, in the order asked; a missing one is left out.
    pub(crate) fn keyword_sources(&self, ids: &[i64]) -> Result<Vec<(i64, String, String)>> {
        let db = |e| self.db_error(e);
        let mut statement = self
            .conn
            .prepare_cached("SELECT language, path FROM chunks WHERE id = ?1")
            .map_err(db)?;
        let mut sources = Vec::with_capacity(ids.len());
        for &id in ids {
            let row = statement
                .query_row([id], |r| Ok((id, r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            sources.extend(row);
        }
        Ok(sources)
    }

    fn create_token_table(&self) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_fts_tokens
                     USING fts5vocab(main, chunks_fts, instance);",
            )
            .map_err(|e| self.db_error(e))
    }

    fn bad_fts_record(&self) -> crate::error::IndexError {
        self.db_error(rusqlite::Error::InvalidColumnType(
            0,
            "an FTS5 record of chunks_fts".into(),
            rusqlite::types::Type::Blob,
        ))
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
