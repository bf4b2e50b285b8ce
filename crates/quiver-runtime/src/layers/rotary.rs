use super::AttentionShape;
use crate::PackedBatch;
use rayon::prelude::*;

/// Rotary position embeddings (RoPE) in the "rotate half" layout of Hugging Face's Llama and
/// Qwen2: dimension `i` of a head pairs with `i + head_dim / 2`, at angle `position ·
/// θ^(-2i / head_dim)`. Angles are computed in f32, as the reference does, so long positions
/// round the same way.
#[derive(Debug, Clone)]
pub struct Rotary {
    inverse_frequencies: Vec<f32>,
}

impl Rotary {
    pub fn new(head_dim: usize, theta: f32) -> Self {
        let inverse_frequencies = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Rotary {
            inverse_frequencies,
        }
    }

    /// `θ^(-2i / head_dim)` for each pair `i`: what a device backend uploads.
    pub fn inverse_frequencies(&self) -> &[f32] {
        &self.inverse_frequencies
    }

    /// Rotates the query and key heads of a fused `[tokens, (heads + 2 kv_heads) · head_dim]`
    /// buffer in place; each sequence's positions start at 0.
    pub fn apply(&self, qkv: &mut [f32], batch: &PackedBatch, shape: AttentionShape) {
        let row = shape.qkv_width();
        let rotated_heads = shape.num_heads + shape.num_kv_heads;
        let half = shape.head_dim / 2;
        let positions: Vec<usize> = batch.ranges().flat_map(|range| 0..range.len()).collect();
        qkv.par_chunks_mut(row)
            .zip(positions)
            .for_each(|(token, position)| {
                let angles: Vec<(f32, f32)> = self
                    .inverse_frequencies
                    .iter()
                    .map(|&frequency| (position as f32 * frequency).sin_cos())
                    .collect();
                for head in token[..rotated_heads * shape.head_dim].chunks_exact_mut(shape.head_dim)
                {
                    let (first, second) = head.split_at_mut(half);
                    for ((x1, x2), &(sin, cos)) in first.iter_mut().zip(second).zip(&angles) {
                        let (a, b) = (*x1, *x2);
                        *x1 = a * cos - b * sin;
                        *x2 = b * cos + a * sin;
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_rotation_keeps_pair_norms() {
        let shape = AttentionShape {
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 4,
        };
        let rotary = Rotary::new(4, 10000.0);
        let original: Vec<f32> = (0..24).map(|i| i as f32 * 0.1 - 1.0).collect();
        let mut qkv = original.clone();
        let batch = PackedBatch::from_sequences(&[vec![0u32, 0]]);
        rotary.apply(&mut qkv, &batch, shape);
        assert_eq!(qkv[..12], original[..12], "token 0 is at position 0");
        // Token 1, query head: pair (0, 2) turned by 1 radian (frequency 1 for i = 0).
        let (a, b) = (original[12], original[14]);
        let (sin, cos) = 1.0f32.sin_cos();
        assert!((qkv[12] - (a * cos - b * sin)).abs() < 1e-6);
        assert!((qkv[14] - (b * cos + a * sin)).abs() < 1e-6);
        // Values are left alone.
        assert_eq!(qkv[20..], original[20..]);
    }
}
