//! Whether an adapter helps a repository, judged on pairs its fit did not see: the index keeps
//! one only where it does. Where a repository's comments do not say what their code does in a
//! way that carries from one definition to the next, or the model already matches them to
//! their code, a map fitted to the pairs moves queries without bringing them nearer their code.
//! It is a check on the pairs, not on the queries users will type: EmbeddingGemma-300m's
//! held-out comments gain from its adapter as much as all-MiniLM-L6-v2's, while the
//! benchmark's queries gain far less (docs/evaluation.md).

use super::{FitOptions, QueryAdapter};
use quiver_runtime::kernels::{matmul, MatMut, MatRef};

/// One pair in this many is held out of the trial fit.
const HELD_OUT_EVERY: usize = 5;

/// Held-out queries scored at a time: bounds the score block at `ROWS × 2n` floats.
const ROWS: usize = 256;

/// How the pairs held out of a trial fit find their definitions, without and with the adapter
/// fitted on the others: the mean reciprocal rank of each one's definition (its signature
/// vector) among every pair's signature and text vectors, its own text vector left out (it
/// holds the comment the query was taken from), as [`QueryAdapter::fit_with_siblings`] trains.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HeldOut {
    pub pairs: usize,
    pub without: f64,
    pub with: f64,
}

impl HeldOut {
    /// The adapter ranked the held-out definitions higher than the model alone did.
    pub fn helps(&self) -> bool {
        self.with > self.without
    }
}

/// Fits on four pairs in five and scores the fifth ([`HeldOut`]). `None` when the pairs are too
/// few to hold any out or the shapes disagree (as [`QueryAdapter::fit_with_siblings`] takes
/// them).
pub fn held_out(
    queries: &[f32],
    targets: &[f32],
    siblings: Option<&[f32]>,
    dimension: usize,
    options: &FitOptions,
) -> Option<HeldOut> {
    let d = dimension;
    let n = super::pair_count(queries, targets, siblings, d)?;
    if n < HELD_OUT_EVERY {
        return None;
    }
    let is_held = |i: usize| i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1;
    let (held, kept): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| is_held(i));
    let pick = |rows: &[f32], picks: &[usize]| super::gather(rows, picks, d);
    let trial = QueryAdapter::train(
        &pick(queries, &kept),
        &pick(targets, &kept),
        siblings.map(|s| pick(s, &kept)).as_deref(),
        d,
        options,
    );
    let mut candidates = targets.to_vec();
    if let Some(siblings) = siblings {
        candidates.extend_from_slice(siblings);
    }
    let held_queries = pick(queries, &held);
    let adapted: Vec<f32> = held_queries
        .chunks_exact(d)
        .flat_map(|q| trial.apply(q))
        .collect();
    Some(HeldOut {
        pairs: held.len(),
        without: mean_reciprocal_rank(&held_queries, &held, &candidates, n, d),
        with: mean_reciprocal_rank(&adapted, &held, &candidates, n, d),
    })
}

/// `queries[r]` is pair `pairs[r]`'s; `candidates` holds the `n` targets, then (when it has
/// `2n` rows) the `n` siblings. A candidate that ties the target does not outrank it.
fn mean_reciprocal_rank(
    queries: &[f32],
    pairs: &[usize],
    candidates: &[f32],
    n: usize,
    d: usize,
) -> f64 {
    let m = candidates.len() / d;
    let mut total = 0.0;
    for (block, block_pairs) in queries.chunks(ROWS * d).zip(pairs.chunks(ROWS)) {
        let rows = block_pairs.len();
        let mut scores = vec![0f32; rows * m];
        matmul(
            MatMut::row_major(&mut scores, rows, m),
            MatRef::row_major(block, rows, d),
            MatRef::row_major(candidates, m, d).t(),
            1.0,
            false,
            1,
        );
        for (row, &pair) in scores.chunks_exact(m).zip(block_pairs) {
            let own = row[pair];
            let above = row
                .iter()
                .enumerate()
                .filter(|&(j, &s)| j != pair && j != n + pair && s > own)
                .count();
            total += 1.0 / (1 + above) as f64;
        }
    }
    total / pairs.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(rows: &mut [f32], d: usize) {
        for row in rows.chunks_exact_mut(d) {
            quiver_embed::l2_normalize(row);
        }
    }

    /// Pseudo-random values in [-1, 1), reproducible.
    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn a_map_the_pairs_share_helps_and_pairs_with_nothing_in_common_do_not() {
        let d = 16;
        let (distorted, targets) = crate::adapter::tests::distorted_pairs(400, d);
        let options = FitOptions {
            epochs: 100,
            learning_rate: 1e-2,
            batch: 64,
            ..FitOptions::default()
        };
        let shared = held_out(&distorted, &targets, None, d, &options).expect("enough pairs");
        assert_eq!(shared.pairs, 400 / HELD_OUT_EVERY);
        assert!(
            shared.helps() && shared.with > shared.without + 0.2,
            "{shared:?}"
        );

        // Queries unrelated to their targets: what the trial fit learns from the pairs it saw
        // says nothing about the others (were they in its fit, it would rank them higher).
        let mut unrelated = noise(400 * d, 13);
        unit_rows(&mut unrelated, d);
        let none = held_out(&unrelated, &targets, None, d, &options).expect("enough pairs");
        assert!(none.with < none.without + 0.05, "{none:?}");
    }

    #[test]
    fn the_own_sibling_is_not_a_rival_and_a_tie_does_not_outrank() {
        let d = 2;
        // Pair 0's target is [1, 0]; its sibling (the text holding the comment) equals its
        // query exactly and must not count; pair 1's vectors are elsewhere.
        let targets = [1.0, 0.0, 0.0, 1.0];
        let siblings = [0.6, 0.8, 0.0, 1.0];
        let candidates: Vec<f32> = targets.iter().chain(&siblings).copied().collect();
        let query = [0.6, 0.8];
        // Scores: own target 0.6, pair 1's target 0.8 (above), pair 1's sibling 0.8 (above).
        assert_eq!(
            mean_reciprocal_rank(&query, &[0], &candidates, 2, d),
            1.0 / 3.0
        );
        let on_target = [1.0, 0.0];
        assert_eq!(
            mean_reciprocal_rank(&on_target, &[0], &candidates, 2, d),
            1.0
        );
        // Too few pairs to hold one out.
        assert!(held_out(&[1.0, 0.0], &[1.0, 0.0], None, 2, &FitOptions::default()).is_none());
    }
}
