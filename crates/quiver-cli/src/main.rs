//! `quiver`: the command line. It parses arguments and wires the library crates together;
//! the work itself lives in `quiver-embed` and `quiver-runtime`.

mod commands;
mod input;
mod npy;

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
        eprintln!("quiver: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(threads) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build_global()?;
    }
    match cli.command {
        Command::Embed(args) => commands::embed::run(args),
    }
}
