//! Layers shared by the architectures: each owns its weights and calls into [`crate::kernels`].

mod attention;
mod layer_norm;
mod linear;

pub use attention::{bidirectional_attention, AttentionShape, RelativePositionBias};
pub use layer_norm::LayerNorm;
pub use linear::Linear;

/// How many threads the large matrix products may use: the rayon pool's size.
pub(crate) fn pool_threads() -> usize {
    rayon::current_num_threads()
}
