//! `quiver`: the command line. It parses arguments and wires the library crates together;
//! the work itself lives in `quiver-embed`, `quiver-chunk` and `quiver-index`.

/// `println!` that hands a write error back instead of panicking, so a closed pipe
/// (`quiver search … | head -1`) ends the command quietly, as ripgrep does; `main` tells that
/// error apart.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod commands;
mod input;
mod location;
mod model;
mod progress;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quiver",
    version,
    about = "Embedding engine for code and documentation"
)]
struct Cli {
    /// Worker threads (default: the cores this process may use).
    #[arg(long, global = true, env = "QUIVER_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts (one per line, or JSONL with a "text" field) and write vectors.
    Embed(commands::embed::EmbedArgs),
    /// Index a codebase or document tree (incremental: only what changed is embedded again).
    Index(commands::index::IndexArgs),
    /// Search an index: hybrid (default), vector or keyword.
    Search(commands::search::SearchArgs),
    /// Score retrieval quality on a code-search dataset against a fixed-window baseline.
    Eval(commands::eval::EvalArgs),
    /// Export an index's chunks and vectors: --to jsonl FILE, npy DIR, qdrant URL, postgres URL.
    Export(commands::export::ExportArgs),
    /// Build an index from a NumPy export (`quiver export --to npy`), without embedding again.
    Import(commands::import::ImportArgs),
    /// Index a tree, then keep the index fresh as files change.
    Watch(commands::watch::WatchArgs),
    /// Serve an index to coding agents over MCP (stdio, or streamable HTTP with --http).
    Mcp(commands::mcp::McpArgs),
    /// Serve embeddings (OpenAI /v1/embeddings, TEI /embed) and search over HTTP.
    Serve(commands::serve::ServeArgs),
    /// Known models (`list`) and what one model is (`info ID`).
    Models(commands::models::ModelsArgs),
    /// Summarise an index.
    Status(commands::status::StatusArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = run(cli) {
        if is_broken_pipe(&error) {
            return;
        }
        eprintln!("quiver: {error:#}");
        std::process::exit(1);
    }
}

/// The reader of standard output went away (`| head`): nothing is wrong, there is just no one
/// left to tell.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(threads) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build_global()?;
    }
    match cli.command {
        Command::Embed(args) => commands::embed::run(args),
        Command::Index(args) => commands::index::run(args),
        Command::Search(args) => commands::search::run(args),
        Command::Status(args) => commands::status::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Watch(args) => commands::watch::run(args),
        Command::Mcp(args) => commands::mcp::run(args),
        Command::Models(args) => commands::models::run(args),
    }
}
