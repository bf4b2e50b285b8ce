//! Exports: an index's chunks and vectors in the shapes other tools load.
//!
//! - JSONL ([`write_jsonl`]): one `{"id", "vector", "payload"}` object per chunk, the shape
//!   Qdrant upload scripts take; `id` is the chunk's UUID form. A chunk that starts a definition
//!   also has `"signature_vector"` (its header and signature embedded alone).
//! - NumPy ([`write_npy_dir`]): `embeddings.npy` (float32, one row per chunk),
//!   `signature_embeddings.npy` (same rows; zeros where a chunk has no signature),
//!   `metadata.json` (the payloads, same order) and `model_info.json`.
//!
//! Files go through [`Output`]: written beside their destination and renamed into place, so a
//! failed export leaves the destination as it was; FIFOs, devices and `-` are streamed into.

use crate::npy::{write_npy_header, write_npy_row};
use crate::output::Output;
use quiver_index::ids::hex;
use quiver_index::keywords;
use quiver_index::{ChunkRecord, IndexError, IndexSettings, Result, Store};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// One chunk ready to leave: its UUID, vector and payload.
pub struct ExportRecord {
    pub id: String,
    pub vector: Vec<f32>,
    /// The signature vector of a chunk that starts a definition.
    pub signature: Option<Vec<f32>>,
    pub payload: Value,
}

impl ExportRecord {
    /// The chunk's keyword side before tokenising, as the index's FTS5 table is written: its
    /// names ([`keywords::names`] of path, symbol and parent) and its text.
    pub fn keyword_texts(&self) -> (String, &str) {
        let field = |name: &str| self.payload[name].as_str();
        let names = keywords::names(
            field("path").unwrap_or_default(),
            field("symbol"),
            field("parent"),
        );
        (names, field("text").unwrap_or_default())
    }
}

pub fn settings_of(store: &Store) -> Result<IndexSettings> {
    store
        .settings()?
        .ok_or_else(|| IndexError::NoIndex(store.dir().to_path_buf()))
}

/// Every chunk of the index in file order with its vectors, one at a time.
pub(crate) fn for_each_record(
    store: &Store,
    settings: &IndexSettings,
    mut visit: impl FnMut(ExportRecord) -> Result<()>,
) -> Result<()> {
    store.for_each_chunk(|chunk| {
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
        visit(ExportRecord {
            id: chunk.uuid.clone(),
            vector,
            signature,
            payload: payload(&chunk, settings),
        })
    })
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

/// Writes every chunk of `store` as JSONL to `path` (see [`Output`] for what a destination may
/// be), a chunk at a time; returns how many.
pub fn write_jsonl(path: &Path, store: &Store) -> Result<usize> {
    let settings = settings_of(store)?;
    let mut output = Output::create(path)?;
    let io_error = |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut written = 0;
    for_each_record(store, &settings, |record| {
        let mut line = json!({"id": record.id, "vector": record.vector, "payload": record.payload});
        if let Some(signature) = &record.signature {
            line["signature_vector"] = json!(signature);
        }
        serde_json::to_writer(&mut output, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| output.write_all(b"\n"))
            .map_err(io_error)?;
        written += 1;
        Ok(())
    })?;
    output.finish()?;
    Ok(written)
}

/// The NumPy export's files. `model_info.json` records the SHA-256 of the other three under
/// `files`, so a reader can tell a complete export from a mix of two.
pub const EMBEDDINGS_FILE: &str = "embeddings.npy";
/// Signature vectors (rows of zeros: no signature).
pub const SIGNATURE_FILE: &str = "signature_embeddings.npy";
pub const METADATA_FILE: &str = "metadata.json";
pub const INFO_FILE: &str = "model_info.json";

/// Writes `embeddings.npy`, `signature_embeddings.npy`, `metadata.json` and `model_info.json`
/// into `dir`. Every file is complete before any is renamed into place, and `model_info.json`
/// goes last with the others' digests: a run that fails leaves the old export, and one killed
/// between renames leaves files whose digests disagree, which `quiver import` refuses.
pub fn write_npy_dir(dir: &Path, store: &Store) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let settings = settings_of(store)?;
    // The count goes in the headers before the rows: both from one commit.
    let (staged, chunks) = store.in_one_snapshot(|store| {
        let chunks = store.stats()?.chunks;
        let mut embeddings = Staging::create(dir, EMBEDDINGS_FILE)?;
        let mut signatures = Staging::create(dir, SIGNATURE_FILE)?;
        let mut metadata = Staging::create(dir, METADATA_FILE)?;
        for staging in [&mut embeddings, &mut signatures] {
            staging.write(|w| write_npy_header(w, chunks, settings.dimension))?;
        }
        metadata.write(|w| w.write_all(b"["))?;
        let zeros = vec![0.0; settings.dimension];
        let mut written = 0;
        for_each_record(store, &settings, |record| {
            embeddings.write(|w| write_npy_row(w, &record.vector))?;
            let signature = record.signature.as_deref().unwrap_or(&zeros);
            signatures.write(|w| write_npy_row(w, signature))?;
            metadata.write(|w| {
                w.write_all(if written == 0 { b"\n" } else { b",\n" })?;
                serde_json::to_writer(w, &record.payload).map_err(std::io::Error::from)
            })?;
            written += 1;
            Ok(())
        })?;
        if written != chunks {
            return Err(IndexError::BadMetadata {
                field: "chunks",
                value: format!("{chunks} counted, {written} read"),
            });
        }
        metadata.write(|w| w.write_all(b"\n]\n"))?;
        Ok((
            [
                embeddings.finish()?,
                signatures.finish()?,
                metadata.finish()?,
            ],
            chunks,
        ))
    })?;
    let files: serde_json::Map<String, Value> = staged
        .iter()
        .map(|file| (file.name.to_string(), json!(file.digest)))
        .collect();
    let info = json!({
        "model": settings.model,
        "dimension": settings.dimension,
        "normalized": settings.normalize,
        "document_prompt": settings.document_prompt,
        "query_prompt": settings.query_prompt,
        "keyword_weight": settings.keyword_weight,
        "quantization": settings.quantization.name(),
        "chunks": chunks,
        "files": files,
        "quiver_version": env!("CARGO_PKG_VERSION"),
    });
    let info = stage(dir, INFO_FILE, |w| {
        serde_json::to_writer_pretty(w, &info).map_err(std::io::Error::from)
    })?;
    for file in staged.into_iter().chain([info]) {
        file.output.finish()?;
    }
    Ok(chunks)
}

/// A file of an export written in full beside its destination, not yet in place.
struct Staged {
    name: &'static str,
    output: Output,
    /// `sha256:` and the hex digest of its bytes.
    digest: String,
}

fn stage(
    dir: &Path,
    name: &'static str,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<Staged> {
    let mut staging = Staging::create(dir, name)?;
    staging.write(fill)?;
    staging.finish()
}

/// A file of an export being written beside its destination, hashed as it goes.
struct Staging {
    name: &'static str,
    path: std::path::PathBuf,
    writer: Digesting,
}

impl Staging {
    fn create(dir: &Path, name: &'static str) -> Result<Staging> {
        let path = dir.join(name);
        let output = Output::create(&path)?;
        Ok(Staging {
            name,
            path,
            writer: Digesting {
                inner: std::io::BufWriter::with_capacity(1 << 20, output),
                hasher: Sha256::new(),
            },
        })
    }

    fn write(&mut self, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
        fill(&mut self.writer).map_err(|source| IndexError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn finish(self) -> Result<Staged> {
        let Staging { name, path, writer } = self;
        let Digesting { inner, hasher } = writer;
        let output = inner.into_inner().map_err(|e| IndexError::Io {
            path,
            source: e.into_error(),
        })?;
        Ok(Staged {
            name,
            output,
            digest: format!("sha256:{}", hex(&hasher.finalize())),
        })
    }
}

/// The form `model_info.json` records a file's digest in.
pub fn file_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// [`file_digest`] of a file, read a piece at a time.
pub fn file_digest_of(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let (mut hasher, mut file) = (Sha256::new(), File::open(path)?);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buffer)? {
            0 => return Ok(format!("sha256:{}", hex(&hasher.finalize()))),
            read => hasher.update(&buffer[..read]),
        }
    }
}

/// A writer that hashes what passes through it.
struct Digesting {
    inner: std::io::BufWriter<Output>,
    hasher: Sha256,
}

impl Write for Digesting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
