//! One file per architecture. Each starts with a `Config` that deserialises the Hugging Face
//! `config.json` as it is, and implements [`EncoderModel`].
//!
//! Adding an architecture: a new file here, one entry in [`ARCHITECTURES`], and a parity test
//! with its fixture.

pub mod bert;
pub mod classifier;
pub mod gemma3;
pub mod jina_v3;
pub mod masked_lm;
pub mod modernbert;
pub mod mpnet;
pub mod nomic_bert;
pub(crate) mod post_norm;
pub(crate) mod pre_norm;
pub mod qwen;
pub mod stack;

use crate::weights::{WeightFiles, Weights};
use crate::{Device, PackedBatch, Pooling, Result, RuntimeError};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Builds a model from its config and the whole checkpoint's weights.
type Load = fn(&ModelConfig, &Weights<'_>) -> Result<Box<dyn EncoderModel>>;

fn boxed<M: EncoderModel + 'static>(model: Result<M>) -> Result<Box<dyn EncoderModel>> {
    Ok(Box::new(model?))
}

/// Every `model_type` Quiver can run, with its loader: the one list that loading, `quiver
/// models` and the registry's checks read.
const ARCHITECTURES: &[(&str, Load)] = &[
    ("bert", |c, w| boxed(bert::BertModel::load(c, w))),
    ("roberta", |c, w| boxed(bert::BertModel::load(c, w))),
    ("xlm-roberta", |c, w| boxed(bert::BertModel::load(c, w))),
    ("camembert", |c, w| boxed(bert::BertModel::load(c, w))),
    ("gemma3_text", |c, w| boxed(gemma3::Gemma3Model::load(c, w))),
    ("jina_embeddings_v3", |c, w| {
        boxed(jina_v3::JinaV3Model::load(c, w))
    }),
    ("modernbert", |c, w| {
        boxed(modernbert::ModernBertModel::load(c, w))
    }),
    ("mpnet", |c, w| boxed(mpnet::MpnetModel::load(c, w))),
    ("nomic_bert", |c, w| {
        boxed(nomic_bert::NomicBertModel::load(c, w))
    }),
    ("qwen2", |c, w| boxed(qwen::QwenModel::load(c, w))),
    ("qwen3", |c, w| boxed(qwen::QwenModel::load(c, w))),
];

/// The `model_type` values Quiver can run.
pub fn supported_architectures() -> impl Iterator<Item = &'static str> {
    ARCHITECTURES.iter().map(|&(name, _)| name)
}

/// Whether Quiver can run folders whose `config.json` says `model_type`.
pub fn is_supported(model_type: &str) -> bool {
    supported_architectures().any(|name| name == model_type)
}

fn supported_list() -> String {
    supported_architectures().collect::<Vec<_>>().join(", ")
}

/// The sizes a caller of a loaded model needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDims {
    /// Width of each token's output.
    pub hidden_size: usize,
    /// Tokens a sequence may have.
    pub max_positions: usize,
    pub vocab_size: usize,
}

/// A loaded encoder: token ids in, one hidden state per token out.
pub trait EncoderModel: Send + Sync {
    fn dims(&self) -> ModelDims;
    /// Hidden states of every token of a batch already checked against [`EncoderModel::dims`];
    /// callers use [`EncoderModel::forward`].
    fn run(&self, batch: &PackedBatch) -> Result<Vec<f32>>;
    /// Names of the task adapters a sequence may run with ([`PackedBatch::adapters`] indexes
    /// this list); empty for models without them.
    fn adapters(&self) -> &[String] {
        &[]
    }
    fn hidden_size(&self) -> usize {
        self.dims().hidden_size
    }
    fn max_positions(&self) -> usize {
        self.dims().max_positions
    }
    fn vocab_size(&self) -> usize {
        self.dims().vocab_size
    }
    /// Hidden states of every token, row-major `[batch.num_tokens(), hidden_size]`; a batch
    /// longer than the positions or with ids outside the vocabulary is refused.
    ///
    /// A batch of more than [`pass_tokens`] runs as several passes, cut between sequences:
    /// each sequence's states are the same either way.
    fn forward(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let dims = self.dims();
        batch.validate(dims.max_positions, dims.vocab_size)?;
        let most = pass_tokens();
        if batch.num_tokens() <= most {
            return self.run(batch);
        }
        let mut hidden = Vec::with_capacity(batch.num_tokens() * dims.hidden_size);
        for part in batch.split(most) {
            hidden.extend(self.run(&part)?);
        }
        Ok(hidden)
    }
    /// The most tokens one batch may hold on the model's device, where its memory bounds them
    /// (a GPU: its free memory at load over a token's activations); `None` on the CPU.
    fn token_budget(&self) -> Option<usize> {
        None
    }
    /// The model's layers as a device backend runs them; `None` for an architecture that runs
    /// on the CPU only.
    fn stack(&self) -> Option<stack::Stack<'_>> {
        None
    }
    /// One pooled vector per sequence of `batch`, `skip[i]` leading tokens of sequence `i` left
    /// out ([`Pooling::pool`]): what embedding needs from a model, and the seam a device
    /// backend implements so that hidden states never leave the device. The CPU models keep
    /// this default, as their states are in host memory already.
    fn embed(
        &self,
        batch: &PackedBatch,
        pooling: Pooling,
        skip: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let hidden = self.forward(batch)?;
        Ok(pooling.pool(&hidden, self.hidden_size(), batch, skip))
    }
}

/// Tokens one pass of the layers runs at most, per thread of the pool.
///
/// Why: a pass's activations (all-MiniLM-L6-v2's feed-forward block: 6 KB per token) outgrow
/// the caches long before the batch sizes callers ask for; each layer then writes them out to
/// memory and reads them back. all-MiniLM-L6-v2 int8 on 2 threads, batches of 32 code chunks
/// of up to 256 tokens: 22.1-23.9k tokens/s in passes of 8,192 tokens, 24.5-25.6k at 4,096,
/// 25.9-26.4k at 2,048, 25.8-26.1k at 1,024 (`quiver embed --stats --max-batch-tokens`, 500
/// chunks). Scaled by threads so that many cores still get a sequence each in attention.
const PASS_TOKENS_PER_THREAD: usize = 1024;

fn pass_tokens() -> usize {
    PASS_TOKENS_PER_THREAD * rayon::current_num_threads()
}

/// A model folder's `config.json`, kept raw so each architecture can read its own fields.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub model_type: String,
    raw: serde_json::Value,
}

impl ModelConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| RuntimeError::Io {
            path: path.clone(),
            source,
        })?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|error| RuntimeError::Config {
                path: path.clone(),
                message: error.to_string(),
            })?;
        let model_type = raw
            .get("model_type")
            .and_then(|value| value.as_str())
            .ok_or_else(|| RuntimeError::Config {
                path: path.clone(),
                message: "field `model_type` is missing or not a string".into(),
            })?
            .to_string();
        Ok(ModelConfig {
            path,
            model_type,
            raw,
        })
    }

    /// The first of `names` the config sets (not null): for fields an architecture's own config
    /// class and the `transformers` port spell differently (`n_embd` / `hidden_size`).
    pub fn field<T: DeserializeOwned>(&self, names: &[&str]) -> Result<Option<T>> {
        let Some((name, value)) = names.iter().find_map(|name| {
            self.raw
                .get(*name)
                .filter(|value| !value.is_null())
                .map(|value| (name, value))
        }) else {
            return Ok(None);
        };
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|error| RuntimeError::Config {
                path: self.path.clone(),
                message: format!("field `{name}`: {error}"),
            })
    }

    /// [`ModelConfig::field`] for a field the model cannot do without.
    pub fn required<T: DeserializeOwned>(&self, names: &[&str]) -> Result<T> {
        self.field(names)?.ok_or_else(|| RuntimeError::Config {
            path: self.path.clone(),
            message: format!("field `{}` is missing", names.join("` / `")),
        })
    }

    /// Deserialises the architecture's own view of the config, naming the file on failure.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.raw.clone()).map_err(|error| RuntimeError::Config {
            path: self.path.clone(),
            message: error.to_string(),
        })
    }
}

/// How a model is laid out in memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Keep a second, half-precision copy of every dense layer's weights packed for inputs of a
    /// few tokens (up to [`crate::layers::FEW_ROWS`]): a single short query runs about a third
    /// faster, for 1.5 times the weight memory, with vectors within 1e-4 of the f32 path.
    /// Servers want it; batch indexing does not.
    pub few_row_kernels: bool,
    /// How dense layers store and multiply their weights.
    pub quantization: Quantization,
    /// Run the masked-language-model head on every token, so the model's outputs are
    /// vocabulary logits (SPLADE); BERT-family checkpoints only.
    pub masked_lm_head: bool,
    /// Where the model runs. On a GPU, `quantization` f32 keeps f32 and any other means bf16.
    pub device: Device,
}

/// The number format of dense layers. Its [`Default`] is [`Quantization::for_this_machine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// f32 weights and products: the reference's numbers.
    None,
    /// int8 weights (per output channel) and inputs (per row, quantised on the fly), i32
    /// products: a quarter of the weight memory and faster products where the CPU has
    /// AVX-512 VNNI or AVX2; vectors stay close to f32 (the parity tests measure how close).
    Int8,
    /// bf16 weights and inputs (f32's range, 8 bits of mantissa), f32 sums: half the weight
    /// memory and twice the multiply-adds per instruction where the CPU has AVX-512 BF16.
    Bf16,
}

impl Quantization {
    /// How the format is written where it is recorded (an index's settings, an export's
    /// `model_info.json`) and named on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
            Quantization::Bf16 => "bf16",
        }
    }

    /// The default number format: the fastest one whose vectors keep retrieval scores, measured
    /// (docs/performance.md, "The default number format"). bf16 where this CPU multiplies bf16
    /// natively (AMX or AVX-512 BF16): `quiver eval`'s nDCG@10 unchanged, mean cosine 0.99998
    /// to f32, 1.2 to 1.6 times f32's speed. f32 elsewhere, where bf16 products are emulated
    /// and slower than f32's. int8 is faster still but moves vectors further (mean cosine
    /// 0.9992), so it stays a choice. `QUIVER_BF16_KERNEL=portable` makes this f32 too.
    pub fn for_this_machine() -> Quantization {
        if crate::kernels::Bf16Kernel::detect() == crate::kernels::Bf16Kernel::Portable {
            Quantization::None
        } else {
            Quantization::Bf16
        }
    }

    /// The format for a dense layer whose inputs carry a few channels far larger than the rest:
    /// the feed-forward up projection, fed by a LayerNorm (in all-MiniLM-L6-v2 one channel's
    /// largest input is 15 times the median channel's). A row's int8 range spans that channel,
    /// and every other input rounds coarsely: an int8 model runs such a layer in bf16 where the
    /// CPU multiplies bf16 natively. On short queries (`bench/run`'s query-32) that took
    /// all-MiniLM-L6-v2's int8 mean cosine to f32 from 0.99875 to 0.99910, for about a tenth of
    /// int8's speed (`quiver embed --quantize int8 --stats`, 1,000 code chunks and the 2,000
    /// queries, two alternating runs). Other formats, and int8 elsewhere, are kept.
    pub fn for_outlier_inputs(self) -> Quantization {
        match self {
            Quantization::Int8 if Quantization::for_this_machine() == Quantization::Bf16 => {
                Quantization::Bf16
            }
            other => other,
        }
    }

    /// The format [`Quantization::name`] writes as `name`.
    pub fn from_name(name: &str) -> Option<Quantization> {
        [Quantization::None, Quantization::Int8, Quantization::Bf16]
            .into_iter()
            .find(|q| q.name() == name)
    }
}

impl Default for Quantization {
    fn default() -> Self {
        Quantization::for_this_machine()
    }
}

/// Loads the model in `dir` (config.json + safetensors weights) on `options.device`, laid out
/// as `options` say.
pub fn load_model_with(dir: &Path, options: LoadOptions) -> Result<Box<dyn EncoderModel>> {
    let ordinals: Vec<usize> = match options.device.ensure_available()? {
        Device::Cpu | Device::Auto => return load_on_cpu(dir, options),
        Device::Cuda(ordinal) => vec![ordinal],
        Device::Cards(set) => set.ordinals().collect(),
    };
    let mut replicas = load_on_gpus(dir, options, &ordinals)?;
    Ok(if replicas.len() == 1 {
        replicas.swap_remove(0)
    } else {
        Box::new(crate::backend::DataParallel::new(replicas))
    })
}

/// The CPU model in f32 (what a GPU uploads), read once, then on each card, checked against it.
#[cfg(feature = "cudarc")]
fn load_on_gpus(
    dir: &Path,
    options: LoadOptions,
    ordinals: &[usize],
) -> Result<Vec<Box<dyn EncoderModel>>> {
    let format = match options.quantization {
        Quantization::None => crate::cuda::encoder::Format::F32,
        Quantization::Bf16 | Quantization::Int8 => crate::cuda::encoder::Format::Bf16,
    };
    let cpu_options = LoadOptions {
        quantization: Quantization::None,
        few_row_kernels: false,
        device: Device::Cpu,
        ..options
    };
    let model = load_on_cpu(dir, cpu_options)?;
    ordinals
        .iter()
        .map(|&ordinal| {
            boxed(crate::cuda::encoder::upload(
                model.as_ref(),
                ordinal,
                format,
            ))
        })
        .collect()
}

/// Unreachable in practice: without the CUDA backend `ensure_available` refuses every GPU.
#[cfg(not(feature = "cudarc"))]
fn load_on_gpus(
    _: &Path,
    _: LoadOptions,
    ordinals: &[usize],
) -> Result<Vec<Box<dyn EncoderModel>>> {
    let names: Vec<String> = ordinals.iter().map(|o| format!("cuda:{o}")).collect();
    Err(RuntimeError::DeviceUnavailable(names.join(",")))
}

fn load_on_cpu(dir: &Path, options: LoadOptions) -> Result<Box<dyn EncoderModel>> {
    let config = ModelConfig::read(dir)?;
    let files = WeightFiles::open(dir)?;
    let tensors = files.tensors(options)?;
    let checkpoint = tensors.root();
    // jina-embeddings-v3's hub config says `xlm-roberta`; its rotary positions tell it apart.
    let rotary = config
        .field::<String>(&["position_embedding_type"])?
        .as_deref()
        == Some("rotary");
    let architecture = match config.model_type.as_str() {
        "xlm-roberta" if rotary => "jina_embeddings_v3",
        other => other,
    };
    if options.masked_lm_head {
        return match architecture {
            "bert" => boxed(masked_lm::MaskedLmModel::load(&config, &checkpoint)),
            other => Err(RuntimeError::UnsupportedArchitecture {
                found: format!("{other} with a masked-language-model head (SPLADE)"),
                path: config.path.clone(),
                supported: "bert".into(),
            }),
        };
    }
    match ARCHITECTURES
        .iter()
        .find(|&&(name, _)| name == architecture)
    {
        Some((_, load)) => load(&config, &checkpoint),
        None => Err(RuntimeError::UnsupportedArchitecture {
            found: architecture.to_string(),
            path: config.path.clone(),
            supported: supported_list(),
        }),
    }
}
