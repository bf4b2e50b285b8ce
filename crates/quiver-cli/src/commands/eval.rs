use crate::model::{load_embedder_with, QuantizeArg};
use crate::progress::IndexBar;
use anyhow::Context;
use clap::Args;
use quiver_embed::{Device, EmbedderOptions, DEFAULT_MODEL};
use quiver_eval::{
    evaluate, BoxError, Dataset, EvalOptions, ExternalSearch, Metrics, Scope, System, SystemReport,
};
use quiver_export::{export_index, StoreClient, StoreQuery, Target, TargetOptions};
use quiver_index::{Chunking, SearchMode, Store};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// Dataset folder: corpus/ and queries.jsonl (bench/eval/build_dataset.py makes one).
    dataset: PathBuf,
    #[arg(long, short, env = "QUIVER_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// The split to score, in a dataset with splits: choices are made on dev, results reported
    /// on test (default: test).
    #[arg(long, value_name = "dev|test")]
    split: Option<String>,
    /// Search modes to score Quiver with (repeatable; default: vector, bm25 and hybrid).
    #[arg(long = "mode", value_name = "vector|bm25|hybrid")]
    modes: Vec<SearchMode>,
    /// Keyword weights to score hybrid search with (repeatable; the vector ranking weighs 1;
    /// default: the index's, as `quiver index` records it).
    #[arg(long = "keyword-weight", value_name = "W", value_parser = super::keyword_weight)]
    keyword_weights: Vec<f64>,
    /// Chunk token budget for Quiver's chunks (default: as `quiver index`).
    #[arg(long)]
    chunk_tokens: Option<usize>,
    /// Pack small neighbouring definitions into one chunk (default: one definition per chunk).
    #[arg(long)]
    pack_definitions: bool,
    /// One definition per chunk, but a chunk under this many tokens takes its next definition
    /// too (a run of prototypes shares one chunk).
    #[arg(long, value_name = "TOKENS", conflicts_with = "pack_definitions")]
    definition_floor: Option<usize>,
    /// Embed Quiver's chunks without the context header.
    #[arg(long)]
    no_header: bool,
    /// Index without the query adapter (by default Quiver's index fits one, and every mode is
    /// scored with it and without it).
    #[arg(long)]
    no_adapt: bool,
    /// Lines per window of the baseline (fixed windows, no header, vector search).
    #[arg(long, default_value_t = 40)]
    baseline_lines: usize,
    /// Score Quiver only.
    #[arg(long)]
    no_baseline: bool,
    /// Embed the queries with this named prompt of the model instead of its `query` prompt
    /// (as `quiver index --query-prompt-name` does); the indexes are reused.
    #[arg(long, value_name = "NAME")]
    query_prompt_name: Option<String>,
    #[arg(long, env = "QUIVER_DEVICE", default_value = "cpu", help = super::DEVICE_HELP)]
    device: Device,
    /// Number format of the dense layers: none (f32), int8 or bf16 (default: bf16 where the
    /// CPU multiplies bf16 natively (AMX, AVX-512 BF16), else none; each format's indexes are
    /// kept apart).
    #[arg(long, value_enum)]
    quantize: Option<QuantizeArg>,
    /// What each query is searched among: the split's whole corpus (the benchmark's rule), or
    /// only the package it was taken from, with a query adapter fitted on that package's own
    /// doc comments, as a user searches their own repository.
    #[arg(long, value_enum, default_value = "corpus", conflicts_with = "store")]
    scope: ScopeArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write each query's outcome (system, mode, query id, rank of the first hit, top result)
    /// to this JSONL file, to see which queries fail.
    #[arg(long, value_name = "FILE")]
    ranks: Option<PathBuf>,
    /// Also export Quiver's index to this store (`qdrant URL` or `postgres URL`) and score the
    /// store's own search (docs/exports.md) on the same queries (repeatable).
    #[arg(long, num_args = 2, value_names = ["FORMAT", "URL"], action = clap::ArgAction::Append)]
    store: Vec<String>,
    /// The Qdrant collection `--store qdrant` exports to.
    #[arg(long, default_value = "quiver_eval")]
    collection: String,
    /// The PostgreSQL table `--store postgres` exports to.
    #[arg(long, default_value = "quiver_eval")]
    table: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScopeArg {
    Corpus,
    Package,
}

/// An exported store, scored by `quiver eval --store`.
struct StoreUnderTest {
    name: String,
    target: Target,
    client: Option<StoreClient>,
}

impl ExternalSearch for StoreUnderTest {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn prepare(&mut self, store: &Store) -> Result<(), BoxError> {
        export_index(store, &self.target, &|_, _| {})?;
        self.client = Some(StoreClient::connect(&self.target)?);
        Ok(())
    }

    fn search(
        &mut self,
        query: &str,
        vector: &[f32],
        mode: SearchMode,
        keyword_weight: f64,
        k: usize,
    ) -> Result<Vec<String>, BoxError> {
        let client = self.client.as_mut().ok_or("searched before the export")?;
        let hits = client.search(&StoreQuery {
            text: query,
            vector,
            mode,
            k,
            keyword_weight,
        })?;
        Ok(hits.into_iter().map(|hit| hit.chunk_id).collect())
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let dataset = Dataset::load(&args.dataset, args.split.as_deref())?;
    let mut stores: Vec<Box<dyn ExternalSearch>> = Vec::new();
    for pair in args.store.chunks(2) {
        let [format, url] = pair else {
            anyhow::bail!("--store takes a format and a URL: --store qdrant http://localhost:6333");
        };
        let options = TargetOptions {
            collection: Some(args.collection.clone()),
            table: Some(args.table.clone()),
            ..TargetOptions::default()
        };
        let target = Target::parse(format, url, options).with_context(|| "--store")?;
        let name = match &target {
            Target::Qdrant { collection, .. } => format!("qdrant:{collection}"),
            Target::Postgres { table, .. } => format!("postgres:{table}"),
            _ => anyhow::bail!("--store {format}: use qdrant or postgres"),
        };
        stores.push(Box::new(StoreUnderTest {
            name,
            target,
            client: None,
        }));
    }
    let quantization = args.quantize.map(Into::into).unwrap_or_default();
    let embedder = load_embedder_with(
        &args.model,
        &EmbedderOptions {
            device: args.device,
            quantization,
            ..EmbedderOptions::default()
        },
    )?;
    let model_label = quiver_eval::model_label(&args.model, quantization);
    let modes = if args.modes.is_empty() {
        vec![SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid]
    } else {
        args.modes.clone()
    };
    let header = if args.no_header {
        "no header"
    } else {
        "header"
    };
    let budget = args
        .chunk_tokens
        .map_or("default budget".to_string(), |t| format!("{t} tokens"));
    let (chunking, granularity) = match (args.pack_definitions, args.definition_floor) {
        (true, _) => (Chunking::SyntaxPacked, "packed, ".to_string()),
        (false, Some(floor)) => (Chunking::SyntaxFloor(floor), format!("floor {floor}, ")),
        (false, None) => (Chunking::Syntax, String::new()),
    };
    let mut systems = vec![System {
        name: format!("quiver (syntax, {granularity}{header}, {budget})"),
        chunking,
        context_header: !args.no_header,
        chunk_tokens: args.chunk_tokens,
        adapt: !args.no_adapt,
        modes,
        keyword_weights: args.keyword_weights.clone(),
        external: true,
    }];
    if !args.no_baseline {
        systems.push(System {
            name: format!("baseline ({}-line windows)", args.baseline_lines),
            chunking: Chunking::FixedLines(args.baseline_lines),
            context_header: false,
            chunk_tokens: None,
            adapt: false,
            modes: vec![SearchMode::Vector],
            keyword_weights: Vec::new(),
            external: false,
        });
    }
    let progress = IndexBar::new();
    let reports = evaluate(
        &dataset,
        &embedder,
        &args.model,
        &systems,
        &EvalOptions {
            query_prompt: args.query_prompt_name.as_deref(),
            scope: match args.scope {
                ScopeArg::Corpus => Scope::Corpus,
                ScopeArg::Package => Scope::Package,
            },
        },
        &mut stores,
        &progress,
    )
    .with_context(|| format!("evaluating on {}", args.dataset.display()))?;
    progress.finish();
    if let Some(path) = &args.ranks {
        write_ranks(path, &reports).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        let model = match &args.query_prompt_name {
            Some(prompt) => format!("{model_label}, queries with its {prompt} prompt"),
            None => model_label.clone(),
        };
        let queries = match &dataset.split {
            Some(split) => format!("{} queries of the {split} split", dataset.queries.len()),
            None => format!("{} queries", dataset.queries.len()),
        };
        let queries = match args.scope {
            ScopeArg::Corpus => queries,
            ScopeArg::Package => format!("{queries}, each searched within its package"),
        };
        print_table(&reports, &queries, &model)?;
    }
    Ok(())
}

fn write_ranks(path: &std::path::Path, reports: &[SystemReport]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = quiver_export::output::Output::create(path)?;
    for report in reports {
        for mode in &report.modes {
            for outcome in &mode.outcomes {
                let line = serde_json::json!({
                    "system": report.name,
                    "mode": mode.mode,
                    "id": outcome.id,
                    "rank": outcome.rank,
                    "top": outcome.top,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    out.finish()?;
    Ok(())
}

fn print_table(reports: &[SystemReport], queries: &str, model: &str) -> std::io::Result<()> {
    outln!("{queries}, model {model}; a hit is a result holding the definition's first line\n");
    outln!(
        "{:<44} {:<22} {:<11} {:>5} {:>6} {:>6} {:>6} {:>7} {:>8}",
        "system",
        "mode",
        "language",
        "n",
        "R@1",
        "R@5",
        "R@10",
        "MRR@10",
        "nDCG@10"
    );
    for report in reports {
        for mode in &report.modes {
            print_row(&report.name, &mode.mode, "all", &mode.overall)?;
            for (language, metrics) in &mode.by_language {
                print_row("", "", language, metrics)?;
            }
        }
    }
    outln!("\nbefore the definition (share of queries with such a result ranked above it):");
    for report in reports {
        for mode in &report.modes {
            outln!(
                "  {} {}: a test file {:.1} %, a chunk naming the symbol without defining it {:.1} %",
                report.name,
                mode.mode,
                100.0 * mode.outranked.by_test,
                100.0 * mode.outranked.by_mention
            );
        }
    }
    outln!();
    for report in reports {
        match &report.indexing {
            Some(f) => outln!(
                "indexing {}: {} files, {} chunks in {:.1} s ({:.1} files/s, {:.1} chunks/s), budget {} tokens",
                report.name, f.files, f.chunks, f.seconds, f.files_per_second, f.chunks_per_second, report.chunk_tokens
            ),
            None => outln!("indexing {}: built by an earlier run with no figures kept", report.name),
        }
        if let Some(counts) = report.package_adapters {
            outln!(
                "query adapters of {}: fitted on each package's own doc comments, kept for {} of {} packages ({} had the {} pairs to fit on)",
                report.name,
                counts.kept,
                counts.with_pairs,
                counts.enough_pairs,
                quiver_index::adapter::MIN_PAIRS
            );
        }
        if let Some(t) = report.adapter_held_out {
            outln!(
                "query adapter of {}: {} (held-out doc comments find their definitions at MRR {:.3} with it, {:.3} without)",
                report.name,
                if t.helps() { "kept" } else { "not kept" },
                t.with,
                t.without
            );
        }
    }
    Ok(())
}

fn print_row(system: &str, mode: &str, language: &str, m: &Metrics) -> std::io::Result<()> {
    outln!(
        "{:<44} {:<22} {:<11} {:>5} {:>6.3} {:>6.3} {:>6.3} {:>7.3} {:>8.3}",
        system,
        mode,
        language,
        m.queries,
        m.recall_at_1,
        m.recall_at_5,
        m.recall_at_10,
        m.mrr_at_10,
        m.ndcg_at_10
    );
    Ok(())
}
