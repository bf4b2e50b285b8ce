//! Self-attention's two products, queries by keys and weights by values, on AMX tiles: the
//! queries, keys, exponentiated scores and values rounded to bf16, every sum in f32, and the
//! softmax between them in f32.
//!
//! Why its own kernel: with f32 `gemm` calls, attention was the largest part of an
//! all-MiniLM-L6-v2 int8 run once its dense layers ran on tiles (36 % of samples: the products
//! 21 %, packing a head's operands 6 %; perf record, 500 code chunks). An earlier try through
//! the dense layers' bf16 product, which packs a whole matrix and splits it into parallel tasks
//! on every call, measured no faster. Here one sequence's heads are packed into one thread's
//! scratch and multiplied 32 queries by 32 keys at a time.

use super::amx::{self, Products, TILE_BYTES};
use super::bf16::round_into;
use super::softmax::exp_rows;

/// Where a sequence's heads sit in its fused Q, K, V rows.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    pub heads: usize,
    /// Query heads per key/value head (grouped-query attention; 1 for plain multi-head).
    pub heads_per_kv: usize,
    pub head_dim: usize,
    /// Values in one token's fused row.
    pub row: usize,
    /// Where the first key head and the first value head start in a row; query heads start
    /// at 0.
    pub keys: usize,
    pub values: usize,
    /// What every score is multiplied by (`head_dim^-½`).
    pub scale: f32,
}

/// Queries, keys and values a tile product takes at once: 32 bf16 of a row.
const PAIRS_PER_TILE_ROW: usize = TILE_BYTES / 4;
/// Rows of queries, and keys, one tile product covers: two tiles of 16.
const BLOCK: usize = 32;
/// The widest head the stack buffers hold.
const MAX_HEAD_DIM: usize = 512;

/// Whether [`attend_on_tiles`] runs on this CPU for heads `head_dim` wide: AMX with bf16
/// products, AVX-512 BF16 to round, and heads a whole number of tile rows wide.
pub fn attention_on_tiles(head_dim: usize) -> bool {
    head_dim.is_multiple_of(2 * PAIRS_PER_TILE_ROW)
        && head_dim <= MAX_HEAD_DIM
        && is_x86_feature_detected!("avx512bf16")
        && amx::usable(Products::Bf16)
}

/// One sequence's attention, every query seeing every key: `out` (`len` rows of
/// `heads × head_dim`) ← softmax(scale · Q Kᵀ) V for each head of `qkv` (`len` rows of `row`).
///
/// # Panics
/// When [`attention_on_tiles`] is false for `layout.head_dim`, or the buffers are shorter than
/// `len` rows.
pub fn attend_on_tiles(qkv: &[f32], len: usize, layout: HeadLayout, out: &mut [f32]) {
    assert!(attention_on_tiles(layout.head_dim), "no AMX bf16 here");
    let d = layout.head_dim;
    assert!(qkv.len() >= len * layout.row && out.len() >= len * layout.heads * d);
    let padded = len.div_ceil(BLOCK) * BLOCK;
    // Bytes of each part of the scratch; all are whole cache lines, so each starts on one.
    let bf16_head = padded * d * 2;
    let scores = BLOCK * padded * 4;
    let weights = BLOCK * padded * 2;
    let weighted = BLOCK * BLOCK * 4;
    amx::with_scratch(3 * bf16_head + scores + weights + weighted, |scratch| {
        let (queries, rest) = scratch.split_at_mut(bf16_head);
        let (keys, rest) = rest.split_at_mut(bf16_head);
        let (values, rest) = rest.split_at_mut(bf16_head);
        let (scores, rest) = rest.split_at_mut(scores);
        let (weights, weighted) = rest.split_at_mut(weights);
        let mut buffers = Buffers {
            queries: bytemuck::cast_slice_mut(queries),
            keys: bytemuck::cast_slice_mut(keys),
            values: bytemuck::cast_slice_mut(values),
            scores: bytemuck::cast_slice_mut(scores),
            weights: bytemuck::cast_slice_mut(weights),
            weighted: bytemuck::cast_slice_mut(weighted),
        };
        let sequence = Sequence {
            qkv,
            len,
            padded,
            layout,
        };
        let per_kv = layout.heads_per_kv.max(1);
        // SAFETY: `attention_on_tiles` checked AMX bf16; every buffer holds the rows `head`
        // reads and writes (sizes above), 64-byte aligned.
        unsafe {
            amx::with_full_tiles(|| {
                // A key/value head is packed once for all the query heads that share it.
                for kv in 0..layout.heads / per_kv {
                    sequence.pack_keys_and_values(kv, &mut buffers);
                    for head in kv * per_kv..(kv + 1) * per_kv {
                        sequence.pack_queries(head, &mut buffers);
                        sequence.head(head, &mut buffers, out);
                    }
                }
            })
        }
    });
}

/// One sequence's fused rows and how they are laid out.
struct Sequence<'a> {
    qkv: &'a [f32],
    len: usize,
    /// `len` rounded up to a whole [`BLOCK`].
    padded: usize,
    layout: HeadLayout,
}

/// Scratch for one head at a time.
struct Buffers<'a> {
    /// `padded` rows of `head_dim` bf16: scaled queries, zero rows past `len`.
    queries: &'a mut [u16],
    /// Blocks of 16 keys, each `[head_dim / 2][16][2]`: keys as a tile product's right side.
    keys: &'a mut [u16],
    /// Blocks of 16 of a head's `head_dim` columns, each `[padded / 2][16][2]`.
    values: &'a mut [u16],
    /// [`BLOCK`] rows of `padded` scores, then their exponentials.
    scores: &'a mut [f32],
    /// The exponentials in bf16, zero past `len`.
    weights: &'a mut [u16],
    /// [`BLOCK`] × [`BLOCK`] sums of weighted values.
    weighted: &'a mut [f32],
}

impl Sequence<'_> {
    fn row(&self, token: usize, start: usize) -> &[f32] {
        &self.qkv[token * self.layout.row + start..][..self.layout.head_dim]
    }

    /// Head `head`'s attention, its queries and its key/value head packed in `buffers`.
    ///
    /// # Safety
    /// Inside [`amx::with_full_tiles`] with AMX bf16 usable; buffers as [`attend_on_tiles`]
    /// sizes them.
    unsafe fn head(&self, head: usize, buffers: &mut Buffers<'_>, out: &mut [f32]) {
        let (d, len, padded) = (self.layout.head_dim, self.len, self.padded);
        let hidden = self.layout.heads * d;
        // Bytes of one block of 16 keys, and of one block of 16 value columns.
        let key_block = d * amx::TILE_ROWS * 2;
        let value_block = padded * amx::TILE_ROWS * 2;
        let mut sums = [0.0f32; BLOCK];
        for first in (0..len).step_by(BLOCK) {
            let rows = BLOCK.min(len - first);
            let queries = buffers.queries[first * d..].as_ptr() as *const u8;
            let keys = buffers.keys.as_ptr() as *const u8;
            for pair in 0..padded / BLOCK {
                let left = keys.add(2 * pair * key_block);
                amx::sum_32_rows::<amx::Bf16>(
                    queries,
                    d * 2,
                    left,
                    Some(left.add(key_block)),
                    d * 2 / TILE_BYTES,
                );
                let to = buffers.scores[pair * BLOCK..].as_mut_ptr() as *mut u8;
                amx::store_32_rows_strided(to, BLOCK, padded);
            }
            let scores = buffers.scores.chunks_exact_mut(padded);
            let weights = buffers.weights.chunks_exact_mut(padded);
            for ((scores, weights), sum) in scores.zip(weights).zip(&mut sums).take(rows) {
                exp_rows(&mut scores[..len], len, std::slice::from_mut(sum));
                round_into(&mut weights[..len], &scores[..len]);
                weights[len..].fill(0);
            }
            let weights = buffers.weights.as_ptr() as *const u8;
            let values = buffers.values.as_ptr() as *const u8;
            for pair in 0..d / BLOCK {
                let left = values.add(2 * pair * value_block);
                amx::sum_32_rows::<amx::Bf16>(
                    weights,
                    padded * 2,
                    left,
                    Some(left.add(value_block)),
                    padded * 2 / TILE_BYTES,
                );
                amx::store_32_rows(buffers.weighted.as_mut_ptr() as *mut u8, BLOCK);
                let weighted = buffers.weighted.chunks_exact(BLOCK);
                for (r, (weighted, sum)) in weighted.zip(&sums).take(rows).enumerate() {
                    let to = &mut out[(first + r) * hidden + head * d + pair * BLOCK..][..BLOCK];
                    let inverse = 1.0 / sum;
                    for (o, &w) in to.iter_mut().zip(weighted) {
                        *o = w * inverse;
                    }
                }
            }
        }
    }

    /// Rounds head `head`'s queries, scaled, into the rows the first tile product reads, zero
    /// rows past the sequence's end.
    fn pack_queries(&self, head: usize, buffers: &mut Buffers<'_>) {
        let (d, len) = (self.layout.head_dim, self.len);
        let mut scaled = [0.0f32; MAX_HEAD_DIM];
        let queries = buffers.queries.chunks_exact_mut(d);
        for (token, query) in queries.enumerate() {
            if token >= len {
                query.fill(0);
                continue;
            }
            let row = self.row(token, head * d);
            for (s, &q) in scaled.iter_mut().zip(row) {
                *s = q * self.layout.scale;
            }
            round_into(query, &scaled[..d]);
        }
    }

    /// Rounds key/value head `kv`'s keys and values into the layouts the tile products read,
    /// zeros past the sequence's end.
    fn pack_keys_and_values(&self, kv: usize, buffers: &mut Buffers<'_>) {
        let (d, len, padded) = (self.layout.head_dim, self.len, self.padded);
        let mut rounded = [0u16; MAX_HEAD_DIM];
        let rows = amx::TILE_ROWS;
        let (key_start, value_start) = (self.layout.keys + kv * d, self.layout.values + kv * d);
        // Keys: key `j`'s pair `p` of values sits at `[j / 16][p][j % 16]`.
        let keys: &mut [u32] = bytemuck::cast_slice_mut(buffers.keys);
        let values = &mut *buffers.values;
        for token in 0..padded {
            let rounded = &mut rounded[..d];
            if token < len {
                round_into(rounded, self.row(token, key_start));
            } else {
                rounded.fill(0);
            }
            let pairs: &[u32] = bytemuck::cast_slice(rounded);
            let block = &mut keys[(token / rows) * (d / 2) * rows + token % rows..];
            for (p, &pair) in pairs.iter().enumerate() {
                block[p * rows] = pair;
            }
            // Values: column `c` of key `j` sits at `[c / 16][j / 2][c % 16][j % 2]`.
            if token < len {
                round_into(rounded, self.row(token, value_start));
            }
            let at = (token / 2) * rows * 2 + token % 2;
            for (c, &value) in rounded.iter().enumerate() {
                values[(c / rows) * padded * rows + at + (c % rows) * 2] = value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    /// softmax(scale · q kᵀ) v per head, in f64.
    fn reference(qkv: &[f32], len: usize, layout: HeadLayout) -> Vec<f32> {
        let d = layout.head_dim;
        let mut out = vec![0.0f32; len * layout.heads * d];
        for head in 0..layout.heads {
            let kv = head / layout.heads_per_kv;
            for i in 0..len {
                let q = &qkv[i * layout.row + head * d..][..d];
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        let k = &qkv[j * layout.row + layout.keys + kv * d..][..d];
                        let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                        dot * layout.scale as f64
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for c in 0..d {
                    let sum: f64 = (0..len)
                        .map(|j| {
                            weights[j] * qkv[j * layout.row + layout.values + kv * d + c] as f64
                        })
                        .sum();
                    out[i * layout.heads * d + head * d + c] = (sum / total) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn tiles_attend_as_the_f64_softmax_does_within_bf16_rounding() {
        if !attention_on_tiles(32) {
            eprintln!("no AMX bf16 on this CPU: the tiles' attention is not run here");
            return;
        }
        // Ragged lengths (one, within a block, past one), grouped-query heads, two widths.
        for (len, heads, kv_heads, d) in [
            (1, 2, 2, 32),
            (17, 2, 1, 32),
            (70, 4, 2, 64),
            (33, 1, 1, 128),
        ] {
            let row = (heads + 2 * kv_heads) * d;
            let qkv: Vec<f32> = sample(len * row, 7 + len as u32)
                .iter()
                .map(|v| 2.0 * v)
                .collect();
            let layout = HeadLayout {
                heads,
                heads_per_kv: heads / kv_heads,
                head_dim: d,
                row,
                keys: heads * d,
                values: (heads + kv_heads) * d,
                scale: 1.0 / (d as f32).sqrt(),
            };
            let mut out = vec![f32::NAN; len * heads * d];
            attend_on_tiles(&qkv, len, layout, &mut out);
            let expected = reference(&qkv, len, layout);
            let worst = out
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            // Values in [-2, 2]; bf16 keeps 8 bits, and the scores' errors reach the weights.
            assert!(worst < 0.03, "len {len}, d {d}: worst error {worst}");
        }
    }
}
