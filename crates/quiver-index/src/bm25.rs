//! Keyword search's best `k` without scoring every match (MaxScore: Turtle and Flood, 1995).
//!
//! FTS5's `bm25()` scores every row that matches any query term, and a query in words ("parse
//! the header of an email message") matches most of a large index through its common words,
//! whose weight is small: at a million chunks that is most of a keyword search's time. Here
//! the query's terms are split by rarity. The rare ("essential") terms find the candidates: an
//! FTS5 query of them alone, ranked by their share of the score, reads few rows. Each candidate
//! is then scored with every term, by FTS5's formula over the candidate's own tokens.
//!
//! A row matching no essential term scores at most what the common terms can add (each term
//! at most its IDF × (k1 + 1)); a row the candidate query ranked below its last scores at most
//! that last row's share plus the same. When the `k`-th candidate beats both, no row left out
//! could rank among the best `k`, and they are exactly FTS5's. Otherwise more candidates are
//! read or another term becomes essential, up to FTS5's own query of every term.

use crate::error::{IndexError, Result};
use crate::keywords::{self, Fts5Tokens, BM25_B, BM25_K1, NAMES_WEIGHT};
use crate::store::Store;
use std::collections::HashMap;

/// A match: chunk row id, language, path and BM25 score (higher better).
pub type Match = (i64, String, String, f64);

/// Below this many rows matched by the query's terms in all (each term's rows, summed),
/// FTS5 scores every match itself: a few milliseconds.
const PRUNE_ABOVE: u64 = 50_000;
/// A term in more than this share of the rows is not essential at first.
const COMMON_SHARE: f64 = 0.02;
/// Candidates read per result wanted, at first.
const CANDIDATES_PER_RESULT: usize = 2;
/// Past this many candidates per result, a term becomes essential instead of reading more.
const MAX_CANDIDATES_PER_RESULT: usize = 32;

/// The `limit` best BM25 matches of `query`'s terms, best first, ties by row id: what
/// [`Store::keyword_matches`] gives for [`keywords::match_expression`].
pub fn best_matches(store: &Store, query: &str, limit: usize) -> Result<Vec<Match>> {
    Ok(best_matches_above(store, query, limit, PRUNE_ABOVE)?.0)
}

/// How [`best_matches_above`] found its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// FTS5's query of every term.
    Every,
    /// Candidates of this many essential terms (of all the query's).
    Essential(usize),
}

fn best_matches_above(
    store: &Store,
    query: &str,
    limit: usize,
    prune_above: u64,
) -> Result<(Vec<Match>, Plan)> {
    let terms = keywords::query_terms(query);
    let Some(every_term) = keywords::any_of(&terms) else {
        return Ok((Vec::new(), Plan::Every));
    };
    let all = || Ok((store.keyword_matches(&every_term, limit)?, Plan::Every));
    if limit == 0 {
        return Ok((Vec::new(), Plan::Every));
    }
    let tokens = Fts5Tokens::new().map_err(tokenizer_error)?;
    let Some(scorer) = Scorer::new(store, &tokens, &terms)? else {
        return all();
    };
    if scorer.rows_matched() <= prune_above {
        return all();
    }
    // Rarest first: `order[..essential]` are the essential terms.
    let mut order: Vec<usize> = (0..terms.len()).collect();
    order.sort_by_key(|&i| (scorer.phrases[i].rows, i));
    let common = (scorer.document_count as f64 * COMMON_SHARE) as u64;
    let mut essential = order
        .iter()
        .take_while(|&&i| scorer.phrases[i].rows <= common)
        .count()
        .max(1);
    let mut per_result = CANDIDATES_PER_RESULT;
    while essential < terms.len() {
        let chosen: Vec<&str> = order[..essential]
            .iter()
            .map(|&i| terms[i].as_str())
            .collect();
        let expression = keywords::any_of(&chosen).unwrap_or_default();
        let wanted = limit * per_result;
        let candidates = store.keyword_matches(&expression, wanted)?;
        let rest: f64 = order[essential..]
            .iter()
            .map(|&i| scorer.phrases[i].bound())
            .sum();
        // What a row not among the candidates can score at most.
        let full = candidates.len() == wanted;
        let outside = match candidates.last() {
            Some(last) if full => last.3 + rest,
            _ => rest,
        };
        let mut scored = scorer.score(store, &tokens, candidates)?;
        scored.sort_by(|a, b| b.3.total_cmp(&a.3).then(a.0.cmp(&b.0)));
        // A margin for the candidate query's own rounding of the shares it ranked by.
        let margin = 1e-9 * outside.abs().max(1.0);
        if scored.len() >= limit && scored[limit - 1].3 > outside + margin {
            scored.truncate(limit);
            return Ok((scored, Plan::Essential(essential)));
        }
        let kth = scored.get(limit - 1).map_or(f64::NEG_INFINITY, |m| m.3);
        if full && kth > rest + margin && per_result < MAX_CANDIDATES_PER_RESULT {
            per_result *= 4;
        } else {
            essential += 1;
        }
    }
    all()
}

/// One query term: FTS5 makes one phrase of it, here of exactly one token.
struct Phrase {
    token: String,
    /// Rows holding the token.
    rows: u64,
    idf: f64,
}

impl Phrase {
    /// The most this term adds to a row's score: BM25's term-frequency factor stays below
    /// k1 + 1.
    fn bound(&self) -> f64 {
        self.idf * (BM25_K1 + 1.0)
    }
}

/// FTS5's `bm25()` for one query, computed outside FTS5 (`fts5_aux.c`, step for step, so the
/// scores are the same floating-point numbers).
struct Scorer {
    phrases: Vec<Phrase>,
    document_count: u64,
    average_length: f64,
}

impl Scorer {
    /// `None` when a term is not one token to FTS5 (a phrase of several, or of none): such a
    /// query is left to FTS5.
    fn new(store: &Store, tokens: &Fts5Tokens, terms: &[String]) -> Result<Option<Scorer>> {
        let rows: Vec<(i64, String, String)> = terms
            .iter()
            .enumerate()
            .map(|(i, term)| (i as i64, String::new(), term.clone()))
            .collect();
        let mut by_term: Vec<Vec<String>> = vec![Vec::new(); terms.len()];
        for (row, token, _) in tokens.tokens(&rows).map_err(tokenizer_error)? {
            by_term[row as usize].push(token);
        }
        if by_term.iter().any(|t| t.len() != 1) {
            return Ok(None);
        }
        let (document_count, total_tokens) = store.keyword_totals()?;
        if document_count == 0 {
            return Ok(None);
        }
        let mut counted: HashMap<String, u64> = HashMap::new();
        let mut phrases = Vec::with_capacity(terms.len());
        for mut token in by_term {
            let token = token.remove(0);
            let rows = match counted.get(&token) {
                Some(&rows) => rows,
                None => {
                    let rows = store.keyword_rows(&token)?;
                    counted.insert(token.clone(), rows);
                    rows
                }
            };
            let (n, hits) = (document_count as f64, rows as f64);
            let idf = ((n - hits + 0.5) / (hits + 0.5)).ln();
            phrases.push(Phrase {
                token,
                rows,
                idf: if idf <= 0.0 { 1e-6 } else { idf },
            });
        }
        Ok(Some(Scorer {
            phrases,
            document_count,
            average_length: total_tokens as f64 / document_count as f64,
        }))
    }

    /// Rows the query's terms match, counted once per term.
    fn rows_matched(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.phrases
            .iter()
            .filter(|p| seen.insert(p.token.as_str()))
            .map(|p| p.rows)
            .sum()
    }

    /// The candidates with their scores over every term in place of their partial ones.
    fn score(
        &self,
        store: &Store,
        tokens: &Fts5Tokens,
        candidates: Vec<Match>,
    ) -> Result<Vec<Match>> {
        let ids: Vec<i64> = candidates.iter().map(|m| m.0).collect();
        let texts = store.keyword_texts(&ids)?;
        // Per row: each wanted token's weighted frequency, and the row's length in tokens.
        let mut rows: HashMap<i64, (HashMap<&str, f64>, usize)> = HashMap::new();
        let wanted: std::collections::HashSet<&str> =
            self.phrases.iter().map(|p| p.token.as_str()).collect();
        let found = tokens.tokens(&texts).map_err(tokenizer_error)?;
        for (row, token, names) in &found {
            let (frequencies, length) = rows.entry(*row).or_default();
            *length += 1;
            if let Some(&token) = wanted.get(token.as_str()) {
                *frequencies.entry(token).or_default() += if *names { NAMES_WEIGHT } else { 1.0 };
            }
        }
        Ok(candidates
            .into_iter()
            .filter_map(|(id, language, path, _)| {
                let (frequencies, length) = rows.get(&id)?;
                Some((id, language, path, self.bm25(frequencies, *length)))
            })
            .collect())
    }

    fn bm25(&self, frequencies: &HashMap<&str, f64>, length: usize) -> f64 {
        let d = length as f64;
        let mut score = 0.0;
        for phrase in &self.phrases {
            let f = frequencies
                .get(phrase.token.as_str())
                .copied()
                .unwrap_or(0.0);
            score += phrase.idf
                * ((f * (BM25_K1 + 1.0))
                    / (f + BM25_K1 * (1.0 - BM25_B + BM25_B * d / self.average_length)));
        }
        score
    }
}

fn tokenizer_error(error: rusqlite::Error) -> IndexError {
    IndexError::Tokenizer(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, ChunkRecord, FileRecord, IndexSettings};

    /// An index of `count` chunks of code-like text: a few words in nearly every chunk, many
    /// in few, identifiers in the names.
    fn corpus(count: usize) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("quiver-bm25-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open_writer(&dir).unwrap();
        let settings = IndexSettings {
            model: "test".into(),
            dimension: 2,
            normalize: true,
            document_prompt: None,
            query_prompt: None,
            quantization: Default::default(),
        };
        store.adopt_settings(&settings, false).unwrap();
        let common = ["the", "of", "a", "to", "return", "self", "value", "if"];
        let rare = [
            "parse",
            "parsing",
            "parsed",
            "header",
            "email",
            "message",
            "socket",
            "timeout",
            "connect",
            "dictionary",
            "sorted",
            "copy",
            "buffer",
            "encode",
            "decode",
            "stream",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut batch = Batch {
            files: Vec::new(),
            touched: Vec::new(),
            vectors: Vec::new(),
        };
        for i in 0..count {
            let mut words = Vec::new();
            for _ in 0..(4 + next(30)) {
                words.push(match next(10) {
                    0..=6 => common[next(common.len())].to_string(),
                    7 | 8 => rare[next(rare.len())].to_string(),
                    _ => format!("word{}", next(500)),
                });
            }
            let text = words.join(" ");
            let path = format!("src/{}_{}.py", rare[next(rare.len())], i);
            let hash = format!("e{i}");
            batch.vectors.push((hash.clone(), vec![1.0, 0.0]));
            let record = ChunkRecord {
                chunk_id: format!("{path}:0"),
                file: path.clone(),
                path: path.clone(),
                language: "python".into(),
                symbol: (next(3) == 0).then(|| format!("{}_{}", rare[next(rare.len())], i)),
                content_hash: hash.clone(),
                embed_hash: hash,
                text,
                ..Default::default()
            };
            let file = FileRecord {
                path,
                size: 1,
                mtime_ns: 1,
                content_hash: "h".into(),
            };
            batch.files.push((file, vec![record]));
        }
        store.commit(&batch).unwrap();
        (store, dir)
    }

    #[test]
    fn finds_exactly_what_fts5_ranks_first_without_scoring_every_match() {
        let (store, dir) = corpus(3000);
        let (rows, tokens) = store.keyword_totals().unwrap();
        assert_eq!(rows, 3000);
        assert!(tokens > 3000 * 4);
        let mut pruned = 0;
        for query in [
            "parse the header of a message",
            "return a copy of the sorted dictionary",
            "socket connect timeout",
            "parsing the email",
            "value if self",
            "word7 of the buffer",
            "decode",
        ] {
            for limit in [1, 10, 100] {
                let every = store
                    .keyword_matches(&keywords::match_expression(query).unwrap(), limit)
                    .unwrap();
                let (found, plan) = best_matches_above(&store, query, limit, 0).unwrap();
                let ids = |m: &[Match]| m.iter().map(|m| m.0).collect::<Vec<_>>();
                assert_eq!(ids(&found), ids(&every), "{query:?}, {limit} ({plan:?})");
                for (a, b) in found.iter().zip(&every) {
                    assert!(
                        (a.3 - b.3).abs() <= 1e-9 * b.3.abs(),
                        "{query:?}: {a:?} {b:?}"
                    );
                    assert_eq!((&a.1, &a.2), (&b.1, &b.2));
                }
                if let Plan::Essential(essential) = plan {
                    assert!(essential < keywords::query_terms(query).len());
                    pruned += 1;
                }
            }
        }
        // The queries with common words were answered from their rare words' candidates.
        assert!(pruned >= 9, "pruned {pruned} of 21");
        // A query matching fewer rows than the threshold is left to FTS5.
        let (_, plan) = best_matches_above(&store, "the value", 10, u64::MAX).unwrap();
        assert_eq!(plan, Plan::Every);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
