use crate::{location, progress};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use quiver_export::postgres::IndexMethod;
use quiver_export::qdrant::QdrantOptions;
use quiver_export::{export_index, Outcome, Summary, Target, TargetOptions};
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
    let target = Target::parse(
        format,
        destination,
        TargetOptions {
            collection: args.collection.clone(),
            table: args.table.clone(),
            qdrant: QdrantOptions {
                batch_size: args.points_per_request,
                api_key: args.api_key.clone(),
                ..QdrantOptions::default()
            },
            vector_index: match args.vector_index {
                IndexKind::Hnsw => IndexMethod::Hnsw,
                IndexKind::Ivfflat => IndexMethod::IvfFlat,
            },
        },
    )?;
    let bar = progress::bar(0, "{bar:40} {pos}/{len} chunks sent [{elapsed_precise}]");
    let exported = export_index(&store, &target, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let exported = exported.with_context(|| match &target {
        Target::Qdrant { collection, .. } => format!("exporting to Qdrant collection {collection}"),
        Target::Postgres { table, .. } => format!("exporting to PostgreSQL table {table}"),
        _ => format!(
            "exporting {} to {format} {destination}",
            index_dir.display()
        ),
    })?;
    let report = match exported.outcome {
        Outcome::Written(written) => format!("exported {written} chunks"),
        Outcome::Synced(summary) => describe(summary),
    };
    eprintln!(
        "{report} ({} dimensions, {}) from {} to {format} {}",
        exported.settings.dimension,
        exported.settings.model,
        index_dir.display(),
        redact_password(destination),
    );
    Ok(())
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
