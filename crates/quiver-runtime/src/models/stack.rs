//! A loaded model as a device backend takes it: the CPU model's own layers, borrowed, with what
//! its embeddings add up. An architecture gives one through [`super::EncoderModel::stack`]; a
//! backend uploads the weights once and runs the same steps as the CPU layers, kernel for
//! kernel (`src/gpu_reference.rs` runs them on the CPU with each kernel's arithmetic, against
//! the model's own forward pass).

use super::post_norm::{LayerShape, Positions, PostNormLayer};
use super::pre_norm::PreNormStack;
use crate::layers::{EmbeddingLora, LayerNorm};
use crate::weights::Table;

pub struct Stack<'a> {
    pub embeddings: Embeddings<'a>,
    pub layers: Layers<'a>,
}

/// Each token's first hidden state: `scale` · its word's row, plus its position's row and its
/// token type's row where the model has them, then `norm` where it has one.
pub struct Embeddings<'a> {
    pub word: Rows<'a>,
    pub scale: f32,
    pub positions: Option<AbsolutePositions<'a>>,
    pub token_types: Option<TokenTypes<'a>>,
    /// Task updates of the word and token-type rows (jina-embeddings-v3), added before `norm`
    /// for each token whose sequence runs with a task.
    pub adapters: Option<&'a (EmbeddingLora, EmbeddingLora)>,
    pub norm: Option<&'a LayerNorm>,
}

/// A table of rows by id, as the model keeps it.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    /// Read from the checkpoint's file in its own format (f32, f16 or bf16).
    Table(&'a Table),
    /// `[ids, hidden]` f32.
    Dense(&'a [f32]),
}

/// Token-type rows.
#[derive(Clone, Copy)]
pub enum TokenTypes<'a> {
    /// `[types, hidden]`, row `PackedBatch::token_types[t]` for token `t` (row 0 for a batch
    /// without types): BERT's segments.
    PerToken(&'a [f32]),
    /// One row that every token adds (NomicBERT).
    Constant(&'a [f32]),
}

/// Learned absolute positions: a sequence's token `i` takes row `first + i`.
pub struct AbsolutePositions<'a> {
    pub table: &'a [f32],
    pub first: usize,
}

pub enum Layers<'a> {
    /// BERT, RoBERTa, MPNet, NomicBERT: attention, add and norm; feed-forward, add and norm.
    PostNorm {
        layers: &'a [PostNormLayer],
        shape: LayerShape,
        positions: Positions<'a>,
    },
    /// Qwen2/3, Gemma 3, ModernBERT: norm, attention, add; norm, feed-forward, add; a final norm.
    PreNorm(&'a PreNormStack),
}

impl<'a> Stack<'a> {
    /// A pre-norm model's: its word rows times `scale`, an optional norm, then `layers`.
    pub fn pre_norm(
        word: &'a Table,
        scale: f32,
        norm: Option<&'a LayerNorm>,
        layers: &'a PreNormStack,
    ) -> Self {
        Stack {
            embeddings: Embeddings {
                word: Rows::Table(word),
                scale,
                positions: None,
                token_types: None,
                adapters: None,
                norm,
            },
            layers: Layers::PreNorm(layers),
        }
    }
}

impl Rows<'_> {
    /// The rows for `ids`, one after another, `width` values each.
    pub fn gather(&self, ids: &[u32], width: usize) -> Vec<f32> {
        match self {
            Rows::Table(table) => table.gather(ids),
            Rows::Dense(rows) => ids
                .iter()
                .flat_map(|&id| &rows[id as usize * width..(id as usize + 1) * width])
                .copied()
                .collect(),
        }
    }
}
