//! `out = x · w` in bfloat16: weights stored as bf16 (half the memory of f32), each input row
//! rounded to bf16 on the fly, products summed in f32.
//!
//! bf16 keeps f32's exponent and 8 bits of its mantissa, so no scale is chosen and no outlier
//! needs care: each number is rounded to its nearest bf16 (ties to even), a relative error of at
//! most 2⁻⁹. Sums stay in f32.
//!
//! Why our own kernel: `gemm` has no bf16 × bf16 → f32 product, and the one instruction that
//! makes it pay, AVX-512 BF16 `vdpbf16ps` (32 bf16 products summed pairwise into 16 f32 lanes,
//! twice the multiply-adds of an f32 FMA), is a few lines of intrinsics. The weights are packed
//! for it as the int8 kernel packs them: pairs of consecutive `k` for 16 columns fill one
//! 64-byte vector.
//!
//! On a CPU with AMX (Intel Xeon since Sapphire Rapids) the products run on its tiles instead
//! ([`Bf16Kernel::Amx`]): same roundings, same f32 sums, several times the speed.
//!
//! Machines without AVX-512 BF16 run a portable loop of the same arithmetic (correct, not
//! fast; f32 or int8 serve them better). [`Bf16Kernel::detect`] picks one per process.

use super::{for_row_blocks, Aligned};
use rayon::prelude::*;
use std::ops::Range;

/// Columns in one packed block: one 16-lane vector of f32 sums.
const COLS: usize = 16;
/// Rows one pass keeps in registers: 6 rows × 4 column vectors = 24 accumulators of 32, with
/// 4 weight vectors and the broadcast input.
const ROWS_PER_PASS: usize = 6;
/// Column vectors one pass covers.
const VECTORS: usize = 4;

/// Which instructions run the bf16 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles, `tdpbf16ps`.
    Amx,
    /// AVX-512 BF16 `vdpbf16ps`.
    Avx512,
    /// Plain loops.
    Portable,
}

impl Bf16Kernel {
    /// The fastest kernel this CPU runs. `QUIVER_BF16_KERNEL=avx512` or `portable` picks a
    /// slower one (to measure and test it on a machine that has the faster instructions).
    pub fn detect() -> Bf16Kernel {
        super::chosen(
            &Self::available(),
            "QUIVER_BF16_KERNEL",
            |name| match name {
                "avx512" => Some(Bf16Kernel::Avx512),
                "portable" => Some(Bf16Kernel::Portable),
                _ => None,
            },
        )
    }

    /// Kernels this CPU runs, fastest first (the portable loop always).
    pub fn available() -> Vec<Bf16Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if super::amx::usable(super::amx::Products::Bf16) {
                kernels.push(Bf16Kernel::Amx);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
                kernels.push(Bf16Kernel::Avx512);
            }
        }
        kernels.push(Bf16Kernel::Portable);
        kernels
    }
}

/// `value` rounded to the nearest bf16 (ties to even), as its 16 bits.
#[inline(always)]
pub fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    // A NaN stays a NaN (rounding could carry its low payload bits into infinity). A select,
    // not an early return, so loops of conversions vectorise.
    let quiet_nan = ((bits >> 16) | 0x40) as u16;
    if value.is_nan() {
        quiet_nan
    } else {
        rounded
    }
}

/// The f32 a bf16 stands for (exact).
pub fn from_bf16(value: u16) -> f32 {
    f32::from_bits(u32::from(value) << 16)
}

/// A `[k, n]` weight matrix in bf16, packed for [`matmul_bf16`].
#[derive(Debug, Clone)]
pub struct Bf16Matrix {
    kernel: Bf16Kernel,
    k: usize,
    n: usize,
    /// `k` rounded up to the kernel's step: a pair, or for AMX a tile row of 32.
    k2: usize,
    /// `[n / 16 blocks][k2 / 2][16 columns][2]`, zero-padded.
    data: Aligned<u16>,
}

impl Bf16Matrix {
    /// Rounds `w` (`k × n`, row-major) to bf16 for the kernel this CPU runs best.
    pub fn pack(w: &[f32], k: usize, n: usize) -> Self {
        Self::pack_for(w, k, n, Bf16Kernel::detect())
    }

    /// Rounds `w` for `kernel`, which must be one of [`Bf16Kernel::available`].
    pub fn pack_for(w: &[f32], k: usize, n: usize, kernel: Bf16Kernel) -> Self {
        assert_eq!(w.len(), k * n, "w is not k × n");
        Self::pack_rows(k, n, kernel, |p| &w[p * n..])
    }

    /// Rounds the `k × n` matrix whose row `p` is `row(p)` (`n` values, or more) for `kernel`.
    fn pack_rows<'a>(
        k: usize,
        n: usize,
        kernel: Bf16Kernel,
        row: impl Fn(usize) -> &'a [f32],
    ) -> Self {
        let step = if kernel == Bf16Kernel::Amx { 32 } else { 2 };
        let mut packed = Self::zeroed(k, n, k.div_ceil(step) * step, kernel);
        let pairs_per_block = packed.k2 / 2;
        // A pair of consecutive k for one column is one u32, the even row's value in its low
        // half: first in memory on the little-endian targets this crate runs on.
        let words: &mut [u32] = bytemuck::cast_slice_mut(&mut packed.data);
        let (mut even, mut odd) = (vec![0u16; n], vec![0u16; n]);
        for pair in 0..k.div_ceil(2) {
            round_into(&mut even, &row(2 * pair)[..n]);
            match 2 * pair + 1 < k {
                true => round_into(&mut odd, &row(2 * pair + 1)[..n]),
                false => odd.fill(0),
            }
            for (b, first) in (0..n).step_by(COLS).enumerate() {
                let lanes = first..(first + COLS).min(n);
                let to = &mut words[(b * pairs_per_block + pair) * COLS..][..lanes.len()];
                for ((word, &low), &high) in
                    to.iter_mut().zip(&even[lanes.clone()]).zip(&odd[lanes])
                {
                    *word = u32::from(low) | u32::from(high) << 16;
                }
            }
        }
        packed
    }

    fn zeroed(k: usize, n: usize, k2: usize, kernel: Bf16Kernel) -> Self {
        Bf16Matrix {
            kernel,
            k,
            n,
            k2,
            data: Aligned::zeroed(n.div_ceil(COLS) * k2 * COLS),
        }
    }

    fn block(&self, b: usize) -> &[u16] {
        &self.data[b * self.k2 * COLS..(b + 1) * self.k2 * COLS]
    }
}

/// Each row of `x` (`rows × k`) in bf16, `rows × k2` (the padding is zeros, and multiplies
/// zero weights), rounded in parallel.
fn round_rows(x: &[f32], k: usize, k2: usize) -> Vec<u16> {
    let mut out = vec![0u16; x.len() / k * k2];
    const ROWS_PER_TASK: usize = 16;
    out.par_chunks_mut(ROWS_PER_TASK * k2)
        .zip(x.par_chunks(ROWS_PER_TASK * k))
        .for_each(|(out, x)| round_rows_into(out, x, k, k2));
    out
}

/// [`round_rows`] into `out` (padding included), on this thread.
fn round_rows_into(out: &mut [u16], x: &[f32], k: usize, k2: usize) {
    for (out, row) in out.chunks_exact_mut(k2).zip(x.chunks_exact(k)) {
        out[k..].fill(0);
        round_into(&mut out[..k], row);
    }
}

/// `out[i] = to_bf16(x[i])`, vectorised where the CPU converts to bf16 itself.
pub(super) fn round_into(out: &mut [u16], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the CPU has AVX-512 BF16 (and so AVX-512F).
        unsafe { avx512::round(out, x) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = to_bf16(v);
    }
}

/// `out[r, c] ≈ Σₖ x[r, k] · w[k, c]` for `x` `rows × k`, `out` `rows × n`, row-major.
/// Passes of [`ROWS_PER_PASS`] rows run in parallel, each writing its own rows of `out`.
pub fn matmul_bf16(out: &mut [f32], x: &[f32], rows: usize, w: &Bf16Matrix) {
    matmul_bf16_then(out, x, rows, w, |_, _| {});
}

/// [`matmul_bf16`], then `then(block, rows)` on each block of finished rows of `out` (the
/// range of rows it holds), by the task that computed it, while it is in cache: every row once.
///
/// Why: a layer's bias, activation or residual and norm, run as a pass of their own after the
/// product, read every output back from memory; that pass (the bias add most) was the largest
/// cost after the AMX tiles in an all-MiniLM-L6-v2 bf16 run (perf record, 500 code chunks).
/// Run on each task's rows instead, the end-to-end gain was within this machine's noise
/// (A/B, same vectors); it is kept because it reads the outputs once where there were two
/// passes.
pub fn matmul_bf16_then<F>(out: &mut [f32], x: &[f32], rows: usize, w: &Bf16Matrix, then: F)
where
    F: Fn(&mut [f32], Range<usize>) + Sync,
{
    let (k, n, k2) = (w.k, w.n, w.k2);
    assert_eq!(x.len(), rows * k, "x is not rows × k");
    assert_eq!(out.len(), rows * n, "out is not rows × n");
    if k == 0 {
        out.fill(0.0);
        for_row_blocks(out, n, then);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if w.kernel == Bf16Kernel::Amx {
        amx_tiles::product(out, x, w, &then);
        return;
    }
    let xb = round_rows(x, k, k2);
    let blocks = n.div_ceil(COLS);
    out.par_chunks_mut(ROWS_PER_PASS * n)
        .zip(xb.par_chunks(ROWS_PER_PASS * k2))
        .enumerate()
        .for_each(|(pass, (out_rows, a))| {
            let count = a.len() / k2;
            let mut tile = [0f32; ROWS_PER_PASS * VECTORS * COLS];
            for first_block in (0..blocks).step_by(VECTORS) {
                let vectors = VECTORS.min(blocks - first_block);
                let width = vectors * COLS;
                let tile = &mut tile[..count * width];
                let job = Tile {
                    a,
                    count,
                    k2,
                    w,
                    first_block,
                    vectors,
                };
                tile_product(tile, job);
                let first_col = first_block * COLS;
                let cols = width.min(n - first_col);
                for (sums, out_row) in tile.chunks_exact(width).zip(out_rows.chunks_exact_mut(n)) {
                    out_row[first_col..first_col + cols].copy_from_slice(&sums[..cols]);
                }
            }
            let first = pass * ROWS_PER_PASS;
            then(out_rows, first..first + count);
        });
}

/// One pass's work: `count` rows of bf16 inputs (`k2` each) against `vectors` 16-column blocks
/// of `w` from `first_block`.
#[derive(Clone, Copy)]
struct Tile<'a> {
    a: &'a [u16],
    count: usize,
    k2: usize,
    w: &'a Bf16Matrix,
    first_block: usize,
    vectors: usize,
}

/// `tile[r][v·16 + c] = Σₖ a[r, k] · block(first_block + v)[k][c]`.
fn tile_product(tile: &mut [f32], job: Tile<'_>) {
    match job.w.kernel {
        // SAFETY: the matrix was packed for a kernel of `Bf16Kernel::available`, so the CPU has
        // its features; `a` holds count × k2 values, every block k2 × 16, `tile` count × vectors
        // × 16 sums, count ≤ 6 and vectors ≤ 4.
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Avx512 => unsafe { avx512::tile(tile, job) },
        _ => portable_tile(tile, job),
    }
}

fn portable_tile(tile: &mut [f32], job: Tile<'_>) {
    let width = job.vectors * COLS;
    for r in 0..job.count {
        let row = &job.a[r * job.k2..(r + 1) * job.k2];
        for v in 0..job.vectors {
            let block = job.w.block(job.first_block + v);
            let mut sums = [0f32; COLS];
            for (pair, inputs) in row.chunks_exact(2).enumerate() {
                let (x0, x1) = (from_bf16(inputs[0]), from_bf16(inputs[1]));
                let weights = &block[pair * COLS * 2..(pair + 1) * COLS * 2];
                for (sum, w) in sums.iter_mut().zip(weights.chunks_exact(2)) {
                    *sum += x0 * from_bf16(w[0]) + x1 * from_bf16(w[1]);
                }
            }
            tile[r * width + v * COLS..r * width + (v + 1) * COLS].copy_from_slice(&sums);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Bf16Matrix, Tile, COLS, VECTORS};
    use std::arch::x86_64::*;

    /// `out[i] = to_bf16(x[i])`, 16 at a time with `vcvtneps2bf16` (ties to even too; it
    /// flushes subnormal inputs, below 1.2e-38, to zero).
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16 are available; `out` is as long as `x`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round(out: &mut [u16], x: &[f32]) {
        let whole = x.len() / 16 * 16;
        for (o, v) in out[..whole].chunks_exact_mut(16).zip(x.chunks_exact(16)) {
            let rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(v.as_ptr()));
            _mm256_storeu_si256(
                o.as_mut_ptr() as *mut __m256i,
                std::mem::transmute::<__m256bh, __m256i>(rounded),
            );
        }
        for (o, &v) in out[whole..].iter_mut().zip(&x[whole..]) {
            *o = super::to_bf16(v);
        }
    }

    /// # Safety
    /// AVX-512F and AVX-512 BF16 are available; sizes as [`super::tile_product`] promises.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile(tile: &mut [f32], job: Tile<'_>) {
        match (job.count, job.vectors) {
            (6, 4) => rows::<6, 4>(tile, job.a, job.k2, job.w, job.first_block),
            (5, 4) => rows::<5, 4>(tile, job.a, job.k2, job.w, job.first_block),
            (4, 4) => rows::<4, 4>(tile, job.a, job.k2, job.w, job.first_block),
            (3, 4) => rows::<3, 4>(tile, job.a, job.k2, job.w, job.first_block),
            (2, 4) => rows::<2, 4>(tile, job.a, job.k2, job.w, job.first_block),
            (1, 4) => rows::<1, 4>(tile, job.a, job.k2, job.w, job.first_block),
            (6, 3) => rows::<6, 3>(tile, job.a, job.k2, job.w, job.first_block),
            (5, 3) => rows::<5, 3>(tile, job.a, job.k2, job.w, job.first_block),
            (4, 3) => rows::<4, 3>(tile, job.a, job.k2, job.w, job.first_block),
            (3, 3) => rows::<3, 3>(tile, job.a, job.k2, job.w, job.first_block),
            (2, 3) => rows::<2, 3>(tile, job.a, job.k2, job.w, job.first_block),
            (1, 3) => rows::<1, 3>(tile, job.a, job.k2, job.w, job.first_block),
            (6, 2) => rows::<6, 2>(tile, job.a, job.k2, job.w, job.first_block),
            (5, 2) => rows::<5, 2>(tile, job.a, job.k2, job.w, job.first_block),
            (4, 2) => rows::<4, 2>(tile, job.a, job.k2, job.w, job.first_block),
            (3, 2) => rows::<3, 2>(tile, job.a, job.k2, job.w, job.first_block),
            (2, 2) => rows::<2, 2>(tile, job.a, job.k2, job.w, job.first_block),
            (1, 2) => rows::<1, 2>(tile, job.a, job.k2, job.w, job.first_block),
            (6, 1) => rows::<6, 1>(tile, job.a, job.k2, job.w, job.first_block),
            (5, 1) => rows::<5, 1>(tile, job.a, job.k2, job.w, job.first_block),
            (4, 1) => rows::<4, 1>(tile, job.a, job.k2, job.w, job.first_block),
            (3, 1) => rows::<3, 1>(tile, job.a, job.k2, job.w, job.first_block),
            (2, 1) => rows::<2, 1>(tile, job.a, job.k2, job.w, job.first_block),
            (1, 1) => rows::<1, 1>(tile, job.a, job.k2, job.w, job.first_block),
            // `tile_product` never asks for more than 6 rows or 4 vectors.
            _ => super::portable_tile(tile, job),
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn rows<const R: usize, const V: usize>(
        tile: &mut [f32],
        a: &[u16],
        k2: usize,
        w: &Bf16Matrix,
        first_block: usize,
    ) {
        debug_assert!(V <= VECTORS);
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let blocks: [*const u16; V] = std::array::from_fn(|v| w.block(first_block + v).as_ptr());
        let x = a.as_ptr();
        // Indexed loops over the const-sized arrays keep all R × V accumulators in registers
        // (see the int8 VNNI kernel).
        #[allow(clippy::needless_range_loop)]
        for pair in 0..k2 / 2 {
            let mut b = [_mm512_setzero_si512(); V];
            for v in 0..V {
                b[v] = _mm512_loadu_si512(blocks[v].add(pair * COLS * 2) as *const _);
            }
            for r in 0..R {
                let inputs = (x.add(r * k2 + pair * 2) as *const i32).read_unaligned();
                let broadcast: __m512bh = std::mem::transmute(_mm512_set1_epi32(inputs));
                for v in 0..V {
                    let weights: __m512bh = std::mem::transmute(b[v]);
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], broadcast, weights);
                }
            }
        }
        let out = tile.as_mut_ptr();
        #[allow(clippy::needless_range_loop)]
        for r in 0..R {
            for v in 0..V {
                _mm512_storeu_ps(out.add((r * V + v) * COLS), acc[r][v]);
            }
        }
    }
}

/// The product on AMX tiles: tasks of up to 128 rows, each 32 columns of `w` against every
/// group of 32 rows of the task in turn.
#[cfg(target_arch = "x86_64")]
mod amx_tiles {
    use super::super::amx::{self, TILE_BYTES};
    use super::{round_rows_into, Aligned, Bf16Matrix, COLS};
    use rayon::prelude::*;
    use std::ops::Range;

    /// Rows one task takes, in groups of 32 (two tiles of inputs). Each 32 columns of weights
    /// serve every group of the task while they are in cache.
    const ROWS_PER_TASK: usize = 128;
    /// Rows of one group.
    const GROUP: usize = 32;

    /// `out` (`rows × n`) ← `x` (`rows × k`) · `w`, then `then` on each task's rows.
    ///
    /// Each task rounds its own rows to bf16 just before it multiplies them: a pass of its own
    /// over all rows, into a fresh buffer, took a third of the time the tiles did (the
    /// first-touch page faults alone 8 %; `perf record` of examples/kernel_speed).
    pub fn product<F>(out: &mut [f32], x: &[f32], w: &Bf16Matrix, then: &F)
    where
        F: Fn(&mut [f32], Range<usize>) + Sync,
    {
        out.par_chunks_mut(ROWS_PER_TASK * w.n)
            .zip(x.par_chunks(ROWS_PER_TASK * w.k))
            .enumerate()
            .for_each(|(index, (out, x))| {
                let rows = x.len() / w.k;
                let groups = rows.next_multiple_of(GROUP);
                amx::with_scratch(groups * w.k2 * 2, |scratch| {
                    let a: &mut [u16] = bytemuck::cast_slice_mut(scratch);
                    round_rows_into(a, x, w.k, w.k2);
                    // Rows past the input's end, up to its last group, are zeros.
                    a[rows * w.k2..].fill(0);
                    // SAFETY: `w` was packed for `Bf16Kernel::Amx`, which `available` offers
                    // only when `amx::usable(Products::Bf16)`; `a` holds whole groups of 32
                    // rows of k2, a multiple of 32, for every row of `out`, 64-byte aligned.
                    unsafe { amx::with_full_tiles(|| task(out, a, w)) }
                });
                let first = index * ROWS_PER_TASK;
                then(out, first..first + rows);
            });
    }

    /// # Safety
    /// As [`product`] promises.
    unsafe fn task(out: &mut [f32], a: &[u16], w: &Bf16Matrix) {
        let n = w.n;
        let blocks = n.div_ceil(COLS);
        let mut buffer = Aligned::<f32>::zeroed(GROUP * 2 * COLS);
        let steps = w.k2 * 2 / TILE_BYTES;
        for first in (0..blocks).step_by(2) {
            let right = (first + 1 < blocks).then(|| w.block(first + 1).as_ptr() as *const u8);
            let left = w.block(first).as_ptr() as *const u8;
            let width = if right.is_some() { 2 * COLS } else { COLS };
            let column = first * COLS;
            for (group, out) in out.chunks_mut(GROUP * n).enumerate() {
                let inputs = a[group * GROUP * w.k2..].as_ptr() as *const u8;
                amx::sum_32_rows::<amx::Bf16>(inputs, w.k2 * 2, left, right, steps);
                if out.len() == GROUP * n && column + width <= n {
                    // Straight into `out`, rows `n` apart.
                    amx::store_32_rows_strided(out.as_mut_ptr().add(column) as *mut u8, width, n);
                } else {
                    amx::store_32_rows(buffer.as_mut_ptr() as *mut u8, width);
                    let kept = width.min(n - column);
                    for (sums, row) in buffer.chunks_exact(width).zip(out.chunks_exact_mut(n)) {
                        row[column..column + kept].copy_from_slice(&sums[..kept]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::sample;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: to the even one, 1.
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        // A hair above halfway rounds up.
        assert_eq!(
            from_bf16(to_bf16(1.0 + 1.0 / 256.0 + 1.0 / 65536.0)),
            1.0 + 1.0 / 128.0
        );
        // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: up, to the even one.
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        for value in sample(1000, 9) {
            let back = from_bf16(to_bf16(value));
            assert!(
                (back - value).abs() <= value.abs() / 256.0,
                "{value} → {back}"
            );
        }
    }

    #[test]
    fn every_kernel_equals_the_bf16_reference_and_is_close_to_f32() {
        for kernel in Bf16Kernel::available() {
            for rows in [1, 5, 6, 7, 13, 16, 33, 70] {
                for (k, n) in [(37, 16), (32, 32), (64, 53), (30, 40), (384, 130), (96, 64)] {
                    check_kernel(kernel, rows, k, n);
                }
            }
        }
    }

    fn check_kernel(kernel: Bf16Kernel, rows: usize, k: usize, n: usize) {
        let x = sample(rows * k, 3);
        let w = sample(k * n, 4);
        let packed = Bf16Matrix::pack_for(&w, k, n, kernel);
        let mut out = vec![f32::NAN; rows * n];
        matmul_bf16(&mut out, &x, rows, &packed);
        let rounded = |v: f32| f64::from(from_bf16(to_bf16(v)));
        for r in 0..rows {
            for c in 0..n {
                let got = f64::from(out[r * n + c]);
                // The same roundings in f64: only the f32 summation order differs.
                let reference: f64 = (0..k)
                    .map(|p| rounded(x[r * k + p]) * rounded(w[p * n + c]))
                    .sum();
                let magnitude: f64 = (0..k)
                    .map(|p| f64::from((x[r * k + p] * w[p * n + c]).abs()))
                    .sum();
                assert!(
                    (got - reference).abs() <= 1e-5 * magnitude.max(1.0),
                    "{kernel:?}, rows {rows}, {k}×{n}, [{r}, {c}]: {got} vs {reference}"
                );
                // Against f32: each product off by at most two roundings of 2⁻⁹.
                let exact: f64 = (0..k)
                    .map(|p| f64::from(x[r * k + p]) * f64::from(w[p * n + c]))
                    .sum();
                assert!(
                    (got - exact).abs() <= magnitude / 256.0,
                    "{kernel:?}, [{r}, {c}]: {got} vs f32 {exact}"
                );
            }
        }
    }
}
