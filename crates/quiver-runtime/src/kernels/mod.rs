//! Numeric kernels for the CPU backend.
//!
//! Matrix products go to the `gemm` crate, which measured as fast as OpenBLAS on these machines
//! (165–190 GFLOP/s on model shapes, ../shared/MEASURED.md). The element-wise kernels are our own
//! because they must fuse work (bias, activation, residual, normalisation) that a framework
//! would run as separate passes over memory.

mod activation;
mod few_rows;
mod matmul;
mod norm;
mod reduce;
mod softmax;

pub use activation::{gelu_erf, gelu_tanh, relu, silu, swiglu, Activation};
pub use few_rows::{matmul_few_rows, PackedPanels};
pub use matmul::{matmul, MatMut, MatRef};
pub use norm::{add_layer_norm, layer_norm, rms_norm};
pub use softmax::{fast_exp, softmax_rows};
