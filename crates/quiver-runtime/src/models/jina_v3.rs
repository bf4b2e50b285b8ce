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
    run_layers, Checked, DenseLoader, EncoderConfig, FeedForwardNames, LayerShape, Layout,
    Positions, PostNormLayer, QkvNames, TokenEmbeddings,
};
use super::stack::Stack;
use super::{EncoderModel, ModelConfig, ModelDims};
use crate::layers::{AdapterShape, EmbeddingLora, LayerNorm, Linear, Lora, Rotary};
use crate::weights::Weights;
use crate::{PackedBatch, Result, RuntimeError};
use serde::Deserialize;

const DEFAULT_LAYER_NORM_EPS: f64 = 1e-5;
/// `JinaEmbeddingsV3Config.default_theta`.
const DEFAULT_ROPE_THETA: f64 = 20_000.0;
const SCOPES: &[&str] = &["roberta", "", "model"];

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

const FEED_FORWARD: FeedForwardNames = FeedForwardNames::Dense {
    intermediate: "mlp.fc1",
    output: "mlp.fc2",
};

/// The hub checkpoint's layout (`modeling_jina_embeddings_v3.py` with its renaming).
const HUB_LAYOUT: Layout = Layout {
    layers: "encoder.layers",
    embedding_norm: "emb_ln",
    qkv: QkvNames::Fused("mixer.Wqkv"),
    attention_out: "mixer.out_proj",
    attention_norm: "norm1",
    feed_forward: FEED_FORWARD,
    output_norm: "norm2",
    bias: true,
};

const TRANSFORMERS_LAYOUT: Layout = Layout::transformers_port(FEED_FORWARD, true);

pub struct JinaV3Model {
    dims: ModelDims,
    /// The tasks this checkpoint has adapters for, in adapter order.
    adapter_names: Vec<String>,
    embeddings: TokenEmbeddings,
    rotary: Rotary,
    shape: LayerShape,
    layers: Vec<PostNormLayer>,
}

/// Loads weights that may carry task adapters: a dense layer or embedding table stored either
/// plainly (`weight`) or as a parametrization (`parametrizations.weight.original` with
/// `.0.lora_A` / `.0.lora_B`).
struct AdaptedLoader {
    adapters: Option<AdapterShape>,
}

const PARAMETRIZED: &str = "parametrizations.weight.original";

impl AdaptedLoader {
    fn weight_name(module: &Weights<'_>) -> &'static str {
        if module.contains(PARAMETRIZED) {
            PARAMETRIZED
        } else {
            "weight"
        }
    }

    /// The adapters of `module`, when the checkpoint has them.
    fn adapters<'a>(&self, module: &Weights<'a>) -> Option<(AdapterShape, Weights<'a>)> {
        let shape = self.adapters?;
        let adapters = module.pp("parametrizations.weight.0");
        adapters.contains("lora_A").then_some((shape, adapters))
    }

    fn table(&self, module: &Weights<'_>, rows: usize, width: usize) -> Result<Vec<f32>> {
        module.get(Self::weight_name(module), &[rows, width])
    }

    fn table_adapters(
        &self,
        module: &Weights<'_>,
        rows: usize,
        width: usize,
    ) -> Result<Option<EmbeddingLora>> {
        self.adapters(module)
            .map(|(shape, adapters)| EmbeddingLora::load(&adapters, shape, rows, width))
            .transpose()
    }
}

impl DenseLoader for AdaptedLoader {
    fn dense(
        &self,
        module: &Weights<'_>,
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> Result<Linear> {
        let weight = Self::weight_name(module);
        let linear = Linear::load_tensors(module, weight, bias.then_some("bias"), inputs, outputs)?;
        Ok(match self.adapters(module) {
            Some((shape, adapters)) => {
                linear.with_lora(Lora::load(&adapters, shape, inputs, outputs)?)
            }
            None => linear,
        })
    }
}

impl JinaV3Model {
    pub fn load(model_config: &ModelConfig, checkpoint: &Weights<'_>) -> Result<Self> {
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
        let word = "embeddings.word_embeddings";
        let weights = checkpoint
            .first_with(SCOPES, &format!("{word}.{PARAMETRIZED}"))
            .or_else(|_| checkpoint.first_with(SCOPES, &format!("{word}.weight")))?;
        let layout = if weights.contains("emb_ln.weight") {
            &HUB_LAYOUT
        } else {
            &TRANSFORMERS_LAYOUT
        };
        // Adapters run only where the checkpoint has them; the transformers port ships none.
        let has_adapters = !config.lora_adaptations.is_empty()
            && weights.contains(&format!("{word}.parametrizations.weight.0.lora_A"));
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
        let loader = AdaptedLoader { adapters };
        let vocab = config.encoder.vocab_size;
        let types = config.type_vocab_size;
        let (word, token_type) = (
            weights.pp(word),
            weights.pp("embeddings.token_type_embeddings"),
        );
        let embeddings = TokenEmbeddings {
            word: loader.table(&word, vocab, h)?,
            token_type_zero: loader.table(&token_type, types, h)?[..h].to_vec(),
            norm: LayerNorm::load(&weights.pp(layout.embedding_norm), h, eps)?,
            adapters: loader
                .table_adapters(&word, vocab, h)?
                .zip(loader.table_adapters(&token_type, types, h)?),
        };
        let layers = PostNormLayer::load_all(
            &weights,
            layout,
            shape,
            activation,
            config.encoder.num_hidden_layers,
            &loader,
        )?;
        let theta = config
            .rope_parameters
            .as_ref()
            .and_then(|rope| rope.rope_theta)
            .or(config.rotary_emb_base)
            .unwrap_or(DEFAULT_ROPE_THETA);
        Ok(JinaV3Model {
            dims: ModelDims {
                hidden_size: config.encoder.hidden_size,
                max_positions: config.encoder.max_position_embeddings,
                vocab_size: config.encoder.vocab_size,
            },
            adapter_names,
            embeddings,
            rotary: Rotary::new(shape.attention.head_dim, theta as f32),
            shape,
            layers,
        })
    }
}

impl EncoderModel for JinaV3Model {
    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn adapters(&self) -> &[String] {
        &self.adapter_names
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
