//! BERT encoders: all-MiniLM-L6-v2, bge-*, e5-*, and every other `model_type: "bert"` folder.

use super::{EncoderModel, ModelConfig};
use crate::kernels::Activation;
use crate::layers::{bidirectional_attention, AttentionShape, LayerNorm, Linear};
use crate::weights::TensorStore;
use crate::{PackedBatch, Result, RuntimeError};
use serde::Deserialize;

/// The fields of a BERT `config.json` that shape the forward pass.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_position_embedding_type() -> String {
    "absolute".into()
}

struct Embeddings {
    word: Vec<f32>,
    position: Vec<f32>,
    /// Row 0 of the token-type table: single-segment inputs all use type 0.
    token_type_zero: Vec<f32>,
    norm: LayerNorm,
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

pub struct BertModel {
    config: Config,
    activation: Activation,
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

/// Weight-name prefixes under which BERT checkpoints are found in the wild.
const PREFIXES: &[&str] = &["", "bert.", "model."];

impl BertModel {
    pub fn load(model_config: &ModelConfig, store: &mut TensorStore<'_>) -> Result<Self> {
        let config: Config = model_config.parse()?;
        let config_error = |message: String| RuntimeError::Config {
            path: model_config.path.clone(),
            message,
        };
        let activation = Activation::from_config_name(&config.hidden_act).ok_or_else(|| {
            config_error(format!(
                "field `hidden_act`: unsupported activation `{}`",
                config.hidden_act
            ))
        })?;
        if config.position_embedding_type != "absolute" {
            return Err(config_error(format!(
                "field `position_embedding_type`: `{}` is not supported (only `absolute`)",
                config.position_embedding_type
            )));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(config_error(
                "field `num_attention_heads` must divide `hidden_size`".into(),
            ));
        }
        store.select_prefix("embeddings.word_embeddings.weight", PREFIXES)?;
        let h = config.hidden_size;
        let eps = config.layer_norm_eps as f32;
        let token_types = store.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let embeddings = Embeddings {
            word: store.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: store.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type_zero: token_types[..h].to_vec(),
            norm: LayerNorm::load(store, "embeddings.LayerNorm", h, eps)?,
        };
        let layers = (0..config.num_hidden_layers)
            .map(|index| load_layer(store, &config, index))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            config,
            activation,
            embeddings,
            layers,
        })
    }

    fn embed(&self, batch: &PackedBatch) -> Vec<f32> {
        let h = self.config.hidden_size;
        let mut hidden = vec![0.0f32; batch.num_tokens() * h];
        for range in batch.ranges() {
            for (position, token) in range.enumerate() {
                let id = batch.token_ids[token] as usize;
                let word = &self.embeddings.word[id * h..(id + 1) * h];
                let pos = &self.embeddings.position[position * h..(position + 1) * h];
                let out = &mut hidden[token * h..(token + 1) * h];
                for (((o, w), p), t) in out
                    .iter_mut()
                    .zip(word)
                    .zip(pos)
                    .zip(&self.embeddings.token_type_zero)
                {
                    *o = w + p + t;
                }
            }
        }
        self.embeddings.norm.forward(&mut hidden);
        hidden
    }
}

fn load_layer(store: &TensorStore<'_>, config: &Config, index: usize) -> Result<Layer> {
    let h = config.hidden_size;
    let eps = config.layer_norm_eps as f32;
    let prefix = format!("encoder.layer.{index}");
    let attention = |name: &str| {
        Linear::load(
            store,
            &format!("{prefix}.attention.self.{name}"),
            h,
            h,
            true,
        )
    };
    Ok(Layer {
        qkv: Linear::concat(&[attention("query")?, attention("key")?, attention("value")?]),
        attention_out: Linear::load(
            store,
            &format!("{prefix}.attention.output.dense"),
            h,
            h,
            true,
        )?,
        attention_norm: LayerNorm::load(
            store,
            &format!("{prefix}.attention.output.LayerNorm"),
            h,
            eps,
        )?,
        intermediate: Linear::load(
            store,
            &format!("{prefix}.intermediate.dense"),
            h,
            config.intermediate_size,
            true,
        )?,
        output: Linear::load(
            store,
            &format!("{prefix}.output.dense"),
            config.intermediate_size,
            h,
            true,
        )?,
        output_norm: LayerNorm::load(store, &format!("{prefix}.output.LayerNorm"), h, eps)?,
    })
}

impl EncoderModel for BertModel {
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
        let tokens = batch.num_tokens();
        let shape = AttentionShape {
            num_heads: self.config.num_attention_heads,
            head_dim: self.config.hidden_size / self.config.num_attention_heads,
        };
        let mut hidden = self.embed(batch);
        // Scratch buffers live across layers: no allocation inside the layer loop after the first.
        let (mut qkv, mut context, mut projected, mut intermediate) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let h = self.config.hidden_size;
        for layer in &self.layers {
            layer.qkv.forward(&hidden, tokens, &mut qkv);
            bidirectional_attention(&qkv, batch, shape, &mut context);
            layer
                .attention_out
                .forward_then(&context, tokens, &mut projected, |block, rows| {
                    let residual = &hidden[rows.start * h..rows.end * h];
                    layer.attention_norm.forward_residual(block, residual);
                });
            std::mem::swap(&mut hidden, &mut projected);

            layer
                .intermediate
                .forward_then(&hidden, tokens, &mut intermediate, |block, _| {
                    self.activation.apply(block)
                });
            layer
                .output
                .forward_then(&intermediate, tokens, &mut projected, |block, rows| {
                    let residual = &hidden[rows.start * h..rows.end * h];
                    layer.output_norm.forward_residual(block, residual);
                });
            std::mem::swap(&mut hidden, &mut projected);
        }
        Ok(hidden)
    }
}
