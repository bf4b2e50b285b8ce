//! The vector files of an index (`vectors/` in the index directory): what vector search reads,
//! memory-mapped, instead of every vector row of the database.
//!
//! - `rows-E.bin`: one fixed-size [`Row`] per vector (a chunk's text vector, then its
//!   signature vector when it has one, always adjacent);
//! - `vectors-E.f32`: the rows' unit vectors, little-endian f32, in the same order;
//! - `paths-E.jsonl`: the paths rows name, one JSON string a line;
//! - `centroids-E-T.f32`, `lists-E-T.u32`, `codes-E-T.i8`: the IVF of a large index, trained on
//!   T rows: its centroids, each row's list, each row's int8 code (list by list for the rows
//!   it was built with, then in row order; [`super::ivf`]);
//! - `manifest.json`: which of those are valid, how many rows and paths, which rows are
//!   deleted, and the database state ([`Store::vector_generation`]) they were written from.
//!
//! The database stays the truth: the files are derived from it, and anything wrong with them
//! (missing, stale, damaged) is mended by writing them again from it. Writes follow the
//! database's discipline: rows are appended past what the manifest counts, flushed, and only
//! then does a new manifest (written aside and renamed over the old one) count them, so a
//! crash leaves the last manifest describing files that are whole. A rebuild writes files of
//! a new epoch E and switches the manifest to them; readers that mapped the old ones keep them
//! until they let go. Files are only ever truncated past the manifest's counts, which no
//! reader maps.

use super::ivf::{self, Ivf, Quantizer};
use crate::error::{IndexError, Result};
use crate::store::{Store, StoredVector};
use bytemuck::{Pod, Zeroable};
use memmap2::MmapOptions;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The directory, under the index directory, of the vector files.
pub const DIR: &str = "vectors";
const MANIFEST: &str = "manifest.json";
/// 2: the IVF replaced the HNSW graph (a format-1 set is written anew).
const FORMAT: u32 = 2;
/// A file set with more deleted rows than this share of all is written anew, compact.
const MAX_DELETED_SHARE: f64 = 0.25;

/// One vector's row.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
pub struct Row {
    /// The chunk's row id in the database.
    pub chunk: i64,
    /// What the database held for the chunk when the row was written
    /// (`Store::for_each_vector_key`); a changed chunk gets new rows.
    pub fingerprint: u64,
    pub path: u32,
    pub language: u16,
    /// 1 for a chunk's signature vector, 0 for its text's.
    pub signature: u16,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Manifest {
    format: u32,
    store: String,
    generation: i64,
    dimension: usize,
    epoch: u64,
    rows: usize,
    /// Chunks with a live row (so a search need not count them).
    chunks: usize,
    paths: usize,
    languages: Vec<String>,
    /// Rows whose chunk changed or left, ascending; they are never searched.
    deleted: Vec<u32>,
    /// The IVF and how many rows it covers (all of them; a new sync extends it).
    ivf: Option<IvfFiles>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
struct IvfFiles {
    /// The rows its centroids were trained on: names its files, and says when to train anew.
    trained: usize,
    lists: usize,
    rows: usize,
    /// The codes of the first `sorted` rows lie list by list (a list's rows in ascending
    /// order), so that a search reads each list it probes in one run; the codes of the rows
    /// appended since follow at their rows. 0 in files from before: every code at its row.
    #[serde(default)]
    sorted: usize,
}

impl IvfFiles {
    fn centroids(&self, dir: &Path, epoch: u64) -> PathBuf {
        dir.join(format!("centroids-{epoch}-{}.f32", self.trained))
    }

    fn lists_file(&self, dir: &Path, epoch: u64) -> PathBuf {
        dir.join(format!("lists-{epoch}-{}.u32", self.trained))
    }

    fn codes(&self, dir: &Path, epoch: u64) -> PathBuf {
        dir.join(format!("codes-{epoch}-{}.i8", self.trained))
    }

    fn names(&self, epoch: u64) -> [String; 3] {
        let dir = Path::new("");
        [
            self.centroids(dir, epoch),
            self.lists_file(dir, epoch),
            self.codes(dir, epoch),
        ]
        .map(|path| path.to_string_lossy().into_owned())
    }
}

/// Rows, memory-mapped or (for vectors read straight from the database) held.
pub enum Slab<T: Pod> {
    Mapped(memmap2::Mmap, std::marker::PhantomData<T>),
    Held(Vec<T>),
}

impl<T: Pod> Slab<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            // The map starts at offset 0 (page-aligned) and spans whole `T`s.
            Slab::Mapped(map, _) => bytemuck::cast_slice(map),
            Slab::Held(items) => items,
        }
    }

    /// The first `count` items of `path`.
    pub(super) fn map(path: &Path, count: usize) -> std::io::Result<Slab<T>> {
        let bytes = count * std::mem::size_of::<T>();
        if bytes == 0 {
            return Ok(Slab::Held(Vec::new()));
        }
        let file = File::open(path)?;
        if file.metadata()?.len() < bytes as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("shorter than the {bytes} bytes the manifest counts"),
            ));
        }
        // SAFETY: writers only append past the manifest's counts, or truncate past them, and
        // replace files by writing new ones; the mapped range is never changed while mapped.
        let map = unsafe { MmapOptions::new().len(bytes).map(&file)? };
        Ok(Slab::Mapped(map, std::marker::PhantomData))
    }
}

/// The vectors of an index as search reads them.
pub struct VectorSet {
    pub dimension: usize,
    pub rows: Slab<Row>,
    pub vectors: Slab<f32>,
    /// The paths rows name: read from their file only when a search filters by path.
    paths: Paths,
    pub languages: Vec<String>,
    /// Per row, whether it is deleted; empty when none is.
    deleted: Vec<bool>,
    /// How many are (counted once: a search asks on every query).
    deleted_rows: usize,
    /// Over every row: each sync extends it to the rows it appends.
    pub ivf: Option<Ivf>,
    /// Live chunks (rows of text vectors not deleted).
    pub chunks: usize,
}

enum Paths {
    Held(Vec<String>),
    File {
        path: PathBuf,
        count: usize,
        read: std::sync::OnceLock<Vec<String>>,
    },
}

impl VectorSet {
    pub fn empty() -> VectorSet {
        VectorSet {
            dimension: 0,
            rows: Slab::Held(Vec::new()),
            vectors: Slab::Held(Vec::new()),
            paths: Paths::Held(Vec::new()),
            languages: Vec::new(),
            deleted: Vec::new(),
            deleted_rows: 0,
            ivf: None,
            chunks: 0,
        }
    }

    pub fn is_deleted(&self, row: usize) -> bool {
        self.deleted.get(row).copied().unwrap_or(false)
    }

    pub fn deletions(&self) -> usize {
        self.deleted_rows
    }

    /// The paths rows name, by id.
    pub fn paths(&self) -> Result<&[String]> {
        match &self.paths {
            Paths::Held(paths) => Ok(paths),
            Paths::File { path, count, read } => {
                if let Some(paths) = read.get() {
                    return Ok(paths);
                }
                let (paths, _) = read_paths(path, *count).map_err(io_error(path))?;
                Ok(read.get_or_init(|| paths))
            }
        }
    }

    fn with_deleted(mut self, deleted_rows: &[u32]) -> VectorSet {
        if deleted_rows.is_empty() {
            return self;
        }
        self.deleted = vec![false; self.rows.as_slice().len()];
        for &row in deleted_rows {
            if let Some(flag) = self.deleted.get_mut(row as usize) {
                *flag = true;
            }
        }
        self.deleted_rows = self.deleted.iter().filter(|deleted| **deleted).count();
        self
    }
}

/// Chunks with a live text row.
fn count_chunks(rows: &[Row], deleted: &[u32]) -> usize {
    let deleted: HashSet<u32> = deleted.iter().copied().collect();
    rows.iter()
        .enumerate()
        .filter(|(index, row)| row.signature == 0 && !deleted.contains(&(*index as u32)))
        .count()
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn rows_file(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("rows-{epoch}.bin"))
}

fn vectors_file(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("vectors-{epoch}.f32"))
}

fn paths_file(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("paths-{epoch}.jsonl"))
}

fn read_manifest(dir: &Path) -> Option<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<Manifest>(&bytes) {
        Ok(manifest) if manifest.format == FORMAT => Some(manifest),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(
                "{}: {error}; the vector files will be rewritten",
                path.display()
            );
            None
        }
    }
}

/// The manifest when it describes what `store` holds now.
fn current_manifest(store: &Store, dimension: usize) -> Result<Option<Manifest>> {
    let (id, generation) = store.vector_generation()?;
    Ok(read_manifest(&store.dir().join(DIR)).filter(|manifest| {
        manifest.store == id && manifest.generation == generation && manifest.dimension == dimension
    }))
}

pub fn is_current(store: &Store, dimension: usize) -> Result<bool> {
    Ok(current_manifest(store, dimension)?.is_some())
}

/// What `quiver status` says of the vector files.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VectorFilesStatus {
    /// Whether they hold what the database holds now (else the next search or run mends them).
    pub current: bool,
    pub rows: usize,
    pub deleted_rows: usize,
    /// Lists of the IVF; `None` while the index is small enough to scan.
    pub ivf_lists: Option<usize>,
    pub bytes: u64,
}

/// The state of `store`'s vector files; `None` when there are none (never written).
pub fn status(store: &Store) -> Result<Option<VectorFilesStatus>> {
    let dir = store.dir().join(DIR);
    let Some(manifest) = read_manifest(&dir) else {
        return Ok(None);
    };
    let (id, generation) = store.vector_generation()?;
    let bytes = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    Ok(Some(VectorFilesStatus {
        current: manifest.store == id && manifest.generation == generation,
        rows: manifest.rows,
        deleted_rows: manifest.deleted.len(),
        ivf_lists: manifest.ivf.map(|ivf| ivf.lists),
        bytes,
    }))
}

/// The first `count` paths of a paths file, and the byte length they take.
fn read_paths(path: &Path, count: usize) -> std::io::Result<(Vec<String>, u64)> {
    let mut reader = BufReader::new(File::open(path)?);
    let (mut paths, mut bytes, mut line) = (Vec::with_capacity(count), 0u64, String::new());
    while paths.len() < count {
        line.clear();
        let read = reader.read_line(&mut line)?;
        if read == 0 || !line.ends_with('\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "holds {} of the {count} paths the manifest counts",
                    paths.len()
                ),
            ));
        }
        bytes += read as u64;
        paths.push(serde_json::from_str(line.trim_end()).map_err(std::io::Error::other)?);
    }
    Ok((paths, bytes))
}

/// The vector files of `store`, mapped, when they hold what it holds now; `None` when they
/// are missing, stale or unreadable (a warning says which), and must be written anew.
pub fn open_current(store: &Store, dimension: usize) -> Result<Option<VectorSet>> {
    let Some(manifest) = current_manifest(store, dimension)? else {
        return Ok(None);
    };
    let dir = store.dir().join(DIR);
    let epoch = manifest.epoch;
    let opened = (|| -> std::io::Result<VectorSet> {
        let mut set = VectorSet {
            dimension,
            rows: Slab::map(&rows_file(&dir, epoch), manifest.rows)?,
            vectors: Slab::map(&vectors_file(&dir, epoch), manifest.rows * dimension)?,
            paths: Paths::File {
                path: paths_file(&dir, epoch),
                count: manifest.paths,
                read: std::sync::OnceLock::new(),
            },
            languages: manifest.languages.clone(),
            chunks: manifest.chunks,
            ..VectorSet::empty()
        }
        .with_deleted(&manifest.deleted);
        if let Some(files) = &manifest.ivf {
            if files.rows != manifest.rows {
                return Err(std::io::Error::other(format!(
                    "the IVF covers {} of the {} rows",
                    files.rows, manifest.rows
                )));
            }
            let paths = [
                files.centroids(&dir, epoch),
                files.lists_file(&dir, epoch),
                files.codes(&dir, epoch),
            ];
            let ivf = Ivf::open(
                &paths[0],
                &paths[1],
                &paths[2],
                dimension,
                files.lists,
                files.rows,
                files.sorted,
            )
            .map_err(|error| {
                let names = files.names(epoch).join(", ");
                std::io::Error::other(format!("{names}: {error}"))
            })?;
            set.ivf = Some(ivf);
        }
        Ok(set)
    })();
    match opened {
        Ok(set) => Ok(Some(set)),
        Err(error) => {
            tracing::warn!(
                "the vector files in {} are unreadable ({error}); they will be rewritten",
                dir.display()
            );
            Ok(None)
        }
    }
}

/// Reads the vectors of `store` straight from the database into memory, for a reader that
/// cannot bring the files up to date (another process is indexing, or the index is read-only).
pub fn read_into_memory(store: &Store, dimension: usize) -> Result<VectorSet> {
    let mut writer = RowWriter::new(dimension, Vec::new(), Vec::new(), Vec::new());
    writer.append_from(store, None)?;
    let RowWriter {
        rows,
        vectors,
        path_ids,
        languages,
        ..
    } = writer;
    let mut paths = vec![String::new(); path_ids.len()];
    for (path, id) in path_ids {
        paths[id as usize] = path;
    }
    let rows: Vec<Row> = bytemuck::pod_collect_to_vec(&rows);
    Ok(VectorSet {
        dimension,
        chunks: count_chunks(&rows, &[]),
        rows: Slab::Held(rows),
        vectors: Slab::Held(bytemuck::pod_collect_to_vec(&vectors)),
        paths: Paths::Held(paths),
        languages,
        ..VectorSet::empty()
    })
}

/// Appends rows: to files for [`sync`], to memory for [`read_into_memory`].
struct RowWriter<W: Write> {
    dimension: usize,
    rows: W,
    vectors: W,
    paths: W,
    path_ids: HashMap<String, u32>,
    languages: Vec<String>,
    count: usize,
}

impl<W: Write> RowWriter<W> {
    fn new(dimension: usize, rows: W, vectors: W, paths: W) -> Self {
        RowWriter {
            dimension,
            rows,
            vectors,
            paths,
            path_ids: HashMap::new(),
            languages: Vec::new(),
            count: 0,
        }
    }

    /// Appends the rows of every chunk of `store` with a vector (or of `chunks` only).
    fn append_from(&mut self, store: &Store, chunks: Option<&[i64]>) -> Result<()> {
        let mut failure = None;
        let mut push = |stored: StoredVector<'_>| {
            if failure.is_none() {
                failure = self.push(&stored).err();
            }
        };
        match chunks {
            None => store.for_each_vector(&mut push)?,
            Some(chunks) => store.for_each_vector_of(chunks, &mut push)?,
        }
        match failure {
            None => Ok(()),
            Some(source) => Err(IndexError::Io {
                path: store.dir().join(DIR),
                source,
            }),
        }
    }

    /// Appends a chunk's rows; a vector of another width than the index's is left out.
    fn push(&mut self, stored: &StoredVector<'_>) -> std::io::Result<()> {
        if stored.vector.len() != self.dimension {
            return Ok(());
        }
        let path = match self.path_ids.get(stored.path) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.path_ids.len()).map_err(std::io::Error::other)?;
                serde_json::to_writer(&mut self.paths, stored.path)?;
                self.paths.write_all(b"\n")?;
                self.path_ids.insert(stored.path.to_string(), id);
                id
            }
        };
        let language = match self.languages.iter().position(|l| l == stored.language) {
            Some(index) => index,
            None => {
                self.languages.push(stored.language.to_string());
                self.languages.len() - 1
            }
        };
        let language = u16::try_from(language).map_err(std::io::Error::other)?;
        let signature = stored.signature.filter(|s| s.len() == self.dimension);
        for (kind, vector) in [Some(stored.vector), signature]
            .into_iter()
            .flatten()
            .enumerate()
        {
            let row = Row {
                chunk: stored.row,
                fingerprint: stored.fingerprint,
                path,
                language,
                signature: kind as u16,
            };
            self.rows.write_all(bytemuck::bytes_of(&row))?;
            let norm = super::dot(vector, vector).sqrt().max(f32::MIN_POSITIVE);
            for x in vector {
                self.vectors.write_all(&(x / norm).to_le_bytes())?;
            }
            self.count += 1;
        }
        Ok(())
    }
}

impl RowWriter<BufWriter<File>> {
    fn finish(self, dir: &Path) -> Result<(HashMap<String, u32>, Vec<String>, usize)> {
        for writer in [self.rows, self.vectors, self.paths] {
            finish(writer, dir)?;
        }
        Ok((self.path_ids, self.languages, self.count))
    }
}

/// `path` (created when missing) opened to append after its first `keep` bytes: past the
/// manifest's counts lies only what a run that did not finish wrote.
fn append_to(path: &Path, keep: u64) -> Result<BufWriter<File>> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(keep).map_err(io_error(path))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io_error(path))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

/// Writes out what `writer` holds and syncs its file to disk.
fn finish(writer: BufWriter<File>, path: &Path) -> Result<()> {
    let file = writer.into_inner().map_err(|e| IndexError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_error(path))
}

/// What [`sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The files already held what the database holds.
    Current,
    /// Rows were appended (and deleted).
    Updated { added: usize, deleted: usize },
    /// The files were written anew.
    Rewritten { rows: usize },
    /// The index has no settings yet, so no vectors.
    Empty,
}

/// Brings the vector files of `store` (opened for writing) up to date with its database: by
/// difference when they exist, anew when they are missing, damaged, or mostly deleted rows.
pub fn sync(store: &Store) -> Result<Synced> {
    if !store.is_writer() {
        return Err(IndexError::NotWriter);
    }
    let dir = store.dir().join(DIR);
    let Some(settings) = store.settings()? else {
        return Ok(Synced::Empty);
    };
    let dimension = settings.dimension;
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    // Files that claim to be current but cannot be opened are damaged: written anew.
    let damaged = match current_manifest(store, dimension)? {
        Some(_) if open_current(store, dimension)?.is_some() => return Ok(Synced::Current),
        Some(_) => true,
        None => false,
    };
    let (id, generation) = store.vector_generation()?;
    let previous = read_manifest(&dir)
        .filter(|m| !damaged && m.store == id && m.dimension == dimension)
        .and_then(|manifest| {
            let rows = Slab::<Row>::map(&rows_file(&dir, manifest.epoch), manifest.rows).ok()?;
            Some((manifest, rows))
        });
    let outcome = match previous {
        Some((manifest, rows)) => {
            // Only a difference needs every chunk's key first: files written anew take each
            // chunk's fingerprint as they read its vectors.
            let mut keys = HashMap::new();
            store.for_each_vector_key(|row, fingerprint| {
                keys.insert(row, fingerprint);
            })?;
            let mut deleted: HashSet<u32> = manifest.deleted.iter().copied().collect();
            let mut present = HashSet::new();
            for (index, row) in rows.as_slice().iter().enumerate() {
                let index = index as u32;
                if deleted.contains(&index) {
                    continue;
                }
                match keys.get(&row.chunk) {
                    Some(&fingerprint) if fingerprint == row.fingerprint => {
                        present.insert(row.chunk);
                    }
                    _ => {
                        deleted.insert(index);
                    }
                }
            }
            let newly_deleted = deleted.len() - manifest.deleted.len();
            let mut added: Vec<i64> = keys
                .keys()
                .filter(|chunk| !present.contains(chunk))
                .copied()
                .collect();
            added.sort_unstable();
            drop(rows);
            if (deleted.len() as f64) > MAX_DELETED_SHARE * manifest.rows as f64 {
                None
            } else {
                let mut deleted: Vec<u32> = deleted.into_iter().collect();
                deleted.sort_unstable();
                append(store, manifest, &added, deleted, generation)?;
                Some(Synced::Updated {
                    added: added.len(),
                    deleted: newly_deleted,
                })
            }
        }
        None => None,
    };
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => Synced::Rewritten {
            rows: rewrite(store, &id, generation, dimension)?,
        },
    };
    remove_unused(&dir);
    Ok(outcome)
}

/// Writes the files anew under a new epoch; returns the rows written.
fn rewrite(store: &Store, id: &str, generation: i64, dimension: usize) -> Result<usize> {
    let started = std::time::Instant::now();
    let mut files = FreshFiles::create(store.dir(), dimension)?;
    files.writer.append_from(store, None)?;
    let rows = files.prepare()?.publish(id, generation)?;
    tracing::info!(
        "wrote {rows} rows of vector files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(rows)
}

/// Vector files of a new epoch, written row by row; they count once [`PreparedFiles::publish`]
/// writes the manifest that names them. [`rewrite`] fills them from the database; a bulk load
/// ([`crate::BatchSink::defer_indexes`]) from its batches as it inserts them, which spares
/// reading every vector back (at a million chunks, most of the files' cost).
pub(crate) struct FreshFiles {
    dir: PathBuf,
    epoch: u64,
    writer: RowWriter<BufWriter<File>>,
}

impl FreshFiles {
    pub(crate) fn create(index_dir: &Path, dimension: usize) -> Result<FreshFiles> {
        let dir = index_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let epoch = next_epoch(&dir);
        let create = |path: PathBuf| -> Result<BufWriter<File>> {
            File::create(&path)
                .map(|file| BufWriter::with_capacity(1 << 20, file))
                .map_err(io_error(&path))
        };
        let writer = RowWriter::new(
            dimension,
            create(rows_file(&dir, epoch))?,
            create(vectors_file(&dir, epoch))?,
            create(paths_file(&dir, epoch))?,
        );
        Ok(FreshFiles { dir, epoch, writer })
    }

    pub(crate) fn push(&mut self, stored: &StoredVector<'_>) -> Result<()> {
        self.writer.push(stored).map_err(io_error(&self.dir))
    }

    /// Flushes the files and builds their IVF: all but the manifest, which
    /// [`PreparedFiles::publish`] writes once the database state it describes is committed.
    pub(crate) fn prepare(self) -> Result<PreparedFiles> {
        let FreshFiles { dir, epoch, writer } = self;
        let dimension = writer.dimension;
        let (path_ids, languages, rows) = writer.finish(&dir)?;
        let mut manifest = Manifest {
            format: FORMAT,
            store: String::new(),
            generation: 0,
            dimension,
            epoch,
            rows,
            chunks: 0,
            paths: path_ids.len(),
            languages,
            deleted: Vec::new(),
            ivf: None,
        };
        manifest.chunks = live_chunks(&dir, &manifest)?;
        manifest.ivf = ivf_files(&dir, &manifest, None)?;
        Ok(PreparedFiles { dir, manifest })
    }
}

/// Vector files whole on disk, their manifest not yet written.
pub(crate) struct PreparedFiles {
    dir: PathBuf,
    manifest: Manifest,
}

impl PreparedFiles {
    /// Makes the files current for the database state `(store, generation)`
    /// ([`Store::vector_generation`]); returns their rows.
    pub(crate) fn publish(self, store: &str, generation: i64) -> Result<usize> {
        let PreparedFiles { dir, manifest } = self;
        let manifest = Manifest {
            store: store.to_string(),
            generation,
            ..manifest
        };
        write_manifest(&dir, &manifest)?;
        remove_unused(&dir);
        Ok(manifest.rows)
    }
}

/// Appends the rows of `added` chunks to the files of `manifest`, marks `deleted`, and
/// extends the IVF.
fn append(
    store: &Store,
    manifest: Manifest,
    added: &[i64],
    deleted: Vec<u32>,
    generation: i64,
) -> Result<()> {
    let dir = store.dir().join(DIR);
    let epoch = manifest.epoch;
    let row_size = std::mem::size_of::<Row>() as u64;
    let paths_path = paths_file(&dir, epoch);
    let (paths, paths_bytes) =
        read_paths(&paths_path, manifest.paths).map_err(io_error(&paths_path))?;
    let mut writer = RowWriter::new(
        manifest.dimension,
        append_to(&rows_file(&dir, epoch), manifest.rows as u64 * row_size)?,
        append_to(
            &vectors_file(&dir, epoch),
            (manifest.rows * manifest.dimension * 4) as u64,
        )?,
        append_to(&paths_path, paths_bytes)?,
    );
    writer.path_ids = paths
        .into_iter()
        .enumerate()
        .map(|(id, path)| (path, id as u32))
        .collect();
    writer.languages = manifest.languages.clone();
    writer.append_from(store, Some(added))?;
    let (path_ids, languages, appended) = writer.finish(&dir)?;
    let previous_ivf = manifest.ivf.clone();
    let mut next = Manifest {
        generation,
        rows: manifest.rows + appended,
        paths: path_ids.len(),
        languages,
        deleted,
        ivf: None,
        ..manifest
    };
    next.chunks = live_chunks(&dir, &next)?;
    next.ivf = ivf_files(&dir, &next, previous_ivf.as_ref())?;
    write_manifest(&dir, &next)
}

/// The IVF for `manifest`'s rows: `None` below [`ivf::MIN_ROWS`] searchable rows; else the
/// previous one extended with the rows since, or one trained anew when there is none or the
/// index outgrew it ([`ivf::RETRAIN_GROWTH`]).
fn ivf_files(
    dir: &Path,
    manifest: &Manifest,
    previous: Option<&IvfFiles>,
) -> Result<Option<IvfFiles>> {
    let live = manifest.rows - manifest.deleted.len();
    if live < ivf::MIN_ROWS {
        return Ok(None);
    }
    let epoch = manifest.epoch;
    let previous = previous.filter(|p| {
        p.rows <= manifest.rows
            && live <= p.trained * ivf::RETRAIN_GROWTH
            && p.names(epoch).iter().all(|name| dir.join(name).is_file())
    });
    if let Some(previous) = previous.filter(|p| p.rows == manifest.rows) {
        return Ok(Some(previous.clone()));
    }
    // Rows are read, not mapped: a million mapped rows would count 1.5 GB towards the run's
    // resident memory, for pages it reads once.
    let vectors_path = vectors_file(dir, epoch);
    let vectors = File::open(&vectors_path).map_err(io_error(&vectors_path))?;
    let dimension = manifest.dimension;
    // Straight into the buffer, as the files are mapped: little-endian is the machine's order.
    let read_rows = |start: usize, buffer: &mut [f32]| -> Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(
            &vectors,
            bytemuck::cast_slice_mut(buffer),
            (start * dimension * 4) as u64,
        )
        .map_err(io_error(&vectors_path))
    };
    let (files, quantizer) = match previous {
        Some(previous) => {
            let path = previous.centroids(dir, epoch);
            let quantizer =
                Quantizer::read(&path, dimension, previous.lists).map_err(io_error(&path))?;
            (previous.clone(), quantizer)
        }
        None => {
            let lists = ivf::lists_for(live);
            tracing::info!("training the IVF of {live} rows ({lists} lists)");
            // Live rows at an even stride: the sample spans the whole index.
            let wanted = (lists * ivf::SAMPLE_PER_LIST).min(live);
            let deleted: HashSet<u32> = manifest.deleted.iter().copied().collect();
            let mut sample = Vec::with_capacity(wanted * dimension);
            let mut row = vec![0f32; dimension];
            for pick in 0..wanted {
                let Some(index) = (pick * manifest.rows / wanted..manifest.rows)
                    .find(|&index| !deleted.contains(&(index as u32)))
                else {
                    break;
                };
                read_rows(index, &mut row)?;
                sample.extend_from_slice(&row);
            }
            let quantizer = Quantizer::train(dimension, &sample, lists);
            let files = IvfFiles {
                trained: live,
                lists: quantizer.lists(),
                rows: 0,
                sorted: 0,
            };
            let path = files.centroids(dir, epoch);
            (|| {
                let mut file = File::create(&path)?;
                file.write_all(&quantizer.to_bytes())?;
                file.sync_all()
            })()
            .map_err(io_error(&path))?;
            write_sorted(dir, epoch, &files, &quantizer, manifest.rows, read_rows)?;
            return Ok(Some(IvfFiles {
                rows: manifest.rows,
                sorted: manifest.rows,
                ..files
            }));
        }
    };
    tracing::info!("adding {} rows to the IVF", manifest.rows - files.rows);
    let lists_path = files.lists_file(dir, epoch);
    let codes_path = files.codes(dir, epoch);
    let mut lists_out = append_to(&lists_path, files.rows as u64 * 4)?;
    let mut codes_out = append_to(&codes_path, (files.rows * dimension) as u64)?;
    let mut block = Vec::new();
    let mut code = vec![0i8; dimension];
    for start in (files.rows..manifest.rows).step_by(BLOCK_ROWS) {
        let rows = BLOCK_ROWS.min(manifest.rows - start);
        block.resize(rows * dimension, 0.0);
        read_rows(start, &mut block)?;
        let assigned = quantizer.assign(&block);
        let mut written = || -> std::io::Result<()> {
            for (list, vector) in assigned.iter().zip(block.chunks_exact(dimension)) {
                lists_out.write_all(&list.to_le_bytes())?;
                quantizer.encode(vector, &mut code);
                codes_out.write_all(bytemuck::cast_slice(&code))?;
            }
            Ok(())
        };
        written().map_err(io_error(&lists_path))?;
    }
    finish(lists_out, &lists_path)?;
    finish(codes_out, &codes_path)?;
    Ok(Some(IvfFiles {
        rows: manifest.rows,
        ..files
    }))
}

/// Rows a pass over the vector file reads at once when it codes them.
const BLOCK_ROWS: usize = 16_384;

/// Writes the lists and codes files of a freshly trained IVF for rows `0..rows`, the codes
/// list by list ([`IvfFiles::sorted`]): one pass assigns each row its list, a second codes
/// each row into its place in a mapped file. At 10M rows, codes stored at their rows left a
/// probe of 16 lists reading 78,000 codes scattered over 3.8 GB, and a search took 25 ms.
fn write_sorted(
    dir: &Path,
    epoch: u64,
    files: &IvfFiles,
    quantizer: &Quantizer,
    rows: usize,
    read_rows: impl Fn(usize, &mut [f32]) -> Result<()>,
) -> Result<()> {
    let dimension = quantizer.dimension();
    let blocks = || {
        (0..rows)
            .step_by(BLOCK_ROWS)
            .map(move |start| (start, BLOCK_ROWS.min(rows - start)))
    };
    let lists_path = files.lists_file(dir, epoch);
    let mut lists_out = append_to(&lists_path, 0)?;
    let mut assigned: Vec<u32> = Vec::with_capacity(rows);
    let mut block = Vec::new();
    for (start, count) in blocks() {
        block.resize(count * dimension, 0.0);
        read_rows(start, &mut block)?;
        let lists = quantizer.assign(&block);
        lists_out
            .write_all(bytemuck::cast_slice(&lists))
            .map_err(io_error(&lists_path))?;
        assigned.extend(lists);
    }
    finish(lists_out, &lists_path)?;
    // Where each list's codes begin, then where its next one goes.
    let mut next = vec![0usize; files.lists + 1];
    for &list in &assigned {
        next[list as usize + 1] += 1;
    }
    for list in 0..files.lists {
        next[list + 1] += next[list];
    }
    let codes_path = files.codes(dir, epoch);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&codes_path)
        .map_err(io_error(&codes_path))?;
    file.set_len((rows * dimension) as u64)
        .map_err(io_error(&codes_path))?;
    // SAFETY: the file was created above by this process, which holds the index's writer lock,
    // and no reader maps it before the manifest names it.
    let mut mapped = unsafe { MmapOptions::new().map_mut(&file) }.map_err(io_error(&codes_path))?;
    let codes: &mut [i8] = bytemuck::cast_slice_mut(&mut mapped[..]);
    for (start, count) in blocks() {
        block.resize(count * dimension, 0.0);
        read_rows(start, &mut block)?;
        for (row, vector) in block.chunks_exact(dimension).enumerate() {
            let place = &mut next[assigned[start + row] as usize];
            quantizer.encode(
                vector,
                &mut codes[*place * dimension..(*place + 1) * dimension],
            );
            *place += 1;
        }
    }
    mapped.flush().map_err(io_error(&codes_path))?;
    file.sync_all().map_err(io_error(&codes_path))
}

fn live_chunks(dir: &Path, manifest: &Manifest) -> Result<usize> {
    let path = rows_file(dir, manifest.epoch);
    let rows = Slab::<Row>::map(&path, manifest.rows).map_err(io_error(&path))?;
    Ok(count_chunks(rows.as_slice(), &manifest.deleted))
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST);
    let aside = dir.join(format!("{MANIFEST}.new"));
    let bytes = serde_json::to_vec(manifest).map_err(|e| IndexError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    (|| {
        let mut file = File::create(&aside)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&aside, &path)?;
        File::open(dir)?.sync_all()
    })()
    .map_err(io_error(&path))
}

/// One past the highest epoch of any file in `dir`, so a rewrite never reuses a name a
/// reader may have mapped.
fn next_epoch(dir: &Path) -> u64 {
    let highest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| epoch_of(&entry.file_name().to_string_lossy()))
        .max()
        .unwrap_or(0);
    highest + 1
}

fn epoch_of(name: &str) -> Option<u64> {
    let (_, rest) = name.split_once('-')?;
    rest.split(['-', '.']).next()?.parse().ok()
}

/// Deletes files the manifest no longer names (an old epoch, an IVF trained before, a write that
/// did not finish). Readers that mapped them keep them until they let go.
fn remove_unused(dir: &Path) {
    let Some(manifest) = read_manifest(dir) else {
        return;
    };
    let keep: HashSet<String> = [
        MANIFEST.to_string(),
        format!("rows-{}.bin", manifest.epoch),
        format!("vectors-{}.f32", manifest.epoch),
        format!("paths-{}.jsonl", manifest.epoch),
    ]
    .into_iter()
    .chain(
        manifest
            .ivf
            .into_iter()
            .flat_map(|ivf| ivf.names(manifest.epoch)),
    )
    .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            if let Err(error) = std::fs::remove_file(entry.path()) {
                tracing::debug!("{}: {error}", entry.path().display());
            }
        }
    }
}
