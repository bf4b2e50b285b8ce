//! The encoder layer BERT, RoBERTa, MPNet and NomicBERT share: self-attention, then a
//! feed-forward block, each followed by residual + layer norm ("post-norm"). The architectures
//! differ in weight names, embeddings, position handling (absolute table, relative bias or
//! rotary) and feed-forward kind (dense or SwiGLU), which their own files choose.

use super::{stack, ModelConfig};
use crate::kernels::{gated_linear_unit, Activation};
use crate::layers::{
    self_attention, AttentionProducts, AttentionShape, EmbeddingLora, LayerNorm, Linear,
    RelativePositionBias, Reused, Rotary, Visibility,
};
use crate::weights::{Table, Weights};
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

/// Where a checkpoint keeps its layers' tensors: one description per architecture and
/// checkpoint flavour (the hub's own code or the `transformers` port), read by one loader.
pub struct Layout {
    /// The list of layers (`encoder.layer`), each layer under `{layers}.{index}`.
    pub layers: &'static str,
    /// The norm after the embeddings.
    pub embedding_norm: &'static str,
    /// Within a layer: Q, K and V.
    pub qkv: QkvNames,
    pub attention_out: &'static str,
    pub attention_norm: &'static str,
    pub feed_forward: FeedForwardNames,
    pub output_norm: &'static str,
    /// Whether the dense layers have biases.
    pub bias: bool,
}

impl Layout {
    /// The names the `transformers` ports of NomicBERT and jina-embeddings-v3 share; they
    /// differ in the feed-forward block and its biases.
    pub const fn transformers_port(feed_forward: FeedForwardNames, bias: bool) -> Layout {
        Layout {
            layers: "layers",
            embedding_norm: "embeddings.LayerNorm",
            qkv: QkvNames::Split(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
            attention_out: "self_attn.o_proj",
            attention_norm: "post_attention_layernorm",
            feed_forward,
            output_norm: "post_mlp_layernorm",
            bias,
        }
    }
}

/// Q, K and V as one fused product or three.
pub enum QkvNames {
    Fused(&'static str),
    Split([&'static str; 3]),
}

/// The feed-forward block's dense layers.
pub enum FeedForwardNames {
    Dense {
        intermediate: &'static str,
        output: &'static str,
    },
    SwiGlu {
        gate: &'static str,
        up: &'static str,
        down: &'static str,
    },
}

/// How one dense layer loads: plainly, or with the task adapters a checkpoint stores beside it
/// (jina-embeddings-v3).
pub trait DenseLoader {
    fn dense(
        &self,
        weights: &Weights<'_>,
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> Result<Linear>;
}

/// Dense layers as they are stored: `weight` and `bias`.
pub struct PlainDense;

impl DenseLoader for PlainDense {
    fn dense(
        &self,
        weights: &Weights<'_>,
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> Result<Linear> {
        Linear::load(weights, inputs, outputs, bias)
    }
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

/// Buffers reused across layers and forward passes, so the layer loop allocates nothing after
/// the first layer of the first pass.
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
    word: &Table,
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
            word.row_into(id, row);
            let position_row = &position[at * h..(at + 1) * h];
            for (o, p) in row.iter_mut().zip(position_row) {
                *o += p;
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
    /// The device stack of a rotary encoder (NomicBERT, jina-embeddings-v3): these embeddings
    /// (word row, token-type row 0, task updates, then the norm), then `layers`.
    pub fn rotary_stack<'a>(
        &'a self,
        layers: &'a [PostNormLayer],
        shape: LayerShape,
        rotary: &'a Rotary,
    ) -> stack::Stack<'a> {
        stack::Stack {
            embeddings: stack::Embeddings {
                word: stack::Rows::Dense(&self.word),
                scale: 1.0,
                positions: None,
                token_types: Some(stack::TokenTypes::Constant(&self.token_type_zero)),
                adapters: self.adapters.as_ref(),
                norm: Some(&self.norm),
            },
            layers: stack::Layers::PostNorm {
                layers,
                shape,
                positions: Positions::Rotary(rotary),
            },
        }
    }

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
    static SCRATCH: Reused<Scratch> = Reused::new();
    SCRATCH.with(|scratch| {
        for layer in layers {
            layer.forward(hidden, batch, shape, positions, scratch);
        }
    });
}

impl PostNormLayer {
    /// Loads layers `0 … count - 1` of the model in `model`, laid out as `layout` says.
    pub fn load_all(
        model: &Weights<'_>,
        layout: &Layout,
        shape: LayerShape,
        activation: Activation,
        count: usize,
        loader: &dyn DenseLoader,
    ) -> Result<Vec<Self>> {
        let layers = model.pp(layout.layers);
        (0..count)
            .map(|index| Self::load(&layers.pp(index), layout, shape, activation, loader))
            .collect()
    }

    fn load(
        layer: &Weights<'_>,
        layout: &Layout,
        shape: LayerShape,
        activation: Activation,
        loader: &dyn DenseLoader,
    ) -> Result<Self> {
        let (h, eps, bias) = (shape.hidden, shape.layer_norm_eps, layout.bias);
        let dense = |name: &str, inputs: usize, outputs: usize| {
            loader.dense(&layer.pp(name), inputs, outputs, bias)
        };
        let norm = |name: &str| LayerNorm::load(&layer.pp(name), h, eps);
        let qkv = match layout.qkv {
            QkvNames::Fused(name) => dense(name, h, 3 * h)?,
            QkvNames::Split([q, k, v]) => {
                Linear::load_stacked(layer, &[(q, h), (k, h), (v, h)], h, bias)?
            }
        };
        let width = shape.intermediate;
        let feed_forward = match layout.feed_forward {
            FeedForwardNames::Dense {
                intermediate,
                output,
            } => FeedForward::Dense {
                intermediate: loader.dense(
                    &layer.pp(intermediate).for_outlier_inputs(),
                    h,
                    width,
                    bias,
                )?,
                output: dense(output, width, h)?,
                activation,
            },
            FeedForwardNames::SwiGlu { gate, up, down } => FeedForward::SwiGlu {
                gate_up: Linear::load_stacked(
                    &layer.for_outlier_inputs(),
                    &[(gate, width), (up, width)],
                    h,
                    bias,
                )?,
                down: dense(down, width, h)?,
                width,
            },
        };
        Ok(PostNormLayer {
            qkv,
            attention_out: dense(layout.attention_out, h, h)?,
            attention_norm: norm(layout.attention_norm)?,
            feed_forward,
            output_norm: norm(layout.output_norm)?,
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
            AttentionProducts::for_weights(self.qkv.format(), shape.attention.head_dim),
            &mut scratch.context,
        );
        add_and_norm(
            &self.attention_out,
            &scratch.context,
            &self.attention_norm,
            hidden,
            &mut scratch.projected,
            h,
            adapters,
        );
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
        add_and_norm(
            output,
            &scratch.activated,
            &self.output_norm,
            hidden,
            &mut scratch.projected,
            h,
            adapters,
        );
    }
}

/// `hidden = norm(hidden + linear(input))`, the norm run on each block of the product as it is
/// finished (while it is still in cache); `projected` is scratch.
fn add_and_norm(
    linear: &Linear,
    input: &[f32],
    norm: &LayerNorm,
    hidden: &mut Vec<f32>,
    projected: &mut Vec<f32>,
    width: usize,
    adapters: Option<&[Option<u16>]>,
) {
    let tokens = hidden.len() / width;
    linear.forward_adapted_then(input, tokens, projected, adapters, |block, rows| {
        let residual = &hidden[rows.start * width..rows.end * width];
        norm.forward_residual(block, residual);
    });
    std::mem::swap(hidden, projected);
}
