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

use super::{EncoderModel, ModelConfig};
use crate::kernels::{add_residual, gated_linear_unit, Activation};
use crate::layers::{
    embedding_rows, normalize_heads, self_attention, AttentionShape, Linear, RmsNorm, Rotary,
    Visibility,
};
use crate::weights::TensorStore;
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

const PREFIXES: &[&str] = &["", "model."];

struct Layer {
    sliding: bool,
    input_norm: RmsNorm,
    qkv: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attention_out: Linear,
    post_attention_norm: RmsNorm,
    pre_feedforward_norm: RmsNorm,
    /// Gate and up projections side by side: `[tokens, 2 · intermediate]`.
    gate_up: Linear,
    down: Linear,
    post_feedforward_norm: RmsNorm,
}

pub struct Gemma3Model {
    config: Config,
    shape: AttentionShape,
    /// What the attention kernel's `head_dim^-½` must be multiplied by to give
    /// `query_pre_attn_scalar^-½`; applied to the queries.
    query_scale: Option<f32>,
    full: (Rotary, Visibility),
    sliding: (Rotary, Visibility),
    embed_tokens: Vec<f32>,
    embed_scale: f32,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
}

impl Gemma3Model {
    pub fn load(model_config: &ModelConfig, store: &mut TensorStore<'_>) -> Result<Self> {
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
        store.select_prefix("embed_tokens.weight", PREFIXES)?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| load_layer(store, &config, shape, index))
            .collect::<Result<Vec<_>>>()?;
        let query_scale = ((config.query_pre_attn_scalar - config.head_dim as f64).abs() > 1e-9)
            .then(|| ((config.head_dim as f64) / config.query_pre_attn_scalar).sqrt() as f32);
        Ok(Gemma3Model {
            embed_tokens: store.get(
                "embed_tokens.weight",
                &[config.vocab_size, config.hidden_size],
            )?,
            // Hugging Face multiplies by √hidden cast to the weights' type (f32 here).
            embed_scale: (config.hidden_size as f32).sqrt(),
            final_norm: gemma_norm(store, "norm", config.hidden_size, config.rms_norm_eps)?,
            full: (
                Rotary::new(shape.head_dim, full_theta as f32),
                Visibility::All,
            ),
            // Hugging Face's bidirectional Gemma 3 halves the window (`sliding_window // 2 + 1`,
            // exclusive, in `Gemma3TextConfig`): a token sees keys up to `window / 2` positions
            // away on either side.
            sliding: (
                Rotary::new(shape.head_dim, sliding_theta as f32),
                Visibility::Within(window / 2),
            ),
            query_scale,
            shape,
            layers,
            config,
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
fn gemma_norm(store: &TensorStore<'_>, name: &str, size: usize, eps: f64) -> Result<RmsNorm> {
    let weight = store.get(&format!("{name}.weight"), &[size])?;
    Ok(RmsNorm::new(
        weight.into_iter().map(|w| 1.0 + w).collect(),
        eps as f32,
    ))
}

fn load_layer(
    store: &TensorStore<'_>,
    config: &Config,
    shape: AttentionShape,
    index: usize,
) -> Result<Layer> {
    let name = |part: &str| format!("layers.{index}.{part}");
    let h = config.hidden_size;
    let (q_width, kv_width) = (shape.hidden(), shape.num_kv_heads * shape.head_dim);
    let eps = config.rms_norm_eps;
    let norm = |part: &str, size| gemma_norm(store, &name(part), size, eps);
    Ok(Layer {
        sliding: config.layer_types[index] == "sliding_attention",
        input_norm: norm("input_layernorm", h)?,
        qkv: Linear::load_stacked(
            store,
            &[
                (&name("self_attn.q_proj"), q_width),
                (&name("self_attn.k_proj"), kv_width),
                (&name("self_attn.v_proj"), kv_width),
            ],
            h,
            false,
        )?,
        q_norm: norm("self_attn.q_norm", shape.head_dim)?,
        k_norm: norm("self_attn.k_norm", shape.head_dim)?,
        attention_out: Linear::load(store, &name("self_attn.o_proj"), q_width, h, false)?,
        post_attention_norm: norm("post_attention_layernorm", h)?,
        pre_feedforward_norm: norm("pre_feedforward_layernorm", h)?,
        gate_up: Linear::load_stacked(
            store,
            &[
                (&name("mlp.gate_proj"), config.intermediate_size),
                (&name("mlp.up_proj"), config.intermediate_size),
            ],
            h,
            false,
        )?,
        down: Linear::load(
            store,
            &name("mlp.down_proj"),
            config.intermediate_size,
            h,
            false,
        )?,
        post_feedforward_norm: norm("post_feedforward_layernorm", h)?,
    })
}

impl Gemma3Model {
    /// Multiplies every query head by [`Gemma3Model::query_scale`], where the config asks for
    /// a score scale other than the attention kernel's.
    fn scale_queries(&self, qkv: &mut [f32]) {
        let Some(scale) = self.query_scale else {
            return;
        };
        let queries = self.shape.num_heads * self.shape.head_dim;
        qkv.par_chunks_mut(self.shape.qkv_width())
            .for_each(|token| token[..queries].iter_mut().for_each(|x| *x *= scale));
    }
}

impl EncoderModel for Gemma3Model {
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn forward(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        batch.validate(self.max_positions(), self.vocab_size())?;
        let h = self.config.hidden_size;
        let mut hidden = embedding_rows(&self.embed_tokens, h, &batch.token_ids);
        hidden.par_iter_mut().for_each(|x| *x *= self.embed_scale);
        let tokens = batch.num_tokens();
        let (mut normed, mut qkv, mut context, mut projected, mut gate_up, mut activated) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for layer in &self.layers {
            let (rotary, visibility) = if layer.sliding {
                &self.sliding
            } else {
                &self.full
            };
            normed.clone_from(&hidden);
            layer.input_norm.forward(&mut normed);
            layer.qkv.forward(&normed, tokens, &mut qkv);
            normalize_heads(&mut qkv, self.shape, &layer.q_norm, &layer.k_norm);
            self.scale_queries(&mut qkv);
            rotary.apply(&mut qkv, batch, self.shape);
            self_attention(&qkv, batch, self.shape, *visibility, None, &mut context);
            layer
                .attention_out
                .forward(&context, tokens, &mut projected);
            layer.post_attention_norm.forward(&mut projected);
            add_residual(&mut hidden, &projected);

            normed.clone_from(&hidden);
            layer.pre_feedforward_norm.forward(&mut normed);
            layer.gate_up.forward(&normed, tokens, &mut gate_up);
            gated_linear_unit(
                &gate_up,
                self.config.intermediate_size,
                Activation::GeluTanh,
                &mut activated,
            );
            layer.down.forward(&activated, tokens, &mut projected);
            layer.post_feedforward_norm.forward(&mut projected);
            add_residual(&mut hidden, &projected);
        }
        self.final_norm.forward(&mut hidden);
        Ok(hidden)
    }
}
