//! The approximate nearest-neighbour graph of a large index: HNSW from `usearch`, whose keys
//! are row numbers of the vector files. It keeps its own copy of each vector as int8, the
//! compact form, so a search walks the graph without touching the f32 file; the f32 vectors
//! rescore the few candidates it returns. Readers search the saved file memory-mapped.

use std::path::Path;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// Below this many searchable rows an exact scan of the f32 vectors is fast enough (a few
/// milliseconds) and exact, so no graph is built or used.
pub const MIN_ROWS: usize = 20_000;

/// Graph settings. On 200k clustered 384-d unit vectors, expansion 64 while adding built twice
/// as fast as 128 for the same recall@10 (0.99). On bench/scale's 1M, searching with expansion
/// 512 lifted recall@10 from 0.80 (128) to 0.92 for 1.5 ms instead of 0.7; 4096 reached only
/// 0.95 at 10 ms, and f16 storage instead of int8 0.94 at 512, for twice the build time.
const CONNECTIVITY: usize = 16;
const EXPANSION_ADD: usize = 64;
const EXPANSION_SEARCH: usize = 512;

pub struct Ann {
    index: Index,
}

fn options(dimension: usize) -> IndexOptions {
    IndexOptions {
        dimensions: dimension,
        // Rows are unit vectors, so inner product is cosine.
        metric: MetricKind::IP,
        quantization: ScalarKind::I8,
        connectivity: CONNECTIVITY,
        expansion_add: EXPANSION_ADD,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Ann {
    /// Maps a saved graph for searching, without reading it whole.
    pub fn view(path: &Path, dimension: usize) -> Result<Ann, String> {
        let index = Index::new(&options(dimension)).map_err(|e| e.to_string())?;
        index.view(&path_str(path)?).map_err(|e| e.to_string())?;
        index.change_expansion_search(EXPANSION_SEARCH);
        if index.dimensions() != dimension {
            return Err(format!(
                "it holds {}-dimensional vectors, the index {dimension}",
                index.dimensions()
            ));
        }
        // Each concurrent search needs a context of its own; a server runs many at once.
        index
            .reserve_capacity_and_threads(index.size(), threads().max(4) * 4)
            .map_err(|e| e.to_string())?;
        Ok(Ann { index })
    }

    /// Writes to `to` the graph of `base` (a saved graph of the first rows, or none) with
    /// `rows` added: `read(row, buffer)` fills a row's vector, or says `false` to leave it out.
    pub fn extend(
        base: Option<&Path>,
        to: &Path,
        dimension: usize,
        rows: std::ops::Range<usize>,
        read: impl Fn(usize, &mut [f32]) -> Result<bool, String> + Sync,
    ) -> Result<(), String> {
        let index = Index::new(&options(dimension)).map_err(|e| e.to_string())?;
        if let Some(base) = base {
            index.load(&path_str(base)?).map_err(|e| e.to_string())?;
        }
        let threads = threads();
        index
            .reserve_capacity_and_threads(index.size() + rows.len(), threads)
            .map_err(|e| e.to_string())?;
        let failure = std::sync::Mutex::new(None);
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let (index, read, failure, rows) = (&index, &read, &failure, rows.clone());
                scope.spawn(move || {
                    let mut vector = vec![0f32; dimension];
                    for row in rows.skip(thread).step_by(threads) {
                        let added = read(row, &mut vector).and_then(|keep| match keep {
                            true => index.add(row as u64, &vector).map_err(|e| e.to_string()),
                            false => Ok(()),
                        });
                        if let Err(error) = added {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(error) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(error);
        }
        index.save(&path_str(to)?).map_err(|e| e.to_string())
    }

    /// Up to `count` rows nearest `query` (a unit vector), passing `accepts` when given.
    pub fn search(
        &self,
        query: &[f32],
        count: usize,
        accepts: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Result<Vec<usize>, String> {
        let matches = match accepts {
            None => self.index.search(query, count),
            Some(accepts) => self
                .index
                .filtered_search(query, count, |key| accepts(key as usize)),
        }
        .map_err(|e| e.to_string())?;
        Ok(matches.keys.into_iter().map(|key| key as usize).collect())
    }
}

fn path_str(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()))
}
