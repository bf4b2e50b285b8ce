//! Keeping an index fresh while something serves it: an [`IndexUpdater`] runs the incremental
//! indexer on demand, one run at a time, and [`watch`] runs it after file-system changes.
//!
//! A run opens the index for writing only while it runs (another `quiver index` may use it in
//! between) and commits a batch of files per transaction, so readers ([`crate::IndexReader`])
//! never wait for it and never see a half-written file. A watcher waits for edits to settle
//! ([`WatchOptions::quiet`]) before it runs, so a burst of writes (a branch switch, a
//! formatter over the tree) costs one run, and ignores changes the walk would skip
//! ([`PathFilter`]): build output, dependencies, `.git`, the index itself.

use crate::error::{IndexError, Result};
use crate::indexer::{index, IndexOptions, IndexProgress, IndexReport};
use crate::lock;
use crate::store::Store;
use crate::walk::PathFilter;
use notify::Watcher as _;
use quiver_embed::Embedder;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Runs incremental updates of one index from one tree with one loaded model.
pub struct IndexUpdater {
    embedder: Arc<Embedder>,
    options: IndexOptions,
    index_dir: PathBuf,
    /// Held for a whole run: runs asked for at once (a watcher's and a client's) take turns.
    /// It guards no data, so a run that panicked leaves nothing half-written behind it.
    running: Mutex<()>,
    /// Written field by field, never left half-updated.
    state: Mutex<UpdateState>,
}

/// What the updater has done so far.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpdateState {
    /// Runs finished, failed ones included.
    pub runs: usize,
    pub running: bool,
    /// The last run that succeeded, and when it ended (Unix seconds).
    pub last_report: Option<IndexReport>,
    pub last_finished_unix: Option<u64>,
    /// Why the last run failed, if it did.
    pub last_error: Option<String>,
}

impl IndexUpdater {
    pub fn new(embedder: Arc<Embedder>, options: IndexOptions, index_dir: &Path) -> IndexUpdater {
        IndexUpdater {
            embedder,
            options,
            index_dir: index_dir.to_path_buf(),
            running: Mutex::new(()),
            state: Mutex::new(UpdateState::default()),
        }
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    pub fn options(&self) -> &IndexOptions {
        &self.options
    }

    pub fn index_dir(&self) -> &Path {
        &self.index_dir
    }

    /// Brings the index up to date with the tree now; waits for a run already going.
    pub fn update(&self, progress: &dyn IndexProgress) -> Result<IndexReport> {
        let _turn = lock(&self.running);
        lock(&self.state).running = true;
        let outcome = Store::open_writer(&self.index_dir)
            .and_then(|mut store| index(&mut store, &self.embedder, &self.options, progress));
        let mut state = lock(&self.state);
        state.running = false;
        state.runs += 1;
        state.last_finished_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        match &outcome {
            Ok(report) => {
                state.last_report = Some(report.clone());
                state.last_error = None;
            }
            Err(error) => state.last_error = Some(error.to_string()),
        }
        outcome
    }

    pub fn state(&self) -> UpdateState {
        lock(&self.state).clone()
    }
}

/// How a watcher waits.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// A run starts once no change has come for this long...
    pub quiet: Duration,
    /// ...or this long after the first change it answers, when changes keep coming.
    pub longest_wait: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            quiet: Duration::from_millis(300),
            longest_wait: Duration::from_secs(5),
        }
    }
}

/// A running watcher; dropping it stops watching (a run in progress finishes first).
pub struct Watcher {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Dropping the watcher closes the channel, which ends the thread's loop.
        self.watcher.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Watches the updater's tree and runs an update after each settled burst of changes that
/// may matter, calling `after_run` with each outcome.
pub fn watch(
    updater: Arc<IndexUpdater>,
    options: WatchOptions,
    after_run: impl Fn(&Result<IndexReport>) + Send + 'static,
) -> Result<Watcher> {
    let root = updater.options().input.root().to_path_buf();
    let filter = PathFilter::new(&root, &updater.options().walk);
    let (sender, events) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(sender).map_err(|e| watch_error(&root, e))?;
    watcher
        .watch(&root, notify::RecursiveMode::Recursive)
        .map_err(|e| watch_error(&root, e))?;
    let thread = std::thread::Builder::new()
        .name("quiver-watch".to_string())
        .spawn(move || loop {
            let matters = |event: &notify::Result<notify::Event>| match event {
                Ok(event) => {
                    !event.kind.is_access() && event.paths.iter().any(|p| filter.may_matter(p))
                }
                // Events were lost (an overflowing queue): the run finds what changed.
                Err(_) => true,
            };
            match events.recv() {
                Ok(event) if matters(&event) => {}
                Ok(_) => continue,
                Err(_) => return,
            }
            // Wait for the changes to settle: until no change that matters has come for
            // `quiet`, or `longest_wait` has passed since the first.
            let first = Instant::now();
            let mut last = first;
            loop {
                let until = (last + options.quiet).min(first + options.longest_wait);
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                match events.recv_timeout(left) {
                    Ok(event) => {
                        if matters(&event) {
                            last = Instant::now();
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            let outcome = updater.update(&crate::indexer::NoProgress);
            if let Err(error) = &outcome {
                tracing::warn!("updating the index after changes failed: {error}");
            }
            after_run(&outcome);
        })
        .map_err(|source| IndexError::Io {
            path: root.clone(),
            source,
        })?;
    Ok(Watcher {
        watcher: Some(watcher),
        thread: Some(thread),
    })
}

fn watch_error(root: &Path, error: notify::Error) -> IndexError {
    IndexError::Watch {
        path: root.to_path_buf(),
        message: error.to_string(),
    }
}
