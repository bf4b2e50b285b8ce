//! A query adapter: a linear map on query vectors, fitted on the repository's own (doc comment
//! → definition) pairs, so that a query in the words this repository's authors use lands nearer
//! the code they wrote. It is stored with the index and applied to every query vector before
//! vector search; the chunk vectors are untouched.
//!
//! The map is `q ↦ q (I + W)`, fitted by minimising a contrastive loss (InfoNCE: each doc
//! comment's vector against its own definition's, the other definitions of the batch, by
//! both of the vectors search scores them with, as negatives) plus `λ‖W‖²`, which keeps the
//! map near the identity, with Adam. The fit runs on the CPU in seconds: its products go
//! through the runtime's matrix kernel.

mod held_out;
mod refresh;

pub use held_out::{held_out, HeldOut};
pub use refresh::{fit_pairs, mine_pairs, refresh, DocPair, Refreshed, MAX_PAIRS};

use quiver_embed::l2_normalize;
use quiver_runtime::kernels::{matmul, MatMut, MatRef};

/// Pairs below which no adapter is fitted: too few to say more than the model already does.
pub const MIN_PAIRS: usize = 64;

/// How an adapter is fitted (the defaults were chosen with `quiver eval` on its dev split).
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    pub epochs: usize,
    pub batch: usize,
    /// Softmax temperature of the contrastive loss.
    pub temperature: f32,
    /// Weight of `‖W‖²`: how near the identity the map stays.
    pub regularization: f32,
    pub learning_rate: f32,
    /// Seed of the batches' shuffle, so a fit is reproducible.
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 30,
            batch: 512,
            temperature: 0.05,
            regularization: 0.01,
            learning_rate: 1e-3,
            seed: 0x5eed,
        }
    }
}

/// A fitted query map.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryAdapter {
    dimension: usize,
    /// `I + W`, row-major, `dimension × dimension`: the adapted query is `q · matrix`.
    matrix: Vec<f32>,
    /// The pairs it was fitted on.
    pairs: usize,
}

impl QueryAdapter {
    /// Fits a map taking each of `queries` (unit vectors, `n × dimension` row-major) towards the
    /// matching row of `targets`; `None` with fewer than [`MIN_PAIRS`] pairs.
    pub fn fit(
        queries: &[f32],
        targets: &[f32],
        dimension: usize,
        options: &FitOptions,
    ) -> Option<QueryAdapter> {
        QueryAdapter::fit_with_siblings(queries, targets, None, dimension, options)
    }

    /// [`QueryAdapter::fit`] where each target has a sibling: another vector its definition is
    /// searched by (its chunk's text vector, beside the signature vector). Search scores a
    /// chunk by the better of the two, so a query must also come out nearer its target than
    /// the other definitions' siblings: those hold their own doc comments, the neighbours whose
    /// words a query shares. A pair's own sibling is left out of its row (it holds the comment
    /// the query was taken from).
    pub fn fit_with_siblings(
        queries: &[f32],
        targets: &[f32],
        siblings: Option<&[f32]>,
        dimension: usize,
        options: &FitOptions,
    ) -> Option<QueryAdapter> {
        if pair_count(queries, targets, siblings, dimension)? < MIN_PAIRS {
            return None;
        }
        Some(QueryAdapter::train(
            queries, targets, siblings, dimension, options,
        ))
    }

    /// The fit itself, on shapes [`QueryAdapter::fit_with_siblings`] has checked.
    fn train(
        queries: &[f32],
        targets: &[f32],
        siblings: Option<&[f32]>,
        dimension: usize,
        options: &FitOptions,
    ) -> QueryAdapter {
        let d = dimension;
        let n = queries.len() / d;
        let mut w = vec![0f32; d * d];
        let mut adam = Adam::new(d * d, options.learning_rate);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = options.seed;
        let batch = options.batch.clamp(2, n);
        for _ in 0..options.epochs {
            shuffle(&mut order, &mut rng);
            for chunk in order.chunks(batch) {
                if chunk.len() < 2 {
                    continue;
                }
                let x = gather(queries, chunk, d);
                let mut p = gather(targets, chunk, d);
                if let Some(siblings) = siblings {
                    p.extend(gather(siblings, chunk, d));
                }
                let mut gradient = batch_gradient(&x, &p, &w, d, options.temperature);
                for (g, wi) in gradient.iter_mut().zip(&w) {
                    *g += 2.0 * options.regularization * wi;
                }
                adam.step(&mut w, &gradient);
            }
        }
        for i in 0..d {
            w[i * d + i] += 1.0;
        }
        QueryAdapter {
            dimension: d,
            matrix: w,
            pairs: n,
        }
    }

    /// The query vector adapted, unit length.
    pub fn apply(&self, query: &[f32]) -> Vec<f32> {
        if query.len() != self.dimension {
            return query.to_vec();
        }
        let mut out = vec![0f32; self.dimension];
        for (&q, row) in query.iter().zip(self.matrix.chunks_exact(self.dimension)) {
            if q != 0.0 {
                for (o, &m) in out.iter_mut().zip(row) {
                    *o += q * m;
                }
            }
        }
        l2_normalize(&mut out);
        out
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Little-endian: dimension (u32), pairs (u32), then the matrix's f32s.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + 4 * self.matrix.len());
        bytes.extend((self.dimension as u32).to_le_bytes());
        bytes.extend((self.pairs as u32).to_le_bytes());
        bytes.extend(self.matrix.iter().flat_map(|x| x.to_le_bytes()));
        bytes
    }

    /// `None` when `bytes` is not what [`QueryAdapter::to_bytes`] writes.
    pub fn from_bytes(bytes: &[u8]) -> Option<QueryAdapter> {
        let word = |at: usize| -> Option<[u8; 4]> { bytes.get(at..at + 4)?.try_into().ok() };
        let dimension = u32::from_le_bytes(word(0)?) as usize;
        let pairs = u32::from_le_bytes(word(4)?) as usize;
        let body = bytes.get(8..)?;
        if dimension == 0 || body.len() != 4 * dimension * dimension {
            return None;
        }
        let matrix = body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Some(QueryAdapter {
            dimension,
            matrix,
            pairs,
        })
    }
}

/// The loss's gradient in `W` over one batch: `x` the batch's `b` queries, `p` their targets,
/// then (when `p` has `2b` rows) their siblings, each a negative for every row but its own.
fn batch_gradient(x: &[f32], p: &[f32], w: &[f32], d: usize, temperature: f32) -> Vec<f32> {
    let b = x.len() / d;
    let m = p.len() / d;
    // u = x (I + W), then û = u / |u|.
    let mut u = x.to_vec();
    matmul(
        MatMut::row_major(&mut u, b, d),
        MatRef::row_major(x, b, d),
        MatRef::row_major(w, d, d),
        1.0,
        true,
        1,
    );
    let norms: Vec<f32> = u
        .chunks_exact(d)
        .map(|row| row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12))
        .collect();
    let unit: Vec<f32> = u
        .chunks_exact(d)
        .zip(&norms)
        .flat_map(|(row, n)| row.iter().map(move |v| v / n))
        .collect();
    // Scores s = û pᵀ / τ, softmax by row; dL/ds = (softmax − identity) / b.
    let mut s = vec![0f32; b * m];
    matmul(
        MatMut::row_major(&mut s, b, m),
        MatRef::row_major(&unit, b, d),
        MatRef::row_major(p, m, d).t(),
        1.0 / temperature,
        false,
        1,
    );
    for (i, row) in s.chunks_exact_mut(m).enumerate() {
        if m > b {
            row[b + i] = f32::NEG_INFINITY;
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum * b as f32;
        }
        row[i] -= 1.0 / b as f32;
    }
    // dL/dû = ds p / τ; through the normalisation: dL/du = (dû − û (û·dû)) / |u|.
    let mut du = vec![0f32; b * d];
    matmul(
        MatMut::row_major(&mut du, b, d),
        MatRef::row_major(&s, b, m),
        MatRef::row_major(p, m, d),
        1.0 / temperature,
        false,
        1,
    );
    for ((g, unit), norm) in du.chunks_exact_mut(d).zip(unit.chunks_exact(d)).zip(&norms) {
        let along: f32 = g.iter().zip(unit).map(|(a, b)| a * b).sum();
        for (gi, ui) in g.iter_mut().zip(unit) {
            *gi = (*gi - ui * along) / norm;
        }
    }
    // dL/dW = xᵀ du.
    let mut gradient = vec![0f32; d * d];
    matmul(
        MatMut::row_major(&mut gradient, d, d),
        MatRef::row_major(x, b, d).t(),
        MatRef::row_major(&du, b, d),
        1.0,
        false,
        1,
    );
    gradient
}

struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
    learning_rate: f32,
}

impl Adam {
    fn new(len: usize, learning_rate: f32) -> Adam {
        Adam {
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
            learning_rate,
        }
    }

    fn step(&mut self, params: &mut [f32], gradient: &[f32]) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        for (((w, g), m), v) in params
            .iter_mut()
            .zip(gradient)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *w -= self.learning_rate * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

/// The pairs `queries`, `targets` and `siblings` hold, `None` when their shapes disagree.
fn pair_count(
    queries: &[f32],
    targets: &[f32],
    siblings: Option<&[f32]>,
    dimension: usize,
) -> Option<usize> {
    let agree = dimension > 0
        && targets.len() == queries.len()
        && siblings.is_none_or(|s| s.len() == queries.len());
    agree.then(|| queries.len() / dimension)
}

fn gather(rows: &[f32], picks: &[usize], d: usize) -> Vec<f32> {
    picks
        .iter()
        .flat_map(|&i| &rows[i * d..(i + 1) * d])
        .copied()
        .collect()
}

/// Fisher–Yates with a xorshift generator: reproducible without a dependency for it.
fn shuffle(order: &mut [usize], state: &mut u64) {
    for i in (1..order.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let j = (*state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queries that are their targets seen through a fixed distortion (plus noise): the fitted
    /// map must undo enough of it that each query's nearest target is its own more often.
    pub(super) fn distorted_pairs(n: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
        let mut state = 7u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f32 / 1000.0 - 1.0
        };
        let mut targets = Vec::new();
        let mut queries = Vec::new();
        for _ in 0..n {
            let mut t: Vec<f32> = (0..d).map(|_| next()).collect();
            l2_normalize(&mut t);
            // The distortion: the first half of the axes swapped with the second, a third
            // of the signal left in place, and noise.
            let mut q: Vec<f32> = (0..d)
                .map(|i| t[(i + d / 2) % d] + 0.3 * t[i] + 0.3 * next())
                .collect();
            l2_normalize(&mut q);
            targets.extend(t);
            queries.extend(q);
        }
        (queries, targets)
    }

    fn top1(queries: &[f32], targets: &[f32], d: usize, map: impl Fn(&[f32]) -> Vec<f32>) -> f64 {
        let n = queries.len() / d;
        let hits = (0..n)
            .filter(|&i| {
                let q = map(&queries[i * d..(i + 1) * d]);
                let best = (0..n)
                    .max_by(|&a, &b| {
                        let score = |j: usize| -> f32 {
                            q.iter()
                                .zip(&targets[j * d..(j + 1) * d])
                                .map(|(x, y)| x * y)
                                .sum()
                        };
                        score(a).total_cmp(&score(b))
                    })
                    .unwrap_or(usize::MAX);
                best == i
            })
            .count();
        hits as f64 / n as f64
    }

    /// The loss `batch_gradient` differentiates, computed directly.
    fn batch_loss(x: &[f32], p: &[f32], w: &[f32], d: usize, temperature: f32) -> f64 {
        let b = x.len() / d;
        let m = p.len() / d;
        let unit: Vec<Vec<f64>> = (0..b)
            .map(|i| {
                let u: Vec<f64> = (0..d)
                    .map(|c| {
                        f64::from(x[i * d + c])
                            + (0..d)
                                .map(|k| f64::from(x[i * d + k]) * f64::from(w[k * d + c]))
                                .sum::<f64>()
                    })
                    .collect();
                let n = u.iter().map(|v| v * v).sum::<f64>().sqrt();
                u.iter().map(|v| v / n).collect()
            })
            .collect();
        let mut loss = 0.0;
        for (i, u) in unit.iter().enumerate() {
            let scores: Vec<f64> = (0..m)
                .filter(|&j| j != b + i)
                .map(|j| {
                    u.iter()
                        .zip(&p[j * d..(j + 1) * d])
                        .map(|(a, b)| a * f64::from(*b))
                        .sum::<f64>()
                        / f64::from(temperature)
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = scores.iter().map(|s| (s - max).exp()).sum::<f64>().ln() + max;
            loss += log_sum - scores[i];
        }
        loss / b as f64
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let d = 6;
        let (x, p) = distorted_pairs(5, d);
        let (_, siblings) = distorted_pairs(10, d);
        let with_siblings = [p.clone(), siblings[5 * d..].to_vec()].concat();
        for p in [p, with_siblings] {
            check_gradient(&x, &p, d);
        }
    }

    fn check_gradient(x: &[f32], p: &[f32], d: usize) {
        let w: Vec<f32> = (0..d * d)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 50.0)
            .collect();
        let gradient = batch_gradient(x, p, &w, d, 0.5);
        for index in [0, 7, 20, 35] {
            let step = 1e-3;
            let mut plus = w.clone();
            plus[index] += step;
            let mut minus = w.clone();
            minus[index] -= step;
            let numeric = (batch_loss(x, p, &plus, d, 0.5) - batch_loss(x, p, &minus, d, 0.5))
                / (2.0 * f64::from(step));
            let analytic = f64::from(gradient[index]);
            assert!(
                (numeric - analytic).abs() < 1e-3 + 1e-2 * numeric.abs(),
                "W[{index}]: numeric {numeric}, analytic {analytic}"
            );
        }
    }

    #[test]
    fn a_fitted_adapter_brings_queries_to_their_targets() {
        let d = 16;
        let (queries, targets) = distorted_pairs(400, d);
        let options = FitOptions {
            epochs: 100,
            learning_rate: 1e-2,
            batch: 64,
            ..FitOptions::default()
        };
        let adapter = QueryAdapter::fit(&queries, &targets, d, &options).expect("enough pairs");
        let before = top1(&queries, &targets, d, |q| q.to_vec());
        let after = top1(&queries, &targets, d, |q| adapter.apply(q));
        assert!(after > before + 0.2, "top-1 {before:.3} -> {after:.3}");
        let applied = adapter.apply(&queries[..d]);
        let norm: f32 = applied.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    /// Each pair's sibling lies near the next pair's query, as a neighbour's chunk holding its
    /// own doc comment lies near a query about the definition beside it: fitted with the
    /// siblings as negatives, more queries end nearer their own target than any other pair's
    /// sibling than when fitted without them.
    #[test]
    fn siblings_as_negatives_keep_queries_off_the_other_definitions_text() {
        let d = 16;
        let n = 400;
        let (queries, targets) = distorted_pairs(n, d);
        let (_, noise) = distorted_pairs(n, d);
        let siblings: Vec<f32> = (0..n)
            .flat_map(|j| {
                let next = (j + 1) % n;
                let mut s: Vec<f32> = (0..d)
                    .map(|c| queries[next * d + c] + 0.5 * noise[j * d + c])
                    .collect();
                l2_normalize(&mut s);
                s
            })
            .collect();
        let options = FitOptions {
            epochs: 100,
            learning_rate: 1e-2,
            batch: 64,
            ..FitOptions::default()
        };
        let beats_siblings = |adapter: &QueryAdapter| -> f64 {
            let dot = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
            let wins = (0..n)
                .filter(|&i| {
                    let q = adapter.apply(&queries[i * d..(i + 1) * d]);
                    let own = dot(&q, &targets[i * d..(i + 1) * d]);
                    (0..n)
                        .filter(|&j| j != i)
                        .all(|j| dot(&q, &siblings[j * d..(j + 1) * d]) < own)
                })
                .count();
            wins as f64 / n as f64
        };
        let without = QueryAdapter::fit(&queries, &targets, d, &options).expect("fitted");
        let with =
            QueryAdapter::fit_with_siblings(&queries, &targets, Some(&siblings), d, &options)
                .expect("fitted");
        let (before, after) = (beats_siblings(&without), beats_siblings(&with));
        assert!(after > before + 0.05, "{before:.3} -> {after:.3}");
    }

    #[test]
    fn too_few_pairs_fit_nothing_and_bytes_round_trip() {
        let (queries, targets) = distorted_pairs(MIN_PAIRS - 1, 8);
        assert!(QueryAdapter::fit(&queries, &targets, 8, &FitOptions::default()).is_none());
        let (queries, targets) = distorted_pairs(MIN_PAIRS, 8);
        let options = FitOptions {
            epochs: 2,
            ..FitOptions::default()
        };
        let adapter = QueryAdapter::fit(&queries, &targets, 8, &options).expect("fitted");
        assert_eq!(adapter.pairs(), MIN_PAIRS);
        let bytes = adapter.to_bytes();
        assert_eq!(QueryAdapter::from_bytes(&bytes), Some(adapter));
        assert_eq!(QueryAdapter::from_bytes(&bytes[..bytes.len() - 1]), None);
        assert_eq!(QueryAdapter::from_bytes(&[]), None);
    }
}
