//! Sequence classification: an encoder with a head that turns a sequence's first token into
//! one logit per label. Cross-encoder rerankers are this with one label: a (query, text) pair
//! read as one sequence, its logit the pair's relevance (bge-reranker: XLM-R; the ms-marco
//! cross-encoders: BERT).
//!
//! The heads are those of `transformers`' `BertForSequenceClassification` (the pooler's dense
//! layer and tanh, then `classifier`) and `RobertaForSequenceClassification` /
//! `XLMRobertaForSequenceClassification` (`classifier.dense`, tanh, `classifier.out_proj`), on
//! the first token; and Qwen3-Reranker's: a causal LM (`Qwen3ForCausalLM`) asked to answer
//! "yes" or "no", whose logit is the last position's "yes" logit less its "no" logit (the
//! sigmoid of which is the model card's P(yes) over the two).

use super::bert::BertModel;
use super::qwen::QwenModel;
use super::{EncoderModel, ModelConfig};
use crate::layers::Linear;
use crate::weights::WeightFiles;
use crate::{LoadOptions, PackedBatch, Result, RuntimeError};
use std::collections::BTreeMap;
use std::path::Path;

/// The `architectures` entries Quiver can run as classifiers.
pub const CLASSIFIER_ARCHITECTURES: &[&str] = &[
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification",
    "Qwen3ForCausalLM",
];

/// The vocabulary ids of a decoder reranker's two answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerTokens {
    pub yes: u32,
    pub no: u32,
}

enum Head {
    /// BERT: `pooler.dense` (inside the encoder's prefix), tanh, `classifier`.
    Pooler { pooler: Linear, classifier: Linear },
    /// RoBERTa: `classifier.dense`, tanh, `classifier.out_proj`.
    Classifier { dense: Linear, out_proj: Linear },
    /// A decoder's language-model rows of its two answers (`lm_head`, or the tied
    /// `embed_tokens`), read at the last position.
    Answers { yes: Vec<f32>, no: Vec<f32> },
}

/// An encoder with a sequence-classification head.
pub struct SequenceClassifier {
    encoder: Box<dyn EncoderModel>,
    head: Head,
    /// Label names by index (`config.json`'s `id2label`).
    labels: Vec<String>,
}

impl SequenceClassifier {
    /// Loads a model folder whose `config.json` names one of [`CLASSIFIER_ARCHITECTURES`]. A
    /// causal LM needs the ids of its answers (from its tokenizer).
    pub fn load(dir: &Path, options: LoadOptions, answers: Option<AnswerTokens>) -> Result<Self> {
        let config = ModelConfig::read(dir)?;
        let architecture = config
            .field::<Vec<String>>(&["architectures"])?
            .and_then(|names| names.into_iter().next())
            .unwrap_or_default();
        if !CLASSIFIER_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(RuntimeError::UnsupportedArchitecture {
                found: if architecture.is_empty() {
                    format!("{} without a classification head", config.model_type)
                } else {
                    architecture
                },
                path: config.path.clone(),
                supported: CLASSIFIER_ARCHITECTURES.join(", "),
            });
        }
        let labels = labels(&config)?;
        let files = WeightFiles::open(dir)?;
        let tensors = files.tensors(options)?;
        let checkpoint = tensors.root();
        if architecture == "Qwen3ForCausalLM" {
            let Some(answers) = answers else {
                return Err(RuntimeError::Config {
                    path: config.path.clone(),
                    message: "a causal LM reranks by its \"yes\" and \"no\" tokens, which its \
                              tokenizer does not have"
                        .into(),
                });
            };
            let encoder = QwenModel::load(&config, &checkpoint)?;
            let (h, vocab) = (encoder.hidden_size(), encoder.vocab_size());
            // Untied checkpoints (Qwen3-Reranker-4B, -8B) have their own `lm_head`; tied ones
            // (0.6B) read the embedding table, in the decoder.
            let table = match checkpoint.get_optional("lm_head.weight", &[vocab, h])? {
                Some(own) => own,
                None => QwenModel::weights(&checkpoint)?.get("embed_tokens.weight", &[vocab, h])?,
            };
            let row = |id: u32| -> Result<Vec<f32>> {
                let id = id as usize;
                table
                    .get(id * h..(id + 1) * h)
                    .map(<[f32]>::to_vec)
                    .ok_or_else(|| RuntimeError::Config {
                        path: config.path.clone(),
                        message: format!("answer token {id} is outside the vocabulary of {vocab}"),
                    })
            };
            return Ok(SequenceClassifier {
                head: Head::Answers {
                    yes: row(answers.yes)?,
                    no: row(answers.no)?,
                },
                encoder: Box::new(encoder),
                labels,
            });
        }
        let encoder = BertModel::load(&config, &checkpoint)?;
        let h = encoder.hidden_size();
        let classifier = checkpoint.pp("classifier");
        let head = if architecture == "BertForSequenceClassification" {
            // The pooler sits inside the encoder (`bert.pooler`), the classifier beside it.
            let pooler = BertModel::weights(&checkpoint)?.pp("pooler.dense");
            Head::Pooler {
                pooler: Linear::load(&pooler, h, h, true)?,
                classifier: Linear::load(&classifier, h, labels.len(), true)?,
            }
        } else {
            Head::Classifier {
                dense: Linear::load(&classifier.pp("dense"), h, h, true)?,
                out_proj: Linear::load(&classifier.pp("out_proj"), h, labels.len(), true)?,
            }
        };
        Ok(SequenceClassifier {
            encoder: Box::new(encoder),
            head,
            labels,
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn encoder(&self) -> &dyn EncoderModel {
        self.encoder.as_ref()
    }

    /// One row of logits per sequence, `[sequences, labels]` row-major.
    pub fn forward(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let h = self.encoder.hidden_size();
        let hidden = self.encoder.forward(batch)?;
        let row = |token: usize| &hidden[token * h..(token + 1) * h];
        let (inner, outer) = match &self.head {
            Head::Pooler { pooler, classifier } => (pooler, classifier),
            Head::Classifier { dense, out_proj } => (dense, out_proj),
            Head::Answers { yes, no } => {
                let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
                return Ok(batch
                    .ranges()
                    .map(|range| {
                        let last = row(range.end - 1);
                        dot(last, yes) - dot(last, no)
                    })
                    .collect());
            }
        };
        let first: Vec<f32> = batch
            .ranges()
            .flat_map(|range| row(range.start).iter().copied())
            .collect();
        let rows = batch.num_sequences();
        let mut pooled = Vec::new();
        inner.forward(&first, rows, &mut pooled);
        pooled.iter_mut().for_each(|x| *x = x.tanh());
        let mut logits = Vec::new();
        outer.forward(&pooled, rows, &mut logits);
        Ok(logits)
    }

    /// Whether the model reads a whole prompt and answers at its last token (a decoder
    /// reranker) rather than a sentence pair at its first.
    pub fn answers_at_last_token(&self) -> bool {
        matches!(self.head, Head::Answers { .. })
    }
}

/// `id2label` in index order; one unnamed label when the config has none.
fn labels(config: &ModelConfig) -> Result<Vec<String>> {
    let Some(id2label) = config.field::<BTreeMap<String, String>>(&["id2label"])? else {
        let count = config.field::<usize>(&["num_labels"])?.unwrap_or(1);
        return Ok((0..count).map(|i| format!("LABEL_{i}")).collect());
    };
    let mut indexed = id2label
        .into_iter()
        .map(|(index, label)| {
            index
                .parse::<usize>()
                .map(|index| (index, label))
                .map_err(|_| RuntimeError::Config {
                    path: config.path.clone(),
                    message: format!("field `id2label`: key `{index}` is not a label index"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    indexed.sort();
    if indexed
        .iter()
        .enumerate()
        .any(|(i, (index, _))| i != *index)
        || indexed.is_empty()
    {
        return Err(RuntimeError::Config {
            path: config.path.clone(),
            message: "field `id2label`: label indices must run 0, 1, 2, ...".into(),
        });
    }
    Ok(indexed.into_iter().map(|(_, label)| label).collect())
}
