//! A long-lived reader of one index, for front ends that answer many searches (the server
//! today): searches run concurrently, each on a read-only connection of its own, against one
//! consistent [`Snapshot`] of the vectors and settings; and the reader follows the index,
//! taking a new snapshot once a `quiver index` run has committed.

use crate::bm25::PostingsCache;
use crate::error::Result;
use crate::lock;
use crate::search::{
    keyword_side, search_with, search_with_keywords, KeywordSide, SearchHit, SearchRequest,
};
use crate::store::{IndexSettings, Store};
use crate::vectors::VectorIndex;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// The index as one commit left it: what queries must be embedded with, the vectors, and the
/// keyword posting lists and row lengths its searches have read so far.
pub struct Snapshot {
    pub settings: IndexSettings,
    vectors: VectorIndex,
    postings: PostingsCache,
}

impl Snapshot {
    /// Chunks with a vector.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }
}

/// Everything behind its locks is replaced whole (a snapshot, a version, a connection pushed or
/// popped), so a panic while holding one leaves nothing half-written.
pub struct IndexReader {
    dir: PathBuf,
    /// The connection that notices commits: `PRAGMA data_version` means something only on the
    /// connection that asks, so one is kept for that, with the version its snapshot was taken at.
    watch: Mutex<(Store, i64)>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Connections no search is using; a search takes one, or opens one when none is free.
    idle: Mutex<Vec<Store>>,
}

impl IndexReader {
    /// Opens the index in `dir` and reads its vectors. An index without settings (never
    /// indexed) is refused.
    pub fn open(dir: &Path) -> Result<IndexReader> {
        let watch = Store::open(dir)?;
        let version = watch.data_version()?;
        let snapshot = take_snapshot(&watch)?;
        Ok(IndexReader {
            dir: dir.to_path_buf(),
            watch: Mutex::new((watch, version)),
            snapshot: RwLock::new(Arc::new(snapshot)),
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index as of its last commit: a new snapshot is taken first when a run has committed
    /// since the last one. Queries for a search of it must be embedded with its settings.
    pub fn current(&self) -> Result<Arc<Snapshot>> {
        let mut watch = lock(&self.watch);
        let version = watch.0.data_version()?;
        // A snapshot read from the database (its vector files were being written) gives way
        // to the files once they are ready.
        let files_now_ready = || -> Result<bool> {
            Ok(!self.latest().vectors.is_mapped() && VectorIndex::files_ready(&watch.0)?)
        };
        if version != watch.1 || files_now_ready()? {
            tracing::info!("index {} changed; reading it again", self.dir.display());
            let snapshot = Arc::new(take_snapshot(&watch.0)?);
            *self
                .snapshot
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
            watch.1 = version;
        }
        drop(watch);
        Ok(self.latest())
    }

    /// The last snapshot taken, without checking for commits.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs one search of `snapshot` (blocking: call it off async threads). Searches run side
    /// by side, each on its own connection.
    pub fn search(
        &self,
        snapshot: &Snapshot,
        request: &SearchRequest<'_>,
    ) -> Result<Vec<SearchHit>> {
        self.read(|store| {
            search_with(
                store,
                Some(&snapshot.vectors),
                Some(&snapshot.postings),
                request,
            )
        })
    }

    /// The keyword ranking of a search of `snapshot` (blocking), made while its query is
    /// embedded, for [`IndexReader::search_with_keywords`].
    pub fn keyword_side(
        &self,
        snapshot: &Snapshot,
        request: &SearchRequest<'_>,
    ) -> Result<KeywordSide> {
        self.read(|store| keyword_side(store, Some(&snapshot.postings), request))
    }

    /// [`IndexReader::search`] with its keyword ranking made beforehand.
    pub fn search_with_keywords(
        &self,
        snapshot: &Snapshot,
        keywords: KeywordSide,
        request: &SearchRequest<'_>,
    ) -> Result<Vec<SearchHit>> {
        self.read(|store| search_with_keywords(store, Some(&snapshot.vectors), keywords, request))
    }

    /// Runs `read` on a read-only connection of its own (blocking), for what a search does not
    /// cover: whole definitions, symbols, status.
    pub fn read<T>(&self, read: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        let store = match lock(&self.idle).pop() {
            Some(store) => store,
            None => Store::open(&self.dir)?,
        };
        let outcome = read(&store);
        lock(&self.idle).push(store);
        outcome
    }
}

fn take_snapshot(store: &Store) -> Result<Snapshot> {
    let settings = store.indexed_settings()?;
    let vectors = VectorIndex::open(store)?;
    Ok(Snapshot {
        settings,
        vectors,
        postings: PostingsCache::default(),
    })
}
