//! The layer Qwen2/3, Gemma 3 and ModernBERT share: a norm, self-attention, residual; a norm, a
//! gated feed-forward block, residual ("pre-norm"); a final norm after the last layer. The
//! architectures differ in the norm (RMSNorm, Gemma's `1 + weight` RMSNorm, LayerNorm), in
//! extra norms (over each query and key head; Gemma's after each block), in which attention a
//! layer uses (global, or a sliding window with its own rotation) and in the gate's activation,
//! which their own files choose when they load.

use crate::kernels::{add_residual, gated_linear_unit, Activation};
use crate::layers::{
    normalize_heads, self_attention, AttentionProducts, AttentionShape, LayerNorm, Linear,
    NormParts, Reused, RmsNorm, Rotary, Visibility,
};
use crate::weights::Weights;
use crate::{PackedBatch, Result};
use rayon::prelude::*;

/// A norm over each row of hidden states.
pub enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    pub fn parts(&self) -> NormParts<'_> {
        match self {
            Norm::Layer(norm) => norm.parts(),
            Norm::Rms(norm) => norm.parts(),
        }
    }

    fn forward(&self, values: &mut [f32]) {
        match self {
            Norm::Layer(norm) => norm.forward(values),
            Norm::Rms(norm) => norm.forward(values),
        }
    }
}

pub struct PreNormLayer {
    pub projections: Projections,
    pub norms: LayerNorms,
    /// Which of the stack's [`PreNormStack::attention`] kinds the layer uses.
    pub attention_kind: usize,
}

/// A layer's dense layers.
pub struct Projections {
    pub qkv: Linear,
    pub attention_out: Linear,
    /// Gate and up projections side by side (`[tokens, 2 · intermediate]`); the first half is
    /// activated.
    pub gate_up: Linear,
    pub down: Linear,
}

/// The norms around a layer's projections: which of them a checkpoint has is what tells the
/// pre-norm families apart.
pub struct LayerNorms {
    /// Absent where the attention reads the hidden states as they are (ModernBERT's layer 0,
    /// which follows the embeddings' norm).
    pub attention: Option<Norm>,
    /// RMSNorm over each query head and each key head, before the rotation (Qwen3, Gemma 3).
    pub heads: Option<(RmsNorm, RmsNorm)>,
    /// A norm of the attention block's output before the residual (Gemma 3).
    pub attention_out: Option<Norm>,
    pub feed_forward: Norm,
    /// A norm of the feed-forward block's output before the residual (Gemma 3).
    pub feed_forward_out: Option<Norm>,
}

/// How a layer's attention sees positions: its rotation, and which keys each query sees.
pub struct AttentionKind {
    pub rotary: Rotary,
    pub visibility: Visibility,
}

/// Buffers reused across layers and forward passes.
#[derive(Default)]
struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    gate_up: Vec<f32>,
    activated: Vec<f32>,
}

/// A model's layers and what they share.
pub struct PreNormStack {
    pub layers: Vec<PreNormLayer>,
    pub shape: AttentionShape,
    pub attention: Vec<AttentionKind>,
    /// Width of each half of `gate_up`.
    pub intermediate: usize,
    pub activation: Activation,
    /// What the attention kernel's `head_dim^-½` must be multiplied by where a config asks for
    /// another score scale (Gemma's `query_pre_attn_scalar`); applied to the queries.
    pub query_scale: Option<f32>,
    pub final_norm: Norm,
}

impl PreNormStack {
    /// Runs every layer, then the final norm, over `hidden` (`[tokens, hidden]`), in place.
    pub fn forward(&self, hidden: &mut Vec<f32>, batch: &PackedBatch) {
        static SCRATCH: Reused<Scratch> = Reused::new();
        SCRATCH.with(|scratch| self.run_layers(hidden, batch, scratch));
        self.final_norm.forward(hidden);
    }

    fn run_layers(&self, hidden: &mut Vec<f32>, batch: &PackedBatch, scratch: &mut Scratch) {
        let tokens = batch.num_tokens();
        let Scratch {
            normed,
            qkv,
            context,
            projected,
            gate_up,
            activated,
        } = scratch;
        for layer in &self.layers {
            let (dense, norms) = (&layer.projections, &layer.norms);
            normed.clone_from(hidden);
            if let Some(norm) = &norms.attention {
                norm.forward(normed);
            }
            dense.qkv.forward(normed, tokens, qkv);
            if let Some((q_norm, k_norm)) = &norms.heads {
                normalize_heads(qkv, self.shape, q_norm, k_norm);
            }
            self.scale_queries(qkv);
            let kind = &self.attention[layer.attention_kind];
            kind.rotary.apply(qkv, batch, self.shape);
            let products = AttentionProducts::for_weights(dense.qkv.format(), self.shape.head_dim);
            self_attention(
                qkv,
                batch,
                self.shape,
                kind.visibility,
                None,
                products,
                context,
            );
            dense.attention_out.forward(context, tokens, projected);
            if let Some(norm) = &norms.attention_out {
                norm.forward(projected);
            }
            add_residual(hidden, projected);

            normed.clone_from(hidden);
            norms.feed_forward.forward(normed);
            dense.gate_up.forward(normed, tokens, gate_up);
            gated_linear_unit(gate_up, self.intermediate, self.activation, activated);
            dense.down.forward(activated, tokens, projected);
            if let Some(norm) = &norms.feed_forward_out {
                norm.forward(projected);
            }
            add_residual(hidden, projected);
        }
    }

    fn scale_queries(&self, qkv: &mut [f32]) {
        let Some(scale) = self.query_scale else {
            return;
        };
        let queries = self.shape.num_heads * self.shape.head_dim;
        qkv.par_chunks_mut(self.shape.qkv_width())
            .for_each(|token| token[..queries].iter_mut().for_each(|x| *x *= scale));
    }
}

/// Whether a Llama-family layer's attention projections carry biases.
#[derive(Clone, Copy)]
pub struct AttentionBiases {
    pub qkv: bool,
    pub out: bool,
}

impl Projections {
    /// The dense layers as Llama-family checkpoints (Qwen2/3, Gemma 3) name them:
    /// `self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`.
    pub fn load_llama(
        layer: &Weights<'_>,
        hidden: usize,
        shape: AttentionShape,
        intermediate: usize,
        biases: AttentionBiases,
    ) -> Result<Self> {
        let (q_width, kv_width) = (shape.hidden(), shape.num_kv_heads * shape.head_dim);
        let (attention, mlp) = (layer.pp("self_attn"), layer.pp("mlp"));
        Ok(Projections {
            qkv: Linear::load_stacked(
                &attention,
                &[
                    ("q_proj", q_width),
                    ("k_proj", kv_width),
                    ("v_proj", kv_width),
                ],
                hidden,
                biases.qkv,
            )?,
            attention_out: Linear::load(&attention.pp("o_proj"), q_width, hidden, biases.out)?,
            gate_up: Linear::load_stacked(
                &mlp,
                &[("gate_proj", intermediate), ("up_proj", intermediate)],
                hidden,
                false,
            )?,
            down: Linear::load(&mlp.pp("down_proj"), intermediate, hidden, false)?,
        })
    }
}
