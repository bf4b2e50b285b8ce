//! Cross-encoder reranking: a query and each candidate text read together by a
//! sequence-classification model (bge-reranker, the ms-marco cross-encoders), one relevance
//! logit per pair. Slower than comparing vectors, since every pair runs the model, and more
//! accurate: the usual second stage over the top hits of a vector or hybrid search.

use crate::embedder::plan_batches;
use crate::{BatchBudget, EmbedError, EmbedderOptions, Result, TextTokenizer, TruncationSide};
use quiver_runtime::{
    AnswerTokens, Device, LoadOptions, PackedBatch, RuntimeError, SequenceClassifier,
};
use std::path::{Path, PathBuf};

/// Pairs tokenised for the model: what [`Reranker::score`] takes.
#[derive(Debug, Clone, Default)]
pub struct EncodedPairs {
    pub token_ids: Vec<Vec<u32>>,
    pub token_types: Vec<Vec<u8>>,
    /// Whether each pair was longer than the max length (and so was cut).
    pub truncated: Vec<bool>,
}

/// How a (query, text) pair becomes one sequence.
enum Framing {
    /// The tokenizer's own pair framing (`[CLS] q [SEP] t [SEP]`), with token types.
    Pair,
    /// Qwen3-Reranker's chat prompt around an instruction, the query and the text; the text
    /// is cut to fit.
    Prompt {
        prefix: Vec<u32>,
        suffix: Vec<u32>,
        instruction: &'static str,
    },
}

/// Qwen3-Reranker's prompt, from its model card.
const QWEN3_PREFIX: &str = "<|im_start|>system\nJudge whether the Document meets the requirements \
based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \
\"no\".<|im_end|>\n<|im_start|>user\n";
const QWEN3_SUFFIX: &str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
/// The model card's default instruction.
const QWEN3_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query";

/// A loaded cross-encoder with its tokenizer.
pub struct Reranker {
    classifier: SequenceClassifier,
    tokenizer: TextTokenizer,
    framing: Framing,
    dir: PathBuf,
}

impl Reranker {
    /// Loads a resolved model folder whose `config.json` names a sequence-classification
    /// architecture ([`quiver_runtime::CLASSIFIER_ARCHITECTURES`]) with one label.
    pub fn load(dir: &Path, options: &EmbedderOptions) -> Result<Self> {
        // Rerankers' classifier heads run on the CPU only: `auto` keeps to it without opening
        // a card, and a GPU named for one is refused, once opening it has said what is missing.
        if let named @ (Device::Cuda(_) | Device::Cards(_)) = options.device {
            return Err(RuntimeError::Cuda {
                device: named.ensure_available()?.to_string(),
                message: "rerankers run on the CPU only; load this one with `--device cpu`".into(),
            }
            .into());
        }
        // A decoder reranker answers "yes" or "no": their ids come from its tokenizer, which
        // is read first with no length limit (the model's is known only once it is loaded).
        let answers = if is_decoder(dir) {
            let tokenizer = TextTokenizer::load(dir, usize::MAX)?;
            let id = |token: &str| {
                tokenizer.token_id(token).ok_or_else(|| EmbedError::Config {
                    path: dir.join("tokenizer.json"),
                    message: format!(
                        "a decoder reranker answers {token:?}, which its vocabulary lacks"
                    ),
                })
            };
            Some(AnswerTokens {
                yes: id("yes")?,
                no: id("no")?,
            })
        } else {
            None
        };
        let classifier = SequenceClassifier::load(
            dir,
            LoadOptions {
                few_row_kernels: options.few_row_kernels,
                quantization: options.quantization,
                ..LoadOptions::default()
            },
            answers,
        )?;
        if classifier.labels().len() != 1 {
            return Err(EmbedError::Config {
                path: dir.join("config.json"),
                message: format!(
                    "a reranker has one label; this classifier has {} ({})",
                    classifier.labels().len(),
                    classifier.labels().join(", ")
                ),
            });
        }
        let max_length = options
            .max_length
            .or_else(|| declared_max_length(dir))
            .unwrap_or(usize::MAX)
            .min(classifier.encoder().max_positions());
        if max_length < 2 {
            return Err(EmbedError::MaxLength(max_length));
        }
        let tokenizer = TextTokenizer::load(dir, max_length)?;
        let framing = if classifier.answers_at_last_token() {
            let plain = |text| tokenizer.encode_plain(text, usize::MAX, TruncationSide::Right);
            Framing::Prompt {
                prefix: plain(QWEN3_PREFIX)?.0,
                suffix: plain(QWEN3_SUFFIX)?.0,
                instruction: QWEN3_INSTRUCTION,
            }
        } else {
            Framing::Pair
        };
        Ok(Reranker {
            classifier,
            tokenizer,
            framing,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Tokenises `query` with each of `texts`, cut at `side` when a pair is too long.
    pub fn encode<S: AsRef<str>>(
        &self,
        query: &str,
        texts: &[S],
        side: TruncationSide,
    ) -> Result<EncodedPairs> {
        let mut pairs = EncodedPairs::default();
        for text in texts {
            let (ids, types, cut) = match &self.framing {
                Framing::Pair => self.tokenizer.encode_pair(query, text.as_ref(), side)?,
                Framing::Prompt {
                    prefix,
                    suffix,
                    instruction,
                } => {
                    let body = format!(
                        "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {}",
                        text.as_ref()
                    );
                    let room = self
                        .max_length()
                        .saturating_sub(prefix.len() + suffix.len());
                    let (body, cut) = self.tokenizer.encode_plain(&body, room, side)?;
                    let ids: Vec<u32> = [prefix.as_slice(), &body, suffix].concat();
                    let types = vec![0; ids.len()];
                    (ids, types, cut)
                }
            };
            pairs.token_ids.push(ids);
            pairs.token_types.push(types);
            pairs.truncated.push(cut);
        }
        Ok(pairs)
    }

    /// The relevance logit of each pair, in order: higher is more relevant (a sigmoid maps it
    /// to 0..1, as TEI's `/rerank` reports unless asked for raw scores).
    pub fn score(&self, pairs: &EncodedPairs, budget: BatchBudget) -> Result<Vec<f32>> {
        let sequences: Vec<&[u32]> = pairs.token_ids.iter().map(Vec::as_slice).collect();
        let mut scores = vec![0.0f32; sequences.len()];
        for batch_indices in plan_batches(&sequences, 0..sequences.len(), budget) {
            let mut batch = PackedBatch::new();
            for &index in &batch_indices {
                batch.push_typed(sequences[index], &pairs.token_types[index]);
            }
            let logits = self.classifier.forward(&batch)?;
            for (index, logit) in batch_indices.into_iter().zip(logits) {
                if !logit.is_finite() {
                    return Err(EmbedError::NonFiniteOutput { input: index });
                }
                scores[index] = logit;
            }
        }
        Ok(scores)
    }
}

/// Whether the folder holds a causal LM (`*ForCausalLM`), which reranks by its answer tokens.
fn is_decoder(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|config| config["architectures"][0].as_str().map(str::to_string))
        .is_some_and(|architecture| architecture.ends_with("ForCausalLM"))
}

/// The length the model's tokenizer files declare, as sentence-transformers' `CrossEncoder`
/// reads it: `tokenizer.json`'s truncation, else `tokenizer_config.json`'s `model_max_length`
/// (ignoring the huge placeholder some tokenizers carry). A file that cannot be read declares
/// nothing; loading the tokenizer reports it.
fn declared_max_length(dir: &Path) -> Option<usize> {
    let read = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
    };
    let truncation =
        read("tokenizer.json").and_then(|tokenizer| tokenizer["truncation"]["max_length"].as_u64());
    let configured = || {
        read("tokenizer_config.json")
            .and_then(|config| config["model_max_length"].as_u64())
            .filter(|&length| length <= 1 << 20)
    };
    truncation
        .or_else(configured)
        .and_then(|length| usize::try_from(length).ok())
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reranker")
            .field("dir", &self.dir)
            .field("max_length", &self.max_length())
            .finish_non_exhaustive()
    }
}

/// TEI's score for a logit: the logistic sigmoid.
pub fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit).exp())
}
