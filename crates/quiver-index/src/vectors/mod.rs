//! Vector search over an index: the vector files ([`files`]) memory-mapped, scanned exactly
//! while small, and through an IVF ([`ivf`]) once large, with the f32 vectors rescoring what
//! its int8 codes find.

mod files;
mod ivf;

pub(crate) use files::FreshFiles;
pub use files::{status, sync, Synced, VectorFilesStatus, DIR};

use crate::adapter::QueryAdapter;
use crate::error::{IndexError, Result};
use crate::search::SearchFilter;
use crate::store::Store;
use files::VectorSet;
use std::collections::HashMap;

/// Rows an IVF search asks for per result wanted: a chunk can hold two rows (text and
/// signature), and rescoring with the f32 vectors reorders the int8 codes' ranking.
const CANDIDATES_PER_RESULT: usize = 2;
const EXTRA_CANDIDATES: usize = 32;

/// The vectors of an index, ready for many searches.
///
/// A chunk that starts a definition has two: its text's and its signature's. Its score is the
/// better of the two cosines, as multi-vector retrieval scores a document by its best vector:
/// on the code-search eval (docs/evaluation.md) that lifted vector search from 0.426 to 0.464
/// nDCG@10, where averaging the two (signature weighted 0.5) reached 0.438.
pub struct VectorIndex {
    set: VectorSet,
    /// Whether the set is the index's vector files (else it was read from the database).
    mapped: bool,
    /// Applied to every query vector first, when the index has one ([`crate::adapter`]).
    adapter: Option<QueryAdapter>,
}

impl VectorIndex {
    /// The vectors of the index in `store`: its vector files, brought up to date first when
    /// stale and this process may write the index; read from the database into memory when
    /// they are stale and it may not (another process is indexing, or the index is read-only).
    pub fn open(store: &Store) -> Result<Self> {
        let mut index = Self::open_vectors(store)?;
        // A search goes on without an adapter it cannot read: the adapter refines a ranking
        // the vectors already give.
        index.adapter = store.query_adapter().unwrap_or_else(|error| {
            tracing::warn!("searching without the query adapter: {error}");
            None
        });
        Ok(index)
    }

    fn open_vectors(store: &Store) -> Result<Self> {
        let Some(settings) = store.settings()? else {
            return Ok(VectorIndex::empty());
        };
        let dimension = settings.dimension;
        if let Some(set) = files::open_current(store, dimension)? {
            return Ok(VectorIndex {
                set,
                mapped: true,
                adapter: None,
            });
        }
        let synced = if store.is_writer() {
            files::sync(store).map(|_| ())
        } else {
            Store::open_writer(store.dir()).and_then(|writer| files::sync(&writer).map(|_| ()))
        };
        match synced {
            Ok(()) => {
                if let Some(set) = files::open_current(store, dimension)? {
                    return Ok(VectorIndex {
                        set,
                        mapped: true,
                        adapter: None,
                    });
                }
            }
            Err(error) => tracing::info!(
                "vector files of {} not brought up to date ({error}); reading the vectors \
                 from the database",
                store.dir().display()
            ),
        }
        Ok(VectorIndex {
            set: files::read_into_memory(store, dimension)?,
            mapped: false,
            adapter: None,
        })
    }

    fn empty() -> Self {
        VectorIndex {
            set: VectorSet::empty(),
            mapped: false,
            adapter: None,
        }
    }

    /// The index's query adapter, when it has one.
    pub fn adapter(&self) -> Option<&QueryAdapter> {
        self.adapter.as_ref()
    }

    /// Searches without the query adapter from now on (to measure what it adds).
    pub fn without_adapter(mut self) -> Self {
        self.adapter = None;
        self
    }

    /// Chunks with a vector.
    pub fn len(&self) -> usize {
        self.set.chunks
    }

    pub fn is_empty(&self) -> bool {
        self.set.chunks == 0
    }

    /// Width of the vectors (0 for an index never indexed).
    pub fn dimension(&self) -> usize {
        self.set.dimension
    }

    /// Whether these are the index's vector files, memory-mapped; else they were read from the
    /// database, and [`VectorIndex::files_ready`] says when the files can replace them.
    pub fn is_mapped(&self) -> bool {
        self.mapped
    }

    /// Whether the vector files of `store` claim to hold what it holds now (their manifest
    /// matches; the files themselves are checked when opened).
    pub fn files_ready(store: &Store) -> Result<bool> {
        let Some(settings) = store.settings()? else {
            return Ok(false);
        };
        files::is_current(store, settings.dimension)
    }

    /// Whether an IVF serves searches of this index (else every search scans exactly).
    pub fn has_ivf(&self) -> bool {
        self.set.ivf.is_some()
    }

    fn vector(&self, row: usize) -> &[f32] {
        let d = self.set.dimension;
        &self.set.vectors.as_slice()[row * d..(row + 1) * d]
    }

    /// The `depth` chunks most similar (cosine, the better of text and signature) to the query,
    /// as (chunk row id, score): through the IVF when the index has one and the filter
    /// leaves enough rows, else by an exact scan. A query of another width is an error, never
    /// an empty answer.
    pub fn nearest(
        &self,
        query: &[f32],
        depth: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<(i64, f64)>> {
        self.rank(query, depth, filter, true)
    }

    /// [`VectorIndex::nearest`] by an exact scan of every row, whatever the index's size: what
    /// the IVF's recall is measured against.
    pub fn nearest_exact(
        &self,
        query: &[f32],
        depth: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<(i64, f64)>> {
        self.rank(query, depth, filter, false)
    }

    fn rank(
        &self,
        query: &[f32],
        depth: usize,
        filter: &SearchFilter,
        approximate: bool,
    ) -> Result<Vec<(i64, f64)>> {
        if self.is_empty() || depth == 0 {
            return Ok(Vec::new());
        }
        if query.len() != self.set.dimension {
            return Err(IndexError::QueryWidth {
                query: query.len(),
                index: self.set.dimension,
            });
        }
        let query: Vec<f32> = match &self.adapter {
            Some(adapter) if adapter.dimension() == query.len() => adapter.apply(query),
            _ => {
                let norm = dot(query, query).sqrt().max(f32::MIN_POSITIVE);
                query.iter().map(|x| x / norm).collect()
            }
        };
        let accepted = Accepted::new(&self.set, filter)?;
        let rows = self.set.rows.as_slice();
        let accepts = |row: usize| accepted.row(row);
        if let Some(ivf) = self.set.ivf.as_ref().filter(|_| approximate) {
            // Only whether `MIN_ROWS` rows pass matters, so counting stops there: a wide filter
            // is settled within its first rows, and a narrow one's full pass is no more than
            // the exact scan that then answers it.
            let (eligible, examined) = if accepted.filters {
                let (mut eligible, mut examined) = (0, 0);
                for row in 0..rows.len() {
                    examined += 1;
                    if accepts(row) {
                        eligible += 1;
                        if eligible == ivf::MIN_ROWS {
                            break;
                        }
                    }
                }
                (eligible, examined)
            } else {
                (rows.len() - self.set.deletions(), rows.len())
            };
            // A filter that leaves few rows is answered exactly: the lists nearest the query
            // may hold none of them. So is one that passes so few of each list that the IVF
            // would visit more than a quarter of all rows, in no order, to score
            // `MIN_SCANNED` of them: the exact scan reads them in order, faster.
            let visits = ivf::MIN_SCANNED * examined / eligible.max(1);
            if eligible >= ivf::MIN_ROWS && visits <= rows.len() / 4 {
                return Ok(self.rank_by_ivf(ivf, &query, depth, &accepted));
            }
        }
        Ok(self.scan(&query, 0..rows.len(), depth, &accepts))
    }

    /// Candidates from the IVF, rescored exactly.
    fn rank_by_ivf(
        &self,
        ivf: &ivf::Ivf,
        query: &[f32],
        depth: usize,
        accepted: &Accepted<'_>,
    ) -> Vec<(i64, f64)> {
        let rows = self.set.rows.as_slice();
        let count = depth * CANDIDATES_PER_RESULT + EXTRA_CANDIDATES;
        let found = ivf.candidates(query, count, accepted);
        let mut best: HashMap<i64, f32> = HashMap::new();
        // A row past the rows (a damaged lists file) is skipped, not indexed.
        for row in found.into_iter().filter(|&row| row < rows.len()) {
            // Both rows of the found row's chunk: its other vector may score higher.
            let chunk = rows[row].chunk;
            let first = if row > 0 && rows[row - 1].chunk == chunk {
                row - 1
            } else {
                row
            };
            for other in (first..rows.len()).take(2) {
                if rows[other].chunk == chunk && accepted.row(other) {
                    let score = dot(query, self.vector(other));
                    let entry = best.entry(chunk).or_insert(f32::NEG_INFINITY);
                    *entry = entry.max(score);
                }
            }
        }
        let ranked: Vec<(i64, f64)> = best
            .into_iter()
            .map(|(chunk, score)| (chunk, f64::from(score)))
            .collect();
        top(ranked, depth)
    }

    /// Every accepted row of `range` scored; a chunk by its better row.
    fn scan(
        &self,
        query: &[f32],
        range: std::ops::Range<usize>,
        depth: usize,
        accepts: &dyn Fn(usize) -> bool,
    ) -> Vec<(i64, f64)> {
        let rows = self.set.rows.as_slice();
        let mut scored: Vec<(i64, f64)> = Vec::new();
        for row in range.filter(|&row| accepts(row)) {
            let score = f64::from(dot(query, self.vector(row)));
            // A chunk's rows are adjacent, so its second row follows its first.
            match scored.last_mut() {
                Some(last) if last.0 == rows[row].chunk => last.1 = last.1.max(score),
                _ => scored.push((rows[row].chunk, score)),
            }
        }
        top(scored, depth)
    }
}

/// The `depth` best, best first; ties by chunk id so results are deterministic.
fn top(mut scored: Vec<(i64, f64)>, depth: usize) -> Vec<(i64, f64)> {
    let order = |a: &(i64, f64), b: &(i64, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if depth < scored.len() {
        scored.select_nth_unstable_by(depth, order);
        scored.truncate(depth);
    }
    scored.sort_by(order);
    scored.dedup_by_key(|(chunk, _)| *chunk);
    scored
}

/// Which rows a search may return: not deleted, and passing its filter. The filter is decided
/// once per language and per path, not per row.
struct Accepted<'a> {
    set: &'a VectorSet,
    languages: Vec<bool>,
    paths: Option<Vec<bool>>,
    filters: bool,
}

impl<'a> Accepted<'a> {
    fn new(set: &'a VectorSet, filter: &SearchFilter) -> Result<Self> {
        let languages = set
            .languages
            .iter()
            .map(|language| filter.accepts_language(language))
            .collect();
        let paths = match &filter.path {
            Some(glob) => Some(set.paths()?.iter().map(|p| glob.is_match(p)).collect()),
            None => None,
        };
        Ok(Accepted {
            set,
            languages,
            paths,
            filters: !filter.languages.is_empty() || filter.path.is_some(),
        })
    }

    fn row(&self, row: usize) -> bool {
        // Without a filter the row's record is not read: an IVF search meets rows in no order,
        // and reading each one's record cost as much as scoring it.
        if !self.filters {
            return !self.set.is_deleted(row);
        }
        let record = &self.set.rows.as_slice()[row];
        // An id past its table (a damaged file) matches nothing.
        !self.set.is_deleted(row)
            && self.languages.get(record.language as usize) == Some(&true)
            && self
                .paths
                .as_ref()
                .is_none_or(|paths| paths.get(record.path as usize) == Some(&true))
    }
}

impl ivf::RowFilter for Accepted<'_> {
    fn accepts(&self, row: usize) -> bool {
        self.row(row)
    }

    fn prefetch(&self, row: usize) {
        // Without a filter, `row` reads no record.
        if self.filters {
            if let Some(record) = self.set.rows.as_slice().get(row..row + 1) {
                ivf::prefetch(record);
            }
        }
    }
}

/// Dot product in 16 independent lanes, which the compiler turns into SIMD adds; a plain
/// iterator sum must add in order, so it stays scalar. `b` is f32 (a vector) or i8 (an IVF
/// code, widened as it is read).
pub(crate) fn dot<T: Copy + Into<f32>>(a: &[f32], b: &[T]) -> f32 {
    let mut lanes = [0f32; 16];
    let (a_chunks, b_chunks) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| x * y.into())
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..16 {
            lanes[lane] += x[lane] * y[lane].into();
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests;
