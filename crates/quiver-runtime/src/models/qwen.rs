//! Qwen2 and Qwen3 decoder embedders: Alibaba-NLP/gte-Qwen2-*-instruct, Qodo/Qodo-Embed-1-*,
//! Qwen/Qwen3-Embedding-*, and every `model_type: "qwen2"` or `"qwen3"` folder.
//!
//! Read from Hugging Face's `modeling_qwen2.py`: pre-norm layers (RMSNorm), grouped-query
//! attention with biased Q/K/V and rotary positions, a SwiGLU feed-forward block, a final
//! RMSNorm. Attention is causal unless the config says `"is_causal": false` (gte-Qwen2 trains
//! its embedders bidirectionally). Pooling (last token) is the sentence-transformers config's.
//!
//! Qwen3 (`modeling_qwen3.py`) is the same network with three changes: an RMSNorm over each
//! query and key head before the rotation, Q/K/V/O biases only when `attention_bias` says so,
//! and a `head_dim` of its own (heads × head_dim need not equal the hidden width).

use super::pre_norm::{
    AttentionBiases, AttentionKind, LayerNorms, Norm, PreNormLayer, PreNormStack, Projections,
};
use super::stack::Stack;
use super::{EncoderModel, ModelConfig, ModelDims};
use crate::kernels::Activation;
use crate::layers::{AttentionShape, RmsNorm, Rotary, Visibility};
use crate::weights::{Table, Weights};
use crate::{PackedBatch, Result, RuntimeError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Older configs put θ here; newer ones under `rope_parameters`.
    pub rope_theta: Option<f64>,
    pub rope_parameters: Option<RopeParameters>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_is_causal")]
    pub is_causal: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Qwen3: the width of a head, when not `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Qwen3: biases on Q, K, V and O (Qwen2 always has Q/K/V biases and no O bias).
    pub attention_bias: Option<bool>,
}

/// Which of the two layer variants a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Qwen2,
    Qwen3,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: Option<f64>,
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_hidden_act() -> String {
    "silu".into()
}
fn default_is_causal() -> bool {
    true
}
fn default_rope_type() -> String {
    "default".into()
}

const DEFAULT_ROPE_THETA: f64 = 10_000.0;
const SCOPES: &[&str] = &["", "model"];

pub struct QwenModel {
    dims: ModelDims,
    embed_tokens: Table,
    layers: PreNormStack,
}

impl QwenModel {
    /// The view of the checkpoint the decoder sits under (a causal LM's `lm_head` sits beside
    /// it).
    pub fn weights<'a>(checkpoint: &Weights<'a>) -> Result<Weights<'a>> {
        checkpoint.first_with(SCOPES, "embed_tokens.weight")
    }

    pub fn load(model_config: &ModelConfig, checkpoint: &Weights<'_>) -> Result<Self> {
        let config: Config = model_config.parse()?;
        let variant = match model_config.model_type.as_str() {
            "qwen3" => Variant::Qwen3,
            _ => Variant::Qwen2,
        };
        let config_error = |message: String| RuntimeError::Config {
            path: model_config.path.clone(),
            message,
        };
        if config.hidden_act != "silu" {
            return Err(config_error(format!(
                "field `hidden_act`: `{}` is not supported for qwen2 (only `silu`)",
                config.hidden_act
            )));
        }
        if config.use_sliding_window {
            return Err(config_error(
                "field `use_sliding_window`: sliding-window attention is not supported".into(),
            ));
        }
        let rope_type = config
            .rope_parameters
            .as_ref()
            .map_or("default", |p| p.rope_type.as_str());
        if rope_type != "default" {
            return Err(config_error(format!(
                "field `rope_parameters.rope_type`: `{rope_type}` scaling is not supported"
            )));
        }
        let heads = config.num_attention_heads;
        let kv_heads = config.num_key_value_heads.unwrap_or(heads);
        if heads == 0
            || kv_heads == 0
            || (config.head_dim.is_none() && !config.hidden_size.is_multiple_of(heads))
            || !heads.is_multiple_of(kv_heads)
        {
            return Err(config_error(
                "fields `num_attention_heads` / `num_key_value_heads` must divide `hidden_size` / each other"
                    .into(),
            ));
        }
        let shape = AttentionShape {
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: config.head_dim.unwrap_or(config.hidden_size / heads),
        };
        let theta = config
            .rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or(config.rope_theta)
            .unwrap_or(DEFAULT_ROPE_THETA);
        let weights = Self::weights(checkpoint)?;
        let (h, eps) = (config.hidden_size, config.rms_norm_eps as f32);
        let biases = match variant {
            Variant::Qwen2 => AttentionBiases {
                qkv: true,
                out: false,
            },
            Variant::Qwen3 => {
                let bias = config.attention_bias.unwrap_or(false);
                AttentionBiases {
                    qkv: bias,
                    out: bias,
                }
            }
        };
        let norm = |weights: &Weights<'_>, size| RmsNorm::load(weights, size, eps);
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                let layer = weights.pp("layers").pp(index);
                let heads = match variant {
                    Variant::Qwen2 => None,
                    Variant::Qwen3 => Some((
                        norm(&layer.pp("self_attn.q_norm"), shape.head_dim)?,
                        norm(&layer.pp("self_attn.k_norm"), shape.head_dim)?,
                    )),
                };
                Ok(PreNormLayer {
                    projections: Projections::load_llama(
                        &layer,
                        h,
                        shape,
                        config.intermediate_size,
                        biases,
                    )?,
                    norms: LayerNorms {
                        attention: Some(Norm::Rms(norm(&layer.pp("input_layernorm"), h)?)),
                        heads,
                        attention_out: None,
                        feed_forward: Norm::Rms(norm(&layer.pp("post_attention_layernorm"), h)?),
                        feed_forward_out: None,
                    },
                    attention_kind: 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let visibility = if config.is_causal {
            Visibility::Earlier
        } else {
            Visibility::All
        };
        Ok(QwenModel {
            dims: ModelDims {
                hidden_size: config.hidden_size,
                max_positions: config.max_position_embeddings,
                vocab_size: config.vocab_size,
            },
            embed_tokens: weights.table("embed_tokens.weight", [config.vocab_size, h])?,
            layers: PreNormStack {
                layers,
                shape,
                attention: vec![AttentionKind {
                    rotary: Rotary::new(shape.head_dim, theta as f32),
                    visibility,
                }],
                intermediate: config.intermediate_size,
                activation: Activation::Silu,
                query_scale: None,
                final_norm: Norm::Rms(norm(&weights.pp("norm"), h)?),
            },
        })
    }
}

impl EncoderModel for QwenModel {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn stack(&self) -> Option<Stack<'_>> {
        Some(Stack::pre_norm(&self.embed_tokens, 1.0, None, &self.layers))
    }

    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let mut hidden = self.embed_tokens.gather(&batch.token_ids);
        self.layers.forward(&mut hidden, batch);
        Ok(hidden)
    }
}
