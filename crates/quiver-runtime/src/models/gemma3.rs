//! The Gemma 3 text encoder: google/embeddinggemma-300m, and every `model_type: "gemma3_text"`
//! folder that attends bidirectionally.
//!
//! Read from Hugging Face's `modeling_gemma3.py`: embeddings scaled by √hidden; per layer, an
//! RMSNorm before and after attention and before and after the feed-forward block (Gemma's
//! RMSNorm multiplies by `1 + weight`); multi-query attention with an RMSNorm over each query
//! and key head before the rotation and scores scaled by `query_pre_attn_scalar^-½`; layers
//! named `sliding_attention` in `layer_types` see only tokens up to `sliding_window / 2`
//! positions away on either side and rotate with
//! `rope_local_base_freq`, the others see everything and rotate with `rope_theta`; a
//! GELU-tanh gated feed-forward block; a final RMSNorm. Pooling and the Dense modules after it
//! are the sentence-transformers config's.

use super::pre_norm::{
    AttentionBiases, AttentionKind, LayerNorms, Norm, PreNormLayer, PreNormStack, Projections,
};
use super::stack::Stack;
use super::{EncoderModel, ModelConfig, ModelDims};
use crate::kernels::Activation;
use crate::layers::{AttentionShape, RmsNorm, Rotary, Visibility};
use crate::weights::{Table, Weights};
use crate::{PackedBatch, Result, RuntimeError};
use rayon::prelude::*;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_hidden_activation")]
    pub hidden_activation: String,
    pub query_pre_attn_scalar: f64,
    pub sliding_window: Option<usize>,
    /// `sliding_attention` or `full_attention`, one per layer.
    pub layer_types: Vec<String>,
    /// θ of the full-attention layers (older configs; newer ones use `rope_parameters`).
    pub rope_theta: Option<f64>,
    /// θ of the sliding-window layers (older configs).
    pub rope_local_base_freq: Option<f64>,
    pub rope_parameters: Option<RopeParameters>,
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub use_bidirectional_attention: bool,
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub attention_bias: bool,
}

/// Newer configs: θ per attention type.
#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    pub full_attention: Option<RopeOfLayer>,
    pub sliding_attention: Option<RopeOfLayer>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeOfLayer {
    pub rope_theta: Option<f64>,
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_hidden_activation() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_rope_type() -> String {
    "default".into()
}

const SCOPES: &[&str] = &["", "model"];

/// [`PreNormStack::attention`]'s kinds.
const FULL: usize = 0;
const SLIDING: usize = 1;

pub struct Gemma3Model {
    dims: ModelDims,
    embed_tokens: Table,
    embed_scale: f32,
    layers: PreNormStack,
}

impl Gemma3Model {
    pub fn load(model_config: &ModelConfig, checkpoint: &Weights<'_>) -> Result<Self> {
        let config: Config = model_config.parse()?;
        if !config.use_bidirectional_attention {
            return refuse(
                model_config,
                "field `use_bidirectional_attention`: only bidirectional Gemma 3 encoders \
                 (EmbeddingGemma) are supported, not causal ones"
                    .into(),
            );
        }
        if Activation::from_config_name(&config.hidden_activation) != Some(Activation::GeluTanh) {
            return refuse(
                model_config,
                format!(
                    "field `hidden_activation`: `{}` is not supported for gemma3 (only \
                 `gelu_pytorch_tanh`)",
                    config.hidden_activation
                ),
            );
        }
        if config.attn_logit_softcapping.is_some() {
            return refuse(
                model_config,
                "field `attn_logit_softcapping`: soft-capped attention scores are not supported"
                    .into(),
            );
        }
        if config.rope_scaling.as_ref().is_some_and(|s| !s.is_null()) {
            return refuse(
                model_config,
                "field `rope_scaling`: scaled rotary positions are not supported".into(),
            );
        }
        if config.attention_bias {
            return refuse(
                model_config,
                "field `attention_bias`: attention biases are not supported".into(),
            );
        }
        if config.layer_types.len() != config.num_hidden_layers {
            return refuse(
                model_config,
                format!(
                    "field `layer_types` names {} layers; `num_hidden_layers` is {}",
                    config.layer_types.len(),
                    config.num_hidden_layers
                ),
            );
        }
        if let Some(other) = config
            .layer_types
            .iter()
            .find(|t| *t != "sliding_attention" && *t != "full_attention")
        {
            return refuse(model_config, format!(
                "field `layer_types`: `{other}` is not supported (sliding_attention, full_attention)"
            ));
        }
        let (heads, kv_heads) = (config.num_attention_heads, config.num_key_value_heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return refuse(
                model_config,
                "fields `num_attention_heads` / `num_key_value_heads`: the first must be a \
                 multiple of the second"
                    .into(),
            );
        }
        let theta = |kind: &str, layer: Option<&RopeOfLayer>, old: Option<f64>, default| {
            if let Some(layer) = layer {
                if layer.rope_type != "default" {
                    return refuse(
                        model_config,
                        format!(
                            "field `rope_parameters.{kind}.rope_type`: `{}` is not supported",
                            layer.rope_type
                        ),
                    );
                }
            }
            Ok(layer.and_then(|l| l.rope_theta).or(old).unwrap_or(default))
        };
        let parameters = config.rope_parameters.as_ref();
        let full_theta = theta(
            "full_attention",
            parameters.and_then(|p| p.full_attention.as_ref()),
            config.rope_theta,
            1_000_000.0,
        )?;
        let sliding_theta = theta(
            "sliding_attention",
            parameters.and_then(|p| p.sliding_attention.as_ref()),
            config.rope_local_base_freq,
            10_000.0,
        )?;
        let shape = AttentionShape {
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: config.head_dim,
        };
        let window = match config.sliding_window {
            Some(window) if window > 0 => window,
            _ if config.layer_types.iter().all(|t| t == "full_attention") => usize::MAX,
            _ => return refuse(model_config, "field `sliding_window` is missing".into()),
        };
        let weights = checkpoint.first_with(SCOPES, "embed_tokens.weight")?;
        let h = config.hidden_size;
        let norm = |weights: &Weights<'_>, size| {
            gemma_norm(weights, size, config.rms_norm_eps).map(Norm::Rms)
        };
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                let layer = weights.pp("layers").pp(index);
                let head_norm =
                    |name: &str| gemma_norm(&layer.pp(name), shape.head_dim, config.rms_norm_eps);
                Ok(PreNormLayer {
                    projections: Projections::load_llama(
                        &layer,
                        h,
                        shape,
                        config.intermediate_size,
                        AttentionBiases {
                            qkv: false,
                            out: false,
                        },
                    )?,
                    norms: LayerNorms {
                        attention: Some(norm(&layer.pp("input_layernorm"), h)?),
                        heads: Some((
                            head_norm("self_attn.q_norm")?,
                            head_norm("self_attn.k_norm")?,
                        )),
                        attention_out: Some(norm(&layer.pp("post_attention_layernorm"), h)?),
                        feed_forward: norm(&layer.pp("pre_feedforward_layernorm"), h)?,
                        feed_forward_out: Some(norm(&layer.pp("post_feedforward_layernorm"), h)?),
                    },
                    attention_kind: if config.layer_types[index] == "sliding_attention" {
                        SLIDING
                    } else {
                        FULL
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let query_scale = ((config.query_pre_attn_scalar - config.head_dim as f64).abs() > 1e-9)
            .then(|| ((config.head_dim as f64) / config.query_pre_attn_scalar).sqrt() as f32);
        Ok(Gemma3Model {
            dims: ModelDims {
                hidden_size: config.hidden_size,
                max_positions: config.max_position_embeddings,
                vocab_size: config.vocab_size,
            },
            embed_tokens: weights.table("embed_tokens.weight", [config.vocab_size, h])?,
            // Hugging Face multiplies by √hidden cast to the weights' type (f32 here).
            embed_scale: (h as f32).sqrt(),
            layers: PreNormStack {
                layers,
                shape,
                // In the order of FULL and SLIDING.
                attention: vec![
                    AttentionKind {
                        rotary: Rotary::new(shape.head_dim, full_theta as f32),
                        visibility: Visibility::All,
                    },
                    // Hugging Face's bidirectional Gemma 3 halves the window
                    // (`sliding_window // 2 + 1`, exclusive, in `Gemma3TextConfig`): a token
                    // sees keys up to `window / 2` positions away on either side.
                    AttentionKind {
                        rotary: Rotary::new(shape.head_dim, sliding_theta as f32),
                        visibility: Visibility::Within(window / 2),
                    },
                ],
                intermediate: config.intermediate_size,
                activation: Activation::GeluTanh,
                query_scale,
                final_norm: norm(&weights.pp("norm"), h)?,
            },
        })
    }
}

fn refuse<T>(config: &ModelConfig, message: String) -> Result<T> {
    Err(RuntimeError::Config {
        path: config.path.clone(),
        message,
    })
}

/// Gemma's RMSNorm: `x / rms(x) · (1 + weight)`, stored as an ordinary RMSNorm with
/// `1 + weight`.
fn gemma_norm(weights: &Weights<'_>, size: usize, eps: f64) -> Result<RmsNorm> {
    let weight = weights.get("weight", &[size])?;
    Ok(RmsNorm::new(
        weight.into_iter().map(|w| 1.0 + w).collect(),
        eps as f32,
    ))
}

impl EncoderModel for Gemma3Model {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn stack(&self) -> Option<Stack<'_>> {
        Some(Stack::pre_norm(
            &self.embed_tokens,
            self.embed_scale,
            None,
            &self.layers,
        ))
    }

    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let mut hidden = self.embed_tokens.gather(&batch.token_ids);
        hidden.par_iter_mut().for_each(|x| *x *= self.embed_scale);
        self.layers.forward(&mut hidden, batch);
        Ok(hidden)
    }
}
