use crate::location;
use crate::model::{load_embedder, QuantizeArg};
use crate::progress::IndexBar;
use anyhow::{bail, Context};
use clap::Args;
use quiver_embed::Device;
use quiver_index::{
    Chunking, IndexOptions, IndexReport, Input, Repair, RunModel, Store, DEFAULT_COMMIT_EVERY,
    DEFAULT_ID_PREFIX, DEFAULT_MAX_FILE_BYTES,
};
use std::path::PathBuf;

#[derive(Args)]
pub struct IndexArgs {
    /// The codebase or document tree to index.
    #[arg(default_value = ".", conflicts_with = "chunks")]
    path: PathBuf,
    /// Index pre-chunked JSON/JSONL files under DIR instead of chunking a tree.
    #[arg(long, value_name = "DIR")]
    chunks: Option<PathBuf>,
    /// Index directory (default: .quiver/ under the indexed root).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Model folder or hub id (default: the index's model, else all-MiniLM-L6-v2).
    #[arg(long, short, env = "QUIVER_MODEL")]
    model: Option<String>,
    /// Matryoshka dimension to store (default: the index's, else the model's).
    #[arg(long)]
    dimensions: Option<usize>,
    /// Number format of the model's dense layers: none (f32), int8 or bf16 (default: the index's,
    /// else bf16 where the CPU multiplies bf16 natively (AMX, AVX-512 BF16), else none).
    /// Searches of the index embed their queries the same way.
    #[arg(long, value_enum)]
    quantize: Option<QuantizeArg>,
    /// The model's named prompt that searches of this index embed their queries with
    /// (EmbeddingGemma: `InstructionRetrieval` for code search); recorded in the index, kept by
    /// later runs. Default: the model's `query` prompt. Changing it re-embeds nothing.
    #[arg(long, value_name = "NAME")]
    query_prompt_name: Option<String>,
    /// Weight of hybrid search's keyword ranking against the vector ranking's 1, recorded in
    /// the index for every search of it; kept by later runs. Default: the one measured for the
    /// model (`quiver models info`), else 0.75. Changing it re-embeds nothing.
    #[arg(long, value_name = "W", value_parser = super::keyword_weight)]
    keyword_weight: Option<f64>,
    /// Embed everything again if the model, dimension or number format differ from the index's.
    #[arg(long)]
    reembed: bool,
    /// First part of every chunk id (`--collection` before; `export --collection` names a
    /// Qdrant collection).
    #[arg(long, alias = "collection", default_value = DEFAULT_ID_PREFIX)]
    id_prefix: String,
    /// Token budget of a chunk (default: the model's max length less 32 for the header).
    #[arg(long)]
    chunk_tokens: Option<usize>,
    /// Pack small neighbouring definitions into one chunk (default: one definition per chunk).
    #[arg(long)]
    pack_definitions: bool,
    /// Do not adapt search to this repository. By default the index fits a query adapter on
    /// the repository's own doc comments (each comment's first sentence to its definition) and
    /// refits it as the code changes; docs/evaluation.md measures what it adds.
    #[arg(long)]
    no_adapt: bool,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FILE_BYTES)]
    max_file_size: u64,
    /// Chunks embedded per commit: what a crash can cost at most.
    #[arg(long, default_value_t = DEFAULT_COMMIT_EVERY)]
    commit_every: usize,
    #[arg(long, env = "QUIVER_DEVICE", default_value = "cpu", help = super::DEVICE_HELP)]
    device: Device,
    /// Check the index first and drop what is damaged (see `quiver status --verify`), so this
    /// run rebuilds it from the sources; a database whose structure is damaged is moved aside
    /// and the index built anew.
    #[arg(long)]
    repair: bool,
    /// Print the run's report as JSON on standard output.
    #[arg(long)]
    json: bool,
}

pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    let given_root = args.chunks.as_ref().unwrap_or(&args.path);
    if !given_root.is_dir() {
        bail!("{} is not a directory", given_root.display());
    }
    let root = given_root
        .canonicalize()
        .with_context(|| format!("resolving {}", given_root.display()))?;
    let input = match &args.chunks {
        Some(_) => Input::ChunkFiles { dir: root.clone() },
        None => Input::Tree { root: root.clone() },
    };
    let root = input.root();
    let index_dir = location::for_root(args.index.clone(), root);
    let mut store = if args.repair {
        let (store, repair) = Store::repair(&index_dir)?;
        match repair {
            Repair::Sound => eprintln!("quiver: {}: nothing damaged", index_dir.display()),
            Repair::Dropped { chunks, vectors } => eprintln!(
                "quiver: dropped {chunks} damaged chunks and {vectors} damaged vectors; \
                 re-chunking every file to rebuild them"
            ),
            Repair::Rebuilt { set_aside } => eprintln!(
                "quiver: the database's structure was damaged; moved it to {} and building \
                 the index anew",
                set_aside.display()
            ),
        }
        store
    } else {
        Store::open_writer(&index_dir)?
    };
    let stored = store.settings()?;
    let run = RunModel::resolve(
        stored.as_ref(),
        args.model.as_deref(),
        args.quantize.map(Into::into),
    );
    let embedder = load_embedder(&run.model_id, args.device, run.quantization)?;
    let mut options = IndexOptions::new(input.clone(), run.model_id.clone(), &index_dir);
    options.dimensions = args.dimensions;
    options.id_prefix = args.id_prefix.clone();
    options.chunk_tokens = args.chunk_tokens;
    if args.pack_definitions {
        options.chunking = Chunking::SyntaxPacked;
    }
    options.walk.max_file_bytes = args.max_file_size;
    options.reembed = args.reembed;
    options.batch_chunks = args.commit_every.max(1);
    options.query_prompt = args.query_prompt_name.clone();
    options.keyword_weight = args.keyword_weight;
    options.adapt = !args.no_adapt;
    let progress = IndexBar::new();
    let report = quiver_index::index(&mut store, &embedder, &options, &progress)
        .with_context(|| format!("indexing {} into {}", root.display(), index_dir.display()))?;
    progress.finish();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, &index_dir)?;
    }
    Ok(())
}

fn print_summary(report: &IndexReport, index_dir: &std::path::Path) -> std::io::Result<()> {
    outln!(
        "{} files indexed: {} changed, {} unchanged, {} removed",
        report.files_indexed,
        report.files_changed,
        report.files_unchanged,
        report.files_removed
    );
    outln!(
        "chunks: {} written ({} embedded, {} reused), budget {} tokens",
        report.chunks_written,
        report.chunks_embedded,
        report.chunks_reused,
        report.chunk_tokens
    );
    if !report.skipped.is_empty() {
        let skipped: Vec<String> = report
            .skipped
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        outln!("skipped: {}", skipped.join(", "));
    }
    match (report.adapter_pairs, report.adapter_held_out) {
        (Some(pairs), held_out) => {
            let trial = held_out.map_or(String::new(), |t| {
                format!(
                    " (held-out comments find their definitions at MRR {:.3}, {:.3} without it)",
                    t.with, t.without
                )
            });
            outln!("query adapter: fitted on {pairs} doc comments and their definitions{trial}");
        }
        (None, Some(t)) => outln!(
            "query adapter: none kept: fitted on four in five doc comments, it did not bring \
             the fifth nearer their definitions (MRR {:.3}, {:.3} without it)",
            t.with,
            t.without
        ),
        (None, None) => {}
    }
    if report.tokens_embedded > 0 && report.embed_seconds > 0.0 && report.seconds > 0.0 {
        let tokens = report.tokens_embedded as f64;
        outln!(
            "throughput: {:.0} tokens/s in the model, {:.0} tokens/s over the whole run \
             (of the run: model {:.0} %, commits {:.0} %, query adapter {:.0} %)",
            tokens / report.embed_seconds,
            tokens / report.seconds,
            100.0 * report.embed_seconds / report.seconds,
            100.0 * report.commit_seconds / report.seconds,
            100.0 * report.adapter_seconds / report.seconds,
        );
    }
    outln!("index: {} ({:.1} s)", index_dir.display(), report.seconds);
    Ok(())
}
