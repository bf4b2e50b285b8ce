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
    run_layers, FeedForward, LayerShape, Positions, PostNormLayer, TokenEmbeddings,
};
use super::{EncoderModel, ModelConfig};
use crate::layers::{AttentionShape, LayerNorm, Linear, Rotary};
use crate::weights::TensorStore;
use crate::{PackedBatch, Result, RuntimeError};

/// NomicBERT's rotary base when the config names none (`NomicBertConfig.default_theta`).
const DEFAULT_ROPE_THETA: f64 = 1000.0;
const DEFAULT_LAYER_NORM_EPS: f64 = 1e-12;
const PREFIXES: &[&str] = &["", "nomic_bert.", "bert.", "model."];

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

/// Where each layout keeps one layer's tensors.
struct Layout {
    layers: &'static str,
    fused_qkv: Option<&'static str>,
    split_qkv: [&'static str; 3],
    attention_out: &'static str,
    up: &'static str,
    gate: &'static str,
    down: &'static str,
    attention_norm: &'static str,
    output_norm: &'static str,
    embedding_norm: &'static str,
}

const HUB_LAYOUT: Layout = Layout {
    layers: "encoder.layers",
    fused_qkv: Some("attn.Wqkv"),
    split_qkv: ["", "", ""],
    attention_out: "attn.out_proj",
    up: "mlp.fc11",
    gate: "mlp.fc12",
    down: "mlp.fc2",
    attention_norm: "norm1",
    output_norm: "norm2",
    embedding_norm: "emb_ln",
};

const TRANSFORMERS_LAYOUT: Layout = Layout {
    layers: "layers",
    fused_qkv: None,
    split_qkv: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    attention_out: "self_attn.o_proj",
    up: "mlp.up_proj",
    gate: "mlp.gate_proj",
    down: "mlp.down_proj",
    attention_norm: "post_attention_layernorm",
    output_norm: "post_mlp_layernorm",
    embedding_norm: "embeddings.LayerNorm",
};

pub struct NomicBertModel {
    config: Config,
    embeddings: TokenEmbeddings,
    rotary: Rotary,
    shape: LayerShape,
    layers: Vec<PostNormLayer>,
}

impl NomicBertModel {
    pub fn load(model_config: &ModelConfig, store: &mut TensorStore<'_>) -> Result<Self> {
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
        store.select_prefix("embeddings.word_embeddings.weight", PREFIXES)?;
        let layout = if store.contains("emb_ln.weight") {
            &HUB_LAYOUT
        } else {
            &TRANSFORMERS_LAYOUT
        };
        let token_types = store.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| load_layer(store, layout, shape, index))
            .collect::<Result<Vec<_>>>()?;
        Ok(NomicBertModel {
            embeddings: TokenEmbeddings {
                word: store.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
                token_type_zero: token_types[..h].to_vec(),
                norm: LayerNorm::load(store, layout.embedding_norm, h, shape.layer_norm_eps)?,
                adapters: None,
            },
            rotary: Rotary::new(shape.attention.head_dim, config.rope_theta as f32),
            shape,
            layers,
            config,
        })
    }
}

fn load_layer(
    store: &TensorStore<'_>,
    layout: &Layout,
    shape: LayerShape,
    index: usize,
) -> Result<PostNormLayer> {
    let (h, width, eps) = (shape.hidden, shape.intermediate, shape.layer_norm_eps);
    let name = |part: &str| format!("{}.{index}.{part}", layout.layers);
    let qkv = match layout.fused_qkv {
        Some(fused) => Linear::load(store, &name(fused), h, 3 * h, false)?,
        None => {
            let [q, k, v] = layout.split_qkv.map(name);
            Linear::load_stacked(store, &[(&q, h), (&k, h), (&v, h)], h, false)?
        }
    };
    Ok(PostNormLayer {
        qkv,
        attention_out: Linear::load(store, &name(layout.attention_out), h, h, false)?,
        attention_norm: LayerNorm::load(store, &name(layout.attention_norm), h, eps)?,
        feed_forward: FeedForward::SwiGlu {
            gate_up: Linear::load_stacked(
                store,
                &[(&name(layout.gate), width), (&name(layout.up), width)],
                h,
                false,
            )?,
            down: Linear::load(store, &name(layout.down), width, h, false)?,
            width,
        },
        output_norm: LayerNorm::load(store, &name(layout.output_norm), h, eps)?,
    })
}

impl EncoderModel for NomicBertModel {
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
