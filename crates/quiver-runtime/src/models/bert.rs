//! BERT encoders: all-MiniLM-L6-v2, bge-*, e5-*, and every other `model_type: "bert"` folder;
//! and RoBERTa / XLM-RoBERTa (`"roberta"`, `"xlm-roberta"`: CodeBERT, st-codesearch-distilroberta,
//! the XLM-R base of multilingual embedders), which are the same network with positions counted
//! from `pad_token_id + 1` (`create_position_ids_from_input_ids` in `modeling_roberta.py`).

use super::post_norm::{
    run_layers, sum_embeddings, Checked, EncoderConfig, FeedForwardNames, LayerShape, Layout,
    PlainDense, Positions, PostNormLayer, QkvNames,
};
use super::stack::{self, AbsolutePositions, Layers, Rows, Stack, TokenTypes};
use super::{EncoderModel, ModelConfig, ModelDims};
use crate::layers::LayerNorm;
use crate::weights::{Table, Weights};
use crate::{PackedBatch, Result, RuntimeError};
use serde::Deserialize;

/// The fields of a BERT `config.json` that shape the forward pass.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub encoder: EncoderConfig,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub pad_token_id: usize,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

/// BERT's `layer_norm_eps` when the config leaves it out.
const DEFAULT_LAYER_NORM_EPS: f64 = 1e-12;

struct Embeddings {
    word: Table,
    position: Vec<f32>,
    /// The token-type table, `[type_vocab_size, hidden]`: single-segment inputs all use row 0,
    /// the second text of a cross-encoder's pair row 1.
    token_types: Vec<f32>,
    norm: LayerNorm,
}

pub struct BertModel {
    dims: ModelDims,
    config: Config,
    /// Position-table row of a sequence's first token: 0 for BERT, `pad_token_id + 1` for
    /// RoBERTa.
    first_position: usize,
    embeddings: Embeddings,
    shape: LayerShape,
    layers: Vec<PostNormLayer>,
}

/// Scopes under which BERT checkpoints are found in the wild.
const SCOPES: &[&str] = &["", "bert", "roberta", "model"];

const LAYOUT: Layout = Layout {
    layers: "encoder.layer",
    embedding_norm: "embeddings.LayerNorm",
    qkv: QkvNames::Split([
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
    ]),
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    feed_forward: FeedForwardNames::Dense {
        intermediate: "intermediate.dense",
        output: "output.dense",
    },
    output_norm: "output.LayerNorm",
    bias: true,
};

impl BertModel {
    /// The view of the checkpoint the encoder sits under (heads of task models sit beside it,
    /// or in it: BERT's pooler).
    pub fn weights<'a>(checkpoint: &Weights<'a>) -> Result<Weights<'a>> {
        checkpoint.first_with(SCOPES, "embeddings.word_embeddings.weight")
    }

    pub fn load(model_config: &ModelConfig, checkpoint: &Weights<'_>) -> Result<Self> {
        let config: Config = model_config.parse()?;
        let first_position = match model_config.model_type.as_str() {
            "roberta" | "xlm-roberta" | "camembert" => config.pad_token_id + 1,
            _ => 0,
        };
        let Checked { activation, shape } =
            config
                .encoder
                .check(model_config, first_position, DEFAULT_LAYER_NORM_EPS)?;
        if config.position_embedding_type != "absolute" {
            return Err(RuntimeError::Config {
                path: model_config.path.clone(),
                message: format!(
                    "field `position_embedding_type`: `{}` is not supported (only `absolute`)",
                    config.position_embedding_type
                ),
            });
        }
        let weights = Self::weights(checkpoint)?;
        let h = config.encoder.hidden_size;
        let eps = shape.layer_norm_eps;
        let embedding = weights.pp("embeddings");
        let embeddings = Embeddings {
            word: embedding.table("word_embeddings.weight", [config.encoder.vocab_size, h])?,
            position: embedding.get(
                "position_embeddings.weight",
                &[config.encoder.max_position_embeddings, h],
            )?,
            token_types: embedding
                .get("token_type_embeddings.weight", &[config.type_vocab_size, h])?,
            norm: LayerNorm::load(&weights.pp(LAYOUT.embedding_norm), h, eps)?,
        };
        let layers = PostNormLayer::load_all(
            &weights,
            &LAYOUT,
            shape,
            activation,
            config.encoder.num_hidden_layers,
            &PlainDense,
        )?;
        Ok(BertModel {
            dims: ModelDims {
                hidden_size: config.encoder.hidden_size,
                max_positions: config.encoder.max_position_embeddings - first_position,
                vocab_size: config.encoder.vocab_size,
            },
            config,
            first_position,
            embeddings,
            shape,
            layers,
        })
    }

    fn embed(&self, batch: &PackedBatch) -> Vec<f32> {
        let h = self.config.encoder.hidden_size;
        let types = &self.embeddings.token_types;
        let mut hidden = sum_embeddings(
            batch,
            h,
            self.first_position,
            &self.embeddings.word,
            &self.embeddings.position,
            Some(&types[..h]),
        );
        // Tokens of another segment swap row 0 for their own.
        for (token, &segment) in batch.token_types.iter().enumerate() {
            if segment != 0 {
                let own = &types[segment as usize * h..(segment as usize + 1) * h];
                let row = &mut hidden[token * h..(token + 1) * h];
                for ((value, own), zero) in row.iter_mut().zip(own).zip(&types[..h]) {
                    *value += own - zero;
                }
            }
        }
        self.embeddings.norm.forward(&mut hidden);
        hidden
    }
}

impl EncoderModel for BertModel {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn stack(&self) -> Option<Stack<'_>> {
        Some(Stack {
            embeddings: stack::Embeddings {
                word: Rows::Table(&self.embeddings.word),
                scale: 1.0,
                positions: Some(AbsolutePositions {
                    table: &self.embeddings.position,
                    first: self.first_position,
                }),
                token_types: Some(TokenTypes::PerToken(&self.embeddings.token_types)),
                adapters: None,
                norm: Some(&self.embeddings.norm),
            },
            layers: Layers::PostNorm {
                layers: &self.layers,
                shape: self.shape,
                positions: Positions::InEmbeddings,
            },
        })
    }

    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        if let Some(&segment) = batch
            .token_types
            .iter()
            .find(|&&t| t as usize >= self.config.type_vocab_size)
        {
            return Err(RuntimeError::Batch(format!(
                "token type {segment} is outside the model's {} types",
                self.config.type_vocab_size
            )));
        }
        let mut hidden = self.embed(batch);
        run_layers(
            &self.layers,
            &mut hidden,
            batch,
            self.shape,
            Positions::InEmbeddings,
        );
        Ok(hidden)
    }
}
