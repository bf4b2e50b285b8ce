//! Keyword search's best `k` without scoring every match.
//!
//! FTS5's `bm25()` costs most of a keyword search on a large index: a query in words ("parse
//! the header of an email message") matches most rows through its common words, and at a
//! million chunks FTS5 spends about 0.7 µs scoring each match (140 ms for that query's
//! 177,000) against 10 ms finding them. Here the query's posting lists are read from FTS5 as
//! they are (`fts5vocab`). Rows holding only the commonest tokens are left out while those
//! tokens' bounds (each at most IDF × (k1 + 1)) add up below the `k`-th score (MaxScore); the
//! other rows are candidates, and each gets an upper bound on its score: BM25 with the row as
//! short as its query tokens allow, since the score only falls as the row grows. Candidates
//! are then scored exactly (with their length, from FTS5's own record) in order of that
//! bound, and the search stops once the next bound is below the `k`-th score found: no row
//! left could rank among the best `k`. The scores are FTS5's formula step for step
//! (`fts5_aux.c`), so the answer is FTS5's own, checked by the tests against it.

use crate::error::{IndexError, Result};
use crate::keywords::{self, Fts5Tokens, BM25_B, BM25_K1, NAMES_WEIGHT};
use crate::store::Store;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

/// A match: chunk row id, language, path and BM25 score (higher better).
pub type Match = (i64, String, String, f64);

/// Up to this many rows matched by the query's terms in all (each term's rows, summed), FTS5
/// ranks every match itself: it then takes a few milliseconds.
const PRUNE_ABOVE: u64 = 20_000;
/// A token in more than this share of the rows does not make a row a candidate at first.
const COMMON_SHARE: f64 = 0.02;

/// A token's posting list: per row holding it, (row, weighted count, count).
type Postings = Vec<(i64, f64, u64)>;

/// Posting lists kept between searches of one state of an index. The long lists of common
/// words are the costly ones to read (a token in 100,000 rows takes about 10 ms through
/// `fts5vocab`), and the same common words recur in most queries. A front end that answers
/// many searches keeps one per state ([`crate::Snapshot`]); only lists of at least
/// [`CACHED_FROM`] rows are kept, up to [`MAX_CACHED`] postings in all.
pub struct PostingsCache {
    /// Postings held, and the lists by token. Replaced whole under the lock.
    lists: Mutex<(usize, HashMap<String, Arc<Postings>>)>,
    /// The shortest list kept.
    from: usize,
    /// Every row's length in tokens, by row id ([`ABSENT`] for none), read whole by the first
    /// search that needs lengths: then no row's length is looked up alone.
    lengths: Mutex<Option<Arc<Vec<u32>>>>,
}

/// In [`PostingsCache::lengths`], a row id no row has.
const ABSENT: u32 = u32::MAX;

impl Default for PostingsCache {
    fn default() -> Self {
        PostingsCache {
            lists: Mutex::default(),
            from: CACHED_FROM,
            lengths: Mutex::default(),
        }
    }
}

const CACHED_FROM: usize = 4_096;
/// About 200 MB.
const MAX_CACHED: usize = 8_000_000;

impl PostingsCache {
    fn get_or_read(&self, store: &Store, token: &str) -> Result<Arc<Postings>> {
        if let Some(list) = crate::lock(&self.lists).1.get(token) {
            return Ok(list.clone());
        }
        let list = Arc::new(read_postings(store, token)?);
        if list.len() >= self.from {
            let mut lists = crate::lock(&self.lists);
            if lists.0 + list.len() > MAX_CACHED {
                *lists = (0, HashMap::new());
            }
            lists.0 += list.len();
            lists.1.insert(token.to_string(), list.clone());
        }
        Ok(list)
    }

    /// Rows holding `token`, when its list is held.
    fn rows(&self, token: &str) -> Option<u64> {
        let lists = crate::lock(&self.lists);
        lists.1.get(token).map(|list| list.len() as u64)
    }

    fn lengths(&self, store: &Store) -> Result<Arc<Vec<u32>>> {
        let mut lengths = crate::lock(&self.lengths);
        if let Some(lengths) = lengths.as_ref() {
            return Ok(lengths.clone());
        }
        let mut by_row: Vec<u32> = Vec::new();
        store.keyword_lengths(|row, length| {
            // Row ids are dense (SQLite's rowids), so a vector indexed by them stays small.
            let Ok(row) = usize::try_from(row) else {
                return;
            };
            if row >= by_row.len() {
                by_row.resize(row + 1, ABSENT);
            }
            by_row[row] = length.min(u64::from(ABSENT - 1)) as u32;
        })?;
        let read = Arc::new(by_row);
        *lengths = Some(read.clone());
        Ok(read)
    }
}

fn read_postings(store: &Store, token: &str) -> Result<Postings> {
    let mut postings: Postings = Vec::new();
    store.keyword_postings(token, |row, names| {
        let weight = if names { NAMES_WEIGHT } else { 1.0 };
        match postings.last_mut() {
            Some(last) if last.0 == row => {
                last.1 += weight;
                last.2 += 1;
            }
            _ => postings.push((row, weight, 1)),
        }
    })?;
    Ok(postings)
}

/// The `limit` best BM25 matches of `query`'s terms, best first, ties by row id: what
/// [`Store::keyword_matches`] gives for [`keywords::match_expression`]. Posting lists come
/// from `cache` when given.
pub fn best_matches(
    store: &Store,
    cache: Option<&PostingsCache>,
    query: &str,
    limit: usize,
) -> Result<Vec<Match>> {
    Ok(best_matches_above(store, cache, query, limit, PRUNE_ABOVE)?.0)
}

/// How [`best_matches_above`] found its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// FTS5 ranked every match.
    Fts5,
    /// Of the rows matched, these were candidates, and these were scored.
    Bounded { candidates: usize, scored: usize },
}

fn best_matches_above(
    store: &Store,
    cache: Option<&PostingsCache>,
    query: &str,
    limit: usize,
    prune_above: u64,
) -> Result<(Vec<Match>, Plan)> {
    let terms = keywords::query_terms(query);
    let Some(every_term) = keywords::any_of(&terms) else {
        return Ok((Vec::new(), Plan::Fts5));
    };
    let fts5 = || Ok((store.keyword_matches(&every_term, limit)?, Plan::Fts5));
    let Some(scorer) = Scorer::new(store, cache, &terms)? else {
        return fts5();
    };
    if limit == 0 || scorer.rows_matched() <= prune_above {
        return fts5();
    }
    let lists = scorer.lists(store, cache)?;
    let lengths = cache.map(|cache| cache.lengths(store)).transpose()?;
    let length_of = |row: i64| -> Result<Option<u64>> {
        match &lengths {
            Some(lengths) => Ok(usize::try_from(row)
                .ok()
                .and_then(|row| lengths.get(row))
                .filter(|&&length| length != ABSENT)
                .map(|&length| u64::from(length))),
            None => store.keyword_length(row),
        }
    };
    // Rows holding only the commonest tokens score little: at first only rows holding one of
    // the others are candidates, and the common lists are looked up for those rows.
    let common = (scorer.document_count as f64 * COMMON_SHARE) as usize;
    let mut essential = lists
        .iter()
        .take_while(|l| l.postings.len() <= common)
        .count()
        .max(1);
    loop {
        let candidates = scorer.candidates(&lists, essential);
        let count = candidates.bounds.len();
        let (best, scored) = scorer.best(&length_of, candidates, limit)?;
        // What a row holding none of the essential tokens can score at most.
        let rest: f64 = lists[essential..].iter().map(|l| l.bound).sum();
        let kth = match best.len() {
            n if n == limit => best[n - 1].score,
            _ => f64::NEG_INFINITY,
        };
        if essential == lists.len() || kth > rest + 1e-9 * rest.max(1.0) {
            let ids: Vec<i64> = best.iter().map(|s| s.row).collect();
            let scores: HashMap<i64, f64> = best.iter().map(|s| (s.row, s.score)).collect();
            let matches = store
                .keyword_sources(&ids)?
                .into_iter()
                .map(|(id, language, path)| (id, language, path, scores[&id]))
                .collect();
            let plan = Plan::Bounded {
                candidates: count,
                scored,
            };
            return Ok((matches, plan));
        }
        // The `k`-th score over all rows is at least this one's, so leaving out the lists
        // whose bounds add up below it is safe: the next pass is the last.
        let mut left_out = 0.0;
        let mut keep = lists.len();
        while keep > essential + 1 && left_out + lists[keep - 1].bound < kth {
            keep -= 1;
            left_out += lists[keep].bound;
        }
        essential = if keep == essential {
            essential + 1
        } else {
            keep
        };
    }
}

/// The first place at or after `from` in `postings` whose row is not below `row`: galloping,
/// since successive candidates are usually a few postings apart in a long list.
fn seek(postings: &[(i64, f64, u64)], from: usize, row: i64) -> usize {
    let (mut low, mut high, mut step) = (from, from, 1);
    while high < postings.len() && postings[high].0 < row {
        low = high + 1;
        high += step;
        step *= 2;
    }
    let high = high.min(postings.len());
    low + postings[low..high].partition_point(|p| p.0 < row)
}

/// One distinct query token's posting list, with the query terms (phrases) it stands for and
/// the most it adds to a row's score: BM25's term-frequency factor stays below k1 + 1.
struct List {
    phrases: Vec<usize>,
    postings: Arc<Postings>,
    bound: f64,
}

/// A row with a score (its bound while queued): ordered by score, then lower row id first,
/// as FTS5's ranking breaks ties.
#[derive(Clone, Copy)]
struct Scored {
    score: f64,
    row: i64,
    /// The row's place in [`Candidates`].
    index: usize,
}

/// The rows a query's terms match.
#[derive(Default)]
struct Candidates {
    /// Each row's bound.
    bounds: Vec<Scored>,
    /// Per row, per query term, the term's weighted frequency in the row.
    frequencies: Vec<f64>,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.row.cmp(&self.row))
    }
}

/// One query term: FTS5 makes one phrase of it, here of exactly one token.
struct Phrase {
    token: String,
    /// Rows holding the token.
    rows: u64,
    idf: f64,
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
    fn new(
        store: &Store,
        cache: Option<&PostingsCache>,
        terms: &[String],
    ) -> Result<Option<Scorer>> {
        let rows: Vec<(i64, String, String)> = terms
            .iter()
            .enumerate()
            .map(|(i, term)| (i as i64, String::new(), term.clone()))
            .collect();
        let mut by_term: Vec<Vec<String>> = vec![Vec::new(); terms.len()];
        let tokens = Fts5Tokens::new().map_err(IndexError::Tokenizer)?;
        for (row, token, _) in tokens.tokens(&rows).map_err(IndexError::Tokenizer)? {
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
                    // A cached list has one posting per row: counting through FTS5 would
                    // walk the whole list again.
                    let rows = match cache.and_then(|c| c.rows(&token)) {
                        Some(rows) => rows,
                        None => store.keyword_rows(&token)?,
                    };
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

    /// Rows the query's terms match, counted once per token.
    fn rows_matched(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.phrases
            .iter()
            .filter(|p| seen.insert(p.token.as_str()))
            .map(|p| p.rows)
            .sum()
    }

    /// Each distinct token's posting list, shortest first.
    fn lists(&self, store: &Store, cache: Option<&PostingsCache>) -> Result<Vec<List>> {
        let mut lists: Vec<List> = Vec::new();
        for (i, phrase) in self.phrases.iter().enumerate() {
            let token = phrase.token.as_str();
            let bound = phrase.idf * (BM25_K1 + 1.0);
            if let Some(list) = lists
                .iter_mut()
                .find(|l| self.phrases[l.phrases[0]].token == token)
            {
                // Two terms with one stem are two phrases to FTS5, each counting the token.
                list.phrases.push(i);
                list.bound += bound;
                continue;
            }
            let postings = match cache {
                Some(cache) => cache.get_or_read(store, token)?,
                None => Arc::new(read_postings(store, token)?),
            };
            lists.push(List {
                phrases: vec![i],
                postings,
                bound,
            });
        }
        lists.sort_by_key(|l| l.postings.len());
        Ok(lists)
    }

    /// Every row holding a token of `lists[..essential]`, in row order: its term frequencies
    /// (the other lists looked up) and, as its score, the most it can score: BM25 at the
    /// least length it can have, its query tokens.
    fn candidates(&self, lists: &[List], essential: usize) -> Candidates {
        let width = self.phrases.len();
        // Merged by row: few lists, so a heap of their heads.
        let mut heads: BinaryHeap<std::cmp::Reverse<(i64, usize)>> = lists[..essential]
            .iter()
            .enumerate()
            .filter_map(|(l, list)| Some(std::cmp::Reverse((list.postings.first()?.0, l))))
            .collect();
        let mut at = vec![0usize; lists.len()];
        let mut candidates = Candidates::default();
        let mut frequencies = vec![0.0; width];
        while let Some(std::cmp::Reverse((row, _))) = heads.peek().copied() {
            frequencies.fill(0.0);
            let mut length = 0;
            let mut add = |list: &List, (_, weight, count): (i64, f64, u64)| {
                for &i in &list.phrases {
                    frequencies[i] += weight;
                }
                length += count;
            };
            while let Some(&std::cmp::Reverse((next, l))) = heads.peek() {
                if next != row {
                    break;
                }
                heads.pop();
                add(&lists[l], lists[l].postings[at[l]]);
                at[l] += 1;
                if let Some(&(next, ..)) = lists[l].postings.get(at[l]) {
                    heads.push(std::cmp::Reverse((next, l)));
                }
            }
            // Rows come in order, so each other list is searched from where the last row left it.
            for (l, list) in lists.iter().enumerate().skip(essential) {
                at[l] = seek(&list.postings, at[l], row);
                if let Some(&posting) = list.postings.get(at[l]).filter(|p| p.0 == row) {
                    add(list, posting);
                }
            }
            candidates.bounds.push(Scored {
                score: self.bm25(&frequencies, length as f64),
                row,
                index: candidates.bounds.len(),
            });
            candidates.frequencies.extend_from_slice(&frequencies);
        }
        candidates
    }

    /// The `limit` best of `candidates` by their exact scores, best first, and how many were
    /// scored: in order of their bounds, until the next bound is below the `limit`-th score.
    fn best(
        &self,
        length_of: &dyn Fn(i64) -> Result<Option<u64>>,
        candidates: Candidates,
        limit: usize,
    ) -> Result<(Vec<Scored>, usize)> {
        let width = self.phrases.len();
        let mut queue = BinaryHeap::from(candidates.bounds);
        // The best `limit` so far, worst on top.
        let mut best: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::with_capacity(limit + 1);
        let mut scored = 0;
        while let Some(candidate) = queue.pop() {
            if let Some(worst) = best.peek().filter(|_| best.len() == limit) {
                // A bound equal to the `k`-th score could still win its tie by row id; the
                // margin covers rounding between the bound's arithmetic and the score's.
                let kth = worst.0.score;
                if candidate.score < kth - 1e-9 * kth.abs().max(1.0) {
                    break;
                }
            }
            let Some(length) = length_of(candidate.row)? else {
                continue;
            };
            scored += 1;
            let at = candidate.index * width;
            let score = self.bm25(&candidates.frequencies[at..at + width], length as f64);
            best.push(std::cmp::Reverse(Scored { score, ..candidate }));
            if best.len() > limit {
                best.pop();
            }
        }
        let mut best: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        best.sort_by(|a, b| b.cmp(a));
        Ok((best, scored))
    }

    fn bm25(&self, frequencies: &[f64], length: f64) -> f64 {
        let mut score = 0.0;
        for (phrase, &f) in self.phrases.iter().zip(frequencies) {
            score += phrase.idf
                * ((f * (BM25_K1 + 1.0))
                    / (f + BM25_K1 * (1.0 - BM25_B + BM25_B * length / self.average_length)));
        }
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, ChunkRecord, FileRecord};

    /// An index of `count` chunks of code-like text: a few words in nearly every chunk, many
    /// in few, identifiers in the names.
    fn corpus(count: usize) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("quiver-bm25-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = crate::store::test_writer(&dir, 2);
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
    fn seeks_the_first_posting_at_or_after_a_row() {
        let postings: Vec<(i64, f64, u64)> = [2, 3, 5, 8, 13, 21, 34].map(|r| (r, 1.0, 1)).to_vec();
        for from in 0..postings.len() {
            for row in 0..40 {
                let expected = from + postings[from..].partition_point(|p| p.0 < row);
                assert_eq!(
                    seek(&postings, from, row),
                    expected,
                    "from {from}, row {row}"
                );
            }
        }
        assert_eq!(seek(&postings, 7, 1), 7);
    }

    #[test]
    fn finds_exactly_what_fts5_ranks_first_without_scoring_every_match() {
        let (store, dir) = corpus(3000);
        let (rows, tokens) = store.keyword_totals().unwrap();
        assert_eq!(rows, 3000);
        assert!(tokens > 3000 * 4);
        let mut pruned = 0;
        let cache = PostingsCache {
            from: 1,
            ..PostingsCache::default()
        };
        for query in [
            "parse the header of a message",
            "return a copy of the sorted dictionary",
            "socket connect timeout",
            "parsing the email",
            "value if self",
            "word7 of the buffer",
            "decode",
        ] {
            for (limit, cache) in [(1, None), (10, None), (100, None), (10, Some(&cache))] {
                let every = store
                    .keyword_matches(&keywords::match_expression(query).unwrap(), limit)
                    .unwrap();
                let (found, plan) = best_matches_above(&store, cache, query, limit, 0).unwrap();
                let ids = |m: &[Match]| m.iter().map(|m| m.0).collect::<Vec<_>>();
                assert_eq!(ids(&found), ids(&every), "{query:?}, {limit} ({plan:?})");
                for (a, b) in found.iter().zip(&every) {
                    assert!(
                        (a.3 - b.3).abs() <= 1e-9 * b.3.abs(),
                        "{query:?}: {a:?} {b:?}"
                    );
                    assert_eq!((&a.1, &a.2), (&b.1, &b.2));
                }
                if let Plan::Bounded { candidates, scored } = plan {
                    let expression = keywords::match_expression(query).unwrap();
                    let matched = store.keyword_matches(&expression, usize::MAX >> 2).unwrap();
                    assert!(scored <= candidates && candidates <= matched.len());
                    assert!(scored < matched.len(), "{query:?}: scored {scored}");
                    pruned += 1;
                }
            }
        }
        // The queries with common words were answered from their rare words' candidates.
        assert!(pruned >= 12, "pruned {pruned} of 28");
        assert!(crate::lock(&cache.lists).0 > 0);
        let lengths = crate::lock(&cache.lengths).clone().expect("lengths read");
        let some_row = lengths.iter().position(|&l| l != ABSENT).unwrap() as i64;
        assert_eq!(
            Some(u64::from(lengths[some_row as usize])),
            store.keyword_length(some_row).unwrap()
        );
        // A query matching fewer rows than the threshold is left to FTS5.
        let (_, plan) = best_matches_above(&store, None, "the value", 10, u64::MAX).unwrap();
        assert_eq!(plan, Plan::Fts5);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
