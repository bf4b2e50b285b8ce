//! The encoder layer BERT, RoBERTa, MPNet and NomicBERT share: self-attention, then a
//! feed-forward block, each followed by residual + layer norm ("post-norm"). The architectures
//! differ in weight names, embeddings, position handling (absolute table, relative bias or
//! rotary) and feed-forward kind (dense or SwiGLU), which their own files choose.

use super::ModelConfig;
use crate::kernels::{gated_linear_unit, Activation};
use crate::layers::{
    self_attention, AttentionShape, EmbeddingLora, LayerNorm, Linear, RelativePositionBias, Rotary,
    Visibility,
};
use crate::weights::TensorStore;
use crate::{PackedBatch, Result, RuntimeError};
use serde::Deserialize;

/// The `config.json` fields every post-norm encoder shares (flattened into each architecture's
/// own `Config`).
#[derive(Debug, Clone, Deserialize)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    /// Absent: the architecture's own default.
    pub layer_norm_eps: Option<f64>,
}

fn default_hidden_act() -> String {
    "gelu".into()
}

/// What loading derives from an [`EncoderConfig`] once it is checked.
pub struct Checked {
    pub activation: Activation,
    pub shape: LayerShape,
}

impl EncoderConfig {
    /// Checks the activation, that positions remain after `first_position` (RoBERTa and MPNet
    /// start counting after the padding id), and that the heads divide the hidden width.
    pub fn check(
        &self,
        model_config: &ModelConfig,
        first_position: usize,
        default_layer_norm_eps: f64,
    ) -> Result<Checked> {
        let error = |message: String| RuntimeError::Config {
            path: model_config.path.clone(),
            message,
        };
        let activation = Activation::from_config_name(&self.hidden_act).ok_or_else(|| {
            error(format!(
                "field `hidden_act`: unsupported activation `{}`",
                self.hidden_act
            ))
        })?;
        if self.max_position_embeddings <= first_position {
            return Err(error(
                "field `max_position_embeddings` leaves no positions after `pad_token_id`".into(),
            ));
        }
        let heads = self.num_attention_heads;
        if heads == 0 || !self.hidden_size.is_multiple_of(heads) {
            return Err(error(
                "field `num_attention_heads` must divide `hidden_size`".into(),
            ));
        }
        let shape = LayerShape {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            layer_norm_eps: self.layer_norm_eps.unwrap_or(default_layer_norm_eps) as f32,
            attention: AttentionShape {
                num_heads: heads,
                num_kv_heads: heads,
                head_dim: self.hidden_size / heads,
            },
        };
        Ok(Checked { activation, shape })
    }
}

/// Where one layer's tensors sit, relative to the layer's prefix (`encoder.layer.{i}`).
pub struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_out: &'static str,
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
}

/// Sizes every layer of a model shares.
#[derive(Debug, Clone, Copy)]
pub struct LayerShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layer_norm_eps: f32,
    pub attention: AttentionShape,
}

pub struct PostNormLayer {
    pub qkv: Linear,
    pub attention_out: Linear,
    pub attention_norm: LayerNorm,
    pub feed_forward: FeedForward,
    pub output_norm: LayerNorm,
}

/// The block between the attention norm and the output norm.
pub enum FeedForward {
    /// `act(x W₁ + b₁) W₂ + b₂`: BERT, RoBERTa, MPNet.
    Dense {
        intermediate: Linear,
        output: Linear,
        activation: Activation,
    },
    /// `(silu(x W_gate) · x W_up) W_down`: NomicBERT. `gate_up` holds both projections side by
    /// side, `width` columns each.
    SwiGlu {
        gate_up: Linear,
        down: Linear,
        width: usize,
    },
}

/// How a layer learns where tokens are, beyond the embeddings.
#[derive(Clone, Copy)]
pub enum Positions<'a> {
    /// Absolute positions were added to the embeddings; the layer adds nothing.
    InEmbeddings,
    /// A bias on the attention scores by relative distance (MPNet).
    RelativeBias(&'a RelativePositionBias),
    /// Queries and keys rotated by position (NomicBERT).
    Rotary(&'a Rotary),
}

/// Buffers reused across layers, so the layer loop allocates nothing after the first layer.
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    intermediate: Vec<f32>,
    activated: Vec<f32>,
}

/// Absolute-position embeddings: word row + position row (from `first_position` within each
/// sequence) + an optional constant row (BERT's token type 0), one `hidden`-wide row per token.
pub fn sum_embeddings(
    batch: &PackedBatch,
    hidden: usize,
    first_position: usize,
    word: &[f32],
    position: &[f32],
    constant: Option<&[f32]>,
) -> Vec<f32> {
    let h = hidden;
    let mut out = vec![0.0f32; batch.num_tokens() * h];
    for range in batch.ranges() {
        for (offset, token) in range.enumerate() {
            let id = batch.token_ids[token] as usize;
            let at = first_position + offset;
            let row = &mut out[token * h..(token + 1) * h];
            let word_row = &word[id * h..(id + 1) * h];
            let position_row = &position[at * h..(at + 1) * h];
            for ((o, w), p) in row.iter_mut().zip(word_row).zip(position_row) {
                *o = w + p;
            }
            if let Some(constant) = constant {
                row.iter_mut().zip(constant).for_each(|(o, c)| *o += c);
            }
        }
    }
    out
}

/// Embeddings of encoders with rotary positions (NomicBERT, jina-embeddings-v3): word row +
/// token-type row 0 (+ each sequence's task update, when the model has adapters), then layer
/// norm. No position table: positions enter through the rotation.
pub struct TokenEmbeddings {
    pub word: Vec<f32>,
    pub token_type_zero: Vec<f32>,
    pub norm: LayerNorm,
    /// Task updates of the word and token-type tables.
    pub adapters: Option<(EmbeddingLora, EmbeddingLora)>,
}

impl TokenEmbeddings {
    pub fn forward(&self, batch: &PackedBatch) -> Vec<f32> {
        let h = self.token_type_zero.len();
        let mut hidden: Vec<f32> = batch
            .token_ids
            .iter()
            .flat_map(|&id| {
                let row = &self.word[id as usize * h..(id as usize + 1) * h];
                row.iter().zip(&self.token_type_zero).map(|(w, t)| w + t)
            })
            .collect();
        if let (Some((word, token_type)), Some(adapters)) = (&self.adapters, batch.token_adapters())
        {
            let rows = hidden.chunks_exact_mut(h).zip(&batch.token_ids);
            for ((row, &id), adapter) in rows.zip(adapters) {
                if let Some(task) = adapter {
                    word.add(row, id as usize, task);
                    token_type.add(row, 0, task);
                }
            }
        }
        self.norm.forward(&mut hidden);
        hidden
    }
}

/// Runs `layers` in order over `hidden` (`[tokens, hidden]`), in place, reusing one scratch.
pub fn run_layers(
    layers: &[PostNormLayer],
    hidden: &mut Vec<f32>,
    batch: &PackedBatch,
    shape: LayerShape,
    positions: Positions<'_>,
) {
    let mut scratch = Scratch::default();
    for layer in layers {
        layer.forward(hidden, batch, shape, positions, &mut scratch);
    }
}

impl PostNormLayer {
    /// Loads `encoder.layer.0` … `encoder.layer.{count - 1}`.
    pub fn load_all(
        store: &TensorStore<'_>,
        names: &LayerNames,
        shape: LayerShape,
        activation: Activation,
        count: usize,
    ) -> Result<Vec<Self>> {
        (0..count)
            .map(|index| {
                Self::load(
                    store,
                    &format!("encoder.layer.{index}"),
                    names,
                    shape,
                    activation,
                )
            })
            .collect()
    }

    /// A BERT-style layer: separate, biased Q/K/V and a dense feed-forward block.
    pub fn load(
        store: &TensorStore<'_>,
        prefix: &str,
        names: &LayerNames,
        shape: LayerShape,
        activation: Activation,
    ) -> Result<Self> {
        let (h, eps) = (shape.hidden, shape.layer_norm_eps);
        let name = |name: &str| format!("{prefix}.{name}");
        let linear = |part: &str, inputs: usize, outputs: usize| {
            Linear::load(store, &name(part), inputs, outputs, true)
        };
        let norm = |part: &str| LayerNorm::load(store, &name(part), h, eps);
        Ok(PostNormLayer {
            qkv: Linear::load_stacked(
                store,
                &[
                    (&name(names.query), h),
                    (&name(names.key), h),
                    (&name(names.value), h),
                ],
                h,
                true,
            )?,
            attention_out: linear(names.attention_out, h, h)?,
            attention_norm: norm(names.attention_norm)?,
            feed_forward: FeedForward::Dense {
                intermediate: linear(names.intermediate, h, shape.intermediate)?,
                output: Linear::load(store, &name(names.output), shape.intermediate, h, true)?,
                activation,
            },
            output_norm: norm(names.output_norm)?,
        })
    }

    /// Runs the layer over `hidden` (`[tokens, hidden]`), in place.
    fn forward(
        &self,
        hidden: &mut Vec<f32>,
        batch: &PackedBatch,
        shape: LayerShape,
        positions: Positions<'_>,
        scratch: &mut Scratch,
    ) {
        let tokens = batch.num_tokens();
        let h = shape.hidden;
        let adapters = batch.token_adapters();
        let adapters = adapters.as_deref();
        self.qkv
            .forward_adapted(hidden, tokens, &mut scratch.qkv, adapters);
        let bias = match positions {
            Positions::InEmbeddings => None,
            Positions::RelativeBias(bias) => Some(bias),
            Positions::Rotary(rotary) => {
                rotary.apply(&mut scratch.qkv, batch, shape.attention);
                None
            }
        };
        self_attention(
            &scratch.qkv,
            batch,
            shape.attention,
            Visibility::All,
            bias,
            &mut scratch.context,
        );
        self.attention_out.forward_adapted_then(
            &scratch.context,
            tokens,
            &mut scratch.projected,
            adapters,
            |block, rows| {
                let residual = &hidden[rows.start * h..rows.end * h];
                self.attention_norm.forward_residual(block, residual);
            },
        );
        std::mem::swap(hidden, &mut scratch.projected);
        let output = match &self.feed_forward {
            FeedForward::Dense {
                intermediate,
                output,
                activation,
            } => {
                intermediate.forward_adapted_then(
                    hidden,
                    tokens,
                    &mut scratch.activated,
                    adapters,
                    |block, _| activation.apply(block),
                );
                output
            }
            FeedForward::SwiGlu {
                gate_up,
                down,
                width,
            } => {
                gate_up.forward_adapted(hidden, tokens, &mut scratch.intermediate, adapters);
                gated_linear_unit(
                    &scratch.intermediate,
                    *width,
                    Activation::Silu,
                    &mut scratch.activated,
                );
                down
            }
        };
        output.forward_adapted_then(
            &scratch.activated,
            tokens,
            &mut scratch.projected,
            adapters,
            |block, rows| {
                let residual = &hidden[rows.start * h..rows.end * h];
                self.output_norm.forward_residual(block, residual);
            },
        );
        std::mem::swap(hidden, &mut scratch.projected);
    }
}
