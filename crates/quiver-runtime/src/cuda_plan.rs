//! What the host works out before launching the CUDA kernels (`cuda/kernels.cu`): attention's
//! block and key-tile sizes, and each token's task for the adapters' `mask_rows`. Kept apart
//! from cudarc so that `gpu_reference`, which runs the kernels' arithmetic on the CPU in tests,
//! runs this very code too.

use crate::PackedBatch;

/// Queries one attention block takes, a warp each: `QUERIES_PER_BLOCK` in `kernels.cu`.
pub const QUERIES_PER_BLOCK: usize = 8;

/// Keys per shared-memory tile: 32 (a warp scores one each) while two tiles of them fit
/// beside the queries, 16 for heads wider than 128.
pub fn key_tile(head_dim: usize) -> usize {
    if head_dim <= 128 {
        32
    } else {
        16
    }
}

/// Each token's task (`-1`: none), as `mask_rows` reads it.
pub fn row_tasks(batch: &PackedBatch) -> Vec<i32> {
    match batch.token_adapters() {
        None => vec![-1; batch.num_tokens()],
        Some(tasks) => tasks.iter().map(|t| t.map_or(-1, i32::from)).collect(),
    }
}

/// The tasks `row_tasks` names, each once, in order: those whose adapters a product runs.
pub fn tasks_used(row_tasks: &[i32]) -> Vec<usize> {
    let mut used: Vec<usize> = row_tasks
        .iter()
        .filter_map(|&t| usize::try_from(t).ok())
        .collect();
    used.sort_unstable();
    used.dedup();
    used
}
