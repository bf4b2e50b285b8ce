//! ModernBERT encoders: Alibaba-NLP/gte-modernbert-base, answerdotai/ModernBERT-*, and every
//! `model_type: "modernbert"` folder.
//!
//! Read from Hugging Face's `modeling_modernbert.py`: token embeddings + layer norm, then
//! pre-norm layers (no norm before the first layer's attention): fused QKV with rotary positions,
//! attention that is global in some layers and local in the others (each token sees the
//! `local_attention / 2` tokens on either side), a GeGLU feed-forward block (`Wi` holds the
//! activated half first), and a final layer norm. Global and local layers rotate with their own
//! θ. Norms and dense layers carry biases only where the config says so.

use super::pre_norm::{AttentionKind, LayerNorms, Norm, PreNormLayer, PreNormStack, Projections};
use super::stack::Stack;
use super::{EncoderModel, ModelConfig, ModelDims};
use crate::kernels::Activation;
use crate::layers::{AttentionShape, LayerNorm, Linear, Rotary, Visibility};
use crate::weights::{Table, Weights};
use crate::{PackedBatch, Result, RuntimeError};
use serde::Deserialize;
use std::collections::HashMap;

const SCOPES: &[&str] = &["", "model"];
/// `ModernBertConfig.default_theta`.
const DEFAULT_GLOBAL_THETA: f64 = 160_000.0;
const DEFAULT_LOCAL_THETA: f64 = 10_000.0;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_activation")]
    pub hidden_activation: String,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// The full width of a local layer's window.
    #[serde(default = "default_local_attention")]
    pub local_attention: usize,
    /// `full_attention` or `sliding_attention` per layer (transformers ≥ 5); older configs give
    /// `global_attn_every_n_layers` instead.
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_global_every")]
    pub global_attn_every_n_layers: usize,
    /// transformers ≥ 5: θ per layer type.
    pub rope_parameters: Option<HashMap<String, RopeParameters>>,
    /// Older configs: θ of global and local layers.
    pub global_rope_theta: Option<f64>,
    pub local_rope_theta: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: Option<f64>,
    pub rope_type: Option<String>,
}

fn default_activation() -> String {
    "gelu".into()
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_local_attention() -> usize {
    128
}
fn default_global_every() -> usize {
    3
}

impl Config {
    /// Whether layer `index` attends globally.
    fn is_global(&self, index: usize) -> bool {
        match &self.layer_types {
            Some(types) => types.get(index).map(String::as_str) != Some("sliding_attention"),
            None => index.is_multiple_of(self.global_attn_every_n_layers.max(1)),
        }
    }

    fn theta(&self, layer_type: &str, older_key: Option<f64>, default: f64) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|by_type| by_type.get(layer_type))
            .and_then(|rope| rope.rope_theta)
            .or(older_key)
            .unwrap_or(default)
    }
}

/// [`PreNormStack::attention`]'s kinds.
const GLOBAL: usize = 0;
const LOCAL: usize = 1;

pub struct ModernBertModel {
    dims: ModelDims,
    word_embeddings: Table,
    embedding_norm: LayerNorm,
    layers: PreNormStack,
}

impl ModernBertModel {
    pub fn load(model_config: &ModelConfig, checkpoint: &Weights<'_>) -> Result<Self> {
        let config: Config = model_config.parse()?;
        let error = |message: String| RuntimeError::Config {
            path: model_config.path.clone(),
            message,
        };
        let activation =
            Activation::from_config_name(&config.hidden_activation).ok_or_else(|| {
                error(format!(
                    "field `hidden_activation`: unsupported activation `{}`",
                    config.hidden_activation
                ))
            })?;
        let heads = config.num_attention_heads;
        if heads == 0 || !config.hidden_size.is_multiple_of(heads) {
            return Err(error(
                "field `num_attention_heads` must divide `hidden_size`".into(),
            ));
        }
        if let Some(kind) = config
            .rope_parameters
            .iter()
            .flat_map(HashMap::values)
            .filter_map(|rope| rope.rope_type.as_deref())
            .find(|kind| *kind != "default")
        {
            return Err(error(format!(
                "field `rope_parameters`: `{kind}` scaling is not supported"
            )));
        }
        let shape = AttentionShape {
            num_heads: heads,
            num_kv_heads: heads,
            head_dim: config.hidden_size / heads,
        };
        let weights = checkpoint.first_with(SCOPES, "embeddings.tok_embeddings.weight")?;
        let h = config.hidden_size;
        let eps = config.norm_eps as f32;
        let norm = |weights: &Weights<'_>| {
            if config.norm_bias {
                LayerNorm::load(weights, h, eps)
            } else {
                LayerNorm::load_without_bias(weights, h, eps)
            }
        };
        let width = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                let layer = weights.pp("layers").pp(index);
                let linear = |name: &str, inputs: usize, outputs: usize, bias: bool| {
                    Linear::load(&layer.pp(name), inputs, outputs, bias)
                };
                Ok(PreNormLayer {
                    projections: Projections {
                        qkv: linear("attn.Wqkv", h, 3 * h, config.attention_bias)?,
                        attention_out: linear("attn.Wo", h, h, config.attention_bias)?,
                        gate_up: linear("mlp.Wi", h, 2 * width, config.mlp_bias)?,
                        down: linear("mlp.Wo", width, h, config.mlp_bias)?,
                    },
                    norms: LayerNorms {
                        attention: (index > 0)
                            .then(|| norm(&layer.pp("attn_norm")).map(Norm::Layer))
                            .transpose()?,
                        heads: None,
                        attention_out: None,
                        feed_forward: Norm::Layer(norm(&layer.pp("mlp_norm"))?),
                        feed_forward_out: None,
                    },
                    attention_kind: if config.is_global(index) {
                        GLOBAL
                    } else {
                        LOCAL
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let global_theta = config.theta(
            "full_attention",
            config.global_rope_theta,
            DEFAULT_GLOBAL_THETA,
        );
        let local_theta = config.theta(
            "sliding_attention",
            config.local_rope_theta,
            DEFAULT_LOCAL_THETA,
        );
        // In the order of GLOBAL and LOCAL.
        let attention = vec![
            AttentionKind {
                rotary: Rotary::new(shape.head_dim, global_theta as f32),
                visibility: Visibility::All,
            },
            AttentionKind {
                rotary: Rotary::new(shape.head_dim, local_theta as f32),
                visibility: Visibility::Within(config.local_attention / 2),
            },
        ];
        Ok(ModernBertModel {
            dims: ModelDims {
                hidden_size: config.hidden_size,
                max_positions: config.max_position_embeddings,
                vocab_size: config.vocab_size,
            },
            word_embeddings: weights
                .table("embeddings.tok_embeddings.weight", [config.vocab_size, h])?,
            embedding_norm: norm(&weights.pp("embeddings.norm"))?,
            layers: PreNormStack {
                layers,
                shape,
                attention,
                intermediate: width,
                activation,
                query_scale: None,
                final_norm: Norm::Layer(norm(&weights.pp("final_norm"))?),
            },
        })
    }
}

impl EncoderModel for ModernBertModel {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn stack(&self) -> Option<Stack<'_>> {
        Some(Stack::pre_norm(
            &self.word_embeddings,
            1.0,
            Some(&self.embedding_norm),
            &self.layers,
        ))
    }

    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let mut hidden = self.word_embeddings.gather(&batch.token_ids);
        self.embedding_norm.forward(&mut hidden);
        self.layers.forward(&mut hidden, batch);
        Ok(hidden)
    }
}
