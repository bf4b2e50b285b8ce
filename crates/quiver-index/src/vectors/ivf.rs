//! The approximate nearest-neighbour index of a large index: an inverted file (IVF). Rows are
//! grouped into lists around centroids (spherical k-means on a sample of the rows); a search
//! scores the centroids, scans the rows of the nearest lists in their compact form (int8,
//! scaled per dimension), and the f32 rows rescore the best of them ([`super::VectorIndex`]).
//!
//! Why an IVF of our own and not a graph from a crate: usearch's HNSW, which this replaced,
//! reached recall@10 0.92–0.94 on bench/scale's 1M clustered vectors at 1.3–8.8 ms, and
//! building it took about two of the 3.5 minutes of a 1M `quiver import`; its int8 form scales
//! every dimension alike, which leaves unit vectors of 384 dimensions (components near ±0.05)
//! a handful of levels. Training and assigning an IVF are matrix products (the `gemm` crate,
//! as the models use), appending rows is appending to two flat files, and deleted or filtered
//! rows are skipped where they are met. FAISS, the IVF library of the field, is C++ that no
//! crate of the registry builds.
//!
//! On disk, beside the vector files (`files.rs`), for a layout trained on T rows:
//! `centroids-E-T.f32` (the centroids, then the per-dimension scales of the codes),
//! `lists-E-T.u32` (each row's list) and `codes-E-T.i8` (each row's int8 code: list by list
//! for the rows the IVF was built with, so a probe reads a list's codes in one run, then at
//! their rows for the rows appended since). The last two are appended to in step with the rows.

use super::files::Slab;
use quiver_runtime::kernels::{matmul, MatMut, MatRef};
use std::path::Path;

/// Below this many searchable rows an exact scan of the f32 vectors is fast enough (a few
/// milliseconds) and exact, so no IVF is built or used.
pub const MIN_ROWS: usize = 20_000;
/// A layout trained on T rows serves until the index holds this many times T: the number of
/// lists follows the square root of the rows, and rows added later may drift from the sample.
pub const RETRAIN_GROWTH: usize = 4;
/// Lists a search scans at least, nearest centroid first.
const PROBES: usize = 16;
/// Accepted rows a search scans at least, so a filter that keeps a few rows of each list still
/// meets enough of them (more lists are scanned until it has).
pub const MIN_SCANNED: usize = 8_192;
const MAX_LISTS: usize = 2_048;
/// k-means runs on this many sample rows per list, for this many rounds.
pub const SAMPLE_PER_LIST: usize = 32;
const ROUNDS: usize = 8;
/// Rows scored against the centroids per matrix product.
const BLOCK: usize = 4_096;

/// The number of lists for `rows` rows: about their square root, so a list and the centroids
/// cost a search about the same.
pub fn lists_for(rows: usize) -> usize {
    ((rows as f64).sqrt() as usize).clamp(16, MAX_LISTS)
}

/// What training learns: the centroids, and the scale of each dimension for the int8 codes.
pub struct Quantizer {
    dimension: usize,
    centroids: Vec<f32>,
    scales: Vec<f32>,
}

impl Quantizer {
    pub fn lists(&self) -> usize {
        self.centroids.len() / self.dimension.max(1)
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Spherical k-means over `sample` (unit vectors, `dimension` wide) into `lists` lists.
    /// Deterministic: the same sample trains the same centroids.
    pub fn train(dimension: usize, sample: &[f32], lists: usize) -> Quantizer {
        let count = sample.len() / dimension;
        let lists = lists.clamp(1, count.max(1));
        let row = |i: usize| &sample[i * dimension..(i + 1) * dimension];
        let mut centroids: Vec<f32> = (0..lists)
            .flat_map(|list| row(list * count / lists).iter().copied())
            .collect();
        for _ in 0..ROUNDS {
            let (assigned, best) = nearest(&centroids, dimension, sample);
            let mut sums = vec![0f32; centroids.len()];
            let mut sizes = vec![0usize; lists];
            for (i, &list) in assigned.iter().enumerate() {
                let list = list as usize;
                sizes[list] += 1;
                for (sum, x) in sums[list * dimension..(list + 1) * dimension]
                    .iter_mut()
                    .zip(row(i))
                {
                    *sum += x;
                }
            }
            // An empty list takes the sample row its centroid fits worst, so no list is wasted.
            let mut worst: Vec<usize> = (0..count).collect();
            worst.sort_by(|&a, &b| best[a].total_cmp(&best[b]).then(a.cmp(&b)));
            let mut reseeds = worst.into_iter();
            for list in 0..lists {
                let centroid = &mut centroids[list * dimension..(list + 1) * dimension];
                if sizes[list] == 0 {
                    if let Some(i) = reseeds.next() {
                        centroid.copy_from_slice(row(i));
                    }
                    continue;
                }
                let sum = &sums[list * dimension..(list + 1) * dimension];
                let norm = super::dot(sum, sum).sqrt().max(f32::MIN_POSITIVE);
                for (c, s) in centroid.iter_mut().zip(sum) {
                    *c = s / norm;
                }
            }
        }
        let mut scales = vec![0f32; dimension];
        for i in 0..count {
            for (scale, x) in scales.iter_mut().zip(row(i)) {
                *scale = scale.max(x.abs());
            }
        }
        for scale in &mut scales {
            if *scale <= 0.0 {
                *scale = 1.0;
            }
        }
        Quantizer {
            dimension,
            centroids,
            scales,
        }
    }

    /// Each row of `vectors` (`dimension` wide): its list.
    pub fn assign(&self, vectors: &[f32]) -> Vec<u32> {
        nearest(&self.centroids, self.dimension, vectors).0
    }

    /// A row's int8 code: each component over its dimension's scale, in ±127 (clamped: a
    /// component beyond what the sample held only ranks candidates, which f32 rescores).
    pub fn encode(&self, vector: &[f32], code: &mut [i8]) {
        for ((c, x), scale) in code.iter_mut().zip(vector).zip(&self.scales) {
            *c = (x / scale * 127.0).round().clamp(-127.0, 127.0) as i8;
        }
    }

    /// The centroids, then the scales, as little-endian f32.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.centroids
            .iter()
            .chain(&self.scales)
            .flat_map(|x| x.to_le_bytes())
            .collect()
    }

    pub fn read(path: &Path, dimension: usize, lists: usize) -> std::io::Result<Quantizer> {
        let bytes = std::fs::read(path)?;
        if bytes.len() != (lists + 1) * dimension * 4 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "holds {} bytes, not the {} of {lists} centroids and the scales",
                    bytes.len(),
                    (lists + 1) * dimension * 4
                ),
            ));
        }
        // Little-endian, the machine's order, as the vector files are mapped.
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let (centroids, scales) = values.split_at(lists * dimension);
        Ok(Quantizer {
            dimension,
            centroids: centroids.to_vec(),
            scales: scales.to_vec(),
        })
    }
}

/// For each row of `vectors`, its best centroid and that cosine: one matrix product a block.
fn nearest(centroids: &[f32], dimension: usize, vectors: &[f32]) -> (Vec<u32>, Vec<f32>) {
    let lists = centroids.len() / dimension;
    let count = vectors.len() / dimension;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut assigned, mut best) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let mut scores = vec![0f32; BLOCK.min(count) * lists];
    for start in (0..count).step_by(BLOCK) {
        let rows = BLOCK.min(count - start);
        let block = &vectors[start * dimension..(start + rows) * dimension];
        matmul(
            MatMut::row_major(&mut scores[..rows * lists], rows, lists),
            MatRef::row_major(block, rows, dimension),
            MatRef::row_major(centroids, lists, dimension).t(),
            1.0,
            false,
            threads,
        );
        for row in scores[..rows * lists].chunks_exact(lists) {
            let (list, score) = argmax(row);
            assigned.push(list as u32);
            best.push(score);
        }
    }
    (assigned, best)
}

/// The position and value of the largest score, the first of equals; `(0, -inf)` when none
/// exceeds -inf. Sixteen running maxima side by side, which the compiler keeps in vector
/// registers: a fold comparing one score at a time was a tenth of an import's time spent on
/// the IVF at a million rows (`perf record`).
fn argmax(scores: &[f32]) -> (usize, f32) {
    const LANES: usize = 16;
    let mut best = [f32::NEG_INFINITY; LANES];
    let mut at = [0u32; LANES];
    let blocks = scores.chunks_exact(LANES);
    let rest = blocks.remainder();
    for (block, values) in blocks.enumerate() {
        for lane in 0..LANES {
            let better = values[lane] > best[lane];
            best[lane] = if better { values[lane] } else { best[lane] };
            at[lane] = if better {
                (block * LANES + lane) as u32
            } else {
                at[lane]
            };
        }
    }
    let mut result = (0, f32::NEG_INFINITY);
    for (&score, &position) in best.iter().zip(&at) {
        let position = position as usize;
        if score > result.1 || (score == result.1 && position < result.0) {
            result = (position, score);
        }
    }
    let start = scores.len() - rest.len();
    for (offset, &score) in rest.iter().enumerate() {
        if score > result.1 {
            result = (start + offset, score);
        }
    }
    result
}

/// An IVF ready for searches: the quantizer, the rows of each list, and the rows' codes.
pub struct Ivf {
    quantizer: Quantizer,
    /// `members[offsets[l]..offsets[l + 1]]`: the rows of list `l`, ascending.
    offsets: Vec<usize>,
    members: Vec<u32>,
    /// The codes of rows below `sorted` lie list by list: list `l`'s from `sorted_starts[l]`,
    /// in the order of its members; every later row's code is at the row.
    sorted: usize,
    sorted_starts: Vec<usize>,
    codes: Slab<i8>,
}

impl Ivf {
    /// Reads the centroids, maps the codes, and gathers each list's rows from the first `rows`
    /// entries of the lists file; the codes of the first `sorted` rows are stored list by list.
    pub fn open(
        centroids: &Path,
        lists_file: &Path,
        codes_file: &Path,
        dimension: usize,
        lists: usize,
        rows: usize,
        sorted: usize,
    ) -> std::io::Result<Ivf> {
        if sorted > rows {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{sorted} rows coded list by list, of {rows}"),
            ));
        }
        let quantizer = Quantizer::read(centroids, dimension, lists)?;
        let assigned = Slab::<u32>::map(lists_file, rows)?;
        let codes = Slab::<i8>::map(codes_file, rows * dimension)?;
        let assigned = assigned.as_slice();
        let mut offsets = vec![0usize; lists + 1];
        for &list in assigned {
            let list = list as usize;
            if list >= lists {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("names list {list} of {lists}"),
                ));
            }
            offsets[list + 1] += 1;
        }
        for list in 0..lists {
            offsets[list + 1] += offsets[list];
        }
        let mut next = offsets.clone();
        let mut members = vec![0u32; assigned.len()];
        let mut sorted_starts = vec![0usize; lists + 1];
        for (row, &list) in assigned.iter().enumerate() {
            members[next[list as usize]] = row as u32;
            next[list as usize] += 1;
            if row < sorted {
                sorted_starts[list as usize + 1] += 1;
            }
        }
        for list in 0..lists {
            sorted_starts[list + 1] += sorted_starts[list];
        }
        Ok(Ivf {
            quantizer,
            offsets,
            members,
            sorted,
            sorted_starts,
            codes,
        })
    }

    /// Where the code of `row`, the `i`-th member of `list`, lies (in rows of codes).
    fn code_of(&self, list: usize, i: usize, row: u32) -> usize {
        // A list's members ascend, so its sorted rows come first and `i` counts among them.
        if (row as usize) < self.sorted {
            self.sorted_starts[list] + i
        } else {
            row as usize
        }
    }

    /// Up to `count` rows that `filter` accepts, best first by their codes' score against `query`
    /// (a unit vector): from the [`PROBES`] lists nearest it, and more until [`MIN_SCANNED`]
    /// accepted rows were scored.
    pub fn candidates(&self, query: &[f32], count: usize, filter: &dyn RowFilter) -> Vec<usize> {
        let d = self.quantizer.dimension;
        let mut order: Vec<(f32, usize)> = self
            .quantizer
            .centroids
            .chunks_exact(d)
            .map(|centroid| super::dot(query, centroid))
            .enumerate()
            .map(|(list, score)| (score, list))
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        // The scales folded into the query once, so a code is scored by a plain dot product.
        let scaled: Vec<f32> = query
            .iter()
            .zip(&self.quantizer.scales)
            .map(|(q, scale)| q * scale / 127.0)
            .collect();
        let codes = self.codes.as_slice();
        let mut scored: Vec<(f32, u32)> = Vec::new();
        for (probed, &(_, list)) in order.iter().enumerate() {
            if probed >= PROBES && scored.len() >= MIN_SCANNED {
                break;
            }
            let members = &self.members[self.offsets[list]..self.offsets[list + 1]];
            for (i, &row) in members.iter().enumerate() {
                if let Some(&ahead) = members.get(i + PREFETCH_AHEAD) {
                    filter.prefetch(ahead as usize);
                    let at = self.code_of(list, i + PREFETCH_AHEAD, ahead);
                    prefetch(&codes[at * d..(at + 1) * d]);
                }
                if filter.accepts(row as usize) {
                    let at = self.code_of(list, i, row);
                    let code = &codes[at * d..(at + 1) * d];
                    scored.push((super::dot(&scaled, code), row));
                }
            }
        }
        let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if count < scored.len() {
            scored.select_nth_unstable_by(count, order);
            scored.truncate(count);
        }
        scored.sort_by(order);
        scored.into_iter().map(|(_, row)| row as usize).collect()
    }
}

/// A list's rows appended since the IVF was built lie apart in the codes file (and a filter's
/// data lies at the rows), so each is a cache miss the hardware does not foresee; asking for
/// them this many rows ahead overlaps the misses (bench/scale's 1M with codes at their rows,
/// 200 queries: p50 5.0 ms without, 1.9 ms with 4, 8 or 16 rows ahead).
const PREFETCH_AHEAD: usize = 8;

/// Which rows a search may return, as [`Ivf::candidates`] asks.
pub trait RowFilter {
    fn accepts(&self, row: usize) -> bool;
    /// Asks for what [`RowFilter::accepts`] will read of `row`, ahead of it.
    fn prefetch(&self, row: usize);
}

/// Asks for the cache lines of `items` without waiting for them.
pub(super) fn prefetch<T: bytemuck::Pod>(items: &[T]) {
    let bytes: &[u8] = bytemuck::cast_slice(items);
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint; it reads nothing and cannot fault, and the address
        // is inside a live slice.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(values: impl Iterator<Item = f32>) -> Vec<f32> {
        let v: Vec<f32> = values.collect();
        let norm = super::super::dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    #[test]
    fn argmax_is_the_first_largest() {
        let fold = |scores: &[f32]| {
            scores
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bs), (i, &s)| {
                    if s > bs {
                        (i, s)
                    } else {
                        (bi, bs)
                    }
                })
        };
        let mut seed = 11u64;
        for len in [0, 1, 5, 16, 17, 40, 1000, 1003] {
            for round in 0..20 {
                // Few distinct values, so the largest often repeats, across lanes and in the
                // tail.
                let scores: Vec<f32> = (0..len)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((seed >> 33) % (3 + round)) as f32 - 2.0
                    })
                    .collect();
                assert_eq!(argmax(&scores), fold(&scores), "{scores:?}");
            }
        }
        assert_eq!(argmax(&[f32::NEG_INFINITY; 20]), (0, f32::NEG_INFINITY));
    }

    #[test]
    fn codes_score_as_the_vectors_do() {
        let dimension = 48;
        let mut next = noise(3);
        let rows: Vec<Vec<f32>> = (0..400)
            .map(|_| unit((0..dimension).map(|_| next())))
            .collect();
        let sample: Vec<f32> = rows.iter().flatten().copied().collect();
        let quantizer = Quantizer::train(dimension, &sample, 8);
        let query = &rows[17];
        let scaled: Vec<f32> = query
            .iter()
            .zip(&quantizer.scales)
            .map(|(q, s)| q * s / 127.0)
            .collect();
        let mut code = vec![0i8; dimension];
        for row in &rows {
            quantizer.encode(row, &mut code);
            let exact = super::super::dot(query, row);
            let approximate = super::super::dot(&scaled, &code);
            assert!(
                (exact - approximate).abs() < 0.02,
                "{exact} against {approximate}"
            );
        }
    }

    /// Deterministic values in -0.5..0.5.
    fn noise(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        }
    }

    struct Every;
    impl RowFilter for Every {
        fn accepts(&self, _: usize) -> bool {
            true
        }
        fn prefetch(&self, _: usize) {}
    }

    #[test]
    fn codes_stored_list_by_list_find_what_codes_at_their_rows_find() {
        let (dimension, lists, count) = (16, 8, 600);
        let mut next = noise(5);
        let rows: Vec<Vec<f32>> = (0..count)
            .map(|_| unit((0..dimension).map(|_| next())))
            .collect();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let quantizer = Quantizer::train(dimension, &flat, lists);
        let assigned = quantizer.assign(&flat);
        let codes: Vec<Vec<i8>> = rows
            .iter()
            .map(|row| {
                let mut code = vec![0i8; dimension];
                quantizer.encode(row, &mut code);
                code
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("quiver-ivf-sorted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let centroids = dir.join("centroids");
        std::fs::write(&centroids, quantizer.to_bytes()).unwrap();
        let lists_file = dir.join("lists");
        std::fs::write(&lists_file, bytemuck::cast_slice::<u32, u8>(&assigned)).unwrap();
        // The first `sorted` rows' codes list by list (rows ascending within a list), then the
        // rest at their rows.
        let open = |sorted: usize| {
            let mut order: Vec<usize> = (0..sorted).collect();
            order.sort_by_key(|&row| (assigned[row], row));
            order.extend(sorted..count);
            let bytes: Vec<u8> = order
                .iter()
                .flat_map(|&row| codes[row].iter().map(|&c| c as u8))
                .collect();
            let codes_file = dir.join(format!("codes-{sorted}"));
            std::fs::write(&codes_file, bytes).unwrap();
            Ivf::open(
                &centroids,
                &lists_file,
                &codes_file,
                dimension,
                lists,
                count,
                sorted,
            )
            .unwrap()
        };
        let at_rows = open(0);
        for sorted in [count, 450] {
            let ivf = open(sorted);
            for query in rows.iter().step_by(37) {
                assert_eq!(
                    ivf.candidates(query, 20, &Every),
                    at_rows.candidates(query, 20, &Every),
                    "{sorted} rows sorted"
                );
            }
        }
        // The query's own row is its best candidate: the codes are read where they lie.
        assert_eq!(open(450).candidates(&rows[500], 1, &Every), [500]);
        assert_eq!(open(count).candidates(&rows[74], 1, &Every), [74]);
        assert!(Ivf::open(
            &centroids,
            &lists_file,
            &dir.join(format!("codes-{count}")),
            dimension,
            lists,
            count,
            count + 1
        )
        .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn training_separates_clusters_and_fills_every_list() {
        let dimension = 16;
        // Four tight clusters along four axes; the first centroids all start in one.
        let rows: Vec<Vec<f32>> = (0..400)
            .map(|i| {
                let axis = if i < 300 { 0 } else { (i % 3) + 1 };
                unit((0..dimension).map(|d| {
                    if d == axis {
                        1.0
                    } else {
                        0.01 * ((i * 7 + d * 13) % 11) as f32
                    }
                }))
            })
            .collect();
        let sample: Vec<f32> = rows.iter().flatten().copied().collect();
        let quantizer = Quantizer::train(dimension, &sample, 4);
        let assigned = quantizer.assign(&sample);
        let mut lists: Vec<u32> = assigned.clone();
        lists.sort_unstable();
        lists.dedup();
        assert_eq!(lists.len(), 4, "every list holds rows");
        // Rows of one axis share a list with each other.
        for axis in 1..4 {
            let of_axis: Vec<u32> = (300..400)
                .filter(|i| (i % 3) + 1 == axis)
                .map(|i| assigned[i])
                .collect();
            assert!(of_axis.iter().all(|&l| l == of_axis[0]), "{of_axis:?}");
            assert_ne!(of_axis[0], assigned[0]);
        }
    }
}
