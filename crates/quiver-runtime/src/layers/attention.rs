use crate::kernels::{matmul, softmax_rows, MatMut, MatRef};
use crate::PackedBatch;
use rayon::prelude::*;

/// Heads and head width of a multi-head attention whose Q, K and V sit side by side in one
/// `[tokens, 3 * heads * head_dim]` buffer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    pub fn hidden(&self) -> usize {
        self.num_heads * self.head_dim
    }
}

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

    pub fn span(&self) -> usize {
        self.span
    }

    /// Adds the bias to one head's `len × len` scores.
    fn add(&self, head: usize, len: usize, scores: &mut [f32]) {
        assert!(len <= self.span && head < self.num_heads);
        let width = 2 * self.span - 1;
        let row_of_head = &self.table[head * width..(head + 1) * width];
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            // Offset i - j for j = 0 sits at index i + span - 1 and falls by one per key.
            let first = i + self.span - 1;
            for (j, score) in row.iter_mut().enumerate() {
                *score += row_of_head[first - j];
            }
        }
    }
}

/// Full (unmasked) self-attention of every sequence of a packed batch with itself, with an
/// optional relative-position bias on the scores.
///
/// Each sequence attends only within its own rows, so no padding or mask is ever built. Work is
/// split over sequences: their output rows are disjoint slices of `output`.
pub fn bidirectional_attention(
    qkv: &[f32],
    batch: &PackedBatch,
    shape: AttentionShape,
    bias: Option<&RelativePositionBias>,
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
    per_sequence.into_par_iter().for_each(|(range, out)| {
        let qkv_rows = &qkv[range.start * 3 * hidden..range.end * 3 * hidden];
        attend_one_sequence(qkv_rows, range.len(), shape, bias, out);
    });
}

fn attend_one_sequence(
    qkv: &[f32],
    len: usize,
    shape: AttentionShape,
    bias: Option<&RelativePositionBias>,
    out: &mut [f32],
) {
    let hidden = shape.hidden();
    let d = shape.head_dim;
    let row = 3 * hidden;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0.0f32; len * len];
    for head in 0..shape.num_heads {
        let q = MatRef::strided(&qkv[head * d..], len, d, row, 1);
        let k_t = MatRef::strided(&qkv[hidden + head * d..], len, d, row, 1).t();
        let v = MatRef::strided(&qkv[2 * hidden + head * d..], len, d, row, 1);
        match bias {
            None => {
                matmul(
                    MatMut::row_major(&mut scores, len, len),
                    q,
                    k_t,
                    1.0,
                    false,
                    1,
                );
                softmax_rows(&mut scores, len, scale);
            }
            Some(bias) => {
                // The bias is added to scaled scores, so scale inside the product.
                matmul(
                    MatMut::row_major(&mut scores, len, len),
                    q,
                    k_t,
                    scale,
                    false,
                    1,
                );
                bias.add(head, len, &mut scores);
                softmax_rows(&mut scores, len, 1.0);
            }
        }
        matmul(
            MatMut::strided(&mut out[head * d..], len, d, hidden, 1),
            MatRef::row_major(&scores, len, len),
            v,
            1.0,
            false,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention written out loop by loop, for one sequence.
    fn reference(
        qkv: &[f32],
        len: usize,
        heads: usize,
        d: usize,
        bias: &dyn Fn(usize, isize) -> f32,
    ) -> Vec<f32> {
        let hidden = heads * d;
        let mut out = vec![0.0; len * hidden];
        for h in 0..heads {
            for i in 0..len {
                let q = |j: usize| qkv[i * 3 * hidden + h * d + j];
                let mut weights: Vec<f32> = (0..len)
                    .map(|t| {
                        (0..d)
                            .map(|j| q(j) * qkv[t * 3 * hidden + hidden + h * d + j])
                            .sum::<f32>()
                            / (d as f32).sqrt()
                            + bias(h, i as isize - t as isize)
                    })
                    .collect();
                let max = weights.iter().copied().fold(f32::MIN, f32::max);
                weights.iter_mut().for_each(|w| *w = (*w - max).exp());
                let sum: f32 = weights.iter().sum();
                for j in 0..d {
                    out[i * hidden + h * d + j] = (0..len)
                        .map(|t| weights[t] / sum * qkv[t * 3 * hidden + 2 * hidden + h * d + j])
                        .sum();
                }
            }
        }
        out
    }

    fn check(bias: Option<&RelativePositionBias>, reference_bias: &dyn Fn(usize, isize) -> f32) {
        let (heads, d) = (3, 4);
        let hidden = heads * d;
        let lens = [5usize, 1, 3];
        let total: usize = lens.iter().sum();
        let qkv: Vec<f32> = (0..total * 3 * hidden)
            .map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let sequences: Vec<Vec<u32>> = lens.iter().map(|&n| vec![0; n]).collect();
        let batch = PackedBatch::from_sequences(&sequences);
        let mut out = Vec::new();
        let shape = AttentionShape {
            num_heads: heads,
            head_dim: d,
        };
        bidirectional_attention(&qkv, &batch, shape, bias, &mut out);
        for range in batch.ranges() {
            let expected = reference(
                &qkv[range.start * 3 * hidden..range.end * 3 * hidden],
                range.len(),
                heads,
                d,
                reference_bias,
            );
            let got = &out[range.start * hidden..range.end * hidden];
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() < 1e-5, "{g} vs {e}");
            }
        }
    }

    #[test]
    fn packed_attention_equals_per_sequence_reference() {
        check(None, &|_, _| 0.0);
    }

    #[test]
    fn relative_bias_is_added_by_head_and_offset() {
        let bias = |head: usize, offset: isize| head as f32 * 0.3 - offset as f32 * 0.25;
        let table = RelativePositionBias::new(3, 8, bias);
        check(Some(&table), &bias);
    }
}
