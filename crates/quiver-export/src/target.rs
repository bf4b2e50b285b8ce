//! Where an export goes, named as a user names it (`jsonl FILE`, `npy DIR`, `qdrant URL`,
//! `postgres URL`), and the one routine that sends an index there: the CLI's `quiver export`
//! and Python's `Index.export` both call [`export_index`].

use crate::files::{settings_of, write_jsonl, write_npy_dir};
use crate::postgres::{IndexMethod, PostgresExport};
use crate::qdrant::{QdrantExport, QdrantOptions};
use crate::{ExportError, Progress, Result, Schema, StoreHit, StoreQuery, Summary};
use quiver_index::{IndexSettings, Store};
use std::path::PathBuf;

/// A destination for an index's chunks and vectors.
#[derive(Debug, Clone)]
pub enum Target {
    Jsonl(PathBuf),
    Npy(PathBuf),
    Qdrant {
        url: String,
        collection: String,
        options: QdrantOptions,
    },
    Postgres {
        url: String,
        table: String,
        vector_index: IndexMethod,
    },
}

/// What the store exports need besides the format and destination.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// Qdrant: the collection to create or update.
    pub collection: Option<String>,
    /// PostgreSQL: the table (`name` or `schema.name`) to create or update.
    pub table: Option<String>,
    pub qdrant: QdrantOptions,
    pub vector_index: IndexMethod,
}

impl Target {
    /// `format` is `jsonl`, `npy`, `qdrant` or `postgres` (`postgresql`); `destination` a file,
    /// a folder or a server URL.
    pub fn parse(format: &str, destination: &str, options: TargetOptions) -> Result<Target> {
        let missing = |option: &'static str| ExportError::MissingOption {
            format: format.to_string(),
            option,
        };
        Ok(match format {
            "jsonl" => Target::Jsonl(PathBuf::from(destination)),
            "npy" => Target::Npy(PathBuf::from(destination)),
            "qdrant" => Target::Qdrant {
                url: destination.to_string(),
                collection: options.collection.ok_or_else(|| missing("collection"))?,
                options: options.qdrant,
            },
            "postgres" | "postgresql" => Target::Postgres {
                url: destination.to_string(),
                table: options.table.ok_or_else(|| missing("table"))?,
                vector_index: options.vector_index,
            },
            other => return Err(ExportError::UnknownFormat(other.to_string())),
        })
    }
}

/// What an export did.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The index's settings: the model and width of what was sent.
    pub settings: IndexSettings,
    /// Files: the chunks written. Stores: what was sent, deleted and left alone.
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Written(usize),
    Synced(Summary),
}

/// Sends every chunk of the index in `store` to `target`; `progress` hears (sent, total) from
/// the store exports.
pub fn export_index(store: &Store, target: &Target, progress: Progress<'_>) -> Result<Exported> {
    let outcome = match target {
        // Files are written a chunk at a time, whatever the index's size.
        Target::Jsonl(path) => Outcome::Written(write_jsonl(path, store)?),
        Target::Npy(dir) => Outcome::Written(write_npy_dir(dir, store)?),
        // Store exports stream too: see `send_changes`.
        Target::Qdrant { .. } | Target::Postgres { .. } => {
            let settings = settings_of(store)?;
            let schema = Schema::of(&settings);
            Outcome::Synced(match StoreClient::connect(target)? {
                StoreClient::Qdrant(export) => export.sync(&schema, store, &settings, progress)?,
                StoreClient::Postgres(mut export) => {
                    export.sync(&schema, store, &settings, progress)?
                }
            })
        }
    };
    Ok(Exported {
        settings: settings_of(store)?,
        outcome,
    })
}

/// A connection to a store an index was exported to.
pub enum StoreClient {
    Qdrant(QdrantExport),
    Postgres(Box<PostgresExport>),
}

impl StoreClient {
    /// Connects to the store `target` names.
    pub fn connect(target: &Target) -> Result<StoreClient> {
        Ok(match target {
            Target::Jsonl(path) | Target::Npy(path) => {
                return Err(ExportError::NotAStore(path.display().to_string()))
            }
            Target::Qdrant {
                url,
                collection,
                options,
            } => StoreClient::Qdrant(QdrantExport::new(url, collection, options.clone())?),
            Target::Postgres {
                url,
                table,
                vector_index,
            } => StoreClient::Postgres(Box::new(PostgresExport::connect(
                url,
                table,
                *vector_index,
            )?)),
        })
    }

    /// Searches the store with its own query (docs/exports.md), as Quiver would search.
    pub fn search(&mut self, query: &StoreQuery<'_>) -> Result<Vec<StoreHit>> {
        match self {
            StoreClient::Qdrant(export) => export.search(query),
            StoreClient::Postgres(export) => export.search(query),
        }
    }
}
