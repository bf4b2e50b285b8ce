use crate::kernels::{exp_rows, matmul, MatMut, MatRef};
use crate::{PackedBatch, Quantization};
use rayon::prelude::*;
use std::ops::Range;

/// Heads and head width of a multi-head attention whose Q, K and V sit side by side in one
/// `[tokens, (num_heads + 2 * num_kv_heads) * head_dim]` buffer. With fewer key/value heads than
/// query heads (grouped-query attention), each key/value head serves a run of query heads.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Width of the attention output: every query head.
    pub fn hidden(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of one token's fused Q, K, V row.
    pub fn qkv_width(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }
}

/// The number format of attention's two products: queries by keys, and weights by values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionProducts {
    /// f32 throughout.
    F32,
    /// Queries, keys, weights and values rounded to bf16, sums in f32, on AMX tiles
    /// ([`crate::kernels::attend_on_tiles`]); the softmax between stays f32. Where a layer's
    /// attention cannot run there (a mask, a position bias), it runs in f32.
    Bf16,
}

impl AttentionProducts {
    /// bf16 for a layer whose dense weights are narrowed (`format` bf16 or int8), on a CPU
    /// whose AMX tiles take heads `head_dim` wide; f32 otherwise, and for f32 weights, whose
    /// vectors stay f32's.
    ///
    /// `QUIVER_ATTENTION_PRODUCTS=f32` keeps f32, to measure what the tiles gain.
    pub fn for_weights(format: Quantization, head_dim: usize) -> AttentionProducts {
        static FORCED_F32: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let forced_f32 = *FORCED_F32
            .get_or_init(|| std::env::var("QUIVER_ATTENTION_PRODUCTS").is_ok_and(|v| v == "f32"));
        if format == Quantization::None || forced_f32 {
            return AttentionProducts::F32;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::attention_on_tiles(head_dim) {
            return AttentionProducts::Bf16;
        }
        let _ = head_dim;
        AttentionProducts::F32
    }
}

/// Which keys a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Every token of its sequence (encoders, bidirectional decoder embedders).
    All,
    /// Itself and the tokens before it (causal decoders).
    Earlier,
    /// Tokens at most this many positions away on either side (ModernBERT's local layers).
    Within(usize),
}

impl Visibility {
    /// Keys query `i` of a `len`-token sequence sees.
    fn row_keys(self, i: usize, len: usize) -> Range<usize> {
        match self {
            Visibility::All => 0..len,
            Visibility::Earlier => 0..i + 1,
            Visibility::Within(window) => i.saturating_sub(window)..(i + window + 1).min(len),
        }
    }

    /// Keys any query of `queries` sees: the span a block of queries is scored against.
    fn block_keys(self, queries: Range<usize>, len: usize) -> Range<usize> {
        let first = self.row_keys(queries.start, len);
        let last = self.row_keys(queries.end - 1, len);
        first.start..last.end
    }
}

/// Query rows scored at once: the score buffer is this many rows by the sequence length, so a
/// 32k-token sequence needs 32 MB of scores, not 4 GB.
const QUERY_BLOCK: usize = 256;

/// A learned bias added to the attention score of query `i` and key `j`, per head, that depends
/// only on `i - j` (MPNet's and T5's relative positions).
#[derive(Debug, Clone)]
pub struct RelativePositionBias {
    num_heads: usize,
    /// Longest sequence the table covers.
    span: usize,
    /// `[head][i - j + span - 1]`.
    table: Vec<f32>,
}

impl RelativePositionBias {
    /// `bias(head, offset)` for every offset `i - j` in `-(span - 1)..=span - 1`.
    pub fn new(num_heads: usize, span: usize, bias: impl Fn(usize, isize) -> f32) -> Self {
        let width = 2 * span.max(1) - 1;
        let mut table = Vec::with_capacity(num_heads * width);
        for head in 0..num_heads {
            for index in 0..width {
                table.push(bias(head, index as isize - (span as isize - 1)));
            }
        }
        RelativePositionBias {
            num_heads,
            span: span.max(1),
            table,
        }
    }

    /// `[head][i − j + span − 1]` and the span: what a device backend uploads.
    pub fn table(&self) -> (&[f32], usize) {
        (&self.table, self.span)
    }

    /// Adds the bias to one head's scores of queries from `first_query` on against `keys`
    /// (`scores` is row-major, `keys.len()` wide).
    fn add(&self, head: usize, first_query: usize, keys: Range<usize>, scores: &mut [f32]) {
        let width = 2 * self.span - 1;
        let row_of_head = &self.table[head * width..(head + 1) * width];
        for (r, row) in scores.chunks_exact_mut(keys.len()).enumerate() {
            let i = first_query + r;
            assert!(i < self.span && keys.end <= self.span && head < self.num_heads);
            // Offset i - j for j = keys.start sits at index i - keys.start + span - 1 and falls
            // by one per key.
            let first = i + self.span - 1 - keys.start;
            for (j, score) in row.iter_mut().enumerate() {
                *score += row_of_head[first - j];
            }
        }
    }
}

/// Self-attention of every sequence of a packed batch with itself, seeing all of it or only
/// what came before, with an optional relative-position bias on the scores.
///
/// Each sequence attends only within its own rows, so no padding or mask is ever built. Work is
/// split over sequences: their output rows are disjoint slices of `output`.
pub fn self_attention(
    qkv: &[f32],
    batch: &PackedBatch,
    shape: AttentionShape,
    visibility: Visibility,
    bias: Option<&RelativePositionBias>,
    products: AttentionProducts,
    output: &mut Vec<f32>,
) {
    let hidden = shape.hidden();
    output.resize(batch.num_tokens() * hidden, 0.0);
    let mut per_sequence = Vec::with_capacity(batch.num_sequences());
    let mut rest: &mut [f32] = output;
    for range in batch.ranges() {
        let (mine, tail) = rest.split_at_mut(range.len() * hidden);
        per_sequence.push((range, mine));
        rest = tail;
    }
    let row = shape.qkv_width();
    per_sequence.into_par_iter().for_each(|(range, out)| {
        let qkv_rows = &qkv[range.start * row..range.end * row];
        #[cfg(target_arch = "x86_64")]
        if products == AttentionProducts::Bf16 && visibility == Visibility::All && bias.is_none() {
            let layout = crate::kernels::HeadLayout {
                heads: shape.num_heads,
                heads_per_kv: shape.num_heads / shape.num_kv_heads.max(1),
                head_dim: shape.head_dim,
                row,
                keys: hidden,
                values: hidden + shape.num_kv_heads * shape.head_dim,
                scale: 1.0 / (shape.head_dim as f32).sqrt(),
            };
            crate::kernels::attend_on_tiles(qkv_rows, range.len(), layout, out);
            return;
        }
        attend_one_sequence(qkv_rows, range.len(), shape, visibility, bias, out);
    });
}

fn attend_one_sequence(
    qkv: &[f32],
    len: usize,
    shape: AttentionShape,
    visibility: Visibility,
    bias: Option<&RelativePositionBias>,
    out: &mut [f32],
) {
    let hidden = shape.hidden();
    let d = shape.head_dim;
    let row = shape.qkv_width();
    let heads_per_kv = shape.num_heads / shape.num_kv_heads.max(1);
    let key_start = hidden;
    let value_start = hidden + shape.num_kv_heads * d;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0.0f32; QUERY_BLOCK.min(len) * len];
    let mut sums = vec![0.0f32; QUERY_BLOCK.min(len)];
    for head in 0..shape.num_heads {
        let kv_head = head / heads_per_kv;
        for first in (0..len).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(len - first);
            // A block is scored only against the keys one of its queries sees.
            let keys = visibility.block_keys(first..first + rows, len);
            let width = keys.len();
            let scores = &mut scores[..rows * width];
            let key_rows = &qkv[keys.start * row..];
            let key = key_start + kv_head * d;
            let value = value_start + kv_head * d;
            matmul(
                MatMut::row_major(scores, rows, width),
                MatRef::strided(&qkv[first * row + head * d..], rows, d, row, 1),
                MatRef::strided(&key_rows[key..], width, d, row, 1).t(),
                scale,
                false,
                1,
            );
            if let Some(bias) = bias {
                bias.add(head, first, keys.clone(), scores);
            }
            let sums = &mut sums[..rows];
            if visibility == Visibility::All {
                exp_rows(scores, width, sums);
            } else {
                let rows = scores.chunks_exact_mut(width).zip(sums.iter_mut());
                for (r, (score_row, sum)) in rows.enumerate() {
                    let seen = visibility.row_keys(first + r, len);
                    let (before, rest) = score_row.split_at_mut(seen.start - keys.start);
                    let (seen_scores, after) = rest.split_at_mut(seen.len());
                    exp_rows(seen_scores, seen.len(), std::slice::from_mut(sum));
                    before.fill(0.0);
                    after.fill(0.0);
                }
            }
            let out = &mut out[first * hidden + head * d..];
            matmul(
                MatMut::strided(out, rows, d, hidden, 1),
                MatRef::row_major(scores, rows, width),
                MatRef::strided(&key_rows[value..], width, d, row, 1),
                1.0,
                false,
                1,
            );
            // The weights were left unnormalised (`exp_rows`): divide their weighted sums.
            for (r, sum) in sums.iter().enumerate() {
                let inverse = 1.0 / sum;
                out[r * hidden..r * hidden + d]
                    .iter_mut()
                    .for_each(|v| *v *= inverse);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention written out loop by loop, for one sequence.
    fn reference(
        qkv: &[f32],
        len: usize,
        shape: AttentionShape,
        visibility: Visibility,
        bias: &dyn Fn(usize, isize) -> f32,
    ) -> Vec<f32> {
        let (heads, d) = (shape.num_heads, shape.head_dim);
        let hidden = heads * d;
        let row = shape.qkv_width();
        let group = heads / shape.num_kv_heads;
        let mut out = vec![0.0; len * hidden];
        for h in 0..heads {
            let key = hidden + (h / group) * d;
            let value = hidden + shape.num_kv_heads * d + (h / group) * d;
            for i in 0..len {
                let q = |j: usize| qkv[i * row + h * d + j];
                let seen = match visibility {
                    Visibility::All => 0..len,
                    Visibility::Earlier => 0..i + 1,
                    Visibility::Within(w) => i.saturating_sub(w)..(i + w + 1).min(len),
                };
                let mut weights: Vec<f32> = seen
                    .clone()
                    .map(|t| {
                        (0..d).map(|j| q(j) * qkv[t * row + key + j]).sum::<f32>()
                            / (d as f32).sqrt()
                            + bias(h, i as isize - t as isize)
                    })
                    .collect();
                let max = weights.iter().copied().fold(f32::MIN, f32::max);
                weights.iter_mut().for_each(|w| *w = (*w - max).exp());
                let sum: f32 = weights.iter().sum();
                for j in 0..d {
                    out[i * hidden + h * d + j] = seen
                        .clone()
                        .zip(&weights)
                        .map(|(t, w)| w / sum * qkv[t * row + value + j])
                        .sum();
                }
            }
        }
        out
    }

    fn check(
        shape: AttentionShape,
        lens: &[usize],
        visibility: Visibility,
        bias: Option<&RelativePositionBias>,
        reference_bias: &dyn Fn(usize, isize) -> f32,
    ) {
        let hidden = shape.hidden();
        let row = shape.qkv_width();
        let total: usize = lens.iter().sum();
        let qkv: Vec<f32> = (0..total * row)
            .map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let sequences: Vec<Vec<u32>> = lens.iter().map(|&n| vec![0; n]).collect();
        let batch = PackedBatch::from_sequences(&sequences);
        let mut out = Vec::new();
        self_attention(
            &qkv,
            &batch,
            shape,
            visibility,
            bias,
            AttentionProducts::F32,
            &mut out,
        );
        for range in batch.ranges() {
            let expected = reference(
                &qkv[range.start * row..range.end * row],
                range.len(),
                shape,
                visibility,
                reference_bias,
            );
            let got = &out[range.start * hidden..range.end * hidden];
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() < 1e-4, "{g} vs {e}");
            }
        }
    }

    const MHA: AttentionShape = AttentionShape {
        num_heads: 3,
        num_kv_heads: 3,
        head_dim: 4,
    };

    #[test]
    fn packed_attention_equals_per_sequence_reference() {
        check(MHA, &[5, 1, 3], Visibility::All, None, &|_, _| 0.0);
    }

    #[test]
    fn relative_bias_is_added_by_head_and_offset() {
        let bias = |head: usize, offset: isize| head as f32 * 0.3 - offset as f32 * 0.25;
        let table = RelativePositionBias::new(3, 8, bias);
        check(MHA, &[5, 1, 3], Visibility::All, Some(&table), &bias);
    }

    #[test]
    fn causal_grouped_query_attention_over_several_query_blocks() {
        let gqa = AttentionShape {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 4,
        };
        // 600 tokens span three query blocks; the short one fits in one.
        for visibility in [Visibility::Earlier, Visibility::All] {
            check(gqa, &[600, 7], visibility, None, &|_, _| 0.0);
        }
    }

    #[test]
    fn a_local_window_sees_only_its_neighbours() {
        // Windows smaller and larger than a block, and larger than a sequence.
        for window in [0, 3, 300, 1000] {
            check(
                MHA,
                &[600, 5, 1],
                Visibility::Within(window),
                None,
                &|_, _| 0.0,
            );
        }
    }
}
