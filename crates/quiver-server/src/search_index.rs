//! The index `POST /search` reads. Its vectors are held in memory and reloaded when another
//! process (a `quiver index` run) has committed since, so the server never serves a stale index
//! for longer than one request.

use quiver_index::{
    search_with, IndexError, IndexSettings, SearchHit, SearchRequest, Store, VectorIndex,
};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct SearchIndex {
    dir: PathBuf,
    settings: IndexSettings,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    store: Store,
    vectors: VectorIndex,
    data_version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenIndexError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the index at {0} is empty: run `quiver index` first")]
    Empty(PathBuf),
}

impl SearchIndex {
    pub fn open(dir: &Path) -> Result<Self, OpenIndexError> {
        let store = Store::open(dir)?;
        let settings = store
            .settings()?
            .ok_or_else(|| OpenIndexError::Empty(dir.to_path_buf()))?;
        let data_version = store.data_version()?;
        let vectors = VectorIndex::load(&store)?;
        Ok(SearchIndex {
            dir: dir.to_path_buf(),
            settings,
            loaded: Mutex::new(Loaded {
                store,
                vectors,
                data_version,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model, dimensions, normalisation and prompts the index was built with; queries
    /// must be embedded the same way.
    pub fn settings(&self) -> &IndexSettings {
        &self.settings
    }

    /// Chunks with a vector, as last loaded.
    pub fn len(&self) -> usize {
        self.lock().vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs one search (blocking: call it off the async threads).
    pub fn search(&self, request: &SearchRequest<'_>) -> Result<Vec<SearchHit>, IndexError> {
        let mut loaded = self.lock();
        let version = loaded.store.data_version()?;
        if version != loaded.data_version {
            tracing::info!("index {} changed; reloading vectors", self.dir.display());
            loaded.vectors = VectorIndex::load(&loaded.store)?;
            loaded.data_version = version;
        }
        search_with(&loaded.store, Some(&loaded.vectors), request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // A panic while holding the lock leaves nothing half-written: the data is read-only.
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
