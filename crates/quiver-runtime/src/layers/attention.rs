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

/// Full (unmasked) self-attention of every sequence of a packed batch with itself.
///
/// Each sequence attends only within its own rows, so no padding or mask is ever built. Work is
/// split over sequences: their output rows are disjoint slices of `output`.
pub fn bidirectional_attention(
    qkv: &[f32],
    batch: &PackedBatch,
    shape: AttentionShape,
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
        attend_one_sequence(qkv_rows, range.len(), shape, out);
    });
}

fn attend_one_sequence(qkv: &[f32], len: usize, shape: AttentionShape, out: &mut [f32]) {
    let hidden = shape.hidden();
    let d = shape.head_dim;
    let row = 3 * hidden;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0.0f32; len * len];
    for head in 0..shape.num_heads {
        let q = MatRef::strided(&qkv[head * d..], len, d, row, 1);
        let k_t = MatRef::strided(&qkv[hidden + head * d..], len, d, row, 1).t();
        let v = MatRef::strided(&qkv[2 * hidden + head * d..], len, d, row, 1);
        matmul(
            MatMut::row_major(&mut scores, len, len),
            q,
            k_t,
            1.0,
            false,
            1,
        );
        softmax_rows(&mut scores, len, scale);
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
    fn reference(qkv: &[f32], len: usize, heads: usize, d: usize) -> Vec<f32> {
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

    #[test]
    fn packed_attention_equals_per_sequence_reference() {
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
        bidirectional_attention(
            &qkv,
            &batch,
            AttentionShape {
                num_heads: heads,
                head_dim: d,
            },
            &mut out,
        );
        for range in batch.ranges() {
            let expected = reference(
                &qkv[range.start * 3 * hidden..range.end * 3 * hidden],
                range.len(),
                heads,
                d,
            );
            let got = &out[range.start * hidden..range.end * hidden];
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() < 1e-5, "{g} vs {e}");
            }
        }
    }
}
