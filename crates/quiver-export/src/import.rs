//! `quiver import`: an index built from a NumPy export (`quiver export --to npy`), so vectors
//! made elsewhere, or by an earlier Quiver, can be searched without embedding again.
//!
//! The folder's `model_info.json` becomes the index's settings (an existing index with other
//! settings is refused), `metadata.json` its chunks, `embeddings.npy` their vectors and
//! `signature_embeddings.npy` (when the export has it) their signature vectors, all in one
//! transaction. Files are keyed by the chunks' `path`; their content hash is not known, so a
//! later `quiver index` of the source tree re-chunks and re-embeds them.

use crate::files::{file_digest, EMBEDDINGS_FILE, INFO_FILE, METADATA_FILE, SIGNATURE_FILE};
use crate::npy::read_npy_f32;
use quiver_embed::Quantization;
use quiver_index::ids::{content_hash, numeric_id};
use quiver_index::{Batch, ChunkRecord, FileRecord, IndexError, IndexSettings, Result, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// What an import added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub files: usize,
    pub chunks: usize,
}

pub fn import_npy_dir(dir: &Path, store: &mut Store) -> Result<ImportReport> {
    let info = parse_json(dir, INFO_FILE, &read_file(dir, INFO_FILE)?)?;
    let settings = settings_from(&info, dir)?;
    let digests = Digests::from_info(&info, dir)?;
    let metadata_bytes = read_file(dir, METADATA_FILE)?;
    digests.check(dir, METADATA_FILE, &metadata_bytes)?;
    let metadata = parse_json(dir, METADATA_FILE, &metadata_bytes)?;
    let Value::Array(payloads) = metadata else {
        return Err(bad(dir, METADATA_FILE, 0, "expected an array of payloads"));
    };
    if let Some(chunks) = info["chunks"]
        .as_u64()
        .filter(|&n| n as usize != payloads.len())
    {
        return Err(bad(
            dir,
            METADATA_FILE,
            0,
            &format!(
                "{} payloads, but {INFO_FILE} says the export has {chunks} chunks",
                payloads.len()
            ),
        ));
    }
    let vectors = read_rows(dir, EMBEDDINGS_FILE, payloads.len(), &digests)?;
    // Exports by Quiver before signature vectors have none: those chunks search by text alone.
    let signatures = if dir.join(SIGNATURE_FILE).exists() || digests.lists(SIGNATURE_FILE) {
        read_rows(dir, SIGNATURE_FILE, payloads.len(), &digests)?
    } else {
        vec![Vec::new(); payloads.len()]
    };
    if let Some(row) = vectors
        .first()
        .filter(|row| row.len() != settings.dimension)
    {
        return Err(bad(
            dir,
            EMBEDDINGS_FILE,
            0,
            &format!(
                "rows of {} values, {INFO_FILE} says dimension {}",
                row.len(),
                settings.dimension
            ),
        ));
    }
    let mut by_file: BTreeMap<String, Vec<ChunkRecord>> = BTreeMap::new();
    let mut batch = Batch::default();
    for (row, ((payload, vector), signature)) in
        payloads.iter().zip(vectors).zip(signatures).enumerate()
    {
        let mut chunk =
            chunk_from(payload).map_err(|message| bad(dir, "metadata.json", row + 1, &message))?;
        chunk.embed_hash = format!("imported:{}", vector_hash(&vector));
        batch.vectors.push((chunk.embed_hash.clone(), vector));
        if signature.iter().any(|&x| x != 0.0) {
            let hash = format!("imported:{}", vector_hash(&signature));
            chunk.signature_hash = Some(hash.clone());
            batch.vectors.push((hash, signature));
        }
        let siblings = by_file.entry(chunk.path.clone()).or_default();
        chunk.seq = siblings.len();
        chunk.file = chunk.path.clone();
        siblings.push(chunk);
    }
    store.adopt_settings(&settings, false)?;
    let chunks = payloads.len();
    let files = by_file.len();
    batch.files = by_file
        .into_iter()
        .map(|(path, chunks)| {
            let hashes: String = chunks.iter().map(|c| c.content_hash.as_str()).collect();
            let file = FileRecord {
                path,
                size: 0,
                mtime_ns: 0,
                content_hash: format!("imported:{}", content_hash(hashes.as_bytes())),
            };
            (file, chunks)
        })
        .collect();
    store.commit(&batch)?;
    Ok(ImportReport { files, chunks })
}

/// The SHA-256 of each file that `model_info.json` records (Quiver 0.1 exports since the
/// digests; earlier ones have none and are read as they are).
struct Digests(Option<serde_json::Map<String, Value>>);

impl Digests {
    fn from_info(info: &Value, dir: &Path) -> Result<Digests> {
        match &info["files"] {
            Value::Null => Ok(Digests(None)),
            Value::Object(files) => Ok(Digests(Some(files.clone()))),
            _ => Err(bad(dir, INFO_FILE, 0, "field `files` is not an object")),
        }
    }

    fn lists(&self, file: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|files| files.contains_key(file))
    }

    /// Refuses `bytes` as `file` unless they are what the export wrote beside this
    /// `model_info.json`: a mix of two exports would pair chunks with other chunks' vectors.
    fn check(&self, dir: &Path, file: &str, bytes: &[u8]) -> Result<()> {
        let Some(files) = &self.0 else {
            return Ok(());
        };
        let Some(expected) = files.get(file).and_then(Value::as_str) else {
            return Err(bad(
                dir,
                INFO_FILE,
                0,
                &format!("field `files` has no digest for {file}"),
            ));
        };
        if file_digest(bytes) != expected {
            return Err(bad(
                dir,
                file,
                0,
                &format!(
                    "does not match the digest {INFO_FILE} records for it: the export is \
                     incomplete or mixes files of two runs; export it again"
                ),
            ));
        }
        Ok(())
    }
}

/// The rows of `dir/file`, which must number `expected` (one per payload) and be finite.
fn read_rows(dir: &Path, file: &str, expected: usize, digests: &Digests) -> Result<Vec<Vec<f32>>> {
    let bytes = read_file(dir, file)?;
    digests.check(dir, file, &bytes)?;
    let rows = read_npy_f32(&bytes).map_err(|message| bad(dir, file, 0, &message))?;
    if rows.len() != expected {
        return Err(bad(
            dir,
            file,
            0,
            &format!(
                "{} rows, but {METADATA_FILE} has {expected} payloads",
                rows.len()
            ),
        ));
    }
    if let Some(row) = rows
        .iter()
        .position(|row| row.iter().any(|value| !value.is_finite()))
    {
        return Err(bad(
            dir,
            file,
            0,
            &format!("row {row} holds a NaN or infinite value"),
        ));
    }
    Ok(rows)
}

fn read_file(dir: &Path, file: &str) -> Result<Vec<u8>> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|source| IndexError::Io { path, source })
}

fn parse_json(dir: &Path, file: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|error| IndexError::BadChunkFile {
        path: dir.join(file),
        line: error.line(),
        message: error.to_string(),
    })
}

/// `line` 0: the file as a whole.
fn bad(dir: &Path, file: &str, line: usize, message: &str) -> IndexError {
    match line {
        0 => IndexError::BadFile {
            path: dir.join(file),
            message: message.to_string(),
        },
        line => IndexError::BadChunkFile {
            path: dir.join(file),
            line,
            message: message.to_string(),
        },
    }
}

fn settings_from(info: &Value, dir: &Path) -> Result<IndexSettings> {
    let field = |name: &str| {
        bad(
            dir,
            INFO_FILE,
            0,
            &format!("field `{name}` is missing or of the wrong type"),
        )
    };
    let prompt = |name: &str| info[name].as_str().map(str::to_string);
    Ok(IndexSettings {
        model: info["model"]
            .as_str()
            .ok_or_else(|| field("model"))?
            .to_string(),
        dimension: info["dimension"]
            .as_u64()
            .ok_or_else(|| field("dimension"))? as usize,
        normalize: info["normalized"]
            .as_bool()
            .ok_or_else(|| field("normalized"))?,
        document_prompt: prompt("document_prompt"),
        query_prompt: prompt("query_prompt"),
        // Exports before int8 indexing have no such field: their vectors are f32.
        quantization: match info["quantization"].as_str() {
            None => Quantization::None,
            Some(name) => Quantization::from_name(name).ok_or_else(|| field("quantization"))?,
        },
    })
}

/// A stored chunk from its export payload; `seq`, `file` and `embed_hash` are the caller's.
fn chunk_from(payload: &Value) -> std::result::Result<ChunkRecord, String> {
    let text = |name: &str| -> std::result::Result<String, String> {
        payload[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("field `{name}` is missing or not a string"))
    };
    let optional = |name: &str| payload[name].as_str().map(str::to_string);
    let number = |name: &str| payload[name].as_u64().unwrap_or(0) as usize;
    let chunk_id = text("chunk_id")?;
    let body = text("text")?;
    Ok(ChunkRecord {
        uid: numeric_id(&chunk_id),
        uuid: quiver_index::ids::uuid(&chunk_id),
        file: String::new(),
        path: text("path")?,
        seq: 0,
        source: optional("source_subdir").unwrap_or_default(),
        language: optional("language").unwrap_or_else(|| "text".into()),
        symbol: optional("symbol"),
        kind: optional("kind"),
        parent: optional("parent"),
        start_line: number("start_line"),
        end_line: number("end_line"),
        start_byte: number("start_byte"),
        end_byte: number("end_byte"),
        content_hash: optional("content_hash").unwrap_or_else(|| content_hash(body.as_bytes())),
        text: body,
        embed_hash: String::new(),
        metadata: payload.get("metadata").filter(|m| m.is_object()).cloned(),
        // Set by the caller when the export has a signature vector for this row.
        signature_hash: None,
        chunk_id,
    })
}

fn vector_hash(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    content_hash(&bytes)
}
