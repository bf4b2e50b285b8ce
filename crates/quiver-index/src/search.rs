//! Search over an index: vector (cosine over every chunk), keyword (BM25 over code-aware terms)
//! and hybrid, which fuses the two by relative score: each ranking's scores are rescaled to 0..1
//! over its candidates (best = 1, the last candidate = 0) and added, the keyword side weighted.
//! On the code-search eval this beat reciprocal-rank fusion (docs/evaluation.md): a strong
//! cosine lead survives, where RRF keeps only the order.

use crate::bm25::{self, PostingsCache};
use crate::error::{IndexError, Result};
use crate::store::{ChunkRecord, Store};
use crate::vectors::VectorIndex;
use globset::{Glob, GlobMatcher};
use std::collections::{hash_map::Entry, HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    Vector,
    Keyword,
    #[default]
    Hybrid,
}

impl std::str::FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "vector" => Ok(SearchMode::Vector),
            "keyword" | "bm25" => Ok(SearchMode::Keyword),
            "hybrid" => Ok(SearchMode::Hybrid),
            other => Err(format!(
                "unknown search mode {other:?} (vector, keyword, hybrid)"
            )),
        }
    }
}

/// Which chunks may be returned.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// Language names ([`quiver_chunk::Language::name`]); empty: any.
    pub languages: Vec<String>,
    pub path: Option<GlobMatcher>,
}

impl SearchFilter {
    /// From language names as users type them (`py`, `Python`, `rust`, ...) and a path glob.
    pub fn from_names(languages: &[String], path_glob: Option<&str>) -> Result<Self> {
        let languages = languages
            .iter()
            .map(|name| {
                quiver_chunk::Language::from_name(name)
                    .map(|language| language.name().to_string())
                    .ok_or_else(|| IndexError::UnknownLanguage { name: name.clone() })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(languages, path_glob)
    }

    pub fn new(languages: Vec<String>, path_glob: Option<&str>) -> Result<Self> {
        let path = path_glob
            .map(|glob| {
                Glob::new(glob)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| IndexError::BadGlob {
                        glob: glob.to_string(),
                        message: e.to_string(),
                    })
            })
            .transpose()?;
        Ok(SearchFilter { languages, path })
    }

    fn accepts(&self, language: &str, path: &str) -> bool {
        self.accepts_language(language) && self.path.as_ref().is_none_or(|glob| glob.is_match(path))
    }

    pub(crate) fn accepts_language(&self, language: &str) -> bool {
        self.languages.is_empty() || self.languages.iter().any(|l| l == language)
    }
}

/// Weight of the keyword scores against the vector scores' 1.0 in hybrid search (both rescaled
/// to 0..1); chosen with `quiver eval` (docs/evaluation.md).
pub const DEFAULT_KEYWORD_WEIGHT: f64 = 0.75;

/// The keyword weight an index of `model_id` (a hub id or a model folder) searches with unless
/// told otherwise: the one measured for the model ([`quiver_embed::ModelCard`]), else
/// [`DEFAULT_KEYWORD_WEIGHT`].
pub fn model_keyword_weight(model_id: &str) -> f64 {
    quiver_embed::find_model(model_id)
        .or_else(|| quiver_embed::find_model_at(std::path::Path::new(model_id)))
        .and_then(|card| card.keyword_weight)
        .unwrap_or(DEFAULT_KEYWORD_WEIGHT)
}

/// Whether `weight` can weigh hybrid search's keyword side: a number, 0 or more.
pub fn is_keyword_weight(weight: f64) -> bool {
    weight.is_finite() && weight >= 0.0
}
/// How much of a chunk's keyword score its vector score takes back in hybrid search: a chunk
/// scores `v + w·k·(1 − KEYWORD_OVERLAP·v)` (`v`, `k` rescaled to 0..1, `w` the keyword
/// weight), so the keyword side counts most where the vector side is least sure, and two
/// rankings' agreement adds less than their sum. Chosen with the weights on the dev split of
/// `quiver eval` (docs/evaluation.md).
pub const KEYWORD_OVERLAP: f64 = 0.6;
/// Candidates each ranking contributes to a hybrid search.
pub const FUSION_DEPTH: usize = 100;

pub struct SearchRequest<'a> {
    pub query: &'a str,
    /// The query's embedding; needed for vector and hybrid search.
    pub query_vector: Option<&'a [f32]>,
    pub mode: SearchMode,
    pub k: usize,
    pub filter: &'a SearchFilter,
    /// Hybrid only: the keyword ranking's weight in the fusion (the vector ranking's is 1).
    pub keyword_weight: f64,
    /// Rerank by what each result is ([`Priors`]: definitions first, tests after); off, the
    /// scores are the rankings' alone, as an exported store computes them.
    pub priors: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchHit {
    /// What the hits are ordered by: the fused (or single) ranking's score, or after
    /// [`rerank_hits`] the reranker's (0..1).
    pub score: f64,
    /// Rank (from 1) in the vector and keyword rankings, where the chunk appeared.
    pub vector_rank: Option<usize>,
    pub keyword_rank: Option<usize>,
    /// After [`rerank_hits`]: the rank (from 1) the search gave the chunk before reranking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_rank: Option<usize>,
    pub chunk: ChunkRecord,
}

/// Hits a search hands a reranker when the caller does not say: enough that a relevant chunk
/// the first stage ranked low is still seen, few enough that a CPU cross-encoder scores them
/// in well under a second.
pub const RERANK_CANDIDATES: usize = 50;

/// Orders `hits` by a second-stage score of each chunk's text (a cross-encoder's relevance to
/// the query, 0..1; `scores[i]` is `hits[i]`'s), best first, and keeps `k`. Each hit records
/// the rank it had before (`search_rank`).
pub fn rerank_hits(hits: Vec<SearchHit>, k: usize, scores: &[f32]) -> Vec<SearchHit> {
    let mut reranked: Vec<SearchHit> = hits
        .into_iter()
        .zip(scores)
        .enumerate()
        .map(|(rank, (hit, &score))| SearchHit {
            score: f64::from(score),
            search_rank: Some(rank + 1),
            ..hit
        })
        .collect();
    // Stable: equal scores keep the search's order.
    reranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    reranked.truncate(k);
    reranked
}

/// Searches `store`, opening its vectors for this query.
pub fn search(store: &Store, request: &SearchRequest<'_>) -> Result<Vec<SearchHit>> {
    let vectors = match request.mode {
        SearchMode::Keyword => None,
        _ => Some(VectorIndex::open(store)?),
    };
    search_with(store, vectors.as_ref(), None, request)
}

/// Searches `store` with its vectors already in memory (`None`: keyword search only) and,
/// for a front end answering many searches, a cache of its keyword posting lists.
pub fn search_with(
    store: &Store,
    vectors: Option<&VectorIndex>,
    postings: Option<&PostingsCache>,
    request: &SearchRequest<'_>,
) -> Result<Vec<SearchHit>> {
    let keywords = keyword_side(store, postings, request)?;
    search_with_keywords(store, vectors, keywords, request)
}

/// A search's keyword ranking, made apart from the rest ([`keyword_side`]): a front end that
/// must load a model before it has the query's vector ranks by keywords meanwhile.
pub struct KeywordSide {
    made_for: SideKey,
    ranking: Vec<(i64, f64)>,
}

/// What a keyword ranking depends on.
#[derive(PartialEq)]
struct SideKey {
    query: String,
    mode: SearchMode,
    depth: usize,
    languages: Vec<String>,
    path: Option<String>,
}

impl SideKey {
    fn of(request: &SearchRequest<'_>, depth: usize) -> SideKey {
        SideKey {
            query: request.query.to_string(),
            mode: request.mode,
            depth,
            languages: request.filter.languages.clone(),
            path: request
                .filter
                .path
                .as_ref()
                .map(|p| p.glob().glob().to_string()),
        }
    }
}

/// The keyword ranking `request` needs (none for vector search); its `query_vector` may
/// still be missing.
pub fn keyword_side(
    store: &Store,
    postings: Option<&PostingsCache>,
    request: &SearchRequest<'_>,
) -> Result<KeywordSide> {
    let (_, depth) = depth_of(request);
    let ranking = match request.mode {
        SearchMode::Vector => Vec::new(),
        _ => keyword_ranking(store, postings, request.query, depth, request.filter)?,
    };
    Ok(KeywordSide {
        made_for: SideKey::of(request, depth),
        ranking,
    })
}

/// [`search_with`], its keyword ranking made beforehand (made again if it was made for
/// another request).
pub fn search_with_keywords(
    store: &Store,
    vectors: Option<&VectorIndex>,
    keywords: KeywordSide,
    request: &SearchRequest<'_>,
) -> Result<Vec<SearchHit>> {
    let (priors, depth) = depth_of(request);
    let keywords = if keywords.made_for == SideKey::of(request, depth) {
        keywords
    } else {
        keyword_side(store, None, request)?
    };
    let keyword = keywords.ranking;
    let vector = match (request.mode, request.query_vector, vectors) {
        (SearchMode::Keyword, ..) | (_, None, _) | (_, _, None) => Vec::new(),
        (_, Some(query), Some(vectors)) => vectors.nearest(query, depth, request.filter)?,
    };
    let scored: Vec<(i64, f64, Option<usize>, Option<usize>)> = match request.mode {
        SearchMode::Vector => ranked(&vector, true),
        SearchMode::Keyword => ranked(&keyword, false),
        SearchMode::Hybrid => fuse(&vector, &keyword, request.keyword_weight),
    };
    let pool = if priors.is_some() { depth } else { request.k };
    let top: Vec<_> = scored.into_iter().take(pool).collect();
    let ids: Vec<i64> = top.iter().map(|(id, ..)| *id).collect();
    let chunks = store.chunks_by_id(&ids)?;
    let mut hits: Vec<SearchHit> = top
        .into_iter()
        .zip(chunks)
        .filter_map(|((_, score, vector_rank, keyword_rank), chunk)| {
            Some(SearchHit {
                score,
                vector_rank,
                keyword_rank,
                search_rank: None,
                chunk: chunk?,
            })
        })
        .collect();
    if let Some(priors) = priors {
        for hit in &mut hits {
            hit.score += priors.of(&hit.chunk);
        }
        // Stable: equal scores keep the ranking's order.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits = definitions_first(store, hits, request.k)?;
    }
    hits.truncate(request.k);
    Ok(hits)
}

/// `hits` (best first) with every piece of a function or method cut in pieces replaced by the
/// piece that starts it, once, at the best of their places: a query about a function wants its
/// definition (its signature, its name), and two pieces of one function are one answer, not
/// two. On the dev split of `quiver eval`, a later piece outranked the function's start for 89
/// of 1,907 queries (docs/evaluation.md). The pieces of a long enum, struct or table stay apart:
/// each holds members of its own, which queries ask for by themselves.
///
/// Only the first `k` results are made: a hit further down cannot change them, and each
/// piece looked up reads its file's chunks.
fn definitions_first(store: &Store, hits: Vec<SearchHit>, k: usize) -> Result<Vec<SearchHit>> {
    let mut files: HashMap<String, Vec<ChunkRecord>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(hits.len());
    for mut hit in hits {
        if out.len() == k {
            break;
        }
        let callable = matches!(hit.chunk.kind.as_deref(), Some("function" | "method"));
        let continues = callable && hit.chunk.signature_hash.is_none();
        if continues {
            let chunks = match files.entry(hit.chunk.file.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(store.chunks_of_file(&hit.chunk.file)?),
            };
            if let Some(at) = chunks.iter().position(|c| c.chunk_id == hit.chunk.chunk_id) {
                let start = crate::definition::definition_start(chunks, at);
                if start != at {
                    hit.chunk = chunks[start].clone();
                }
            }
        }
        if seen.insert(hit.chunk.chunk_id.clone()) {
            out.push(hit);
        }
    }
    Ok(out)
}

/// The request's priors, and how many candidates each ranking gives it.
fn depth_of(request: &SearchRequest<'_>) -> (Option<Priors>, usize) {
    let priors = Priors::for_query(request.query, request.mode).filter(|_| request.priors);
    let depth = match request.mode {
        SearchMode::Hybrid => FUSION_DEPTH.max(request.k),
        _ if priors.is_some() => PRIOR_DEPTH.max(request.k),
        _ => request.k,
    };
    (priors, depth)
}

/// Candidates a vector search reranks with its [`Priors`].
const PRIOR_DEPTH: usize = 50;

/// What a result is, beyond how well it matches: a query about code wants the definition
/// first, before the tests that exercise it and the code that calls it. Added to each
/// candidate's score (a cosine, or a fused score: 0 to 1.3 at the default weights) in vector
/// and hybrid search.
///
/// Chosen on the dev split of `quiver eval` (docs/evaluation.md), with the query adapter. For
/// vector search (+0.1, −0.1): nDCG@10 0.483 → 0.489. For hybrid search they were fitted with
/// its weights ([`KEYWORD_OVERLAP`]) by a ranking loss on the dev queries' candidates: 0.527 →
/// 0.539. A test file ranked above the definition in hybrid search for 14.9 % of dev's
/// queries without priors, 8.4 % with the first ones (+0.1, −0.1); 6.6 % of test's with
/// these. The code-length prior costs vector search (0.497 → 0.443), whose cosines span less.
#[derive(Debug, Clone, Copy)]
struct Priors {
    /// Taken from a chunk of a test file ([`quiver_chunk::is_test_path`]), unless the query
    /// asks for tests.
    test_penalty: f64,
    /// Given to a chunk that starts a definition (it has a signature).
    definition_bonus: f64,
    /// Times `ln(1 + code characters)` ([`quiver_chunk::code_length`]): a chunk of a few
    /// characters of code (a declaration, a constant, a lone comment) is seldom what a query
    /// describes.
    code_length_weight: f64,
}

impl Priors {
    fn for_query(query: &str, mode: SearchMode) -> Option<Priors> {
        let asks_for_tests = query.split(|c: char| !c.is_alphanumeric()).any(|word| {
            let word = word.to_ascii_lowercase();
            word.starts_with("test") || word == "spec" || word == "specs"
        });
        let (test_penalty, definition_bonus, code_length_weight) = match mode {
            // BM25's scores are on another scale, and were not measured with these.
            SearchMode::Keyword => return None,
            SearchMode::Vector => (0.1, 0.1, 0.0),
            SearchMode::Hybrid => (0.3, 0.07, 0.067),
        };
        Some(Priors {
            test_penalty: if asks_for_tests { 0.0 } else { test_penalty },
            definition_bonus,
            code_length_weight,
        })
    }

    fn of(&self, chunk: &ChunkRecord) -> f64 {
        let mut prior = 0.0;
        if quiver_chunk::is_test_path(&chunk.path) {
            prior -= self.test_penalty;
        }
        if chunk.signature_hash.is_some() {
            prior += self.definition_bonus;
        }
        if self.code_length_weight != 0.0 {
            let length = quiver_chunk::code_length(&chunk.text) as f64;
            prior += self.code_length_weight * length.ln_1p();
        }
        prior
    }
}

fn ranked(ranking: &[(i64, f64)], vector: bool) -> Vec<(i64, f64, Option<usize>, Option<usize>)> {
    ranking
        .iter()
        .enumerate()
        .map(|(i, &(id, score))| {
            let rank = Some(i + 1);
            if vector {
                (id, score, rank, None)
            } else {
                (id, score, None, rank)
            }
        })
        .collect()
}

fn fuse(
    vector: &[(i64, f64)],
    keyword: &[(i64, f64)],
    keyword_weight: f64,
) -> Vec<(i64, f64, Option<usize>, Option<usize>)> {
    // Per chunk: its rescaled vector and keyword scores (0 where a ranking missed it), ranks.
    let mut sides: HashMap<i64, (f64, f64, Option<usize>, Option<usize>)> = HashMap::new();
    for (i, (id, score)) in rescaled(vector).enumerate() {
        let entry = sides.entry(id).or_default();
        entry.0 = score;
        entry.2 = Some(i + 1);
    }
    for (i, (id, score)) in rescaled(keyword).enumerate() {
        let entry = sides.entry(id).or_default();
        entry.1 = score;
        entry.3 = Some(i + 1);
    }
    let mut out: Vec<_> = sides
        .into_iter()
        .map(|(id, (v, k, v_rank, k_rank))| (id, fused_score(v, k, keyword_weight), v_rank, k_rank))
        .collect();
    // Ties go to the vector ranking, then to the id, so results are deterministic.
    out.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then(a.2.unwrap_or(usize::MAX).cmp(&b.2.unwrap_or(usize::MAX)))
            .then(a.0.cmp(&b.0))
    });
    out
}

/// A chunk's hybrid score from its two rankings' rescaled scores ([`KEYWORD_OVERLAP`]).
pub fn fused_score(vector: f64, keyword: f64, keyword_weight: f64) -> f64 {
    vector + keyword_weight * keyword * (1.0 - KEYWORD_OVERLAP * vector)
}

/// A ranking's scores mapped onto 0..1: the best candidate 1, the last 0 (all 1 when they tie).
fn rescaled(ranking: &[(i64, f64)]) -> impl Iterator<Item = (i64, f64)> + '_ {
    let (offset, span) =
        rescale_bounds(ranking.iter().map(|&(_, score)| score)).unwrap_or((0.0, 1.0));
    ranking
        .iter()
        .map(move |&(id, score)| (id, (score - offset) / span))
}

/// How hybrid fusion rescales one ranking's scores onto 0..1 (best 1, last 0; all 1 when they
/// tie): `(offset, span)` with `(score − offset) / span`, so a chunk absent from the ranking,
/// scored `offset`, gets 0. `None` for an empty ranking. Stores that fuse the two rankings
/// themselves (the Qdrant export's formula query) take their constants from here.
pub fn rescale_bounds(scores: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (best, worst) = scores
        .into_iter()
        .fold(None, |bounds, score| match bounds {
            None => Some((score, score)),
            Some((best, worst)) => Some((f64::max(best, score), f64::min(worst, score))),
        })?;
    Some(if best > worst {
        (worst, best - worst)
    } else {
        (best - 1.0, 1.0)
    })
}

/// The `depth` best BM25 matches that pass the filter.
fn keyword_ranking(
    store: &Store,
    postings: Option<&PostingsCache>,
    query: &str,
    depth: usize,
    filter: &SearchFilter,
) -> Result<Vec<(i64, f64)>> {
    // Filters apply after ranking, so ask for more when there are filters.
    let filtered = !filter.languages.is_empty() || filter.path.is_some();
    let limit = if filtered { depth * 20 } else { depth };
    Ok(bm25::best_matches(store, postings, query, limit)?
        .into_iter()
        .filter(|(_, language, path, _)| filter.accepts(language, path))
        .map(|(id, _, _, score)| (id, score))
        .take(depth)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_measured_for_hybrid_search_gets_its_own_keyword_weight() {
        for model in [
            "google/embeddinggemma-300m",
            "/root/.cache/quiver/models/embeddinggemma-300m-cbf5a78393b6a033",
        ] {
            assert_eq!(model_keyword_weight(model), 0.25, "{model}");
        }
        for model in [
            "sentence-transformers/all-MiniLM-L6-v2",
            "models/all-MiniLM-L6-v2",
            "/tmp/mine",
        ] {
            assert_eq!(
                model_keyword_weight(model),
                DEFAULT_KEYWORD_WEIGHT,
                "{model}"
            );
        }
    }

    #[test]
    fn priors_put_definitions_before_tests_unless_tests_are_asked_for() {
        let chunk = |path: &str, starts: bool| ChunkRecord {
            path: path.into(),
            signature_hash: starts.then(|| "s".to_string()),
            ..ChunkRecord::default()
        };
        let priors = Priors::for_query("parse a request", SearchMode::Hybrid).expect("hybrid");
        let definition = priors.of(&chunk("src/parse.py", true));
        let statement = priors.of(&chunk("src/parse.py", false));
        let test = priors.of(&chunk("tests/test_parse.py", true));
        let test_statement = priors.of(&chunk("tests/test_parse.py", false));
        assert!(definition > statement, "{definition} {statement}");
        assert!(
            definition > test && statement > test_statement,
            "{test} {test_statement}"
        );
        let asked = Priors::for_query("tests of parse", SearchMode::Hybrid).expect("hybrid");
        assert_eq!(asked.of(&chunk("tests/test_parse.py", true)), definition);
        assert!(Priors::for_query("parse", SearchMode::Keyword).is_none());
    }

    #[test]
    fn hybrid_priors_favour_a_chunk_with_more_code_whatever_its_comments() {
        let chunk = |text: &str| ChunkRecord {
            path: "src/lib.rs".into(),
            text: text.into(),
            ..ChunkRecord::default()
        };
        let priors = Priors::for_query("parse a request", SearchMode::Hybrid).expect("hybrid");
        let declaration = "const MAX: usize = 8;";
        let function = "fn parse(input: &str) -> Request {\n    let mut request = Request::new();\n    request.read(input);\n    request\n}";
        assert!(priors.of(&chunk(function)) > priors.of(&chunk(declaration)));
        let documented =
            format!("/// Parses a request from its text, header by header.\n{declaration}");
        assert_eq!(
            priors.of(&chunk(&documented)),
            priors.of(&chunk(declaration))
        );
        let vector = Priors::for_query("parse a request", SearchMode::Vector).expect("vector");
        assert_eq!(vector.of(&chunk(function)), vector.of(&chunk(declaration)));
    }

    #[test]
    fn fusion_rewards_agreement() {
        let vector = vec![(1, 0.9), (2, 0.8), (3, 0.7), (5, 0.1)];
        let keyword = vec![(3, 10.0), (4, 9.0)];
        let fused = fuse(&vector, &keyword, 1.0);
        assert_eq!(fused[0].0, 3, "found by both rankings");
        assert_eq!(fused[0].2, Some(3));
        assert_eq!(fused[0].3, Some(1));
        assert_eq!(fused[1].0, 1);
        assert_eq!(fused.len(), 5);
    }

    #[test]
    fn the_keyword_side_counts_less_where_the_vector_side_is_sure() {
        // Equal keyword scores: the chunk the vector side is unsure of gains more from them.
        let sure = fused_score(1.0, 1.0, 0.75) - fused_score(1.0, 0.0, 0.75);
        let unsure = fused_score(0.2, 1.0, 0.75) - fused_score(0.2, 0.0, 0.75);
        assert!(unsure > sure && sure > 0.0, "{unsure} {sure}");
        assert_eq!(fused_score(0.4, 1.0, 0.0), 0.4);
        // Found by both still beats found by either alone.
        assert!(
            fused_score(1.0, 1.0, 0.75)
                > fused_score(1.0, 0.0, 0.75).max(fused_score(0.0, 1.0, 0.75))
        );
    }

    #[test]
    fn fusion_keeps_a_clear_vector_lead() {
        // Chunk 1 is far ahead on cosine; chunk 2 is second by a hair in both rankings.
        let vector = vec![(1, 0.9), (2, 0.5), (3, 0.49)];
        let keyword = vec![(2, 10.0), (3, 9.9), (1, 0.0)];
        let fused = fuse(&vector, &keyword, 0.5);
        assert_eq!(fused[0].0, 1);
        assert!((fused[0].1 - 1.0).abs() < 1e-9, "{fused:?}");
        // With the keyword side weighted fully, agreement between the two wins.
        assert_eq!(fuse(&vector, &keyword, 1.0)[0].0, 2);
    }

    /// A store of two-dimensional vectors holding `chunks`, each with its vector (also its
    /// signature vector, when it has one), committed file by file in the order given.
    fn store_of(name: &str, chunks: Vec<(ChunkRecord, [f32; 2])>) -> Store {
        use crate::store::{Batch, FileRecord};
        let dir = std::env::temp_dir().join(format!("quiver-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = crate::store::test_writer(&dir, 2);
        let mut batch = Batch::default();
        for (chunk, vector) in chunks {
            batch
                .vectors
                .push((chunk.embed_hash.clone(), vector.to_vec()));
            if let Some(signature) = &chunk.signature_hash {
                batch.vectors.push((signature.clone(), vector.to_vec()));
            }
            match batch.files.iter_mut().find(|(f, _)| f.path == chunk.path) {
                Some((_, chunks)) => chunks.push(chunk),
                None => batch.files.push((
                    FileRecord {
                        path: chunk.path.clone(),
                        size: 1,
                        mtime_ns: 1,
                        content_hash: chunk.path.clone(),
                    },
                    vec![chunk],
                )),
            }
        }
        store.commit(&batch).unwrap();
        store
    }

    #[test]
    fn a_keyword_side_made_beforehand_ranks_as_search_does_and_only_for_its_request() {
        let texts = [
            (
                "parse.py",
                "def parse_header(message): return header",
                [1.0, 0.0],
            ),
            (
                "send.py",
                "def send_message(socket, message): pass",
                [0.6, 0.8],
            ),
            (
                "copy.py",
                "def copy_buffer(buffer): return buffer",
                [0.0, 1.0],
            ),
        ];
        let chunks = texts.map(|(path, text, vector)| {
            let chunk = ChunkRecord {
                chunk_id: format!("{path}:0"),
                file: path.into(),
                path: path.into(),
                language: "python".into(),
                text: text.into(),
                content_hash: text.into(),
                embed_hash: format!("e-{path}"),
                ..ChunkRecord::default()
            };
            (chunk, vector)
        });
        let store = store_of("side", chunks.into());
        let vectors = VectorIndex::open(&store).unwrap();
        let all = SearchFilter::default();
        let request = |query| SearchRequest {
            query,
            query_vector: Some(&[0.0, 1.0]),
            mode: SearchMode::Hybrid,
            k: 3,
            filter: &all,
            keyword_weight: DEFAULT_KEYWORD_WEIGHT,
            priors: true,
        };
        let ranked = |hits: Vec<SearchHit>| -> Vec<(String, Option<usize>, Option<usize>)> {
            hits.into_iter()
                .map(|h| (h.chunk.path, h.vector_rank, h.keyword_rank))
                .collect()
        };
        let message = request("message");
        let whole = ranked(search_with(&store, Some(&vectors), None, &message).unwrap());
        assert_eq!(whole[0].2, Some(1), "{whole:?}");
        // Made before the query's vector is known, as the CLI makes it while a model loads.
        let without_vector = SearchRequest {
            query_vector: None,
            ..request("message")
        };
        let side = keyword_side(&store, None, &without_vector).unwrap();
        let apart = search_with_keywords(&store, Some(&vectors), side, &message).unwrap();
        assert_eq!(ranked(apart), whole);
        // A side made for another query is made again.
        let side = keyword_side(&store, None, &request("buffer")).unwrap();
        let remade = search_with_keywords(&store, Some(&vectors), side, &message).unwrap();
        assert_eq!(ranked(remade), whole);
    }

    /// A function cut in two is found by its second piece: the hit is its first piece, once;
    /// an enum cut in two is found by its second piece, which stays the hit.
    #[test]
    fn a_function_found_by_a_later_piece_is_returned_from_its_start() {
        // (path, symbol, kind, starts the definition, vector): the query is [0, 1].
        let pieces = [
            ("run.py", "run", "function", true, [1.0, 0.0]),
            ("run.py", "run", "function", false, [0.0, 1.0]),
            ("color.py", "Color", "enum", true, [1.0, 0.0]),
            ("color.py", "Color", "enum", false, [0.1, 0.9]),
        ];
        let chunks = pieces.into_iter().enumerate().map(|(i, piece)| {
            let (path, symbol, kind, starts, vector) = piece;
            let seq = i % 2;
            let text = format!("{symbol} piece {seq}");
            let chunk = ChunkRecord {
                chunk_id: format!("{path}:{seq}"),
                file: path.into(),
                path: path.into(),
                seq,
                start_line: 1 + 10 * seq,
                end_line: 10 + 10 * seq,
                language: "python".into(),
                symbol: Some(symbol.into()),
                kind: Some(kind.into()),
                content_hash: text.clone(),
                embed_hash: format!("e-{path}-{seq}"),
                signature_hash: starts.then(|| format!("s-{path}")),
                text,
                ..ChunkRecord::default()
            };
            (chunk, vector)
        });
        let store = store_of("pieces", chunks.collect());
        let all = SearchFilter::default();
        let request = |priors| SearchRequest {
            query: "piece",
            query_vector: Some(&[0.0, 1.0]),
            mode: SearchMode::Vector,
            k: 4,
            filter: &all,
            keyword_weight: DEFAULT_KEYWORD_WEIGHT,
            priors,
        };
        let found = |priors| -> Vec<String> {
            search(&store, &request(priors))
                .unwrap()
                .into_iter()
                .map(|h| h.chunk.chunk_id)
                .collect()
        };
        assert_eq!(found(false)[..2], ["run.py:1", "color.py:1"]);
        assert_eq!(found(true), ["run.py:0", "color.py:1", "color.py:0"]);
    }

    #[test]
    fn filters_by_language_and_glob() {
        let filter =
            SearchFilter::new(vec!["rust".into()], Some("src/**/*.rs")).expect("valid glob");
        assert!(filter.accepts("rust", "src/a/b.rs"));
        assert!(!filter.accepts("python", "src/a/b.rs"));
        assert!(!filter.accepts("rust", "tests/b.rs"));
        let bad = SearchFilter::new(vec![], Some("a[")).expect_err("refused");
        assert!(
            matches!(&bad, IndexError::BadGlob { glob, .. } if glob == "a["),
            "{bad:?}"
        );
        assert!(bad.to_string().contains("bad --path glob \"a[\""), "{bad}");
    }
}
