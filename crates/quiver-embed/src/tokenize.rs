//! The model's own `tokenizer.json`, set to truncate at the model's max length and never pad
//! (sequences are packed, not padded).

use crate::{EmbedError, Result};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same tokenizer without truncation, for measuring texts longer than the model takes.
    untruncated: Tokenizer,
    path: PathBuf,
    max_length: usize,
}

impl TextTokenizer {
    pub fn load(dir: &Path, max_length: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(EmbedError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            });
        }
        let error = |message: String| EmbedError::Tokenizer {
            path: path.clone(),
            message,
        };
        let mut inner = Tokenizer::from_file(&path).map_err(|e| error(e.to_string()))?;
        inner.with_padding(None);
        let mut untruncated = inner.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| error(e.to_string()))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| error(e.to_string()))?;
        Ok(TextTokenizer {
            inner,
            untruncated,
            path,
            max_length,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Token ids of each text, special tokens included, truncated to the max length.
    /// Runs on the tokenizers crate's own thread pool.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings =
            self.inner
                .encode_batch(inputs, true)
                .map_err(|e| EmbedError::Tokenizer {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
        Ok(encodings
            .into_iter()
            .map(|encoding| encoding.get_ids().to_vec())
            .collect())
    }

    /// Byte offsets where each token of `text` starts: special tokens left out, nothing
    /// truncated. The chunker sizes chunks with this.
    pub fn token_starts(&self, text: &str) -> Result<Vec<usize>> {
        let encoding = self
            .untruncated
            .encode(text, false)
            .map_err(|e| EmbedError::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(encoding
            .get_offsets()
            .iter()
            .map(|&(start, _)| start)
            .collect())
    }

    /// How many leading tokens a prompt occupies once tokenised with special tokens, less the
    /// closing one: the count sentence-transformers leaves out when pooling without the prompt.
    pub fn prompt_length(&self, prompt: &str) -> Result<usize> {
        let ids = self.encode_batch(&[prompt])?;
        Ok(ids[0].len().saturating_sub(1))
    }
}
