//! The incremental pipeline: walk → compare with what the index holds → read and chunk what
//! changed → embed chunks whose text has no vector yet → commit, a batch of files at a time.
//!
//! Crash safety comes from the commit unit: a batch of files with their chunks and vectors is
//! one SQLite transaction, and a file's record is only written with its chunks. A killed run
//! leaves every file either fully as before or fully updated; the next run picks up from there.

use crate::chunk_files;
use crate::error::{IndexError, Result};
use crate::ids::{chunk_id, content_hash, numeric_id, uuid};
use crate::store::{Batch, ChunkRecord, FileRecord, IndexSettings, Store};
use crate::walk::{content_skip, discover, SkipReason, SourceFile, WalkOptions};
use crate::{is_keyword_weight, model_keyword_weight};
use quiver_chunk::{
    chunk_file, chunk_fixed_lines, embedding_text, signature_text, ChunkError, ChunkOptions,
    TokenCounter, HEADER_VERSION, SYNTAX_RULES_VERSION,
};
use quiver_embed::{EmbedOptions, Embedder};
use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the chunks come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A source tree, chunked by Quiver.
    Tree { root: PathBuf },
    /// A directory of JSON/JSONL chunk files ([`crate::chunk_files`]).
    ChunkFiles { dir: PathBuf },
}

impl Input {
    pub fn root(&self) -> &Path {
        match self {
            Input::Tree { root } => root,
            Input::ChunkFiles { dir } => dir,
        }
    }
}

/// How source files are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunking {
    /// Along the syntax tree, a definition per chunk (Markdown by headings, text by paragraphs),
    /// within the budget.
    #[default]
    Syntax,
    /// As `Syntax`, packing small neighbouring definitions into one chunk while they fit.
    SyntaxPacked,
    /// As `Syntax`, but a chunk under this many tokens takes its next definition too.
    SyntaxFloor(usize),
    /// Fixed windows of this many lines: the baseline of `quiver eval`.
    FixedLines(usize),
}

impl Chunking {
    /// How the index records the chunking, to notice a change.
    fn fingerprint(self) -> String {
        match self {
            Chunking::Syntax => format!("syntax-per-definition-v{SYNTAX_RULES_VERSION}"),
            Chunking::SyntaxPacked => format!("syntax-packed-v{SYNTAX_RULES_VERSION}"),
            Chunking::SyntaxFloor(floor) => format!("syntax-floor-{floor}-v{SYNTAX_RULES_VERSION}"),
            Chunking::FixedLines(lines) => format!("lines-{lines}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub input: Input,
    /// First part of every chunk id.
    pub id_prefix: String,
    /// How the model is named in the index (what `quiver search` loads again).
    pub model_id: String,
    /// Token budget of a chunk's own text; `None`: the model's max length less room for the
    /// header and special tokens.
    pub chunk_tokens: Option<usize>,
    pub chunking: Chunking,
    /// Embed each chunk with its context header ([`quiver_chunk::context_header`]).
    pub context_header: bool,
    pub walk: WalkOptions,
    /// Embed everything again when the model or dimension changed.
    pub reembed: bool,
    /// Matryoshka dimension; `None`: the index's own while the model stays the same, else the
    /// model's full width.
    pub dimensions: Option<usize>,
    /// Chunks embedded per commit.
    pub batch_chunks: usize,
    /// The model's named prompt that queries searching the index are embedded with (recorded
    /// in the index); `None`: the one an earlier run chose, else the model's `query` prompt.
    pub query_prompt: Option<String>,
    /// Hybrid search's keyword weight, recorded in the index; `None`: the one an earlier run
    /// chose, else the model's ([`crate::model_keyword_weight`]).
    pub keyword_weight: Option<f64>,
    /// Fit a query adapter on the repository's own doc comments and keep it fitted
    /// ([`crate::adapter`]); off, the index's adapter is removed.
    pub adapt: bool,
}

/// Tokens kept free for the context header and the special tokens when the chunk budget is
/// derived from the model's max length.
pub const HEADER_RESERVE_TOKENS: usize = 32;

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IndexReport {
    /// Files that passed the name, size and ignore rules.
    pub files_found: usize,
    /// Of those, files that passed the content rules too and are in the index.
    pub files_indexed: usize,
    pub files_changed: usize,
    pub files_unchanged: usize,
    pub files_removed: usize,
    /// Paths of the files changed, added and removed: the first [`LISTED_FILES`] of each.
    pub changed_files: Vec<String>,
    pub removed_files: Vec<String>,
    pub chunks_written: usize,
    pub chunks_embedded: usize,
    pub chunks_reused: usize,
    /// Signature texts embedded (a second vector for chunks that start a definition).
    pub signatures_embedded: usize,
    /// The (doc comment, definition) pairs of the query adapter this run fitted, when it
    /// fitted one.
    pub adapter_pairs: Option<usize>,
    /// The trial fit that decided whether this run kept an adapter, when one ran: an adapter
    /// that ranks no held-out pair's definition higher is not kept.
    pub adapter_held_out: Option<crate::adapter::HeldOut>,
    pub skipped: BTreeMap<&'static str, usize>,
    pub chunk_tokens: usize,
    /// Tokens the model ran (chunks and signatures, after truncation), and the seconds it
    /// took: with `seconds`, how much of the run the model is.
    pub tokens_embedded: usize,
    pub embed_seconds: f64,
    /// Seconds spent committing batches to the store, and fitting the query adapter (which
    /// embeds doc comments of its own, outside `tokens_embedded`).
    pub commit_seconds: f64,
    pub adapter_seconds: f64,
    pub seconds: f64,
}

impl IndexReport {
    /// One line for a run: what changed, and in how long; the files by name when five or
    /// fewer changed.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} changed, {} removed, {} unchanged; {} chunks embedded ({:.1} s)",
            self.files_changed,
            self.files_removed,
            self.files_unchanged,
            self.chunks_embedded,
            self.seconds
        );
        if self.files_changed + self.files_removed <= 5 {
            let named: Vec<&str> = self
                .changed_files
                .iter()
                .chain(&self.removed_files)
                .map(String::as_str)
                .collect();
            if !named.is_empty() {
                line.push_str(&format!(": {}", named.join(", ")));
            }
        }
        line
    }
}

/// How many changed and removed paths a report lists (a first run changes every file).
pub const LISTED_FILES: usize = 100;

/// Hooks for a progress display.
pub trait IndexProgress {
    fn files_found(&self, _total: usize) {}
    fn files_done(&self, _count: usize) {}
    fn chunks_embedded(&self, _count: usize) {}
    /// Asked after every file and every forward pass: `true` stops the run with
    /// [`IndexError::Interrupted`], keeping what was committed (Ctrl-C in a front end that
    /// cannot simply be killed, such as a Python process).
    fn interrupted(&self) -> bool {
        false
    }
}

pub struct NoProgress;
impl IndexProgress for NoProgress {}

/// The model's tokenizer as the chunker's token counter.
pub struct ModelTokens<'a>(pub &'a Embedder);

impl TokenCounter for ModelTokens<'_> {
    fn token_starts(&self, text: &str) -> std::result::Result<Vec<usize>, ChunkError> {
        self.0
            .tokenizer()
            .token_starts(text)
            .map_err(|e| ChunkError::Tokenizer(e.to_string()))
    }
}

/// What an index embedded by `embedder` (as `model_id`) records: the one rule for its width,
/// prompts and keyword weight, read by `quiver index`, the watcher, Python and `quiver eval`.
/// What the caller asks (`dimensions`, `query_prompt`, `keyword_weight`) wins; else what an
/// earlier run over `stored` chose, while the model stays the same; else the model's full
/// width, its own `query`/`document` prompts and the keyword weight measured for it. A named
/// prompt the model lacks, or a weight that is negative or not a number, is refused.
pub fn settings_for(
    model_id: &str,
    embedder: &Embedder,
    stored: Option<&IndexSettings>,
    dimensions: Option<usize>,
    query_prompt: Option<&str>,
    keyword_weight: Option<f64>,
) -> Result<IndexSettings> {
    let prompt = |name: &str| {
        embedder
            .config()
            .prompts
            .contains_key(name)
            .then(|| name.to_string())
    };
    let earlier = stored.filter(|s| s.model == model_id);
    let query_prompt = match query_prompt {
        Some(name) => {
            embedder.config().prompt(name)?;
            Some(name.to_string())
        }
        None => match earlier {
            Some(earlier) => earlier.query_prompt.clone(),
            None => prompt("query").or_else(|| prompt("retrieval.query")),
        },
    };
    if let Some(weight) = keyword_weight.filter(|&w| !is_keyword_weight(w)) {
        return Err(IndexError::KeywordWeight(weight));
    }
    let keyword_weight = keyword_weight
        .or(earlier.map(|s| s.keyword_weight))
        .unwrap_or_else(|| model_keyword_weight(model_id));
    Ok(IndexSettings {
        model: model_id.to_string(),
        dimension: stored_width(stored, model_id, dimensions, embedder.dimension()),
        normalize: true,
        document_prompt: prompt("document")
            .or_else(|| prompt("passage"))
            .or_else(|| prompt("retrieval.passage")),
        query_prompt,
        quantization: embedder.quantization(),
        keyword_weight,
    })
}

/// The Matryoshka width a run stores: the one asked for, else the index's own while the run
/// keeps the index's model, else the model's full width.
fn stored_width(
    stored: Option<&IndexSettings>,
    model_id: &str,
    requested: Option<usize>,
    model_width: usize,
) -> usize {
    requested
        .or(stored.filter(|s| s.model == model_id).map(|s| s.dimension))
        .unwrap_or(model_width)
}

/// Brings the index in `store` up to date with the input.
pub fn index(
    store: &mut Store,
    embedder: &Embedder,
    options: &IndexOptions,
    progress: &dyn IndexProgress,
) -> Result<IndexReport> {
    let started = Instant::now();
    let settings = settings_for(
        &options.model_id,
        embedder,
        store.settings()?.as_ref(),
        options.dimensions,
        options.query_prompt.as_deref(),
        options.keyword_weight,
    )?;
    let embed_options = settings.document_options();
    // One text embedded as the run will embed them, before anything in the index changes: a
    // width the model cannot give, or a model that cannot run or gives non-finite vectors
    // (`Embedder::embed_sequences` refuses those), must not empty the index.
    embedder.embed(&["def check(settings): return settings"], &embed_options)?;
    store.adopt_settings(&settings, options.reembed)?;
    let chunk_tokens = options.chunk_tokens.unwrap_or_else(|| {
        embedder
            .max_length()
            .saturating_sub(HEADER_RESERVE_TOKENS)
            .max(16)
    });
    let header = if options.context_header {
        HEADER_VERSION.to_string()
    } else {
        "none".to_string()
    };
    let chunking = format!(
        "{};tokens={chunk_tokens};header={header}",
        options.chunking.fingerprint()
    );
    let rechunk_all = store.meta("chunking")?.as_deref() != Some(chunking.as_str());

    let (mut files, mut skips) = discover(options.input.root(), &options.walk);
    if let Input::ChunkFiles { .. } = options.input {
        files.retain(|f| chunk_files::is_chunk_file(&f.relative));
    }
    progress.files_found(files.len());
    let stored = store.files()?;
    let chunker = Chunker {
        embedder,
        options,
        chunk_tokens,
        source: repository_name(options.input.root()),
        rechunk_all,
    };
    let mut run = Run {
        store,
        embedder,
        embed_options,
        progress,
        batch: Batch::default(),
        pending: Vec::new(),
        pending_hashes: HashSet::new(),
        batch_files: 0,
        report: IndexReport::default(),
    };
    run.report.files_found = files.len();
    let mut kept = HashSet::new();
    // Reading and chunking (tree-sitter, the tokenizer) run on their own thread, files ahead of
    // the embedding, which keeps the model's threads busy meanwhile; results arrive in walk
    // order, so batches and commits are the same as one thread would make.
    std::thread::scope(|scope| -> Result<()> {
        let (sender, prepared) = std::sync::mpsc::sync_channel(FILES_PREPARED_AHEAD);
        let (files, stored, chunker) = (&files, &stored, &chunker);
        scope.spawn(move || {
            for file in files {
                let work = chunker.prepare(file, stored.get(&file.relative));
                if sender.send(work).is_err() {
                    break; // the embedding side stopped on an error
                }
            }
        });
        for (file, work) in files.iter().zip(prepared) {
            match work? {
                FileWork::Skipped(reason) => {
                    skips.add(reason);
                    continue;
                }
                FileWork::UnchangedOnDisk => {
                    run.report.files_unchanged += 1;
                    run.batch_files += 1;
                }
                FileWork::SameContent(record) => run.take_same_content(record),
                FileWork::Changed(record, chunks) => run.take_changed(record, chunks)?,
            }
            kept.insert(file.relative.clone());
            if progress.interrupted() {
                return Err(IndexError::Interrupted);
            }
            if run.pending.len() >= options.batch_chunks || run.batch.files.len() >= 256 {
                run.flush()?;
            }
        }
        Ok(())
    })?;
    run.flush()?;
    let removed: Vec<String> = stored
        .keys()
        .filter(|path| !kept.contains(*path))
        .cloned()
        .collect();
    run.report.files_removed = removed.len();
    run.report.removed_files = removed.iter().take(LISTED_FILES).cloned().collect();
    run.report.files_indexed = kept.len();
    let mut report = run.report;
    store.remove_files(&removed)?;
    store.collect_garbage()?;
    let adapter_started = Instant::now();
    if options.adapt {
        let changed = report.chunks_embedded + report.files_removed;
        let refreshed = crate::adapter::refresh(store, embedder, &settings, changed, progress)?;
        report.adapter_pairs = refreshed.pairs;
        report.adapter_held_out = refreshed.held_out;
    } else {
        store.set_query_adapter(None)?;
    }
    report.adapter_seconds = adapter_started.elapsed().as_secs_f64();
    store.set_meta("chunking", &chunking)?;
    store.set_meta("id_prefix", &options.id_prefix)?;
    store.set_meta(crate::run::ADAPT, if options.adapt { "on" } else { "off" })?;
    store.set_meta("root", &options.input.root().display().to_string())?;
    store.set_meta("last_indexed_unix", &now_unix_seconds())?;
    crate::vectors::sync(store)?;
    report.skipped = skips.0.iter().map(|(r, n)| (r.name(), *n)).collect();
    report.chunk_tokens = chunk_tokens;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A chunk ready to store, with the texts its vectors come from.
struct PreparedChunk {
    record: ChunkRecord,
    /// What the chunk's vector embeds (header and text).
    embedded: String,
    /// What its signature vector embeds, when it starts a definition.
    signature: Option<String>,
}

/// The state of one indexing run.
struct Run<'a> {
    store: &'a mut Store,
    embedder: &'a Embedder,
    embed_options: EmbedOptions,
    progress: &'a dyn IndexProgress,
    batch: Batch,
    /// Texts to embed before the batch commits: (hash, text, whether it is a signature).
    pending: Vec<(String, String, bool)>,
    pending_hashes: HashSet<String>,
    /// Files handled since the last progress report.
    batch_files: usize,
    report: IndexReport,
}

impl Run<'_> {
    /// A file whose bytes match the index: only its size and time are refreshed.
    fn take_same_content(&mut self, record: FileRecord) {
        self.batch_files += 1;
        self.report.files_unchanged += 1;
        self.batch.touched.push(record);
    }

    /// A changed file: its chunks replace the old ones, texts without a vector are queued.
    fn take_changed(&mut self, record: FileRecord, chunks: Vec<PreparedChunk>) -> Result<()> {
        self.batch_files += 1;
        self.report.files_changed += 1;
        if self.report.changed_files.len() < LISTED_FILES {
            self.report.changed_files.push(record.path.clone());
        }
        let hashes: Vec<&str> = chunks
            .iter()
            .flat_map(|c| {
                [
                    Some(c.record.embed_hash.as_str()),
                    c.record.signature_hash.as_deref(),
                ]
            })
            .flatten()
            .collect();
        let present = self.store.vectors_present(&hashes)?;
        let mut records = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            if !self.queue(&chunk.record.embed_hash, chunk.embedded, false, &present) {
                self.report.chunks_reused += 1;
            }
            if let (Some(hash), Some(text)) = (&chunk.record.signature_hash, chunk.signature) {
                self.queue(hash, text, true, &present);
            }
            records.push(chunk.record);
        }
        self.report.chunks_written += records.len();
        self.batch.files.push((record, records));
        Ok(())
    }

    /// Queues `text` for embedding unless its vector is stored or queued; says whether it was.
    fn queue(
        &mut self,
        hash: &str,
        text: String,
        signature: bool,
        present: &HashSet<String>,
    ) -> bool {
        if present.contains(hash) || self.pending_hashes.contains(hash) {
            return false;
        }
        self.pending_hashes.insert(hash.to_string());
        self.pending.push((hash.to_string(), text, signature));
        true
    }

    /// Embeds what is pending and commits the batch in one transaction.
    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let texts: Vec<&str> = self.pending.iter().map(|(_, t, _)| t.as_str()).collect();
            let progress = self.progress;
            let started = Instant::now();
            let (vectors, tokens) = self
                .embedder
                .embed_counted(&texts, &self.embed_options, |n| {
                    progress.chunks_embedded(n);
                    if progress.interrupted() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .map_err(IndexError::from)?;
            self.report.embed_seconds += started.elapsed().as_secs_f64();
            self.report.tokens_embedded += tokens;
            let signatures = self.pending.iter().filter(|p| p.2).count();
            self.report.signatures_embedded += signatures;
            self.report.chunks_embedded += vectors.len() - signatures;
            self.batch.vectors = self
                .pending
                .drain(..)
                .map(|(hash, ..)| hash)
                .zip(vectors)
                .collect();
            self.pending_hashes.clear();
        }
        if !self.batch.is_empty() {
            let started = Instant::now();
            self.store.commit(&self.batch)?;
            self.report.commit_seconds += started.elapsed().as_secs_f64();
            self.batch = Batch::default();
        }
        self.progress.files_done(self.batch_files);
        self.batch_files = 0;
        Ok(())
    }
}

/// Files read and chunked ahead of the embedding, this many at most.
const FILES_PREPARED_AHEAD: usize = 64;

/// What the chunking stage made of one file.
enum FileWork {
    /// Size and modification time match the index: not read.
    UnchangedOnDisk,
    /// Not indexed (unreadable, binary, a secret, ...).
    Skipped(SkipReason),
    /// Read: its bytes match the index.
    SameContent(FileRecord),
    /// Read and chunked.
    Changed(FileRecord, Vec<PreparedChunk>),
}

/// Reads and chunks files: the stage that runs on its own thread, ahead of the embedding.
struct Chunker<'a> {
    embedder: &'a Embedder,
    options: &'a IndexOptions,
    chunk_tokens: usize,
    /// The repository's name, second part of every chunk id of a tree.
    source: String,
    rechunk_all: bool,
}

impl Chunker<'_> {
    /// What `file` needs, given what the index holds of it (`previous`).
    fn prepare(&self, file: &SourceFile, previous: Option<&FileRecord>) -> Result<FileWork> {
        let unchanged_on_disk =
            previous.is_some_and(|p| p.size == file.size && p.mtime_ns == file.mtime_ns);
        if unchanged_on_disk && !self.rechunk_all {
            return Ok(FileWork::UnchangedOnDisk);
        }
        let bytes = match self.read(file) {
            Ok(bytes) => bytes,
            Err(reason) => return Ok(FileWork::Skipped(reason)),
        };
        let record = FileRecord {
            path: file.relative.clone(),
            size: file.size,
            mtime_ns: file.mtime_ns,
            content_hash: content_hash(&bytes),
        };
        if !self.rechunk_all && previous.is_some_and(|p| p.content_hash == record.content_hash) {
            return Ok(FileWork::SameContent(record));
        }
        // Invalid UTF-8 (a Latin-1 file, a stray byte) is replaced rather than refused.
        let text = String::from_utf8_lossy(&bytes);
        let chunks = match &self.options.input {
            Input::Tree { .. } => self.chunk_source(&file.relative, &text)?,
            Input::ChunkFiles { .. } => self.given_chunks(file, &text)?,
        };
        Ok(FileWork::Changed(record, chunks))
    }

    /// The file's bytes, or why it cannot or must not be indexed.
    fn read(&self, file: &SourceFile) -> std::result::Result<Vec<u8>, SkipReason> {
        let bytes = std::fs::read(&file.absolute).map_err(|error| {
            tracing::warn!("{}: {error}", file.absolute.display());
            SkipReason::Unreadable
        })?;
        if let Input::Tree { .. } = self.options.input {
            if let Some(reason) = content_skip(&bytes) {
                tracing::info!("skipping {}: {}", file.relative, reason.name());
                return Err(reason);
            }
        }
        Ok(bytes)
    }

    fn chunk_source(&self, relative: &str, text: &str) -> Result<Vec<PreparedChunk>> {
        let counter = ModelTokens(self.embedder);
        let path = Path::new(relative);
        let chunks = match self.options.chunking {
            Chunking::Syntax | Chunking::SyntaxPacked | Chunking::SyntaxFloor(_) => {
                let options = ChunkOptions {
                    max_tokens: self.chunk_tokens,
                    pack_definitions: self.options.chunking == Chunking::SyntaxPacked,
                    definition_floor: match self.options.chunking {
                        Chunking::SyntaxFloor(floor) => floor,
                        _ => 0,
                    },
                };
                chunk_file(path, text, &options, &counter)?
            }
            Chunking::FixedLines(lines) => chunk_fixed_lines(path, text, lines, &counter)?,
        };
        Ok(chunks
            .into_iter()
            .enumerate()
            .map(|(n, chunk)| {
                let (embedded, signature) = if self.options.context_header {
                    (
                        embedding_text(relative, &chunk),
                        signature_text(relative, &chunk),
                    )
                } else {
                    (chunk.text.clone(), chunk.signature.clone())
                };
                ChunkParts {
                    source: self.source.clone(),
                    file: relative.to_string(),
                    path: relative.to_string(),
                    seq: n,
                    language: chunk.language.to_string(),
                    symbol: chunk.symbol,
                    kind: chunk.kind,
                    parent: chunk.parent,
                    lines: (chunk.start_line, chunk.end_line),
                    bytes: (chunk.start_byte, chunk.end_byte),
                    text: chunk.text,
                    embedded,
                    signature,
                    metadata: None,
                }
                .prepare(&self.options.id_prefix)
            })
            .collect())
    }

    fn given_chunks(&self, file: &SourceFile, text: &str) -> Result<Vec<PreparedChunk>> {
        let source = chunk_files::source_of(&file.relative);
        let given = chunk_files::parse_chunk_file(&file.absolute, text, &source)?;
        let mut per_path: BTreeMap<String, usize> = BTreeMap::new();
        let mut records = Vec::with_capacity(given.len());
        for chunk in given {
            let path = chunk.path.unwrap_or_else(|| file.relative.clone());
            let counter = per_path.entry(path.clone()).or_default();
            let n = chunk.chunk_index.unwrap_or(*counter);
            *counter += 1;
            let language = chunk.language.unwrap_or_else(|| {
                quiver_chunk::Language::from_path(Path::new(&path))
                    .name()
                    .to_string()
            });
            records.push(
                ChunkParts {
                    source: source.clone(),
                    file: file.relative.clone(),
                    path,
                    seq: n,
                    language,
                    symbol: chunk.symbol,
                    kind: chunk.kind,
                    parent: chunk.parent,
                    lines: (chunk.start_line, chunk.end_line),
                    bytes: (0, chunk.text.len()),
                    // Given chunks are embedded as they are.
                    embedded: chunk.text.clone(),
                    text: chunk.text,
                    signature: None,
                    metadata: Some(serde_json::Value::Object(chunk.metadata)),
                }
                .prepare(&self.options.id_prefix),
            );
        }
        Ok(records)
    }
}

/// A chunk before it is a record. A tree's own chunks and given chunk files differ in where
/// these come from, not in what a record derives from them (its ids and hashes).
struct ChunkParts {
    source: String,
    file: String,
    path: String,
    seq: usize,
    language: String,
    symbol: Option<String>,
    kind: Option<String>,
    parent: Option<String>,
    /// First and last line, from 1.
    lines: (usize, usize),
    /// Byte range within the file.
    bytes: (usize, usize),
    text: String,
    embedded: String,
    signature: Option<String>,
    metadata: Option<serde_json::Value>,
}

impl ChunkParts {
    fn prepare(self, id_prefix: &str) -> PreparedChunk {
        let id = chunk_id(id_prefix, &self.source, &self.path, self.seq);
        let record = ChunkRecord {
            uid: numeric_id(&id),
            uuid: uuid(&id),
            chunk_id: id,
            file: self.file,
            path: self.path,
            seq: self.seq,
            source: self.source,
            language: self.language,
            symbol: self.symbol,
            kind: self.kind,
            parent: self.parent,
            start_line: self.lines.0,
            end_line: self.lines.1,
            start_byte: self.bytes.0,
            end_byte: self.bytes.1,
            content_hash: content_hash(self.text.as_bytes()),
            embed_hash: content_hash(self.embedded.as_bytes()),
            signature_hash: self.signature.as_ref().map(|s| content_hash(s.as_bytes())),
            text: self.text,
            metadata: self.metadata,
        };
        PreparedChunk {
            record,
            embedded: self.embedded,
            signature: self.signature,
        }
    }
}

/// The root directory's own name (`.` resolved), or `repo` when it has none.
fn repository_name(root: &Path) -> String {
    root.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repo".to_string())
}

fn now_unix_seconds() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{seconds}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_width_is_kept_only_with_its_model() {
        let held = IndexSettings {
            model: "some/model".to_string(),
            dimension: 128,
            normalize: true,
            document_prompt: None,
            query_prompt: None,
            quantization: quiver_embed::Quantization::None,
            keyword_weight: crate::DEFAULT_KEYWORD_WEIGHT,
        };
        assert_eq!(stored_width(Some(&held), "some/model", None, 384), 128);
        assert_eq!(stored_width(Some(&held), "some/model", Some(64), 384), 64);
        assert_eq!(stored_width(Some(&held), "other/model", None, 384), 384);
        assert_eq!(stored_width(None, "some/model", None, 384), 384);
    }
}
