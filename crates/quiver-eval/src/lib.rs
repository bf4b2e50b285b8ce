//! Quiver's retrieval-quality evaluation: index a dataset's corpus with each system under test,
//! search every query through the real index and search code, and score where the documented
//! definition came back.
//!
//! What it does: loads a [`Dataset`]; for each [`System`] (a chunking, a context header choice,
//! search modes) builds or updates an index under `DATASET/indexes/`, embeds the queries once,
//! and reports [`Metrics`] overall and per language with the indexing throughput.
//! What it does not: build datasets (`bench/eval/build_dataset.py` does) or print (the CLI does).
//!
//! Entry point: [`evaluate`]. An [`ExternalSearch`] (an exported store) is scored on the same
//! index, so the difference from Quiver's own search is measured.

mod dataset;
mod metrics;

use dataset::package_of;
pub use dataset::{Dataset, Query, DEFAULT_SPLIT};
pub use metrics::{Metrics, Outranked};

use metrics::Ahead;
use quiver_embed::{Embedder, Quantization};
use quiver_index::adapter::{fit_pairs, mine_pairs, DocPair, QueryAdapter};
use quiver_index::{
    search_with, settings_for, ChunkRecord, Chunking, IndexOptions, IndexProgress, Input,
    SearchFilter, SearchMode, SearchRequest, Store, VectorIndex,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0} is not a dataset: it has no corpus/ folder (build one with bench/eval/build_dataset.py)")]
    NotADataset(PathBuf),
    #[error("{dir} has no splits (its queries name none), so there is no split {split} to score")]
    NoSplits { dir: PathBuf, split: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    BadQuery {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Index(#[from] quiver_index::IndexError),
    #[error(transparent)]
    Embed(#[from] quiver_embed::EmbedError),
    #[error("{name}: {source}")]
    External {
        name: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A search outside Quiver over a copy of a system's index (an exported store), scored on the
/// same queries.
pub trait ExternalSearch {
    /// How the report names it.
    fn name(&self) -> String;
    /// Brings the copy up to `store` (an export), before any query.
    fn prepare(&mut self, store: &Store) -> std::result::Result<(), BoxError>;
    /// The chunk ids of the best `k` chunks for a query, best first.
    fn search(
        &mut self,
        query: &str,
        vector: &[f32],
        mode: SearchMode,
        keyword_weight: f64,
        k: usize,
    ) -> std::result::Result<Vec<String>, BoxError>;
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Result<T> = std::result::Result<T, EvalError>;

/// One way of indexing and searching, to be scored.
#[derive(Debug, Clone)]
pub struct System {
    pub name: String,
    pub chunking: Chunking,
    pub context_header: bool,
    pub chunk_tokens: Option<usize>,
    /// Fit the query adapter ([`quiver_index::adapter`]) as `quiver index` does.
    pub adapt: bool,
    pub modes: Vec<SearchMode>,
    /// Keyword weights to score hybrid search with (one row each); none: the index's own.
    pub keyword_weights: Vec<f64>,
    /// Score the [`ExternalSearch`]es on this system's index too.
    pub external: bool,
}

/// How long building a system's index took, when this or an earlier run built it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexingFigures {
    pub files: usize,
    pub chunks: usize,
    pub seconds: f64,
    pub chunks_per_second: f64,
    pub files_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: String,
    pub overall: Metrics,
    pub by_language: BTreeMap<String, Metrics>,
    /// How often a test, or a chunk that only names the symbol, came before the definition.
    pub outranked: Outranked,
    /// Where each query's definition came back, in the dataset's order (for failure analysis).
    #[serde(skip)]
    pub outcomes: Vec<QueryOutcome>,
}

/// One query's result: the rank of the first hit, and what came first.
#[derive(Debug, Clone, Serialize)]
pub struct QueryOutcome {
    pub id: String,
    pub rank: Option<usize>,
    /// `path:start-end` of the top result, when there was one.
    pub top: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemReport {
    pub name: String,
    pub chunk_tokens: usize,
    pub context_header: bool,
    pub indexing: Option<IndexingFigures>,
    /// The query adapter's trial fit, when this run fitted one (`quiver_index::adapter`).
    pub adapter_held_out: Option<quiver_index::adapter::HeldOut>,
    /// With [`Scope::Package`]: how many packages got an adapter of their own.
    pub package_adapters: Option<PackageAdapterCounts>,
    pub modes: Vec<ModeReport>,
}

const BUILD_FIGURES: &str = "build-figures.json";
const DEPTH: usize = 10;

/// Packages, with [`Scope::Package`]: those whose own pairs gave an adapter, those with enough
/// pairs to fit one ([`quiver_index::adapter::MIN_PAIRS`]), and those with any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PackageAdapterCounts {
    pub kept: usize,
    pub enough_pairs: usize,
    pub with_pairs: usize,
}

/// What each query is searched among.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// The split's whole corpus: every package's chunks compete (the benchmark's rule).
    #[default]
    Corpus,
    /// The package the query was taken from ([`Query::package`]), with a query adapter fitted
    /// on that package's own pairs, as a user searches the repository they work in.
    Package,
}

impl Scope {
    /// The filter a search for `query` runs with.
    fn filter(self, query: &Query) -> Result<SearchFilter> {
        match (self, query.package()) {
            (Scope::Package, Some(package)) => {
                let glob = format!("{}/**", globset::escape(package));
                Ok(SearchFilter::new(Vec::new(), Some(&glob))?)
            }
            _ => Ok(SearchFilter::default()),
        }
    }
}

/// How [`evaluate`] searches.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalOptions<'a> {
    /// Another of the model's prompts for the queries (as `quiver index --query-prompt-name`
    /// records one).
    pub query_prompt: Option<&'a str>,
    pub scope: Scope,
}

/// Scores every system on the dataset with the model `model_id` (already loaded as `embedder`).
/// [`ExternalSearch`]es search the whole corpus whatever the scope.
pub fn evaluate(
    dataset: &Dataset,
    embedder: &Embedder,
    model_id: &str,
    systems: &[System],
    options: &EvalOptions<'_>,
    externals: &mut [Box<dyn ExternalSearch>],
    progress: &dyn IndexProgress,
) -> Result<Vec<SystemReport>> {
    // Queries are embedded by the rule of the indexes the systems build (the same model and
    // width for all), as `quiver search` would embed them.
    let rule = settings_for(model_id, embedder, None, None, options.query_prompt, None)?;
    let texts: Vec<&str> = dataset.queries.iter().map(|q| q.query.as_str()).collect();
    let query_vectors = embedder.embed(&texts, &rule.query_options())?;
    let mut reports = Vec::new();
    for system in systems {
        let (report, store) = evaluate_system(
            dataset,
            embedder,
            model_id,
            system,
            &query_vectors,
            options.scope,
            progress,
        )?;
        let mut scored = Vec::new();
        let externals = if system.external {
            &mut externals[..]
        } else {
            &mut []
        };
        for external in externals.iter_mut() {
            let name = external.name();
            let failed = |source| EvalError::External {
                name: name.clone(),
                source,
            };
            external.prepare(&store).map_err(failed)?;
            let recorded = store.indexed_settings()?.keyword_weight;
            let modes = mode_runs(system, recorded)
                .into_iter()
                .map(|run| {
                    score_mode(dataset, &run.name, &query_vectors, |query, vector| {
                        let ids = external
                            .search(&query.query, vector, run.mode, run.keyword_weight, DEPTH)
                            .map_err(failed)?;
                        let chunks = ids
                            .iter()
                            .map(|id| store.chunk_by_chunk_id(id))
                            .collect::<quiver_index::Result<Vec<_>>>()?;
                        Ok(chunks.into_iter().flatten().collect())
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            scored.push(SystemReport {
                name: format!("{name} <- {}", report.name),
                indexing: None,
                modes,
                ..report.clone()
            });
        }
        reports.push(report);
        reports.extend(scored);
    }
    Ok(reports)
}

/// One row of a system's report: a search mode, with the keyword weight of its hybrid search.
struct Run {
    mode: SearchMode,
    keyword_weight: f64,
    /// `hybrid@W` where the weight is not the index's own.
    name: String,
}

/// The rows a system is scored with: one per mode, and in hybrid search one per keyword weight
/// asked for, else one with the weight the index records (the one every front end searches
/// with).
fn mode_runs(system: &System, recorded: f64) -> Vec<Run> {
    let mut runs = Vec::new();
    for &mode in &system.modes {
        let weights = match mode {
            SearchMode::Hybrid if !system.keyword_weights.is_empty() => &system.keyword_weights[..],
            _ => &[recorded][..],
        };
        runs.extend(weights.iter().map(|&keyword_weight| Run {
            mode,
            keyword_weight,
            name: match mode {
                SearchMode::Hybrid if keyword_weight != recorded => {
                    format!("hybrid@{keyword_weight}")
                }
                _ => mode_name(mode).into(),
            },
        }));
    }
    runs
}

fn evaluate_system(
    dataset: &Dataset,
    embedder: &Embedder,
    model_id: &str,
    system: &System,
    query_vectors: &[Vec<f32>],
    scope: Scope,
    progress: &dyn IndexProgress,
) -> Result<(SystemReport, Store)> {
    let index_dir = dataset
        .indexes()
        .join(sanitize(&model_label(model_id, embedder.quantization())))
        .join(sanitize(&system.name));
    let mut store = Store::open_writer(&index_dir)?;
    let options = IndexOptions {
        id_prefix: "eval".into(),
        chunk_tokens: system.chunk_tokens,
        chunking: system.chunking,
        context_header: system.context_header,
        adapt: system.adapt,
        reembed: true,
        ..IndexOptions::new(
            Input::Tree {
                root: dataset.corpus.clone(),
            },
            model_id.into(),
            &index_dir,
        )
    };
    let report = quiver_index::index(&mut store, embedder, &options, progress)?;
    let figures_path = index_dir.join(BUILD_FIGURES);
    let indexing = if report.chunks_embedded + report.signatures_embedded > 0 {
        let figures = IndexingFigures {
            files: report.files_indexed,
            chunks: report.chunks_written,
            seconds: report.seconds,
            chunks_per_second: report.chunks_written as f64 / report.seconds.max(1e-9),
            files_per_second: report.files_indexed as f64 / report.seconds.max(1e-9),
        };
        let json = serde_json::to_string_pretty(&figures).unwrap_or_default();
        std::fs::write(&figures_path, json).map_err(|source| EvalError::Io {
            path: figures_path.clone(),
            source,
        })?;
        Some(figures)
    } else {
        std::fs::read_to_string(&figures_path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
    };
    // Searched within its package, a query meets the adapter fitted on that package's own
    // doc comments, as in an index of that repository alone.
    let package_adapters = match scope {
        Scope::Package if system.adapt => Some(fit_package_adapters(&store, embedder, progress)?),
        _ => None,
    };
    let recorded = store.indexed_settings()?.keyword_weight;
    let score_pass = |vectors: &VectorIndex,
                      adapters: Option<&PackageAdapters>,
                      suffix: &str|
     -> Result<Vec<ModeReport>> {
        let mut modes = Vec::new();
        for run in mode_runs(system, recorded) {
            if run.mode == SearchMode::Keyword && !suffix.is_empty() {
                continue; // keyword search uses no vectors
            }
            let mut report = score_mode(dataset, &run.name, query_vectors, |query, vector| {
                let filter = scope.filter(query)?;
                let adapter = adapters
                    .zip(query.package())
                    .and_then(|(adapters, package)| adapters.fitted.get(package));
                let adapted = adapter.map(|a| a.apply(vector));
                let vector = adapted.as_deref().unwrap_or(vector);
                let hits = search_with(
                    &store,
                    Some(vectors),
                    None,
                    &SearchRequest {
                        query: &query.query,
                        query_vector: Some(vector),
                        mode: run.mode,
                        k: DEPTH,
                        filter: &filter,
                        keyword_weight: run.keyword_weight,
                        priors: true,
                    },
                )?;
                Ok(hits.into_iter().map(|hit| hit.chunk).collect())
            })?;
            report.mode.push_str(suffix);
            modes.push(report);
        }
        Ok(modes)
    };
    let vectors = VectorIndex::open(&store)?;
    // The vectors an adapted pass is scored against again without its adapter.
    let (mut modes, plain) = match &package_adapters {
        // Package adapters are applied to each query vector, over the vectors without the
        // index's own adapter.
        Some(adapters) => {
            let plain = vectors.without_adapter();
            (score_pass(&plain, Some(adapters), "")?, Some(plain))
        }
        None => {
            let modes = score_pass(&vectors, None, "")?;
            let plain = vectors
                .adapter()
                .is_some()
                .then(|| vectors.without_adapter());
            (modes, plain)
        }
    };
    // With an adapter, every mode is scored without it too, on the same vectors: what it adds.
    if let Some(plain) = plain {
        modes.extend(score_pass(&plain, None, ", no adapter")?);
    }
    let report = SystemReport {
        name: system.name.clone(),
        chunk_tokens: report.chunk_tokens,
        context_header: system.context_header,
        indexing,
        adapter_held_out: report.adapter_held_out,
        package_adapters: package_adapters.map(|a| PackageAdapterCounts {
            kept: a.fitted.len(),
            enough_pairs: a.enough_pairs,
            with_pairs: a.with_pairs,
        }),
        modes,
    };
    Ok((report, store))
}

/// Query adapters fitted on each package's own pairs, where one is kept.
#[derive(Default)]
struct PackageAdapters {
    fitted: BTreeMap<String, QueryAdapter>,
    /// Packages with enough pairs to fit on, and with any pair.
    enough_pairs: usize,
    with_pairs: usize,
}

fn fit_package_adapters(
    store: &Store,
    embedder: &Embedder,
    progress: &dyn IndexProgress,
) -> Result<PackageAdapters> {
    let Some(settings) = store.settings()? else {
        return Ok(PackageAdapters::default());
    };
    let mut by_package: BTreeMap<String, Vec<DocPair>> = BTreeMap::new();
    for pair in mine_pairs(store)? {
        if let Some(package) = package_of(&pair.path) {
            by_package
                .entry(package.to_string())
                .or_default()
                .push(pair);
        }
    }
    let mut adapters = PackageAdapters {
        with_pairs: by_package.len(),
        ..PackageAdapters::default()
    };
    for (package, pairs) in by_package {
        // Checked before fit_pairs embeds the package's comments, which it would do for nothing.
        if pairs.len() < quiver_index::adapter::MIN_PAIRS {
            continue;
        }
        adapters.enough_pairs += 1;
        if let (Some(adapter), _) = fit_pairs(store, embedder, &settings, &pairs, progress)? {
            adapters.fitted.insert(package, adapter);
        }
    }
    Ok(adapters)
}

/// Scores one mode: `rank` gives each query's best chunks, best first.
fn score_mode(
    dataset: &Dataset,
    name: &str,
    query_vectors: &[Vec<f32>],
    mut rank: impl FnMut(&Query, &[f32]) -> Result<Vec<ChunkRecord>>,
) -> Result<ModeReport> {
    let mut ranks: Vec<(String, Option<usize>)> = Vec::with_capacity(dataset.queries.len());
    let mut outcomes = Vec::with_capacity(dataset.queries.len());
    let mut ahead = Vec::with_capacity(dataset.queries.len());
    for (query, vector) in dataset.queries.iter().zip(query_vectors) {
        let chunks = rank(query, vector)?;
        let rank = chunks
            .iter()
            .position(|chunk| {
                chunk.path == query.path
                    && chunk.start_line <= query.line
                    && query.line <= chunk.end_line
            })
            .map(|i| i + 1);
        ahead.push(ahead_of_definition(
            query,
            &chunks[..rank.map_or(chunks.len(), |r| r - 1)],
        ));
        outcomes.push(QueryOutcome {
            id: query.id.clone(),
            rank,
            top: chunks
                .first()
                .map(|c| format!("{}:{}-{}", c.path, c.start_line, c.end_line)),
        });
        ranks.push((query.language.clone(), rank));
    }
    let all: Vec<Option<usize>> = ranks.iter().map(|(_, r)| *r).collect();
    let mut by_language: BTreeMap<String, Vec<Option<usize>>> = BTreeMap::new();
    for (language, rank) in ranks {
        by_language.entry(language).or_default().push(rank);
    }
    Ok(ModeReport {
        mode: name.to_string(),
        overall: Metrics::from_ranks(&all),
        outranked: Outranked::from_queries(&ahead),
        by_language: by_language
            .into_iter()
            .map(|(language, r)| (language, Metrics::from_ranks(&r)))
            .collect(),
        outcomes,
    })
}

/// What the chunks ranked above a query's definition were.
fn ahead_of_definition(query: &Query, before: &[ChunkRecord]) -> Ahead {
    let symbol = query.symbol.as_deref().filter(|s| s.len() > 2);
    Ahead {
        test: before
            .iter()
            .any(|chunk| quiver_chunk::is_test_path(&chunk.path)),
        mention: symbol.is_some_and(|symbol| {
            before
                .iter()
                .any(|chunk| names_identifier(&chunk.text, symbol))
        }),
    }
}

/// Whether `text` holds `name` as a whole identifier (not inside a longer one).
fn names_identifier(text: &str, name: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

pub fn mode_name(mode: SearchMode) -> &'static str {
    match mode {
        SearchMode::Vector => "vector",
        SearchMode::Keyword => "bm25",
        SearchMode::Hybrid => "hybrid",
    }
}

/// The model as a report and the index folders name it: int8 or bf16 vectors are not f32
/// ones. The indexes record the model id alone, so that `quiver search` and the other front
/// ends open them with the model it names.
pub fn model_label(model_id: &str, quantization: Quantization) -> String {
    match quantization {
        Quantization::None => model_id.to_string(),
        narrow => format!("{model_id} ({})", narrow.name()),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::names_identifier;

    #[test]
    fn a_name_counts_only_as_a_whole_identifier() {
        assert!(names_identifier("let x = parse(input);", "parse"));
        assert!(names_identifier("parse", "parse"));
        assert!(!names_identifier("let x = parse_all(input);", "parse"));
        assert!(!names_identifier("reparse()", "parse"));
        assert!(names_identifier("use crate::{parse, x}", "parse"));
    }
}
