//! jina-embeddings-v3: XLM-RoBERTa with rotary positions and per-task LoRA adapters.
//!
//! Read from Hugging Face's `modeling_jina_embeddings_v3.py` and the weight renaming its loader
//! applies to the hub checkpoint, plus the authors' LoRA parametrization (see
//! [`crate::layers::Lora`]): word + token-type embeddings, layer norm, then per layer a biased
//! fused QKV with rotary positions (rotate-half, θ = `rotary_emb_base`), attention, residual +
//! norm, a dense GELU block, residual + norm.
//!
//! Two layouts load: the hub's (`model_type: "xlm-roberta"` with `position_embedding_type:
//! "rotary"`; tensors `roberta.encoder.layers.{i}.mixer.Wqkv`, `mlp.fc1`, `norm1`, `emb_ln`,
//! each weight under `parametrizations.weight.original` with its `lora_A` / `lora_B` beside it,
//! one adapter per name in `lora_adaptations`), and the `transformers` port's
//! (`model_type: "jina_embeddings_v3"`, split `q_proj` / `k_proj` / `v_proj`, no adapters).

use super::post_norm::{
    run_layers, Checked, EncoderConfig, FeedForward, LayerShape, Positions, PostNormLayer,
    TokenEmbeddings,
};
use super::{EncoderModel, ModelConfig};
use crate::layers::{AdapterShape, EmbeddingLora, LayerNorm, Linear, Lora, Rotary};
use crate::weights::TensorStore;
use crate::{PackedBatch, Result, RuntimeError};
use serde::Deserialize;

const DEFAULT_LAYER_NORM_EPS: f64 = 1e-5;
/// `JinaEmbeddingsV3Config.default_theta`.
const DEFAULT_ROPE_THETA: f64 = 20_000.0;
const PREFIXES: &[&str] = &["roberta.", "", "model."];

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub encoder: EncoderConfig,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    pub rotary_emb_base: Option<f64>,
    pub rope_parameters: Option<RopeParameters>,
    /// Task names, in the order of the adapters' first axis.
    #[serde(default)]
    pub lora_adaptations: Vec<String>,
    #[serde(default = "default_lora_rank")]
    pub lora_rank: usize,
    #[serde(default = "default_lora_alpha")]
    pub lora_alpha: f32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: Option<f64>,
}

fn default_type_vocab_size() -> usize {
    1
}
fn default_lora_rank() -> usize {
    4
}
fn default_lora_alpha() -> f32 {
    1.0
}

/// Where each layout keeps one layer's tensors.
struct Layout {
    layers: &'static str,
    fused_qkv: Option<&'static str>,
    split_qkv: [&'static str; 3],
    attention_out: &'static str,
    attention_norm: &'static str,
    output_norm: &'static str,
    embedding_norm: &'static str,
}

const HUB_LAYOUT: Layout = Layout {
    layers: "encoder.layers",
    fused_qkv: Some("mixer.Wqkv"),
    split_qkv: ["", "", ""],
    attention_out: "mixer.out_proj",
    attention_norm: "norm1",
    output_norm: "norm2",
    embedding_norm: "emb_ln",
};

const TRANSFORMERS_LAYOUT: Layout = Layout {
    layers: "layers",
    fused_qkv: None,
    split_qkv: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    attention_out: "self_attn.o_proj",
    attention_norm: "post_attention_layernorm",
    output_norm: "post_mlp_layernorm",
    embedding_norm: "embeddings.LayerNorm",
};

pub struct JinaV3Model {
    config: Config,
    /// The tasks this checkpoint has adapters for, in adapter order.
    adapter_names: Vec<String>,
    embeddings: TokenEmbeddings,
    rotary: Rotary,
    shape: LayerShape,
    layers: Vec<PostNormLayer>,
}

/// Loads weights that may carry task adapters: a dense layer or embedding table stored either
/// plainly (`{name}.weight`) or as a parametrization (`{name}.parametrizations.weight.original`
/// with `.0.lora_A` / `.0.lora_B`).
struct AdaptedLoader<'a, 'b> {
    store: &'a TensorStore<'b>,
    adapters: Option<AdapterShape>,
}

impl AdaptedLoader<'_, '_> {
    fn parametrized(&self, name: &str) -> bool {
        self.store
            .contains(&format!("{name}.parametrizations.weight.original"))
    }

    fn weight_name(&self, name: &str) -> String {
        if self.parametrized(name) {
            format!("{name}.parametrizations.weight.original")
        } else {
            format!("{name}.weight")
        }
    }

    /// The adapters of `name`, when the checkpoint has them.
    fn adapter_prefix(&self, name: &str) -> Option<(AdapterShape, String)> {
        let prefix = format!("{name}.parametrizations.weight.0");
        let shape = self.adapters?;
        self.store
            .contains(&format!("{prefix}.lora_A"))
            .then_some((shape, prefix))
    }

    fn dense(&self, name: &str, inputs: usize, outputs: usize) -> Result<Linear> {
        let bias = format!("{name}.bias");
        let weight = self.weight_name(name);
        let linear = Linear::load_tensors(self.store, &weight, Some(&bias), inputs, outputs)?;
        self.with_adapters(linear, name, inputs, outputs)
    }

    fn with_adapters(
        &self,
        linear: Linear,
        name: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<Linear> {
        Ok(match self.adapter_prefix(name) {
            Some((shape, prefix)) => {
                linear.with_lora(Lora::load(self.store, &prefix, shape, inputs, outputs)?)
            }
            None => linear,
        })
    }

    fn table(&self, name: &str, rows: usize, width: usize) -> Result<Vec<f32>> {
        self.store.get(&self.weight_name(name), &[rows, width])
    }

    fn table_adapters(
        &self,
        name: &str,
        rows: usize,
        width: usize,
    ) -> Result<Option<EmbeddingLora>> {
        self.adapter_prefix(name)
            .map(|(shape, prefix)| EmbeddingLora::load(self.store, &prefix, shape, rows, width))
            .transpose()
    }
}

impl JinaV3Model {
    pub fn load(model_config: &ModelConfig, store: &mut TensorStore<'_>) -> Result<Self> {
        let config: Config = model_config.parse()?;
        let Checked { activation, shape } =
            config
                .encoder
                .check(model_config, 0, DEFAULT_LAYER_NORM_EPS)?;
        let (h, eps) = (shape.hidden, shape.layer_norm_eps);
        if config.lora_adaptations.len() > usize::from(u16::MAX) {
            return Err(RuntimeError::Config {
                path: model_config.path.clone(),
                message: "field `lora_adaptations`: too many adapters".into(),
            });
        }
        let probe = [
            "embeddings.word_embeddings.parametrizations.weight.original",
            "embeddings.word_embeddings.weight",
        ];
        let probe = probe
            .iter()
            .find(|name| {
                PREFIXES
                    .iter()
                    .any(|p| store.contains(&format!("{p}{name}")))
            })
            .unwrap_or(&probe[1]);
        store.select_prefix(probe, PREFIXES)?;
        let layout = if store.contains("emb_ln.weight") {
            &HUB_LAYOUT
        } else {
            &TRANSFORMERS_LAYOUT
        };
        // Adapters run only where the checkpoint has them; the transformers port ships none.
        let has_adapters = !config.lora_adaptations.is_empty()
            && store.contains("embeddings.word_embeddings.parametrizations.weight.0.lora_A");
        let adapters = has_adapters.then_some(AdapterShape {
            tasks: config.lora_adaptations.len(),
            rank: config.lora_rank,
            alpha: config.lora_alpha,
        });
        let adapter_names = if has_adapters {
            config.lora_adaptations.clone()
        } else {
            Vec::new()
        };
        let loader = AdaptedLoader { store, adapters };
        let vocab = config.encoder.vocab_size;
        let types = config.type_vocab_size;
        let word_adapters = loader.table_adapters("embeddings.word_embeddings", vocab, h)?;
        let type_adapters = loader.table_adapters("embeddings.token_type_embeddings", types, h)?;
        let embeddings = TokenEmbeddings {
            word: loader.table("embeddings.word_embeddings", vocab, h)?,
            token_type_zero: loader.table("embeddings.token_type_embeddings", types, h)?[..h]
                .to_vec(),
            norm: LayerNorm::load(store, layout.embedding_norm, h, eps)?,
            adapters: word_adapters.zip(type_adapters),
        };
        let layers = (0..config.encoder.num_hidden_layers)
            .map(|index| load_layer(&loader, layout, shape, activation, index))
            .collect::<Result<Vec<_>>>()?;
        let theta = config
            .rope_parameters
            .as_ref()
            .and_then(|rope| rope.rope_theta)
            .or(config.rotary_emb_base)
            .unwrap_or(DEFAULT_ROPE_THETA);
        Ok(JinaV3Model {
            adapter_names,
            embeddings,
            rotary: Rotary::new(shape.attention.head_dim, theta as f32),
            shape,
            layers,
            config,
        })
    }
}

fn load_layer(
    loader: &AdaptedLoader<'_, '_>,
    layout: &Layout,
    shape: LayerShape,
    activation: crate::kernels::Activation,
    index: usize,
) -> Result<PostNormLayer> {
    let (h, width, eps) = (shape.hidden, shape.intermediate, shape.layer_norm_eps);
    let name = |part: &str| format!("{}.{index}.{part}", layout.layers);
    let qkv = match layout.fused_qkv {
        Some(fused) => loader.dense(&name(fused), h, 3 * h)?,
        None => {
            let [q, k, v] = layout.split_qkv.map(name);
            Linear::load_stacked(loader.store, &[(&q, h), (&k, h), (&v, h)], h, true)?
        }
    };
    Ok(PostNormLayer {
        qkv,
        attention_out: loader.dense(&name(layout.attention_out), h, h)?,
        attention_norm: LayerNorm::load(loader.store, &name(layout.attention_norm), h, eps)?,
        feed_forward: FeedForward::Dense {
            intermediate: loader.dense(&name("mlp.fc1"), h, width)?,
            output: loader.dense(&name("mlp.fc2"), width, h)?,
            activation,
        },
        output_norm: LayerNorm::load(loader.store, &name(layout.output_norm), h, eps)?,
    })
}

impl EncoderModel for JinaV3Model {
    fn hidden_size(&self) -> usize {
        self.config.encoder.hidden_size
    }

    fn max_positions(&self) -> usize {
        self.config.encoder.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.config.encoder.vocab_size
    }

    fn adapters(&self) -> &[String] {
        &self.adapter_names
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
