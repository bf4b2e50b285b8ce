//! Numeric kernels for the CPU backend.
//!
//! Matrix products go to the `gemm` crate, which measured as fast as OpenBLAS on these machines
//! (165–190 GFLOP/s on model shapes, ../shared/MEASURED.md). The element-wise kernels are our own
//! because they must fuse work (bias, activation, residual, normalisation) that a framework
//! would run as separate passes over memory.

mod activation;
mod bf16;
mod few_rows;
mod int8;
mod matmul;
mod norm;
mod reduce;
mod softmax;

pub use activation::{gated_linear_unit, gelu_erf, gelu_tanh, relu, silu, Activation};
pub use bf16::{from_bf16, matmul_bf16, to_bf16, Bf16Kernel, Bf16Matrix};
pub use few_rows::{matmul_few_rows, PackedPanels};
pub use int8::{matmul_int8, Int8Kernel, QuantizedMatrix};
pub use matmul::{matmul, MatMut, MatRef};
pub use norm::{add_layer_norm, add_residual, layer_norm, rms_norm};
pub use softmax::{fast_exp, softmax_rows};
