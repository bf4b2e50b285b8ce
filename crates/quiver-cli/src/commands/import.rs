use crate::location;
use anyhow::Context;
use clap::Args;
use quiver_export::import::import_npy_dir;
use quiver_index::Store;
use std::path::PathBuf;

#[derive(Args)]
pub struct ImportArgs {
    /// A folder written by `quiver export --to npy` (embeddings.npy, metadata.json,
    /// model_info.json).
    from: PathBuf,
    /// Index directory to create or add to (default: .quiver/ here).
    #[arg(long)]
    index: Option<PathBuf>,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let index_dir = location::for_root(args.index, &std::env::current_dir()?);
    let mut store = Store::open_writer(&index_dir)?;
    let started = std::time::Instant::now();
    let report = import_npy_dir(&args.from, &mut store)
        .with_context(|| format!("importing {}", args.from.display()))?;
    tracing::info!(
        "stored {} chunks in {:.1} s",
        report.chunks,
        started.elapsed().as_secs_f64()
    );
    quiver_index::sync_vectors(&store)
        .with_context(|| format!("writing the vector files of {}", index_dir.display()))?;
    eprintln!(
        "imported {} chunks of {} files from {} into {}",
        report.chunks,
        report.files,
        args.from.display(),
        index_dir.display()
    );
    Ok(())
}
