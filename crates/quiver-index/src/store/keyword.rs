//! The keyword side of the store: the FTS5 table's BM25 matches and the documents hybrid search
//! scores.

use super::Store;
use crate::error::Result;
use crate::keywords;
use rusqlite::params;
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
