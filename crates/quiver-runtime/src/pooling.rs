//! Pooling token states into one vector per sequence, as sentence-transformers' `Pooling` does.

use crate::PackedBatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's state (`[CLS]`).
    Cls,
    /// The mean over tokens.
    Mean,
    /// The element-wise maximum over tokens.
    Max,
    /// The sum over tokens divided by √(token count).
    MeanSqrtLen,
    /// The last token's state (decoder embedders).
    LastToken,
    /// SPLADE: the element-wise maximum over tokens of `log(1 + relu(x))`, for outputs that are
    /// vocabulary logits (a masked-language-model head): a sparse vector, one weight per
    /// vocabulary entry.
    Splade,
}

impl Pooling {
    /// The config name sentence-transformers uses (`pooling_mode_<name>_tokens`).
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
            Pooling::LastToken => "lasttoken",
            Pooling::Splade => "splade",
        }
    }

    /// One vector per sequence. `skip[i]` leading tokens of sequence `i` (an instruction prompt
    /// when the model pools without it) are left out of mean, max and mean-sqrt pooling.
    pub fn pool(
        self,
        hidden: &[f32],
        hidden_size: usize,
        batch: &PackedBatch,
        skip: &[usize],
    ) -> Vec<Vec<f32>> {
        batch
            .ranges()
            .enumerate()
            .map(|(index, range)| {
                let row = |token: usize| &hidden[token * hidden_size..(token + 1) * hidden_size];
                let skipped = skip.get(index).copied().unwrap_or(0);
                // Never skip the whole sequence: an all-prompt input still pools something.
                let start = (range.start + skipped).min(range.end - 1);
                let kept = start..range.end;
                match self {
                    Pooling::Cls => row(range.start).to_vec(),
                    Pooling::LastToken => row(range.end - 1).to_vec(),
                    Pooling::Mean | Pooling::MeanSqrtLen => {
                        let mut sum = vec![0.0f32; hidden_size];
                        for token in kept.clone() {
                            sum.iter_mut().zip(row(token)).for_each(|(s, v)| *s += v);
                        }
                        let count = kept.len() as f32;
                        let divisor = if self == Pooling::Mean {
                            count
                        } else {
                            count.sqrt()
                        };
                        sum.iter_mut().for_each(|s| *s /= divisor);
                        sum
                    }
                    Pooling::Max => {
                        let mut max = vec![f32::NEG_INFINITY; hidden_size];
                        for token in kept {
                            max.iter_mut()
                                .zip(row(token))
                                .for_each(|(m, v)| *m = m.max(*v));
                        }
                        max
                    }
                    Pooling::Splade => {
                        // log1p is monotonic: the max of the raw logits, transformed once.
                        let mut max = vec![0.0f32; hidden_size];
                        for token in kept {
                            max.iter_mut()
                                .zip(row(token))
                                .for_each(|(m, v)| *m = m.max(*v));
                        }
                        max.iter_mut().for_each(|m| *m = m.ln_1p());
                        max
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_each_sequence_separately() {
        // Two sequences of hidden size 2: tokens [1,2],[3,4],[5,6] then [7,8].
        let hidden = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let batch = PackedBatch::from_sequences(&[vec![0, 0, 0], vec![0]]);
        assert_eq!(
            Pooling::Cls.pool(&hidden, 2, &batch, &[]),
            vec![vec![1.0, 2.0], vec![7.0, 8.0]]
        );
        assert_eq!(
            Pooling::Mean.pool(&hidden, 2, &batch, &[]),
            vec![vec![3.0, 4.0], vec![7.0, 8.0]]
        );
        assert_eq!(
            Pooling::Max.pool(&hidden, 2, &batch, &[]),
            vec![vec![5.0, 6.0], vec![7.0, 8.0]]
        );
        assert_eq!(
            Pooling::LastToken.pool(&hidden, 2, &batch, &[])[0],
            vec![5.0, 6.0]
        );
        let sqrt = Pooling::MeanSqrtLen.pool(&hidden, 2, &batch, &[]);
        assert!((sqrt[0][0] - 9.0 / 3.0f32.sqrt()).abs() < 1e-6);
        // Skipping a one-token prompt leaves [3,4],[5,6]; skipping everything keeps the last token.
        assert_eq!(
            Pooling::Mean.pool(&hidden, 2, &batch, &[1, 5]),
            vec![vec![4.0, 5.0], vec![7.0, 8.0]]
        );
    }
}
