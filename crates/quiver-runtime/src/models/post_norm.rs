//! The encoder layer BERT, RoBERTa and MPNet share: self-attention, then a feed-forward block,
//! each followed by residual + layer norm ("post-norm"). The architectures differ in weight
//! names, embeddings and position handling, which their own files keep.

use crate::kernels::Activation;
use crate::layers::{
    self_attention, AttentionShape, LayerNorm, Linear, RelativePositionBias, Visibility,
};
use crate::weights::TensorStore;
use crate::{PackedBatch, Result};

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
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// Buffers reused across layers, so the layer loop allocates nothing after the first layer.
#[derive(Default)]
pub struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    intermediate: Vec<f32>,
}

impl PostNormLayer {
    pub fn load(
        store: &TensorStore<'_>,
        prefix: &str,
        names: &LayerNames,
        shape: LayerShape,
    ) -> Result<Self> {
        let (h, eps) = (shape.hidden, shape.layer_norm_eps);
        let linear = |name: &str, inputs: usize, outputs: usize| {
            Linear::load(store, &format!("{prefix}.{name}"), inputs, outputs, true)
        };
        let norm = |name: &str| LayerNorm::load(store, &format!("{prefix}.{name}"), h, eps);
        Ok(PostNormLayer {
            qkv: Linear::concat(&[
                linear(names.query, h, h)?,
                linear(names.key, h, h)?,
                linear(names.value, h, h)?,
            ]),
            attention_out: linear(names.attention_out, h, h)?,
            attention_norm: norm(names.attention_norm)?,
            intermediate: linear(names.intermediate, h, shape.intermediate)?,
            output: linear(names.output, shape.intermediate, h)?,
            output_norm: norm(names.output_norm)?,
        })
    }

    /// Runs the layer over `hidden` (`[tokens, hidden]`), in place.
    pub fn forward(
        &self,
        hidden: &mut Vec<f32>,
        batch: &PackedBatch,
        shape: LayerShape,
        activation: Activation,
        bias: Option<&RelativePositionBias>,
        scratch: &mut Scratch,
    ) {
        let tokens = batch.num_tokens();
        let h = shape.hidden;
        self.qkv.forward(hidden, tokens, &mut scratch.qkv);
        self_attention(
            &scratch.qkv,
            batch,
            shape.attention,
            Visibility::All,
            bias,
            &mut scratch.context,
        );
        self.attention_out.forward_then(
            &scratch.context,
            tokens,
            &mut scratch.projected,
            |block, rows| {
                let residual = &hidden[rows.start * h..rows.end * h];
                self.attention_norm.forward_residual(block, residual);
            },
        );
        std::mem::swap(hidden, &mut scratch.projected);
        self.intermediate
            .forward_then(hidden, tokens, &mut scratch.intermediate, |block, _| {
                activation.apply(block)
            });
        self.output.forward_then(
            &scratch.intermediate,
            tokens,
            &mut scratch.projected,
            |block, rows| {
                let residual = &hidden[rows.start * h..rows.end * h];
                self.output_norm.forward_residual(block, residual);
            },
        );
        std::mem::swap(hidden, &mut scratch.projected);
    }
}
