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

use super::{EncoderModel, ModelConfig};
use crate::kernels::{add_residual, gated_linear_unit, Activation};
use crate::layers::{
    embedding_rows, normalize_heads, self_attention, AttentionShape, Linear, RmsNorm, Rotary,
    Visibility,
};
use crate::weights::TensorStore;
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
const PREFIXES: &[&str] = &["", "model."];

struct Layer {
    input_norm: RmsNorm,
    qkv: Linear,
    /// Qwen3: RMSNorm over each query head and each key head, before the rotation.
    head_norms: Option<(RmsNorm, RmsNorm)>,
    attention_out: Linear,
    post_attention_norm: RmsNorm,
    /// Gate and up projections side by side: `[tokens, 2 · intermediate]`.
    gate_up: Linear,
    down: Linear,
}

pub struct Qwen2Model {
    config: Config,
    shape: AttentionShape,
    visibility: Visibility,
    rotary: Rotary,
    embed_tokens: Vec<f32>,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
}

impl Qwen2Model {
    pub fn load(model_config: &ModelConfig, store: &mut TensorStore<'_>) -> Result<Self> {
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
        store.select_prefix("embed_tokens.weight", PREFIXES)?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| load_layer(store, &config, variant, shape, index))
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen2Model {
            embed_tokens: store.get(
                "embed_tokens.weight",
                &[config.vocab_size, config.hidden_size],
            )?,
            final_norm: RmsNorm::load(
                store,
                "norm",
                config.hidden_size,
                config.rms_norm_eps as f32,
            )?,
            rotary: Rotary::new(shape.head_dim, theta as f32),
            visibility: if config.is_causal {
                Visibility::Earlier
            } else {
                Visibility::All
            },
            shape,
            layers,
            config,
        })
    }
}

fn load_layer(
    store: &TensorStore<'_>,
    config: &Config,
    variant: Variant,
    shape: AttentionShape,
    index: usize,
) -> Result<Layer> {
    let prefix = format!("layers.{index}");
    let h = config.hidden_size;
    let (q_width, kv_width) = (shape.hidden(), shape.num_kv_heads * shape.head_dim);
    let eps = config.rms_norm_eps as f32;
    let (qkv_bias, out_bias) = match variant {
        Variant::Qwen2 => (true, false),
        Variant::Qwen3 => {
            let bias = config.attention_bias.unwrap_or(false);
            (bias, bias)
        }
    };
    let name = |part: &str| format!("{prefix}.{part}");
    let head_norms = match variant {
        Variant::Qwen2 => None,
        Variant::Qwen3 => Some((
            RmsNorm::load(store, &name("self_attn.q_norm"), shape.head_dim, eps)?,
            RmsNorm::load(store, &name("self_attn.k_norm"), shape.head_dim, eps)?,
        )),
    };
    Ok(Layer {
        input_norm: RmsNorm::load(store, &name("input_layernorm"), h, eps)?,
        qkv: Linear::load_stacked(
            store,
            &[
                (&name("self_attn.q_proj"), q_width),
                (&name("self_attn.k_proj"), kv_width),
                (&name("self_attn.v_proj"), kv_width),
            ],
            h,
            qkv_bias,
        )?,
        head_norms,
        attention_out: Linear::load(store, &name("self_attn.o_proj"), q_width, h, out_bias)?,
        post_attention_norm: RmsNorm::load(store, &name("post_attention_layernorm"), h, eps)?,
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
    })
}

impl EncoderModel for Qwen2Model {
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
            normed.clone_from(&hidden);
            layer.input_norm.forward(&mut normed);
            layer.qkv.forward(&normed, tokens, &mut qkv);
            if let Some((q_norm, k_norm)) = &layer.head_norms {
                normalize_heads(&mut qkv, self.shape, q_norm, k_norm);
            }
            self.rotary.apply(&mut qkv, batch, self.shape);
            self_attention(&qkv, batch, self.shape, self.visibility, None, &mut context);
            layer
                .attention_out
                .forward(&context, tokens, &mut projected);
            add_residual(&mut hidden, &projected);

            normed.clone_from(&hidden);
            layer.post_attention_norm.forward(&mut normed);
            layer.gate_up.forward(&normed, tokens, &mut gate_up);
            gated_linear_unit(
                &gate_up,
                self.config.intermediate_size,
                Activation::Silu,
                &mut activated,
            );
            layer.down.forward(&activated, tokens, &mut projected);
            add_residual(&mut hidden, &projected);
        }
        self.final_norm.forward(&mut hidden);
        Ok(hidden)
    }
}
