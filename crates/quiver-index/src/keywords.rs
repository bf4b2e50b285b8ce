//! Terms for keyword (BM25) search over code: identifiers are kept whole and also split into
//! their words (`parseHttpRequest` → `parsehttprequest parse http request`, `max_len` →
//! `max_len max len`), so a query in words finds code in identifiers and the other way round.
//! SQLite FTS5 then stems the terms (Porter) and ranks with BM25.
//!
//! The store exports reproduce that ranking elsewhere: [`KeywordDocument::bm25_vector`] and
//! [`query_vector`] are sparse vectors over the same stemmed tokens (ids from [`term_id`])
//! whose dot product, times each term's IDF, is FTS5's BM25 score.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// BM25 weight of a chunk's names (path, symbol, parent) against its body's 1.0: an identifier
/// named in the query is strong evidence. Chosen with `quiver eval` (docs/evaluation.md).
pub const NAMES_WEIGHT: f64 = 3.0;
/// FTS5's BM25 constants (SQLite's `fts5_aux.c`), which the exported weights use too.
pub const BM25_K1: f64 = 1.2;
pub const BM25_B: f64 = 0.75;
/// The FTS5 tokenizer of the index: Porter stemming over Unicode words, `_` inside words.
pub const TOKENIZER: &str = "porter unicode61 tokenchars '_'";

/// The names a chunk is found by (what the FTS5 `names` column holds, before [`terms`]).
pub fn names(path: &str, symbol: Option<&str>, parent: Option<&str>) -> String {
    format!(
        "{path} {} {}",
        symbol.unwrap_or_default(),
        parent.unwrap_or_default()
    )
}

/// Space-separated lower-case terms of `text`.
pub fn terms(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for word in text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
    {
        let whole = word.trim_matches('_').to_lowercase();
        if whole.is_empty() {
            continue;
        }
        push_term(&mut out, &whole);
        let parts = quiver_chunk::identifier_words(word);
        if parts.len() > 1 {
            for part in parts {
                push_term(&mut out, &part);
            }
        }
    }
    out
}

fn push_term(out: &mut String, term: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(term);
}

/// The query's distinct terms, in order: FTS5's phrases of its keyword query, one each.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    terms(query)
        .split(' ')
        .filter(|t| !t.is_empty() && seen.insert(t.to_string()))
        .map(|t| t.replace('"', ""))
        .collect()
}

/// An FTS5 query matching any of `terms`, each quoted so no input is read as FTS5 syntax.
/// `None` when there are no terms.
pub fn any_of<S: AsRef<str>>(terms: &[S]) -> Option<String> {
    let quoted: Vec<String> = terms
        .iter()
        .map(|t| format!("\"{}\"", t.as_ref()))
        .collect();
    (!quoted.is_empty()).then(|| quoted.join(" OR "))
}

/// An FTS5 query matching any of the query's terms ([`query_terms`]). `None` when the query
/// has no terms.
pub fn match_expression(query: &str) -> Option<String> {
    any_of(&query_terms(query))
}

/// A sparse vector as Qdrant takes one: term ids ascending, each with its weight.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// A stemmed token's id in sparse vectors: the first four bytes of its SHA-256, little-endian
/// (`int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")` in Python). Two tokens
/// may share an id (about one pair in a 100,000-token vocabulary); their weights then add up.
pub fn term_id(token: &str) -> u32 {
    let digest = Sha256::digest(token.as_bytes());
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// One chunk's tokens as its FTS5 row holds them (stemmed): each token's frequency, the names
/// column's occurrences counted [`NAMES_WEIGHT`] times as `bm25()` counts them, and the row's
/// length in tokens (both columns, unweighted, as FTS5 measures it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeywordDocument {
    pub frequencies: BTreeMap<String, f64>,
    pub length: usize,
}

impl KeywordDocument {
    /// Counts one occurrence of `token` in the names column (`names`) or the body.
    pub fn add(&mut self, token: &str, names: bool) {
        let weight = if names { NAMES_WEIGHT } else { 1.0 };
        *self.frequencies.entry(token.to_string()).or_default() += weight;
        self.length += 1;
    }

    /// Each token's BM25 term-frequency factor `f·(k1+1) / (f + k1·(1 − b + b·len/avglen))`:
    /// with a query of weight 1 per term and each term's IDF applied by the store (Qdrant's
    /// `idf` modifier), the dot product is FTS5's BM25 score up to the IDF's exact formula.
    pub fn bm25_vector(&self, average_length: f64) -> SparseVector {
        let norm =
            BM25_K1 * (1.0 - BM25_B + BM25_B * self.length as f64 / average_length.max(1e-9));
        let mut weights: BTreeMap<u32, f64> = BTreeMap::new();
        for (token, &frequency) in &self.frequencies {
            *weights.entry(term_id(token)).or_default() +=
                frequency * (BM25_K1 + 1.0) / (frequency + norm);
        }
        SparseVector {
            indices: weights.keys().copied().collect(),
            values: weights.values().map(|&w| w as f32).collect(),
        }
    }
}

/// FTS5's tokenizer of the index on an in-memory table of the same columns: the tokens FTS5
/// makes of text, for scoring outside FTS5 exactly as FTS5 scores.
pub struct Fts5Tokens {
    conn: rusqlite::Connection,
}

impl Fts5Tokens {
    pub fn new() -> rusqlite::Result<Self> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch(&format!(
            "CREATE VIRTUAL TABLE t USING fts5(names, body, tokenize = \"{TOKENIZER}\");
             CREATE VIRTUAL TABLE t_tokens USING fts5vocab(t, instance);"
        ))?;
        Ok(Fts5Tokens { conn })
    }

    /// Each row's tokens, as (row, token, whether in `names`), by row and then position.
    /// `rows` are (row, names, body) as the index's FTS5 table holds them.
    pub fn tokens(
        &self,
        rows: &[(i64, String, String)],
    ) -> rusqlite::Result<Vec<(i64, String, bool)>> {
        self.conn.execute("DELETE FROM t", [])?;
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO t(rowid, names, body) VALUES (?1, ?2, ?3)")?;
        for (row, names, body) in rows {
            insert.execute(rusqlite::params![row, names, body])?;
        }
        let mut statement = self.conn.prepare_cached(
            "SELECT doc, term, col = 'names' FROM t_tokens ORDER BY doc, col = 'body', offset",
        )?;
        let tokens = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect();
        tokens
    }
}

/// Chunks' keyword documents as the index's FTS5 table holds them: `rows` are each chunk's
/// names ([`names`]) and text, before [`terms`], as the index writes them.
pub fn documents(rows: &[(String, String)]) -> rusqlite::Result<Vec<KeywordDocument>> {
    let rows: Vec<(i64, String, String)> = rows
        .iter()
        .enumerate()
        .map(|(i, (names, body))| (i as i64, terms(names), terms(body)))
        .collect();
    let mut documents = vec![KeywordDocument::default(); rows.len()];
    for (row, token, names) in Fts5Tokens::new()?.tokens(&rows)? {
        documents[row as usize].add(&token, names);
    }
    Ok(documents)
}

/// The stemmed tokens FTS5 makes of `text` with the index's tokenizer, in order.
pub fn stemmed_tokens(text: &str) -> rusqlite::Result<Vec<String>> {
    let tokens = Fts5Tokens::new()?.tokens(&[(1, String::new(), text.to_string())])?;
    Ok(tokens.into_iter().map(|(_, token, _)| token).collect())
}

/// A query's sparse vector: weight 1 for each distinct query term (see [`match_expression`]),
/// on its stemmed token, so two terms with one stem count twice as FTS5's two phrases do.
pub fn query_vector(query: &str) -> rusqlite::Result<SparseVector> {
    let distinct = query_terms(query);
    // Tokenised together: spaces separate tokens, so each term gives the tokens it gives alone.
    let mut weights: BTreeMap<u32, f32> = BTreeMap::new();
    for token in stemmed_tokens(&distinct.join(" "))? {
        *weights.entry(term_id(&token)).or_default() += 1.0;
    }
    Ok(SparseVector {
        indices: weights.keys().copied().collect(),
        values: weights.values().copied().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_vectors_use_fts5_stems() {
        let tokens = stemmed_tokens("running parse_http connections").unwrap();
        assert_eq!(tokens, ["run", "parse_http", "connect"]);
        let vector = query_vector("connections connected parseHttp").unwrap();
        // connections, connected → connect (twice); parsehttp, parse, http.
        let connect = term_id("connect");
        let at = vector.indices.iter().position(|&i| i == connect).unwrap();
        assert_eq!(vector.values[at], 2.0);
        assert_eq!(vector.indices.len(), 4);
        assert!(vector.indices.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn bm25_weights_saturate_and_favour_short_rows() {
        let mut short = KeywordDocument::default();
        short.add("retri", false);
        short.add("retri", true);
        assert_eq!(short.length, 2);
        assert_eq!(short.frequencies["retri"], 1.0 + NAMES_WEIGHT);
        let mut long = short.clone();
        for _ in 0..20 {
            long.add("other", false);
        }
        let weight = |doc: &KeywordDocument| {
            let vector = doc.bm25_vector(10.0);
            let at = vector.indices.iter().position(|&i| i == term_id("retri"));
            vector.values[at.expect("retri has a weight")]
        };
        assert!(weight(&short) > weight(&long));
        // f = 4, len = 2, avg = 10: 4·2.2 / (4 + 1.2·(0.25 + 0.15)).
        let expected = 4.0 * 2.2 / (4.0 + 1.2 * (0.25 + 0.75 * 0.2));
        assert!((f64::from(weight(&short)) - expected).abs() < 1e-5);
        assert!(weight(&short) < (BM25_K1 + 1.0) as f32);
    }

    #[test]
    fn splits_identifiers_into_words() {
        assert_eq!(
            terms("parseHttpRequest"),
            "parsehttprequest parse http request"
        );
        assert_eq!(
            terms("HTTPServer max_len"),
            "httpserver http server max_len max len"
        );
        assert_eq!(terms("utf8Decode"), "utf8decode utf decode");
        assert_eq!(terms("a + b"), "a b");
        assert_eq!(terms("__init__"), "init");
    }

    #[test]
    fn match_expressions_are_quoted_and_deduplicated() {
        assert_eq!(
            match_expression("read \"file\" read").as_deref(),
            Some("\"read\" OR \"file\"")
        );
        assert_eq!(match_expression("+-*"), None);
    }
}
