//! The model's own `tokenizer.json`, set to truncate at the model's max length and never pad
//! (sequences are packed, not padded).

use crate::{EmbedError, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Which end of an over-long text the tokenizer cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationSide {
    /// Keep the beginning (sentence-transformers' behaviour).
    #[default]
    Right,
    /// Keep the end.
    Left,
}

/// Bytes of a text read per token of the max length. The tokenizers crate keeps about 16 bytes
/// of offsets per input byte until it truncates, so a 100 MB line would cost gigabytes to
/// yield 256 tokens; reading at most this many bytes per kept token bounds that by the max
/// length. Tokens of code and prose average 3–5 bytes, so the first `max_length` tokens of any
/// ordinary text lie well inside the bound.
pub const BYTES_PER_TOKEN: usize = 64;

/// How far back from the cut a whitespace is looked for, so no word is split.
const WORD_SEARCH_BYTES: usize = 256;

/// Up to this many texts are tokenised on the calling thread. `encode_batch` hands work to the
/// rayon pool, where a server's short query would wait behind the model's matrix products.
const SEQUENTIAL_BATCH: usize = 8;

pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same tokenizer cutting over-long texts at the front, made when first asked for:
    /// copying a vocabulary costs a command-line search milliseconds it rarely needs them for.
    left_truncating: OnceLock<Tokenizer>,
    /// The same tokenizer without truncation, for measuring texts longer than the model takes.
    untruncated: OnceLock<Tokenizer>,
    path: PathBuf,
    max_length: usize,
    /// The id the tokenizer pads with, for callers that build padded matrices.
    pad_id: u32,
}

/// A model folder's `tokenizer.json`, parsed but not yet set to a max length: parsing is the
/// slow part, which [`crate::Embedder::load`] does while the weights load.
pub struct ParsedTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
}

impl ParsedTokenizer {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(EmbedError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            });
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| EmbedError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(ParsedTokenizer { tokenizer, path })
    }
}

impl TextTokenizer {
    pub fn load(dir: &Path, max_length: usize) -> Result<Self> {
        Self::with_max_length(ParsedTokenizer::read(dir)?, max_length)
    }

    /// The tokenizer cutting texts at `max_length` tokens (at least 1).
    pub fn with_max_length(parsed: ParsedTokenizer, max_length: usize) -> Result<Self> {
        let ParsedTokenizer {
            tokenizer: mut inner,
            path,
        } = parsed;
        let pad_id = inner
            .get_padding()
            .map(|padding| padding.pad_id)
            .or_else(|| ["[PAD]", "<pad>"].iter().find_map(|t| inner.token_to_id(t)))
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(Some(truncation(max_length, TruncationDirection::Right)))
            .map_err(|e| EmbedError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?;
        Ok(TextTokenizer {
            inner,
            left_truncating: OnceLock::new(),
            untruncated: OnceLock::new(),
            path,
            max_length,
            pad_id,
        })
    }

    fn left_truncating(&self) -> &Tokenizer {
        self.left_truncating.get_or_init(|| {
            let mut tokenizer = self.inner.clone();
            // The same parameters as `inner`'s, which were accepted, but for the direction.
            let _ = tokenizer
                .with_truncation(Some(truncation(self.max_length, TruncationDirection::Left)));
            tokenizer
        })
    }

    fn untruncated(&self) -> &Tokenizer {
        self.untruncated.get_or_init(|| {
            let mut tokenizer = self.inner.clone();
            // Turning truncation off cannot fail.
            let _ = tokenizer.with_truncation(None);
            tokenizer
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id the tokenizer's own padding uses (else `[PAD]`'s or `<pad>`'s, else 0). Quiver
    /// packs sequences and never pads; this is for callers that show padded matrices.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Token ids of each text, special tokens included, truncated to the max length.
    /// Runs on the tokenizers crate's own thread pool.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let encodings = self.encode_batch_from(texts, TruncationSide::Right)?;
        Ok(encodings.into_iter().map(|(ids, _)| ids).collect())
    }

    /// Token ids of each text, cut at `side` when longer than the max length, with whether it
    /// was cut. Only the part of a text [`TextTokenizer::within_reach`] is tokenised.
    pub fn encode_batch_from<S: AsRef<str>>(
        &self,
        texts: &[S],
        side: TruncationSide,
    ) -> Result<Vec<(Vec<u32>, bool)>> {
        let tokenizer = match side {
            TruncationSide::Right => &self.inner,
            TruncationSide::Left => self.left_truncating(),
        };
        let reach: Vec<(&str, bool)> = texts
            .iter()
            .map(|text| self.within_reach(text.as_ref(), side))
            .collect();
        let encodings = if texts.len() <= SEQUENTIAL_BATCH {
            reach
                .iter()
                .map(|(text, _)| tokenizer.encode(*text, true))
                .collect::<tokenizers::Result<Vec<_>>>()
        } else {
            let inputs: Vec<&str> = reach.iter().map(|(text, _)| *text).collect();
            tokenizer.encode_batch(inputs, true)
        }
        .map_err(|e| self.error(e))?;
        Ok(encodings
            .into_iter()
            .zip(reach)
            .map(|(encoding, (_, cut))| {
                let truncated = cut || !encoding.get_overflowing().is_empty();
                (encoding.get_ids().to_vec(), truncated)
            })
            .collect())
    }

    /// A (query, text) pair as a cross-encoder reads it, one sequence with the tokenizer's own
    /// pair framing (`[CLS] q [SEP] t [SEP]`, `<s> q </s></s> t </s>`): ids, each token's
    /// segment, and whether the pair was cut to the max length (the longer side first).
    pub fn encode_pair(
        &self,
        query: &str,
        text: &str,
        side: TruncationSide,
    ) -> Result<(Vec<u32>, Vec<u8>, bool)> {
        let tokenizer = match side {
            TruncationSide::Right => &self.inner,
            TruncationSide::Left => self.left_truncating(),
        };
        let (query, query_cut) = self.within_reach(query, side);
        let (text, text_cut) = self.within_reach(text, side);
        let encoding = tokenizer
            .encode((query, text), true)
            .map_err(|e| self.error(e))?;
        let types = encoding
            .get_type_ids()
            .iter()
            .map(|&t| u8::try_from(t).unwrap_or(u8::MAX))
            .collect();
        let cut = query_cut || text_cut || !encoding.get_overflowing().is_empty();
        Ok((encoding.get_ids().to_vec(), types, cut))
    }

    /// The id of a vocabulary entry (`yes`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text` without special tokens, cut at `side` to `max_tokens`; and whether
    /// it was cut. For callers that frame the text themselves (a decoder reranker's prompt).
    pub fn encode_plain(
        &self,
        text: &str,
        max_tokens: usize,
        side: TruncationSide,
    ) -> Result<(Vec<u32>, bool)> {
        let (text, reach_cut) = self.within_reach(text, side);
        let encoding = self
            .untruncated()
            .encode(text, false)
            .map_err(|e| self.error(e))?;
        let ids = encoding.get_ids();
        if ids.len() <= max_tokens {
            return Ok((ids.to_vec(), reach_cut));
        }
        let kept = match side {
            TruncationSide::Right => &ids[..max_tokens],
            TruncationSide::Left => &ids[ids.len() - max_tokens..],
        };
        Ok((kept.to_vec(), true))
    }

    /// The part of `text` that can reach the model when it is cut at `side`: at most
    /// `max_length × BYTES_PER_TOKEN` bytes from the kept end, ending (or starting) at a
    /// whitespace where one is near so no word is split; and whether anything was left out.
    pub fn within_reach<'t>(&self, text: &'t str, side: TruncationSide) -> (&'t str, bool) {
        let cap = self.max_length.saturating_mul(BYTES_PER_TOKEN);
        if text.len() <= cap {
            return (text, false);
        }
        let kept = match side {
            TruncationSide::Right => {
                let mut end = cap;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                let search_from = end.saturating_sub(WORD_SEARCH_BYTES);
                match text[search_from..end].rfind(char::is_whitespace) {
                    Some(at) => &text[..search_from + at],
                    None => &text[..end],
                }
            }
            TruncationSide::Left => {
                let mut start = text.len() - cap;
                while !text.is_char_boundary(start) {
                    start += 1;
                }
                let mut search_to = (start + WORD_SEARCH_BYTES).min(text.len());
                while !text.is_char_boundary(search_to) {
                    search_to -= 1;
                }
                match text[start..search_to].find(char::is_whitespace) {
                    Some(at) => &text[start + at..],
                    None => &text[start..],
                }
            }
        };
        (kept, true)
    }

    /// Every token of `text` (special tokens included when asked), untruncated, with its byte
    /// span in `text`; special tokens span nothing.
    pub fn tokens(&self, text: &str, add_special_tokens: bool) -> Result<Vec<Token>> {
        let encoding = self
            .untruncated()
            .encode(text, add_special_tokens)
            .map_err(|e| self.error(e))?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .zip(encoding.get_offsets())
            .zip(encoding.get_special_tokens_mask())
            .map(|(((&id, token), &(start, end)), &special)| Token {
                id,
                text: token.clone(),
                special: special == 1,
                start,
                end,
            })
            .collect())
    }

    /// Entries in the vocabulary, added tokens included: every valid id is below this.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The text of token ids, special tokens left out when asked. Ids outside the vocabulary
    /// are an error naming the first one.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        check_token_ids(0, ids, self.vocab_size())?;
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.error(e))
    }

    fn error(&self, error: tokenizers::Error) -> EmbedError {
        EmbedError::Tokenizer {
            path: self.path.clone(),
            message: error.to_string(),
        }
    }

    /// Byte offsets where each token of `text` starts: special tokens left out, nothing
    /// truncated. The chunker sizes chunks with this.
    pub fn token_starts(&self, text: &str) -> Result<Vec<usize>> {
        let encoding = self
            .untruncated()
            .encode(text, false)
            .map_err(|e| self.error(e))?;
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

/// Refuses token ids of input `input` that are not below `vocab`, naming the first.
pub(crate) fn check_token_ids(input: usize, ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(position) => Err(EmbedError::TokenId {
            input,
            position,
            id: ids[position],
            vocab,
        }),
        None => Ok(()),
    }
}

/// One token as the tokenizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    /// The vocabulary entry (e.g. `##ing`, `[CLS]`).
    pub text: String,
    pub special: bool,
    /// Byte span in the input.
    pub start: usize,
    pub end: usize,
}

fn truncation(max_length: usize, direction: TruncationDirection) -> TruncationParams {
    TruncationParams {
        max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(max_length: usize) -> TextTokenizer {
        let dir = crate::testing::fetched_model_dir("all-MiniLM-L6-v2");
        TextTokenizer::load(&dir, max_length).expect("tokenizer")
    }

    #[test]
    fn only_what_can_reach_the_model_is_tokenised() {
        let tokenizer = tokenizer(16);
        let cap = 16 * BYTES_PER_TOKEN;
        let long = "parse the config file ".repeat(1000);
        let (right, cut) = tokenizer.within_reach(&long, TruncationSide::Right);
        assert!(cut && right.len() <= cap && right.len() > cap - WORD_SEARCH_BYTES);
        assert!(
            long.as_bytes()[right.len()].is_ascii_whitespace(),
            "a word was split"
        );
        let (left, cut) = tokenizer.within_reach(&long, TruncationSide::Left);
        assert!(cut && left.len() <= cap && long.ends_with(left));
        assert!(left.starts_with(' '), "a word was split");
        // Multi-byte characters are never cut through.
        let accents = "é".repeat(5000);
        for side in [TruncationSide::Right, TruncationSide::Left] {
            let (kept, cut) = tokenizer.within_reach(&accents, side);
            assert!(cut && kept.len() <= cap && !kept.is_empty());
        }
        let short = "a short text";
        assert_eq!(
            tokenizer.within_reach(short, TruncationSide::Right),
            (short, false)
        );
        // The tokens are those of the whole text, and the cut is reported.
        let encoded = tokenizer
            .encode_batch_from(&[long.as_str(), &long[..200]], TruncationSide::Right)
            .expect("encodes");
        assert_eq!(encoded[0], encoded[1]);
        assert!(encoded[0].1);
        let left = tokenizer
            .encode_batch_from(
                &[long.as_str(), &long[long.len() - 200..]],
                TruncationSide::Left,
            )
            .expect("encodes");
        assert_eq!(left[0].0, left[1].0);
    }
}
