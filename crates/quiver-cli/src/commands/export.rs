use crate::{location, progress};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use quiver_export::files::{export_records, write_jsonl, write_npy_dir};
use quiver_export::postgres::{PostgresExport, VectorIndex};
use quiver_export::qdrant::{QdrantExport, QdrantOptions};
use quiver_export::{Schema, Summary};
use quiver_index::Store;
use std::path::PathBuf;

#[derive(Args)]
pub struct ExportArgs {
    /// Index directory (default: .quiver/ here or in a parent directory).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// The index directory given without --index, as scripts written for earlier versions do.
    #[arg(hide = true, conflicts_with = "index")]
    index_positional: Option<PathBuf>,
    /// Format and destination: `jsonl FILE`, `npy DIR`, `qdrant URL` (with --collection) or
    /// `postgres URL` (with --table).
    #[arg(long, num_args = 2, value_names = ["FORMAT", "DEST"], required = true)]
    to: Vec<String>,
    /// Qdrant collection to create or update.
    #[arg(long)]
    collection: Option<String>,
    /// PostgreSQL table (`name` or `schema.name`) to create or update.
    #[arg(long)]
    table: Option<String>,
    /// Qdrant API key.
    #[arg(long, env = "QDRANT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Points per Qdrant upsert request (`--batch-size` before; that name means texts per
    /// forward pass in `embed` and `serve`).
    #[arg(long, alias = "batch-size", default_value_t = 256)]
    points_per_request: usize,
    /// Vector index a new PostgreSQL table gets.
    #[arg(long, value_enum, default_value_t = IndexKind::Hnsw)]
    vector_index: IndexKind,
}

#[derive(Clone, Copy, ValueEnum)]
enum IndexKind {
    Hnsw,
    Ivfflat,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let [format, destination] = args.to.as_slice() else {
        bail!("--to takes a format and a destination, e.g. --to jsonl chunks.jsonl");
    };
    let index_dir = location::find(args.index.clone().or(args.index_positional.clone()))?;
    let store = Store::open(&index_dir)?;
    let (settings, records) = export_records(&store)?;
    let schema = Schema::of(&settings);
    let report = match format.as_str() {
        "jsonl" => {
            let written = write_jsonl(&PathBuf::from(destination), &records)?;
            format!("exported {written} chunks")
        }
        "npy" => {
            let written = write_npy_dir(&PathBuf::from(destination), &settings, &records)?;
            format!("exported {written} chunks")
        }
        "qdrant" => {
            let Some(collection) = &args.collection else {
                bail!("--to qdrant needs --collection NAME");
            };
            let options = QdrantOptions {
                batch_size: args.points_per_request,
                api_key: args.api_key.clone(),
                ..QdrantOptions::default()
            };
            let export = QdrantExport::new(destination, collection, options)?;
            let summary = with_bar(|progress| export.sync(&schema, &records, progress))
                .with_context(|| format!("exporting to Qdrant collection {collection}"))?;
            describe(summary)
        }
        "postgres" | "postgresql" => {
            let Some(table) = &args.table else {
                bail!("--to postgres needs --table NAME");
            };
            let index = match args.vector_index {
                IndexKind::Hnsw => VectorIndex::Hnsw,
                IndexKind::Ivfflat => VectorIndex::IvfFlat,
            };
            let mut export = PostgresExport::connect(destination, table, index)?;
            let summary = with_bar(|progress| export.sync(&schema, &records, progress))
                .with_context(|| format!("exporting to PostgreSQL table {table}"))?;
            describe(summary)
        }
        other => bail!("unknown export format {other:?}: use jsonl, npy, qdrant or postgres"),
    };
    eprintln!(
        "{report} ({} dimensions, {}) from {} to {format} {}",
        settings.dimension,
        settings.model,
        index_dir.display(),
        redact_password(destination),
    );
    Ok(())
}

fn with_bar<T>(
    send: impl FnOnce(quiver_export::Progress<'_>) -> quiver_export::Result<T>,
) -> quiver_export::Result<T> {
    let bar = progress::bar(0, "{bar:40} {pos}/{len} chunks sent [{elapsed_precise}]");
    let result = send(&|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    result
}

fn describe(summary: Summary) -> String {
    format!(
        "sent {} new or changed chunks, deleted {}, left {} unchanged",
        summary.upserted, summary.deleted, summary.unchanged
    )
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact_password("postgres://me:s3cret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(
            redact_password("http://localhost:6333"),
            "http://localhost:6333"
        );
    }
}
