//! `quiver import`: an index built from a NumPy export (`quiver export --to npy`), so vectors
//! made elsewhere, or by an earlier Quiver, can be searched without embedding again.
//!
//! The folder's `model_info.json` becomes the index's settings (an existing index with other
//! settings is refused), `metadata.json` its chunks, `embeddings.npy` their vectors and
//! `signature_embeddings.npy` (when the export has it) their signature vectors, all in one
//! transaction, read a row at a time. Files are keyed by the chunks' `path`; their content hash is not known, so a
//! later `quiver index` of the source tree re-chunks and re-embeds them.

use crate::files::{file_digest_of, EMBEDDINGS_FILE, INFO_FILE, METADATA_FILE, SIGNATURE_FILE};
use crate::npy::{check_npy_data_length, read_npy_header, read_npy_row};
use quiver_embed::Quantization;
use quiver_index::ids::{content_hash, hex, numeric_id};
use quiver_index::{
    is_keyword_weight, model_keyword_weight, Batch, ChunkRecord, FileRecord, IndexError,
    IndexSettings, Result, Store,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

/// What an import added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub files: usize,
    pub chunks: usize,
}

/// Chunks per batch handed to the store: memory stays bounded by one batch, whatever the
/// export's size.
const BATCH_CHUNKS: usize = 4096;

/// Imports the export in `dir` into `store`, in one transaction: a bad row anywhere leaves the
/// index as it was. Reads each file a piece at a time, so memory does not grow with the
/// export.
pub fn import_npy_dir(dir: &Path, store: &mut Store) -> Result<ImportReport> {
    let info = parse_json(dir, INFO_FILE, &read_file(dir, INFO_FILE)?)?;
    let settings = settings_from(&info, dir)?;
    let digests = Digests::from_info(&info, dir)?;
    digests.check(dir, METADATA_FILE)?;
    let expected = info["chunks"].as_u64().map(|n| n as usize);
    let vectors = Rows::open(dir, EMBEDDINGS_FILE, &digests, settings.dimension)?;
    // Exports by Quiver before signature vectors have none: those chunks search by text alone.
    let signatures = if dir.join(SIGNATURE_FILE).exists() || digests.lists(SIGNATURE_FILE) {
        Some(Rows::open(
            dir,
            SIGNATURE_FILE,
            &digests,
            settings.dimension,
        )?)
    } else {
        None
    };
    store.adopt_settings(&settings, false)?;
    let metadata_path = dir.join(METADATA_FILE);
    let metadata = File::open(&metadata_path).map_err(|source| IndexError::Io {
        path: metadata_path.clone(),
        source,
    })?;
    let mut reader = ExportReader {
        dir,
        vectors,
        signatures,
        files: BTreeMap::new(),
        chunks: 0,
    };
    store.bulk_load(|sink| {
        // The export is parsed, checked and hashed on a second thread while this one writes
        // the store: at a million chunks the two take time of the same order.
        let (sender, batches) = std::sync::mpsc::sync_channel::<Batch>(2);
        std::thread::scope(|scope| {
            let reading = scope.spawn(|| reader.read(metadata, expected, sender));
            let mut written = Ok(());
            for batch in batches {
                written = sink.apply(&batch);
                if written.is_err() {
                    // Dropping the receiver stops the reader at its next batch.
                    break;
                }
            }
            let read = reading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            // A store error stops the reader with `Interrupted`: the store's error is the one
            // that says what went wrong.
            written.and(read)
        })
    })?;
    Ok(ImportReport {
        files: reader.files.len(),
        chunks: reader.chunks,
    })
}

/// The export's payloads and rows, turned into the store's batches in order.
struct ExportReader<'a> {
    dir: &'a Path,
    vectors: Rows<'a>,
    signatures: Option<Rows<'a>>,
    /// Each file's chunks are numbered in order, and its record's hash covers their hashes.
    files: BTreeMap<String, (usize, Sha256)>,
    chunks: usize,
}

impl ExportReader<'_> {
    /// Sends every chunk, then the files' records, to `sender` in batches; refuses an export
    /// whose payloads and rows disagree, naming the file. Stops with `Interrupted` when the
    /// receiver is gone.
    fn read(
        &mut self,
        metadata: File,
        expected: Option<usize>,
        sender: std::sync::mpsc::SyncSender<Batch>,
    ) -> Result<()> {
        let dir = self.dir;
        let send = |batch: Batch| sender.send(batch).map_err(|_| IndexError::Interrupted);
        let mut batch = Batch::default();
        for_each_payload(&dir.join(METADATA_FILE), metadata, &mut |row, payload| {
            let mut chunk = chunk_from(&payload)
                .map_err(|message| bad(dir, METADATA_FILE, row + 1, &message))?;
            let vector = self.vectors.next(row + 1)?;
            chunk.embed_hash = format!("imported:{}", vector_hash(&vector));
            batch.vectors.push((chunk.embed_hash.clone(), vector));
            if let Some(signature) = self
                .signatures
                .as_mut()
                .map(|s| s.next(row + 1))
                .transpose()?
            {
                if signature.iter().any(|&x| x != 0.0) {
                    let hash = format!("imported:{}", vector_hash(&signature));
                    chunk.signature_hash = Some(hash.clone());
                    batch.vectors.push((hash, signature));
                }
            }
            let (seq, hasher) = self
                .files
                .entry(chunk.path.clone())
                .or_insert_with(|| (0, Sha256::new()));
            chunk.seq = *seq;
            *seq += 1;
            hasher.update(chunk.content_hash.as_bytes());
            chunk.file = chunk.path.clone();
            // The file's record is written whole once every chunk of it is in.
            let file = FileRecord {
                path: chunk.path.clone(),
                size: 0,
                mtime_ns: 0,
                content_hash: String::new(),
            };
            match batch.files.last_mut() {
                Some((last, siblings)) if last.path == file.path => siblings.push(chunk),
                _ => batch.files.push((file, vec![chunk])),
            }
            self.chunks += 1;
            if batch.vectors.len() >= BATCH_CHUNKS {
                send(std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        send(batch)?;
        let chunks = self.chunks;
        if let Some(expected) = expected.filter(|&n| n != chunks) {
            return Err(bad(
                dir,
                METADATA_FILE,
                0,
                &format!(
                    "{chunks} payloads, but {INFO_FILE} says the export has {expected} chunks"
                ),
            ));
        }
        for rows in std::iter::once(&self.vectors).chain(self.signatures.as_ref()) {
            rows.finish(chunks)?;
        }
        let touched = self
            .files
            .iter()
            .map(|(path, (_, hasher))| FileRecord {
                path: path.clone(),
                size: 0,
                mtime_ns: 0,
                content_hash: format!("imported:{}", hex(&hasher.clone().finalize())),
            })
            .collect();
        send(Batch {
            touched,
            ..Batch::default()
        })
    }
}

/// Calls `each` with every payload of the JSON array in `metadata`, one at a time.
fn for_each_payload(
    path: &Path,
    metadata: File,
    each: &mut dyn FnMut(usize, Value) -> Result<()>,
) -> Result<()> {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    struct Payloads<'a> {
        each: &'a mut dyn FnMut(usize, Value) -> Result<()>,
        /// What `each` failed with: serde's error type cannot carry it.
        failure: &'a mut Option<IndexError>,
    }
    impl<'de> Visitor<'de> for Payloads<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of payloads")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
            let mut row = 0;
            while let Some(payload) = seq.next_element::<Value>()? {
                if let Err(error) = (self.each)(row, payload) {
                    *self.failure = Some(error);
                    return Err(serde::de::Error::custom("stopped"));
                }
                row += 1;
            }
            Ok(())
        }
    }
    let mut failure = None;
    let mut deserializer =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 20, metadata));
    let parsed = deserializer
        .deserialize_seq(Payloads {
            each,
            failure: &mut failure,
        })
        .and_then(|()| deserializer.end());
    if let Some(error) = failure {
        return Err(error);
    }
    parsed.map_err(|error| IndexError::BadChunkFile {
        path: path.to_path_buf(),
        line: error.line(),
        message: error.to_string(),
    })
}

/// The rows of one `.npy` file of an export, read one at a time in payload order.
struct Rows<'a> {
    dir: &'a Path,
    file: &'static str,
    reader: std::io::BufReader<File>,
    rows: usize,
    dimension: usize,
    read: usize,
}

impl<'a> Rows<'a> {
    /// Opens `dir/file`, checking its digest and that its rows are `dimension` wide.
    fn open(
        dir: &'a Path,
        file: &'static str,
        digests: &Digests,
        dimension: usize,
    ) -> Result<Rows<'a>> {
        digests.check(dir, file)?;
        let path = dir.join(file);
        let opened = File::open(&path).map_err(|source| IndexError::Io {
            path: path.clone(),
            source,
        })?;
        let length = opened.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = std::io::BufReader::with_capacity(1 << 20, opened);
        let (rows, cols) = read_npy_header(&mut reader).map_err(|m| bad(dir, file, 0, &m))?;
        let header =
            std::io::Seek::stream_position(&mut reader).map_err(|source| IndexError::Io {
                path: path.clone(),
                source,
            })?;
        check_npy_data_length(rows, cols, length.saturating_sub(header))
            .map_err(|m| bad(dir, file, 0, &m))?;
        if rows > 0 && cols != dimension {
            return Err(bad(
                dir,
                file,
                0,
                &format!("rows of {cols} values, {INFO_FILE} says dimension {dimension}"),
            ));
        }
        Ok(Rows {
            dir,
            file,
            reader,
            rows,
            dimension,
            read: 0,
        })
    }

    /// The row for payload `payload` (from 1): finite, or refused.
    fn next(&mut self, payload: usize) -> Result<Vec<f32>> {
        if self.read == self.rows {
            return Err(bad(
                self.dir,
                self.file,
                0,
                &format!("{} rows, but {METADATA_FILE} has more payloads", self.rows),
            ));
        }
        let mut row = Vec::with_capacity(self.dimension);
        read_npy_row(&mut self.reader, self.dimension, &mut row).map_err(|source| {
            IndexError::Io {
                path: self.dir.join(self.file),
                source,
            }
        })?;
        self.read += 1;
        if row.iter().any(|value| !value.is_finite()) {
            return Err(bad(
                self.dir,
                self.file,
                0,
                &format!(
                    "row {} holds a NaN or infinite value (payload {payload})",
                    self.read - 1
                ),
            ));
        }
        Ok(row)
    }

    /// Refuses rows left over once every payload has had one.
    fn finish(&self, payloads: usize) -> Result<()> {
        if self.rows != payloads {
            return Err(bad(
                self.dir,
                self.file,
                0,
                &format!(
                    "{} rows, but {METADATA_FILE} has {payloads} payloads",
                    self.rows
                ),
            ));
        }
        Ok(())
    }
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

    /// Refuses `file` unless it is what the export wrote beside this `model_info.json`: a mix
    /// of two exports would pair chunks with other chunks' vectors.
    fn check(&self, dir: &Path, file: &str) -> Result<()> {
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
        let path = dir.join(file);
        let digest = file_digest_of(&path).map_err(|source| IndexError::Io { path, source })?;
        if digest != expected {
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
    let model = info["model"]
        .as_str()
        .ok_or_else(|| field("model"))?
        .to_string();
    Ok(IndexSettings {
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
        // Exports from before the weight was recorded take their model's.
        keyword_weight: match &info["keyword_weight"] {
            Value::Null => model_keyword_weight(&model),
            weight => weight
                .as_f64()
                .filter(|&w| is_keyword_weight(w))
                .ok_or_else(|| field("keyword_weight"))?,
        },
        model,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::write_npy_dir;
    use crate::npy::write_npy_f32;
    use serde_json::json;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("quiver-import-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// An export of `n` chunks whose files' chunks are interleaved (a.py, b.py, a.py, ...).
    fn export(dir: &Path, n: usize, poison_last: bool) {
        let payloads: Vec<Value> = (0..n)
            .map(|i| {
                let path = format!("{}.py", ["a", "b", "c"][i % 3]);
                json!({"chunk_id": format!("{path}:{i}"), "path": path, "text": format!("def f{i}(): pass")})
            })
            .collect();
        let mut rows: Vec<Vec<f32>> = (0..n).map(|i| vec![i as f32, 1.0]).collect();
        if poison_last {
            rows[n - 1][0] = f32::NAN;
        }
        let mut bytes = Vec::new();
        write_npy_f32(&mut bytes, &rows).unwrap();
        std::fs::write(dir.join(EMBEDDINGS_FILE), bytes).unwrap();
        std::fs::write(
            dir.join(METADATA_FILE),
            serde_json::to_vec(&payloads).unwrap(),
        )
        .unwrap();
        let info = json!({"model": "m", "dimension": 2, "normalized": true, "chunks": n});
        std::fs::write(dir.join(INFO_FILE), info.to_string()).unwrap();
    }

    #[test]
    fn a_large_export_streams_in_and_out_and_a_bad_last_row_keeps_the_index() {
        let n = BATCH_CHUNKS * 2 + 100;
        let root = scratch("stream");
        let (first, index) = (root.join("first"), root.join("index"));
        std::fs::create_dir_all(&first).unwrap();
        export(&first, n, false);
        let mut store = Store::open_writer(&index).unwrap();
        let report = import_npy_dir(&first, &mut store).unwrap();
        assert_eq!((report.files, report.chunks), (3, n));
        let chunks = store.chunks_of_file("b.py").unwrap();
        assert_eq!(chunks.len(), n / 3 + usize::from(n % 3 > 1));
        // A file's chunks keep their export order across batches.
        let seqs: Vec<usize> = chunks.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (0..chunks.len()).collect::<Vec<_>>());
        assert_eq!(chunks[1].text, "def f4(): pass");

        // Written out a chunk at a time and read back, it is the same index.
        let again = root.join("again");
        assert_eq!(write_npy_dir(&again, &store).unwrap(), n);
        let copy = root.join("copy");
        let mut copy_store = Store::open_writer(&copy).unwrap();
        assert_eq!(import_npy_dir(&again, &mut copy_store).unwrap().chunks, n);
        assert_eq!(
            copy_store.all_chunks().unwrap().len(),
            store.all_chunks().unwrap().len()
        );

        // A NaN in the very last row, after two full batches: nothing of the import is kept.
        let poisoned = root.join("poisoned");
        std::fs::create_dir_all(&poisoned).unwrap();
        export(&poisoned, n + 3, true);
        let error = import_npy_dir(&poisoned, &mut store)
            .unwrap_err()
            .to_string();
        assert!(error.contains("NaN"), "{error}");
        assert_eq!(store.all_chunks().unwrap().len(), n);
        assert_eq!(
            store.chunks_of_file("a.py").unwrap()[0].text,
            "def f0(): pass"
        );
        drop((store, copy_store));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The store refuses the first batch while the reading thread has two more to send: the
    /// store's error is the one reported (not the reader's stop), and nothing is kept.
    #[test]
    fn a_store_error_mid_import_is_the_error_reported_and_keeps_the_index() {
        let root = scratch("duplicate");
        let (export_dir, index) = (root.join("export"), root.join("index"));
        std::fs::create_dir_all(&export_dir).unwrap();
        export(&export_dir, BATCH_CHUNKS * 3, false);
        // Payload 1 (b.py) takes payload 0's chunk id (a.py).
        let path = export_dir.join(METADATA_FILE);
        let mut payloads: Vec<Value> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        payloads[1]["chunk_id"] = payloads[0]["chunk_id"].clone();
        std::fs::write(&path, serde_json::to_vec(&payloads).unwrap()).unwrap();
        let mut store = Store::open_writer(&index).unwrap();
        let error = import_npy_dir(&export_dir, &mut store).unwrap_err();
        assert!(
            matches!(error, IndexError::DuplicateChunkId { .. }),
            "{error}"
        );
        assert!(store.all_chunks().unwrap().is_empty());
        drop(store);
        let _ = std::fs::remove_dir_all(&root);
    }
}
