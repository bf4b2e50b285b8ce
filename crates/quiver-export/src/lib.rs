//! Everything that leaves an index, and the way back in:
//! - [`files`]: JSONL and NumPy exports of an index's chunks and vectors; [`import`] reads a
//!   NumPy export back into an index;
//! - [`output`]: the one routine every file Quiver writes goes through (streams into FIFOs and
//!   devices, never follows a planted symlink, keeps a destination's mode, leaves it as it
//!   was when a write fails);
//! - [`qdrant`] (its REST API) and [`postgres`] (a pgvector table): the vector stores users
//!   already run.
//!
//! Store exports:
//! Every export is incremental and checked first:
//! - the destination is created when missing; one that holds vectors of another width or
//!   another model is refused before anything is written;
//! - each chunk is stored with a fingerprint (SHA-256 of its payload, vectors and the export's
//!   layout), so a second export sends only chunks that are new or changed, and removes chunks
//!   the index no longer has;
//! - PostgreSQL applies the whole change in one transaction (a failed export leaves the table
//!   as it was); Qdrant has no transactions, so its upserts are idempotent and run before any
//!   delete: a failed export is finished by running it again.
//!
//! Both stores get what Quiver's own search ranks by, so their searches answer as
//! `quiver search` does: both vectors of a chunk (text and signature; a chunk scores by the
//! better cosine) and its keyword side (BM25 sparse vectors in Qdrant, a `tsvector` in
//! PostgreSQL); [`StoreQuery`] runs the documented queries (docs/exports.md).

mod error;
pub mod files;
pub mod import;
mod npy;
pub mod output;
pub mod postgres;
pub mod qdrant;
pub mod target;

pub use npy::{read_npy_f32, write_npy_f32};

pub use error::{ExportError, Result};
pub use target::{export_index, Exported, Outcome, StoreClient, Target, TargetOptions};

use crate::files::ExportRecord;
use quiver_index::{IndexSettings, SearchMode, Store};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// What a destination must agree with before it is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub model: String,
    pub dimension: usize,
}

impl Schema {
    pub fn of(settings: &IndexSettings) -> Self {
        Schema {
            model: settings.model.clone(),
            dimension: settings.dimension,
        }
    }
}

/// What an export changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub upserted: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// The payload key under which each chunk's fingerprint is stored.
pub const FINGERPRINT_KEY: &str = "quiver_fingerprint";

/// The shape of what an export sends, part of every fingerprint: exports made before
/// signature vectors and keywords were sent (layout 1) are sent again whole.
const LAYOUT: &str = "quiver-export-layout-2";

/// SHA-256 of a record's payload and vectors and of `context` (what else the destination's
/// copy depends on, e.g. the BM25 average length its keyword weights used), hex: equal
/// fingerprints, nothing to send.
pub fn fingerprint(record: &ExportRecord, context: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(LAYOUT.as_bytes());
    hasher.update(context.as_bytes());
    hasher.update(record.payload.to_string().as_bytes());
    for value in &record.vector {
        hasher.update(value.to_le_bytes());
    }
    if let Some(signature) = &record.signature {
        hasher.update(b"signature");
        for value in signature {
            hasher.update(value.to_le_bytes());
        }
    }
    quiver_index::ids::hex(&hasher.finalize())
}

/// The changes that bring a destination holding `existing` (id → fingerprint) to the index.
pub struct Plan {
    /// The ids to send, with their fingerprints.
    pub upserts: HashMap<String, String>,
    pub deletes: Vec<String>,
    pub unchanged: usize,
}

impl Plan {
    /// `prints`: every record's id and [`fingerprint`]; only those are kept, so a plan of a
    /// large index holds no vectors.
    pub fn new(
        prints: impl IntoIterator<Item = (String, String)>,
        existing: &HashMap<String, String>,
    ) -> Self {
        let mut upserts = HashMap::new();
        let mut wanted = HashSet::new();
        let mut unchanged = 0;
        for (id, print) in prints {
            if existing.get(&id) == Some(&print) {
                unchanged += 1;
            } else {
                upserts.insert(id.clone(), print);
            }
            wanted.insert(id);
        }
        let mut deletes: Vec<String> = existing
            .keys()
            .filter(|id| !wanted.contains(id.as_str()))
            .cloned()
            .collect();
        deletes.sort();
        Plan {
            upserts,
            deletes,
            unchanged,
        }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            upserted: self.upserts.len(),
            deleted: self.deletes.len(),
            unchanged: self.unchanged,
        }
    }
}

/// A store export's two passes over the index, each reading one chunk at a time so memory
/// stays flat however large the index: the [`Plan`] from every chunk's fingerprint (with
/// `context`, see [`fingerprint`]), then `send` with the chunks to upsert and their
/// fingerprints, `batch` at a time, `progress` hearing each.
pub(crate) fn send_changes(
    store: &Store,
    settings: &IndexSettings,
    existing: &HashMap<String, String>,
    context: &str,
    batch: usize,
    progress: Progress<'_>,
    mut send: impl FnMut(&[(ExportRecord, String)]) -> Result<()>,
) -> Result<Plan> {
    let mut prints = Vec::new();
    files::for_each_record(store, settings, |record| {
        prints.push((record.id.clone(), fingerprint(&record, context)));
        Ok(())
    })?;
    let plan = Plan::new(prints, existing);
    let total = plan.upserts.len();
    let mut pending: Vec<(ExportRecord, String)> = Vec::new();
    let mut sent = 0;
    let mut flush = |pending: &mut Vec<(ExportRecord, String)>| -> Result<()> {
        if !pending.is_empty() {
            send(pending)?;
            sent += pending.len();
            progress(sent, total);
            pending.clear();
        }
        Ok(())
    };
    let mut failed = None;
    let walked = files::for_each_record(store, settings, |record| {
        if let Some(print) = plan.upserts.get(&record.id) {
            pending.push((record, print.clone()));
            if pending.len() >= batch.max(1) {
                if let Err(error) = flush(&mut pending) {
                    failed = Some(error);
                    // Stops the walk; the send's own error is what the export reports.
                    return Err(quiver_index::IndexError::Interrupted);
                }
            }
        }
        Ok(())
    });
    if let Some(error) = failed {
        return Err(error);
    }
    walked?;
    flush(&mut pending)?;
    Ok(plan)
}

/// Reports how many chunks have been sent so far, out of how many.
pub type Progress<'a> = &'a dyn Fn(usize, usize);

/// A search of an exported store, run as `quiver search` runs it on the index.
#[derive(Debug, Clone, Copy)]
pub struct StoreQuery<'a> {
    /// The query's text (keyword and hybrid).
    pub text: &'a str,
    /// Its embedding, as `quiver search` embeds it (vector and hybrid).
    pub vector: &'a [f32],
    pub mode: SearchMode,
    pub k: usize,
    /// Hybrid: the keyword ranking's weight (the vector ranking's is 1).
    pub keyword_weight: f64,
}

/// One result of a store's search: the chunk id it holds, and the store's score.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreHit {
    pub chunk_id: String,
    pub score: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, text: &str, vector: Vec<f32>) -> ExportRecord {
        ExportRecord {
            signature: None,
            id: id.into(),
            vector,
            payload: json!({"text": text}),
        }
    }

    #[test]
    fn plan_sends_only_new_and_changed_chunks_and_deletes_removed_ones() {
        let old = [
            record("a", "same", vec![1.0, 0.0]),
            record("b", "old text", vec![0.0, 1.0]),
            record("c", "gone", vec![0.5, 0.5]),
        ];
        let existing: HashMap<String, String> = old
            .iter()
            .map(|record| (record.id.clone(), fingerprint(record, "")))
            .collect();
        let new = [
            record("a", "same", vec![1.0, 0.0]),
            record("b", "new text", vec![0.0, 1.0]),
            record("d", "added", vec![0.2, 0.8]),
        ];
        let plan = Plan::new(
            new.iter().map(|r| (r.id.clone(), fingerprint(r, ""))),
            &existing,
        );
        let mut sent: Vec<&str> = plan.upserts.keys().map(String::as_str).collect();
        sent.sort();
        assert_eq!(sent, ["b", "d"]);
        assert_eq!(plan.upserts["d"], fingerprint(&new[2], ""));
        assert_eq!(plan.deletes, ["c"]);
        assert_eq!(
            plan.summary(),
            Summary {
                upserted: 2,
                deleted: 1,
                unchanged: 1
            }
        );
    }

    #[test]
    fn a_changed_vector_changes_the_fingerprint() {
        let a = record("a", "x", vec![1.0, 0.0]);
        let b = record("a", "x", vec![1.0, 1e-7]);
        assert_ne!(fingerprint(&a, ""), fingerprint(&b, ""));
        assert_eq!(fingerprint(&a, ""), fingerprint(&a, ""));
        assert_ne!(fingerprint(&a, ""), fingerprint(&a, "avgdl=12"));
        let mut signed = record("a", "x", vec![1.0, 0.0]);
        signed.signature = Some(vec![0.0, 1.0]);
        assert_ne!(fingerprint(&a, ""), fingerprint(&signed, ""));
    }
}
