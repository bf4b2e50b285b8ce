//! Numeric kernels for the CPU backend.
//!
//! Matrix products go to the `gemm` crate, which measured as fast as OpenBLAS on these machines
//! (165–190 GFLOP/s on model shapes, ../shared/MEASURED.md). The element-wise kernels are our own
//! because they must fuse work (bias, activation, residual, normalisation) that a framework
//! would run as separate passes over memory.

use rayon::prelude::*;
use std::ops::Range;

mod activation;
#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod attention_tiles;
mod bf16;
mod few_rows;
mod int8;
mod matmul;
mod norm;
mod reduce;
mod softmax;

pub use activation::{gated_linear_unit, gelu_erf, gelu_tanh, relu, silu, Activation};
#[cfg(target_arch = "x86_64")]
pub use attention_tiles::{attend_on_tiles, attention_on_tiles, HeadLayout};
pub use bf16::{from_bf16, matmul_bf16, matmul_bf16_then, to_bf16, Bf16Kernel, Bf16Matrix};
pub use few_rows::{matmul_few_rows, PackedPanels};
pub use int8::{matmul_int8, matmul_int8_then, Int8Kernel, QuantizedMatrix};
pub use matmul::{matmul, MatMut, MatRef};
pub use norm::{add_layer_norm, add_residual, layer_norm, rms_norm};
pub use softmax::{exp_rows, fast_exp};

/// Runs `work` over blocks of whole rows of a row-major buffer, in parallel.
pub(crate) fn for_row_blocks<F>(values: &mut [f32], cols: usize, work: F)
where
    F: Fn(&mut [f32], Range<usize>) + Sync,
{
    const ROWS_PER_BLOCK: usize = 16;
    values
        .par_chunks_mut(cols * ROWS_PER_BLOCK)
        .enumerate()
        .for_each(|(index, block)| {
            let first = index * ROWS_PER_BLOCK;
            work(block, first..first + block.len() / cols);
        });
}

/// A zeroed buffer of `T` that starts on a 64-byte boundary (a cache line, and an AMX tile
/// row).
///
/// Why: a tile row that straddles two cache lines loads at a third of the speed. Four tile
/// loads and four `tdpbf16ps` ran at 950 GFLOP/s on one core from a `Vec`'s 16-byte-aligned
/// memory, and at 2,985 from 64-byte-aligned memory (the products alone: 2,959).
#[derive(Clone)]
pub(crate) struct Aligned<T> {
    lines: Vec<Line>,
    len: usize,
    _values: std::marker::PhantomData<T>,
}

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl<T: bytemuck::Pod> Aligned<T> {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> Self {
        let lines = (len * std::mem::size_of::<T>()).div_ceil(64);
        Aligned {
            lines: vec![Line([0; 64]); lines],
            len,
            _values: std::marker::PhantomData,
        }
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl<T: bytemuck::Pod> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

impl<T> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} values)", self.len)
    }
}

/// The kernel the environment variable `variable` names (read by `by_name`) when this CPU runs
/// it, else the first of `available` (fastest first): how a slower kernel is forced, to measure
/// or test what other machines get.
fn chosen<K: Copy + PartialEq>(
    available: &[K],
    variable: &str,
    by_name: impl Fn(&str) -> Option<K>,
) -> K {
    std::env::var(variable)
        .ok()
        .and_then(|name| by_name(&name))
        .filter(|kernel| available.contains(kernel))
        .unwrap_or(available[0])
}

#[cfg(test)]
pub(crate) mod tests {
    /// Deterministic values in [-1, 1) for the kernels' tests.
    pub fn sample(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }
}
