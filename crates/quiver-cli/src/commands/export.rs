use crate::location;
use anyhow::bail;
use clap::Args;
use quiver_index::export::{export_records, write_jsonl, write_npy_dir};
use quiver_index::Store;
use std::path::PathBuf;

#[derive(Args)]
pub struct ExportArgs {
    /// Index directory (default: .quiver/ here or in a parent directory).
    index: Option<PathBuf>,
    /// Format and destination: `jsonl FILE` or `npy DIR`.
    #[arg(long, num_args = 2, value_names = ["FORMAT", "DEST"], required = true)]
    to: Vec<String>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let [format, destination] = args.to.as_slice() else {
        bail!("--to takes a format and a destination, e.g. --to jsonl chunks.jsonl");
    };
    let index_dir = location::find(args.index.clone())?;
    let store = Store::open(&index_dir, false)?;
    let (settings, records) = export_records(&store)?;
    let destination = PathBuf::from(destination);
    let written = match format.as_str() {
        "jsonl" => write_jsonl(&destination, &records)?,
        "npy" => write_npy_dir(&destination, &settings, &records)?,
        "qdrant" | "postgres" => bail!(
            "--to {format} is not implemented yet (issue #6); export --to jsonl and load that"
        ),
        other => bail!("unknown export format {other:?}: use jsonl or npy"),
    };
    eprintln!(
        "exported {written} chunks ({} dimensions, {}) from {} to {}",
        settings.dimension,
        settings.model,
        index_dir.display(),
        destination.display()
    );
    Ok(())
}
