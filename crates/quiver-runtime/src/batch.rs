use crate::{Result, RuntimeError};

/// Token sequences packed end to end: no padding anywhere.
///
/// `offsets` has one entry per sequence plus one: sequence `i` owns tokens
/// `offsets[i]..offsets[i + 1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedBatch {
    pub token_ids: Vec<u32>,
    pub offsets: Vec<usize>,
    /// The task adapter (LoRA) each sequence runs with, for models that have them
    /// (jina-embeddings-v3); empty when every sequence runs on the base weights.
    pub adapters: Vec<Option<u16>>,
    /// The segment (token type) of every token, for pairs a cross-encoder reads as one input
    /// (`[CLS] query [SEP] text [SEP]`); empty when every token is of type 0.
    pub token_types: Vec<u8>,
}

impl PackedBatch {
    pub fn new() -> Self {
        PackedBatch {
            token_ids: Vec::new(),
            offsets: vec![0],
            adapters: Vec::new(),
            token_types: Vec::new(),
        }
    }

    pub fn from_sequences<S: AsRef<[u32]>>(sequences: &[S]) -> Self {
        let mut batch = PackedBatch::new();
        for sequence in sequences {
            batch.push(sequence.as_ref());
        }
        batch
    }

    pub fn push(&mut self, ids: &[u32]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.token_ids.extend_from_slice(ids);
        self.offsets.push(self.token_ids.len());
        if !self.token_types.is_empty() {
            self.token_types.resize(self.token_ids.len(), 0);
        }
    }

    /// Adds a sequence whose tokens have the segments `types` (one per id; missing ones 0).
    pub fn push_typed(&mut self, ids: &[u32], types: &[u8]) {
        let typed = !self.token_types.is_empty() || types.iter().any(|&t| t != 0);
        let start = self.token_ids.len();
        self.push(ids);
        if typed {
            self.token_types.resize(self.token_ids.len(), 0);
            let n = types.len().min(ids.len());
            self.token_types[start..start + n].copy_from_slice(&types[..n]);
        }
    }

    pub fn num_sequences(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    pub fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.offsets.windows(2).map(|pair| pair[0]..pair[1])
    }

    /// The adapter of every token, or `None` when no sequence has one.
    pub fn token_adapters(&self) -> Option<Vec<Option<u16>>> {
        if self.adapters.iter().all(Option::is_none) {
            return None;
        }
        Some(
            self.ranges()
                .zip(&self.adapters)
                .flat_map(|(range, &adapter)| std::iter::repeat_n(adapter, range.len()))
                .collect(),
        )
    }

    pub fn max_len(&self) -> usize {
        self.ranges().map(|range| range.len()).max().unwrap_or(0)
    }

    /// The batch cut between sequences into batches of at most `max_tokens` tokens each (a
    /// longer sequence alone), in order, each with its sequences' adapters and token types.
    pub fn split(&self, max_tokens: usize) -> Vec<PackedBatch> {
        let mut parts = Vec::new();
        let mut part = PackedBatch::new();
        for (index, range) in self.ranges().enumerate() {
            if part.num_tokens() > 0 && part.num_tokens() + range.len() > max_tokens {
                parts.push(std::mem::replace(&mut part, PackedBatch::new()));
            }
            let first_of_part = part.num_sequences();
            part.push(&self.token_ids[range.clone()]);
            if !self.token_types.is_empty() {
                part.token_types.resize(part.num_tokens() - range.len(), 0);
                part.token_types.extend_from_slice(&self.token_types[range]);
            }
            if !self.adapters.is_empty() {
                part.adapters.resize(first_of_part, None);
                part.adapters.push(self.adapters[index]);
            }
        }
        if part.num_sequences() > 0 {
            parts.push(part);
        }
        parts
    }

    /// Checks the invariants the kernels rely on.
    pub fn validate(&self, max_positions: usize, vocab_size: usize) -> Result<()> {
        if self.offsets.first() != Some(&0) || self.offsets.last() != Some(&self.token_ids.len()) {
            return Err(RuntimeError::Batch(
                "offsets must start at 0 and end at the token count".into(),
            ));
        }
        for range in self.ranges() {
            if range.is_empty() {
                return Err(RuntimeError::Batch("a sequence has no tokens".into()));
            }
            if range.len() > max_positions {
                return Err(RuntimeError::Batch(format!(
                    "a sequence of {} tokens exceeds the model's {} positions",
                    range.len(),
                    max_positions
                )));
            }
        }
        if !self.adapters.is_empty() && self.adapters.len() != self.num_sequences() {
            return Err(RuntimeError::Batch(
                "adapters must name one adapter (or none) per sequence".into(),
            ));
        }
        if !self.token_types.is_empty() && self.token_types.len() != self.token_ids.len() {
            return Err(RuntimeError::Batch(
                "token types must name one type per token".into(),
            ));
        }
        if let Some(&id) = self.token_ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(RuntimeError::Batch(format!(
                "token id {id} is outside the vocabulary of {vocab_size} entries"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_batch_keeps_every_sequence_with_its_types_and_adapter_in_order() {
        let mut batch = PackedBatch::new();
        batch.push(&[1, 2, 3]);
        batch.push_typed(&[4, 5], &[0, 1]);
        batch.push(&[6, 7, 8, 9, 10]);
        batch.push(&[11]);
        batch.adapters = vec![None, Some(1), Some(2), None];
        let parts = batch.split(5);
        let ids: Vec<Vec<u32>> = parts.iter().map(|p| p.token_ids.clone()).collect();
        // 3 + 2 fit in 5; the 5-token sequence is alone; the last starts a new part.
        assert_eq!(ids, [vec![1, 2, 3, 4, 5], vec![6, 7, 8, 9, 10], vec![11]]);
        assert_eq!(parts[0].offsets, [0, 3, 5]);
        assert_eq!(parts[0].token_types, [0, 0, 0, 0, 1]);
        assert!(parts[1].token_types.is_empty() || parts[1].token_types == [0; 5]);
        assert_eq!(parts[0].adapters, [None, Some(1)]);
        assert_eq!(parts[1].adapters, [Some(2)]);
        assert_eq!(parts[2].adapters, [None]);
        for part in &parts {
            part.validate(8, 100).unwrap();
        }
        // A sequence longer than the budget still runs, alone.
        assert_eq!(batch.split(2).len(), 4);
        assert_eq!(batch.split(100), [batch.clone()]);
    }

    #[test]
    fn packs_and_validates() {
        let batch = PackedBatch::from_sequences(&[vec![1, 2, 3], vec![4]]);
        assert_eq!(batch.offsets, vec![0, 3, 4]);
        assert_eq!(batch.max_len(), 3);
        assert!(batch.validate(8, 10).is_ok());
        let refusal = |result: Result<()>| match result {
            Err(RuntimeError::Batch(message)) => message,
            other => panic!("expected a batch error, got {other:?}"),
        };
        assert_eq!(
            refusal(batch.validate(2, 10)),
            "a sequence of 3 tokens exceeds the model's 2 positions"
        );
        assert_eq!(
            refusal(batch.validate(8, 4)),
            "token id 4 is outside the vocabulary of 4 entries"
        );
        let empty_sequence = PackedBatch::from_sequences(&[vec![1], vec![]]);
        assert_eq!(
            refusal(empty_sequence.validate(8, 10)),
            "a sequence has no tokens"
        );
    }

    #[test]
    fn token_types_follow_their_tokens() {
        let mut batch = PackedBatch::new();
        batch.push(&[1, 2]);
        assert!(batch.token_types.is_empty());
        batch.push_typed(&[3, 4, 5], &[0, 1, 1]);
        batch.push(&[6]);
        assert_eq!(batch.token_types, vec![0, 0, 0, 1, 1, 0]);
        let mut first = PackedBatch::new();
        first.push_typed(&[1, 2], &[0, 1]);
        first.push_typed(&[3], &[0]);
        assert_eq!(first.token_types, vec![0, 1, 0]);
        assert!(batch.validate(8, 10).is_ok());
    }
}
