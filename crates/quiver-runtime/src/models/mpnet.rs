//! MPNet encoders: sentence-transformers/all-mpnet-base-v2 and every `model_type: "mpnet"`
//! folder.
//!
//! A BERT-shaped post-norm encoder with two differences, read from Hugging Face's
//! `modeling_mpnet.py`: positions count from `pad_token_id + 1` (as RoBERTa's do) and there are no
//! token types; and every layer adds one shared, learned relative-position bias to its attention
//! scores, looked up by T5-style buckets of the distance between query and key.

use super::post_norm::{
    run_layers, sum_embeddings, Checked, EncoderConfig, FeedForwardNames, LayerShape, Layout,
    PlainDense, Positions, PostNormLayer, QkvNames,
};
use super::stack::{AbsolutePositions, Embeddings, Layers, Rows, Stack};
use super::{EncoderModel, ModelConfig, ModelDims};
use crate::layers::{LayerNorm, RelativePositionBias};
use crate::weights::{Table, Weights};
use crate::{PackedBatch, Result, RuntimeError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub encoder: EncoderConfig,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_pad_token_id")]
    pub pad_token_id: usize,
}

fn default_buckets() -> usize {
    32
}
fn default_pad_token_id() -> usize {
    1
}

/// MPNet's `layer_norm_eps` when the config leaves it out.
const DEFAULT_LAYER_NORM_EPS: f64 = 1e-5;

/// Distances beyond this share the last bucket (`compute_position_bias` leaves it at 128).
const MAX_DISTANCE: f32 = 128.0;

const SCOPES: &[&str] = &["", "mpnet", "model"];

const LAYOUT: Layout = Layout {
    layers: "encoder.layer",
    embedding_norm: "embeddings.LayerNorm",
    qkv: QkvNames::Split(["attention.attn.q", "attention.attn.k", "attention.attn.v"]),
    attention_out: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
    feed_forward: FeedForwardNames::Dense {
        intermediate: "intermediate.dense",
        output: "output.dense",
    },
    output_norm: "output.LayerNorm",
    bias: true,
};

pub struct MpnetModel {
    dims: ModelDims,
    config: Config,
    word_embeddings: Table,
    position_embeddings: Vec<f32>,
    embedding_norm: LayerNorm,
    /// The bias by `query − key` for sequences up to the longest input; a shorter batch reads
    /// the same entries, so one table built at load serves every batch and the device stack.
    position_bias: RelativePositionBias,
    shape: LayerShape,
    layers: Vec<PostNormLayer>,
}

impl MpnetModel {
    pub fn load(model_config: &ModelConfig, checkpoint: &Weights<'_>) -> Result<Self> {
        let config: Config = model_config.parse()?;
        let Checked { activation, shape } = config.encoder.check(
            model_config,
            config.pad_token_id + 1,
            DEFAULT_LAYER_NORM_EPS,
        )?;
        if config.relative_attention_num_buckets < 4 {
            return Err(RuntimeError::Config {
                path: model_config.path.clone(),
                message: "field `relative_attention_num_buckets` must be at least 4".into(),
            });
        }
        let weights = checkpoint.first_with(SCOPES, "embeddings.word_embeddings.weight")?;
        let h = config.encoder.hidden_size;
        let layers = PostNormLayer::load_all(
            &weights,
            &LAYOUT,
            shape,
            activation,
            config.encoder.num_hidden_layers,
            &PlainDense,
        )?;
        let embedding = weights.pp("embeddings");
        let max_positions = config.encoder.max_position_embeddings - config.pad_token_id - 1;
        Ok(MpnetModel {
            dims: ModelDims {
                hidden_size: config.encoder.hidden_size,
                max_positions,
                vocab_size: config.encoder.vocab_size,
            },
            word_embeddings: embedding
                .table("word_embeddings.weight", [config.encoder.vocab_size, h])?,
            position_embeddings: embedding.get(
                "position_embeddings.weight",
                &[config.encoder.max_position_embeddings, h],
            )?,
            embedding_norm: LayerNorm::load(
                &weights.pp(LAYOUT.embedding_norm),
                h,
                shape.layer_norm_eps,
            )?,
            position_bias: position_bias(
                &weights.get(
                    "encoder.relative_attention_bias.weight",
                    &[
                        config.relative_attention_num_buckets,
                        config.encoder.num_attention_heads,
                    ],
                )?,
                config.encoder.num_attention_heads,
                max_positions,
            ),
            config,
            shape,
            layers,
        })
    }

    fn embed(&self, batch: &PackedBatch) -> Vec<f32> {
        let mut hidden = sum_embeddings(
            batch,
            self.config.encoder.hidden_size,
            self.config.pad_token_id + 1,
            &self.word_embeddings,
            &self.position_embeddings,
            None,
        );
        self.embedding_norm.forward(&mut hidden);
        hidden
    }
}

/// The bias table for sequences up to `span` tokens from the learnt `[bucket, head]` weights.
fn position_bias(weights: &[f32], heads: usize, span: usize) -> RelativePositionBias {
    let buckets = weights.len() / heads;
    RelativePositionBias::new(heads, span, |head, offset| {
        weights[relative_position_bucket(offset, buckets) * heads + head]
    })
}

/// T5's bidirectional bucketing of `query - key`, as `MPNetEncoder.relative_position_bucket`
/// computes it: half the buckets for keys after the query; within each half, exact buckets for
/// distances under a quarter of the buckets, then logarithmic ones up to [`MAX_DISTANCE`]. The
/// arithmetic is f32, as torch's, so boundaries fall where the reference puts them.
fn relative_position_bucket(query_minus_key: isize, num_buckets: usize) -> usize {
    let half = num_buckets / 2;
    let mut bucket = if query_minus_key < 0 { half } else { 0 };
    let distance = query_minus_key.unsigned_abs();
    let max_exact = half / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let exact = max_exact as f32;
        let scaled = (distance as f32 / exact).ln() / (MAX_DISTANCE / exact).ln()
            * (half - max_exact) as f32;
        bucket += (max_exact + scaled as usize).min(half - 1);
    }
    bucket
}

impl EncoderModel for MpnetModel {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn stack(&self) -> Option<Stack<'_>> {
        Some(Stack {
            embeddings: Embeddings {
                word: Rows::Table(&self.word_embeddings),
                scale: 1.0,
                positions: Some(AbsolutePositions {
                    table: &self.position_embeddings,
                    first: self.config.pad_token_id + 1,
                }),
                token_types: None,
                adapters: None,
                norm: Some(&self.embedding_norm),
            },
            layers: Layers::PostNorm {
                layers: &self.layers,
                shape: self.shape,
                positions: Positions::RelativeBias(&self.position_bias),
            },
        })
    }

    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let mut hidden = self.embed(batch);
        run_layers(
            &self.layers,
            &mut hidden,
            batch,
            self.shape,
            Positions::RelativeBias(&self.position_bias),
        );
        Ok(hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_the_reference_implementation() {
        // Every offset in -300..=300 where MPNetEncoder.relative_position_bucket (transformers
        // 5.23, torch) moves to a new bucket with 32 buckets, and the bucket it moves to.
        let transitions: [(isize, usize); 31] = [
            (-300, 31),
            (-90, 30),
            (-63, 29),
            (-45, 28),
            (-31, 27),
            (-22, 26),
            (-15, 25),
            (-11, 24),
            (-7, 23),
            (-6, 22),
            (-5, 21),
            (-4, 20),
            (-3, 19),
            (-2, 18),
            (-1, 17),
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 4),
            (5, 5),
            (6, 6),
            (7, 7),
            (8, 8),
            (12, 9),
            (16, 10),
            (23, 11),
            (32, 12),
            (46, 13),
            (64, 14),
            (91, 15),
        ];
        let mut expected = Vec::new();
        for offset in -300isize..=300 {
            let bucket = transitions
                .iter()
                .rev()
                .find(|(start, _)| *start <= offset)
                .map(|(_, bucket)| *bucket)
                .unwrap();
            expected.push((offset, bucket));
        }
        // Between transitions the bucket holds, so every offset is checked.
        let cases = expected;
        for (offset, bucket) in cases {
            assert_eq!(
                relative_position_bucket(offset, 32),
                bucket,
                "offset {offset}"
            );
        }
    }
}
