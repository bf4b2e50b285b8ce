use crate::location;
use crate::model::{load_embedder, load_reranker};
use anyhow::{bail, Context};
use clap::Args;
use quiver_embed::Device;
use quiver_engine::{BatchSettings, RerankRequest, Reranking};
use quiver_index::{
    keyword_side, pack, rerank_hits, search_with, search_with_keywords, ModelTokens, SearchFilter,
    SearchHit, SearchMode, SearchRequest, Store, VectorIndex, PACK_CANDIDATES, RERANK_CANDIDATES,
};
use std::path::PathBuf;

#[derive(Args)]
pub struct SearchArgs {
    /// What to look for, in words or code.
    query: String,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Only chunks in this language (repeatable): python, rust, javascript, typescript, go, ...
    #[arg(long = "lang", value_name = "L")]
    languages: Vec<String>,
    /// Only chunks whose path matches this glob (e.g. 'src/**/*.rs').
    #[arg(long, value_name = "GLOB")]
    path: Option<String>,
    /// vector, keyword (BM25) or hybrid (both, fused by relative score).
    #[arg(long, default_value = "hybrid")]
    mode: SearchMode,
    /// Index directory (default: .quiver/ here or in a parent directory).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Embed the query with this named prompt of the model instead of the one the index
    /// records (see `quiver index --query-prompt-name`).
    #[arg(long, value_name = "NAME")]
    prompt_name: Option<String>,
    /// Return whole definitions instead of chunks, best first and without repeats (a method
    /// inside its class's hit, overlapping hits merged), until N tokens of the model's
    /// tokenizer are used; in place of -k.
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,
    /// Rerank the search's top hits with this cross-encoder (a sequence-classification model
    /// with one label, e.g. BAAI/bge-reranker-base): slower, usually more precise.
    #[arg(long, value_name = "MODEL")]
    rerank: Option<String>,
    /// Score by the rankings alone, as an exported store does: no reranking of definitions
    /// before tests and callers, and each piece of a long function a result of its own
    /// (docs/indexing.md, Search).
    #[arg(long)]
    no_priors: bool,
    /// Hybrid: weight of the keyword ranking against the vector ranking's 1 (default: the one
    /// the index records, see `quiver index --keyword-weight`).
    #[arg(long, value_name = "W", value_parser = super::keyword_weight)]
    keyword_weight: Option<f64>,
    /// With --rerank: how many of the search's hits the reranker reads (at least -k).
    #[arg(long, value_name = "N", default_value_t = RERANK_CANDIDATES, requires = "rerank")]
    rerank_candidates: usize,
    /// Print results as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, env = "QUIVER_DEVICE", default_value = "cpu", help = super::DEVICE_HELP)]
    device: Device,
}

/// How the reranker batches one search's candidates.
const RERANK_BATCHING: BatchSettings = BatchSettings {
    max_batch_tokens: 16384,
    max_batch_sequences: 64,
    max_queued_requests: 1,
    max_wait: std::time::Duration::ZERO,
};

pub fn run(args: SearchArgs) -> anyhow::Result<()> {
    let index_dir = location::find(args.index.clone())?;
    let store = Store::open(&index_dir)?;
    let settings = store.indexed_settings()?;
    let filter = SearchFilter::from_names(&args.languages, args.path.as_deref())
        .context("--lang / --path")?;
    if args.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    if args.rerank.is_some() && args.rerank_candidates == 0 {
        bail!("--rerank-candidates must be at least 1");
    }
    let reranking = args
        .rerank
        .as_deref()
        .map(|spec| load_reranker(spec, args.device))
        .transpose()?
        .map(|reranker| Reranking::new(std::sync::Arc::new(reranker), RERANK_BATCHING));
    // The vector files (and the IVF of a large index) open while the model loads: on a
    // million chunks each takes about a tenth of a second.
    let vectors = (args.mode != SearchMode::Keyword).then(|| {
        let dir = index_dir.clone();
        std::thread::spawn(move || Store::open(&dir).and_then(|store| VectorIndex::open(&store)))
    });
    let request = SearchRequest {
        query: &args.query,
        query_vector: None,
        mode: args.mode,
        k: match (&reranking, args.max_tokens) {
            (_, Some(_)) => PACK_CANDIDATES.max(args.rerank_candidates),
            (Some(_), None) => args.rerank_candidates.max(args.k),
            (None, None) => args.k,
        },
        filter: &filter,
        keyword_weight: args.keyword_weight.unwrap_or(settings.keyword_weight),
        priors: !args.no_priors,
    };
    // The keyword ranking is made while the model loads, from a connection of its own: at a
    // million chunks each takes a tenth of a second.
    let (embedder, keywords) = std::thread::scope(|scope| {
        let keywords = (args.mode == SearchMode::Hybrid)
            .then(|| scope.spawn(|| keyword_side(&Store::open(&index_dir)?, None, &request)));
        // Packing counts tokens with the model's tokenizer, so it needs the model in any mode.
        let embedder = match (args.mode, args.max_tokens) {
            (SearchMode::Keyword, None) => Ok(None),
            _ => load_embedder(&settings.model, args.device, settings.quantization).map(Some),
        };
        let keywords = keywords.map(|thread| {
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        (embedder, keywords)
    });
    let embedder = embedder?;
    let query_vector = match (args.mode, &embedder) {
        (SearchMode::Keyword, _) | (_, None) => None,
        (_, Some(embedder)) => {
            let mut options = settings.query_options();
            if args.prompt_name.is_some() {
                options.prompt_name.clone_from(&args.prompt_name);
            }
            embedder.embed(&[args.query.as_str()], &options)?.pop()
        }
    };
    let vectors = match vectors.map(|opening| opening.join()) {
        None => None,
        Some(Ok(opened)) => Some(opened?),
        Some(Err(_)) => bail!("opening the vectors of {} failed", index_dir.display()),
    };
    let request = SearchRequest {
        query_vector: query_vector.as_deref(),
        ..request
    };
    let hits = match keywords {
        Some(keywords) => search_with_keywords(&store, vectors.as_ref(), keywords?, &request)?,
        None => search_with(&store, vectors.as_ref(), None, &request)?,
    };
    let hits = match &reranking {
        None => hits,
        Some(reranking) => {
            // Packing reads the reranked candidates; otherwise at least -k are read, so that
            // -k hits come back (as `/search` with `rerank` does).
            let (read, keep) = match args.max_tokens {
                Some(_) => (args.rerank_candidates, args.rerank_candidates),
                None => (args.rerank_candidates.max(args.k), args.k),
            };
            let candidates: Vec<SearchHit> = hits.into_iter().take(read).collect();
            let texts: Vec<&str> = candidates.iter().map(|h| h.chunk.text.as_str()).collect();
            let scores = reranking
                .score_blocking(&args.query, &texts, RerankRequest::SEARCH)
                .context("reranking")?
                .probabilities();
            rerank_hits(candidates, keep, &scores)
        }
    };
    if let (Some(max_tokens), Some(embedder)) = (args.max_tokens, &embedder) {
        let packed = pack(&store, &hits, max_tokens, &ModelTokens(embedder))?;
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&packed)?);
            return Ok(());
        }
        for entry in &packed.definitions {
            let definition = &entry.definition;
            outln!(
                "{}:{}-{}  {}  ({:.4}, {} tokens)",
                definition.path,
                definition.start_line,
                definition.end_line,
                definition.label(),
                entry.score,
                entry.tokens
            );
            for line in definition.text.lines() {
                outln!("    {line}");
            }
            outln!();
        }
        outln!(
            "{} definitions, {} of {max_tokens} tokens",
            packed.definitions.len(),
            packed.tokens
        );
        return Ok(());
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&hits)?);
    } else if hits.is_empty() {
        outln!("no results");
    } else {
        for hit in &hits {
            print_hit(hit)?;
        }
    }
    Ok(())
}

fn print_hit(hit: &SearchHit) -> std::io::Result<()> {
    let chunk = &hit.chunk;
    let mut title = format!("{}:{}-{}", chunk.path, chunk.start_line, chunk.end_line);
    if let Some(symbol) = &chunk.symbol {
        title.push_str("  ");
        title.push_str(&quiver_chunk::symbol_label(
            chunk.kind.as_deref(),
            chunk.parent.as_deref(),
            symbol,
        ));
    }
    outln!("{title}  ({:.4})", hit.score);
    for line in chunk.text.lines().filter(|l| !l.trim().is_empty()).take(3) {
        let line: String = line.chars().take(100).collect();
        outln!("    {line}");
    }
    outln!();
    Ok(())
}
