use crate::input::read_texts;
use crate::model::{load_embedder_with, QuantizeArg};
use crate::progress;
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use quiver_embed::{Device, EmbedOptions, Embedder, EmbedderOptions, DEFAULT_MODEL};
use quiver_export::output::Output;
use quiver_export::write_npy_f32;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line: {"index": i, "embedding": [...]}.
    Jsonl,
    /// A float32 NumPy array of shape (texts, dimensions).
    Npy,
}

#[derive(Args)]
pub struct EmbedArgs {
    /// File of texts: one per line, or JSONL with a "text" field. Default: standard input.
    input: Option<PathBuf>,
    /// A model folder or a Hugging Face hub id.
    #[arg(long, short, env = "QUIVER_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// A named prompt from the model's config (e.g. query, document).
    #[arg(long)]
    prompt_name: Option<String>,
    /// A literal prompt prepended to every text (instead of --prompt-name).
    #[arg(long, conflicts_with = "prompt_name")]
    prompt: Option<String>,
    /// Number format of the dense layers: none (f32), int8 or bf16 (default: bf16 where the
    /// CPU multiplies bf16 natively (AMX, AVX-512 BF16), else none).
    #[arg(long, value_enum)]
    quantize: Option<QuantizeArg>,
    /// The task adapter of models that have them (jina-embeddings-v3: retrieval.query,
    /// retrieval.passage, text-matching, ...). Default: the one named like --prompt-name.
    #[arg(long)]
    task: Option<String>,
    /// Matryoshka: keep this many leading dimensions, then normalise.
    #[arg(long)]
    dimensions: Option<usize>,
    #[arg(long, value_enum, default_value = "jsonl")]
    format: OutputFormat,
    /// Where to write the vectors. Default: standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// At most this many texts per forward pass.
    #[arg(long, env = "QUIVER_BATCH_SIZE", default_value_t = 64)]
    batch_size: usize,
    /// At most this many tokens per forward pass (as `serve --max-batch-tokens`).
    #[arg(long, alias = "batch-tokens", default_value_t = 8192)]
    max_batch_tokens: usize,
    /// Truncate inputs at this many tokens (default: the model's max_seq_length).
    #[arg(long, env = "QUIVER_MAX_LENGTH")]
    max_length: Option<usize>,
    /// Normalise vectors to unit length: true, false, or the model's own setting when omitted.
    #[arg(long, env = "QUIVER_NORMALIZE")]
    normalize: Option<bool>,
    #[arg(long, env = "QUIVER_DEVICE", default_value = "cpu", help = super::DEVICE_HELP)]
    device: Device,
    /// Print one JSON line of throughput figures to standard error (for benchmarks).
    #[arg(long)]
    stats: bool,
    /// Print each text's keyword vector instead of its embedding: the sparse query vector for
    /// the `keyword` vector of a Qdrant export (docs/exports.md). Loads no model.
    #[arg(long, conflicts_with_all = ["prompt_name", "prompt", "dimensions", "stats"])]
    keywords: bool,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let source = args
        .input
        .as_ref()
        .map_or("standard input".to_string(), |path| {
            path.display().to_string()
        });
    let texts = read_texts(args.input.as_deref()).with_context(|| format!("reading {source}"))?;
    if texts.is_empty() {
        bail!("no input texts in {source}");
    }
    if args.keywords {
        return write_keyword_vectors(&texts, args.format, args.output.as_ref());
    }
    let embedder = load_embedder_with(
        &args.model,
        &EmbedderOptions {
            max_length: args.max_length,
            device: args.device,
            quantization: args.quantize.map(Into::into).unwrap_or_default(),
            ..EmbedderOptions::default()
        },
    )?;
    let options = EmbedOptions {
        prompt_name: args.prompt_name,
        task: args.task,
        prompt: args.prompt,
        dimensions: args.dimensions,
        normalize: args.normalize,
        max_batch_sequences: args.batch_size,
        max_batch_tokens: args.max_batch_tokens,
        ..EmbedOptions::default()
    };
    let started = Instant::now();
    let bar = progress::bar(
        texts.len() as u64,
        "{spinner} embedding {bar:30} {pos}/{len} texts  {per_sec}  ETA {eta}",
    );
    let vectors = embedder.embed_with_progress(&texts, &options, |done| bar.inc(done as u64))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    write_vectors(&vectors, args.format, args.output.as_ref())?;
    if args.stats {
        print_stats(&embedder, &texts, seconds)?;
    }
    Ok(())
}

/// Tokens are counted after truncation, as the model saw them (re-tokenising costs a little
/// time outside the measured span).
fn print_stats(embedder: &Embedder, texts: &[String], seconds: f64) -> anyhow::Result<()> {
    let tokens: usize = embedder
        .tokenizer()
        .encode_batch(texts)?
        .iter()
        .map(Vec::len)
        .sum();
    let stats = serde_json::json!({
        "texts": texts.len(),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens as f64 / seconds,
        "threads": rayon::current_num_threads(),
        "peak_rss_mib": peak_rss_mib(),
    });
    eprintln!("{stats}");
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), if the platform reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn write_keyword_vectors(
    texts: &[String],
    format: OutputFormat,
    output: Option<&PathBuf>,
) -> anyhow::Result<()> {
    if matches!(format, OutputFormat::Npy) {
        bail!("--keywords writes sparse vectors as JSON lines: drop --format npy");
    }
    let mut writer = Output::create(output.map_or(Path::new("-"), PathBuf::as_path))?;
    for (index, text) in texts.iter().enumerate() {
        let vector = quiver_index::keywords::query_vector(text)
            .with_context(|| format!("reading the keywords of text {index}"))?;
        serde_json::to_writer(
            &mut writer,
            &serde_json::json!({ "index": index, "keywords": vector }),
        )?;
        writer.write_all(b"\n")?;
    }
    writer.finish()?;
    Ok(())
}

fn write_vectors(
    vectors: &[Vec<f32>],
    format: OutputFormat,
    output: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let to_stdout = output.is_none_or(|path| path.as_os_str() == "-");
    if to_stdout && matches!(format, OutputFormat::Npy) && std::io::stdout().is_terminal() {
        bail!("--format npy writes binary data: pass --output FILE or redirect standard output");
    }
    let mut writer = Output::create(output.map_or(Path::new("-"), PathBuf::as_path))?;
    match format {
        OutputFormat::Jsonl => {
            for (index, vector) in vectors.iter().enumerate() {
                serde_json::to_writer(
                    &mut writer,
                    &serde_json::json!({ "index": index, "embedding": vector }),
                )?;
                writer.write_all(b"\n")?;
            }
        }
        OutputFormat::Npy => write_npy_f32(&mut writer, vectors)?,
    }
    writer.finish()?;
    Ok(())
}
