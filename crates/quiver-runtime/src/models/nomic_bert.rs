//! NomicBERT encoders: nomic-ai/nomic-embed-text-v1.5, nomic-ai/CodeRankEmbed, and every
//! `model_type: "nomic_bert"` folder.
//!
//! Read from Hugging Face's `modeling_nomic_bert.py` (and the weight renaming its loader applies
//! to the hub's checkpoints): BERT's post-norm layers without a position table: word + token
//! type 0 embeddings, layer norm, then per layer a bias-free fused QKV with rotary positions
//! (rotate-half layout, θ = `rotary_emb_base`), attention, residual + norm, a bias-free SwiGLU
//! block (`fc12` is the gate, `fc11` the up projection), residual + norm.
//!
//! Two layouts load: the hub's (GPT-style config keys `n_embd`, `n_head`, …; tensors
//! `encoder.layers.{i}.attn.Wqkv`, `mlp.fc11`, `norm1`, `emb_ln`) and the `transformers` port's
//! (`hidden_size`, …; `layers.{i}.self_attn.q_proj`, `mlp.up_proj`, …).

use super::post_norm::{
    run_layers, FeedForwardNames, LayerShape, Layout, PlainDense, Positions, PostNormLayer,
    QkvNames, TokenEmbeddings,
};
use super::stack::Stack;
use super::{EncoderModel, ModelConfig, ModelDims};
use crate::layers::{AttentionShape, LayerNorm, Rotary};
use crate::weights::Weights;
use crate::{PackedBatch, Result, RuntimeError};

/// NomicBERT's rotary base when the config names none (`NomicBertConfig.default_theta`).
const DEFAULT_ROPE_THETA: f64 = 1000.0;
const DEFAULT_LAYER_NORM_EPS: f64 = 1e-12;
const SCOPES: &[&str] = &["", "nomic_bert", "bert", "model"];

/// The fields that shape the forward pass, whichever layout spelled them.
#[derive(Debug, Clone)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub rope_theta: f64,
}

#[derive(serde::Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_type: Option<String>,
}

impl Config {
    /// Reads either layout, refusing the variants of the hub's config class this file does not
    /// implement (they would run, silently wrong).
    pub fn read(model_config: &ModelConfig) -> Result<Self> {
        let error = |message: String| RuntimeError::Config {
            path: model_config.path.clone(),
            message,
        };
        let expect = |name: &str, wanted: serde_json::Value| -> Result<()> {
            match model_config.field::<serde_json::Value>(&[name])? {
                Some(found) if found != wanted => Err(error(format!(
                    "field `{name}`: {found} is not supported for nomic_bert (only {wanted})"
                ))),
                _ => Ok(()),
            }
        };
        expect("prenorm", false.into())?;
        expect("rotary_emb_fraction", 1.0.into())?;
        expect("rotary_emb_interleaved", false.into())?;
        expect("use_rms_norm", false.into())?;
        expect("qkv_proj_bias", false.into())?;
        expect("mlp_fc1_bias", false.into())?;
        expect("mlp_fc2_bias", false.into())?;
        expect("causal", false.into())?;
        if let Some(factor) = model_config.field::<f64>(&["rotary_scaling_factor"])? {
            return Err(error(format!(
                "field `rotary_scaling_factor`: {factor} (dynamic NTK scaling) is not supported"
            )));
        }
        let activation: String = model_config
            .field(&["activation_function", "hidden_act"])?
            .unwrap_or_else(|| "swiglu".into());
        if activation != "swiglu" && activation != "silu" {
            return Err(error(format!(
                "field `activation_function`: `{activation}` is not supported for nomic_bert (only `swiglu`)"
            )));
        }
        let rope: Option<RopeParameters> = model_config.field(&["rope_parameters"])?;
        if let Some(kind) = rope.as_ref().and_then(|rope| rope.rope_type.as_deref()) {
            if kind != "default" {
                return Err(error(format!(
                    "field `rope_parameters.rope_type`: `{kind}` scaling is not supported"
                )));
            }
        }
        let rope_theta = match rope.and_then(|rope| rope.rope_theta) {
            Some(theta) => theta,
            None => model_config
                .field(&["rotary_emb_base"])?
                .unwrap_or(DEFAULT_ROPE_THETA),
        };
        let hidden_size: usize = model_config.required(&["hidden_size", "n_embd"])?;
        Ok(Config {
            vocab_size: model_config.required(&["vocab_size"])?,
            hidden_size,
            num_hidden_layers: model_config.required(&["num_hidden_layers", "n_layer"])?,
            num_attention_heads: model_config.required(&["num_attention_heads", "n_head"])?,
            // The hub's config class defaults a missing `n_inner` to 4 × width, as GPT-2 does.
            intermediate_size: model_config
                .field(&["intermediate_size", "n_inner"])?
                .unwrap_or(4 * hidden_size),
            max_position_embeddings: model_config
                .required(&["max_position_embeddings", "n_positions"])?,
            type_vocab_size: model_config.field(&["type_vocab_size"])?.unwrap_or(2),
            layer_norm_eps: model_config
                .field(&["layer_norm_eps", "layer_norm_epsilon"])?
                .unwrap_or(DEFAULT_LAYER_NORM_EPS),
            rope_theta,
        })
    }
}

/// The hub checkpoints' layout (`modeling_nomic_bert.py` with its renaming).
const HUB_LAYOUT: Layout = Layout {
    layers: "encoder.layers",
    embedding_norm: "emb_ln",
    qkv: QkvNames::Fused("attn.Wqkv"),
    attention_out: "attn.out_proj",
    attention_norm: "norm1",
    feed_forward: FeedForwardNames::SwiGlu {
        gate: "mlp.fc12",
        up: "mlp.fc11",
        down: "mlp.fc2",
    },
    output_norm: "norm2",
    bias: false,
};

const TRANSFORMERS_LAYOUT: Layout = Layout::transformers_port(
    FeedForwardNames::SwiGlu {
        gate: "mlp.gate_proj",
        up: "mlp.up_proj",
        down: "mlp.down_proj",
    },
    false,
);

pub struct NomicBertModel {
    dims: ModelDims,
    embeddings: TokenEmbeddings,
    rotary: Rotary,
    shape: LayerShape,
    layers: Vec<PostNormLayer>,
}

impl NomicBertModel {
    pub fn load(model_config: &ModelConfig, checkpoint: &Weights<'_>) -> Result<Self> {
        let config = Config::read(model_config)?;
        let heads = config.num_attention_heads;
        if heads == 0 || !config.hidden_size.is_multiple_of(heads) {
            return Err(RuntimeError::Config {
                path: model_config.path.clone(),
                message: "field `n_head` must divide `n_embd`".into(),
            });
        }
        let h = config.hidden_size;
        let shape = LayerShape {
            hidden: h,
            intermediate: config.intermediate_size,
            layer_norm_eps: config.layer_norm_eps as f32,
            attention: AttentionShape {
                num_heads: heads,
                num_kv_heads: heads,
                head_dim: h / heads,
            },
        };
        let weights = checkpoint.first_with(SCOPES, "embeddings.word_embeddings.weight")?;
        let layout = if weights.contains("emb_ln.weight") {
            &HUB_LAYOUT
        } else {
            &TRANSFORMERS_LAYOUT
        };
        let embedding = weights.pp("embeddings");
        let token_types =
            embedding.get("token_type_embeddings.weight", &[config.type_vocab_size, h])?;
        // NomicBERT has no activation choice: its feed-forward block is SwiGLU.
        let layers = PostNormLayer::load_all(
            &weights,
            layout,
            shape,
            crate::kernels::Activation::Silu,
            config.num_hidden_layers,
            &PlainDense,
        )?;
        Ok(NomicBertModel {
            dims: ModelDims {
                hidden_size: config.hidden_size,
                max_positions: config.max_position_embeddings,
                vocab_size: config.vocab_size,
            },
            embeddings: TokenEmbeddings {
                word: embedding.get("word_embeddings.weight", &[config.vocab_size, h])?,
                token_type_zero: token_types[..h].to_vec(),
                norm: LayerNorm::load(&weights.pp(layout.embedding_norm), h, shape.layer_norm_eps)?,
                adapters: None,
            },
            rotary: Rotary::new(shape.attention.head_dim, config.rope_theta as f32),
            shape,
            layers,
        })
    }
}

impl EncoderModel for NomicBertModel {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn stack(&self) -> Option<Stack<'_>> {
        Some(
            self.embeddings
                .rotary_stack(&self.layers, self.shape, &self.rotary),
        )
    }

    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let mut hidden = self.embeddings.forward(batch);
        run_layers(
            &self.layers,
            &mut hidden,
            batch,
            self.shape,
            Positions::Rotary(&self.rotary),
        );
        Ok(hidden)
    }
}
