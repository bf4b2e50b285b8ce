//! Loading a model for a command, with the error context users need.

use anyhow::Context;
use clap::ValueEnum;
use quiver_embed::{resolve_model, Device, Embedder, EmbedderOptions, Quantization, Reranker};

/// The model for indexing or searching an index: its own length, the index's number format.
pub fn load_embedder(
    spec: &str,
    device: Device,
    quantization: Quantization,
) -> anyhow::Result<Embedder> {
    load_embedder_with(
        spec,
        &EmbedderOptions {
            device,
            quantization,
            ..EmbedderOptions::default()
        },
    )
}

/// `--quantize`: the number format of the model's dense layers. Left out, a command uses the
/// index's format, else [`Quantization::for_this_machine`].
#[derive(Clone, Copy, Debug, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantizeArg {
    /// f32, the reference's numbers.
    #[value(alias = "f32")]
    None,
    /// int8 weights and inputs: faster where the CPU has AVX-512 VNNI or AVX2, vectors within
    /// about 0.995 mean cosine of f32.
    Int8,
    /// bf16 weights and inputs, f32 sums: faster where the CPU has AVX-512 BF16, vectors
    /// within about 0.9999 mean cosine of f32.
    Bf16,
}

impl From<Quantization> for QuantizeArg {
    fn from(quantization: Quantization) -> Self {
        match quantization {
            Quantization::None => QuantizeArg::None,
            Quantization::Int8 => QuantizeArg::Int8,
            Quantization::Bf16 => QuantizeArg::Bf16,
        }
    }
}

impl From<QuantizeArg> for Quantization {
    fn from(arg: QuantizeArg) -> Self {
        match arg {
            QuantizeArg::None => Quantization::None,
            QuantizeArg::Int8 => Quantization::Int8,
            QuantizeArg::Bf16 => Quantization::Bf16,
        }
    }
}

pub fn load_embedder_with(spec: &str, options: &EmbedderOptions) -> anyhow::Result<Embedder> {
    let dir = resolve_model(spec).with_context(|| format!("finding model {spec}"))?;
    Embedder::load(&dir, options).with_context(|| format!("loading model {}", dir.display()))
}

/// A cross-encoder for `--rerank` / `--rerank-model`, in f32: the default number format was
/// measured on embeddings' retrieval scores, not on rerankers' orderings.
pub fn load_reranker(spec: &str, device: Device) -> anyhow::Result<Reranker> {
    let dir = resolve_model(spec).with_context(|| format!("finding reranker {spec}"))?;
    let options = EmbedderOptions {
        device,
        ..EmbedderOptions::f32()
    };
    Reranker::load(&dir, &options).with_context(|| format!("loading reranker {}", dir.display()))
}
