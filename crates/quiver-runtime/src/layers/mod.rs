//! Layers shared by the architectures: each owns its weights and calls into [`crate::kernels`].

mod attention;
mod layer_norm;
mod linear;
mod lora;
mod reused;
mod rms_norm;
mod rotary;

pub use attention::{
    self_attention, AttentionProducts, AttentionShape, RelativePositionBias, Visibility,
};
pub use layer_norm::{LayerNorm, NormParts};
pub use linear::{DenseParts, Linear, FEW_ROWS};
pub use lora::{AdapterShape, EmbeddingLora, Lora, TaskProducts};
pub use reused::Reused;
pub use rms_norm::{normalize_heads, RmsNorm};
pub use rotary::Rotary;

/// How many threads the large matrix products may use: the rayon pool's size.
pub(crate) fn pool_threads() -> usize {
    rayon::current_num_threads()
}
