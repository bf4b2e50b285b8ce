//! Exports: an index's chunks and vectors in the shapes other tools load.
//!
//! - JSONL ([`write_jsonl`]): one `{"id", "vector", "payload"}` object per chunk, the shape
//!   Qdrant upload scripts take; `id` is the chunk's UUID form. A chunk that starts a definition
//!   also has `"signature_vector"` (its header and signature embedded alone).
//! - NumPy ([`write_npy_dir`]): `embeddings.npy` (float32, one row per chunk),
//!   `signature_embeddings.npy` (same rows; zeros where a chunk has no signature),
//!   `metadata.json` (the payloads, same order) and `model_info.json`.
//!
//! Files are written beside their destination and renamed into place, so a failed export leaves
//! the destination as it was.

mod npy;

pub use npy::{read_npy_f32, write_npy_f32};

use crate::error::{IndexError, Result};
use crate::store::{ChunkRecord, IndexSettings, Store};
use serde_json::{json, Value};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One chunk ready to leave: its UUID, vector and payload.
pub struct ExportRecord {
    pub id: String,
    pub vector: Vec<f32>,
    /// The signature vector of a chunk that starts a definition.
    pub signature: Option<Vec<f32>>,
    pub payload: Value,
}

/// Every chunk of the index in file order, with its vector and the index's settings.
pub fn export_records(store: &Store) -> Result<(IndexSettings, Vec<ExportRecord>)> {
    let settings = store
        .settings()?
        .ok_or_else(|| IndexError::NoIndex(store.dir().to_path_buf()))?;
    let records = store
        .all_chunks()?
        .into_iter()
        .map(|chunk| {
            let vector =
                store
                    .vector_of(&chunk.embed_hash)?
                    .ok_or_else(|| IndexError::BadMetadata {
                        field: "vectors",
                        value: format!("no vector for chunk {}", chunk.chunk_id),
                    })?;
            let signature = match &chunk.signature_hash {
                Some(hash) => store.vector_of(hash)?,
                None => None,
            };
            Ok(ExportRecord {
                id: chunk.uuid.clone(),
                vector,
                signature,
                payload: payload(&chunk, &settings),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((settings, records))
}

fn payload(chunk: &ChunkRecord, settings: &IndexSettings) -> Value {
    let collection = chunk.chunk_id.split(':').next().unwrap_or_default();
    json!({
        "chunk_id": chunk.chunk_id,
        "uid": chunk.uid,
        "text": chunk.text,
        "path": chunk.path,
        "language": chunk.language,
        "symbol": chunk.symbol,
        "kind": chunk.kind,
        "parent": chunk.parent,
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "start_byte": chunk.start_byte,
        "end_byte": chunk.end_byte,
        "content_hash": chunk.content_hash,
        "source_subdir": chunk.source,
        "collection": collection,
        "model": settings.model,
        "metadata": chunk.metadata,
    })
}

/// Writes `records` as JSONL to `path`; returns how many.
pub fn write_jsonl(path: &Path, records: &[ExportRecord]) -> Result<usize> {
    write_atomically(path, |writer| {
        for record in records {
            let mut line =
                json!({"id": record.id, "vector": record.vector, "payload": record.payload});
            if let Some(signature) = &record.signature {
                line["signature_vector"] = json!(signature);
            }
            serde_json::to_writer(&mut *writer, &line).map_err(std::io::Error::from)?;
            writer.write_all(b"\n")?;
        }
        Ok(())
    })?;
    Ok(records.len())
}

/// The NumPy export's signature vectors (rows of zeros: no signature).
pub const SIGNATURE_FILE: &str = "signature_embeddings.npy";

/// Writes `embeddings.npy`, `signature_embeddings.npy`, `metadata.json` and `model_info.json`
/// into `dir`.
pub fn write_npy_dir(
    dir: &Path,
    settings: &IndexSettings,
    records: &[ExportRecord],
) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let rows: Vec<Vec<f32>> = records.iter().map(|r| r.vector.clone()).collect();
    write_atomically(&dir.join("embeddings.npy"), |writer| {
        write_npy_f32(writer, &rows)
    })?;
    let signatures: Vec<Vec<f32>> = records
        .iter()
        .map(|r| {
            r.signature
                .clone()
                .unwrap_or_else(|| vec![0.0; r.vector.len()])
        })
        .collect();
    write_atomically(&dir.join(SIGNATURE_FILE), |writer| {
        write_npy_f32(writer, &signatures)
    })?;
    let metadata: Vec<&Value> = records.iter().map(|r| &r.payload).collect();
    write_json(&dir.join("metadata.json"), &json!(metadata))?;
    let info = json!({
        "model": settings.model,
        "dimension": settings.dimension,
        "normalized": settings.normalize,
        "document_prompt": settings.document_prompt,
        "query_prompt": settings.query_prompt,
        "quantization": settings.quantization.name(),
        "chunks": records.len(),
        "quiver_version": env!("CARGO_PKG_VERSION"),
    });
    write_json(&dir.join("model_info.json"), &info)?;
    Ok(records.len())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    write_atomically(path, |writer| {
        serde_json::to_writer_pretty(&mut *writer, value).map_err(std::io::Error::from)
    })
}

/// Writes through `fill` into `path.partial`, then renames it to `path`.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let io_error = |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    };
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let file = std::fs::File::create(&partial).map_err(io_error)?;
    let mut writer = BufWriter::new(file);
    let written = fill(&mut writer).and_then(|()| writer.flush());
    if let Err(source) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(io_error(source));
    }
    std::fs::rename(&partial, path).map_err(io_error)
}
