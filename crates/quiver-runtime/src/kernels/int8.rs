//! `out = x · w` in 8-bit integers: dynamic int8 quantisation of a dense layer.
//!
//! Weights are quantised once, per output column (symmetric: `w ≈ sw[c] · wq[k, c]`, `wq` in
//! -127..=127); each input row is quantised on the fly over its own range, min to max
//! (`x ≈ sx[r] · (xq[r, k] − zx[r])`, `xq` in 0..=255, `zx[r]` the level of 0.0). The product of
//! the integers is exact in i32, so `out[r, c] = sx[r] · sw[c] · (Σₖ xq·wq − zx[r] · Σₖ wq)`.
//!
//! Why the row's own range rather than a symmetric ±max: the inputs of most layers are lopsided
//! (a GELU's output never goes below −0.17), and a symmetric scale spends half of the 256 levels
//! on values that never occur. With the row's range, all-MiniLM-L6-v2's worst text went from
//! cosine 0.9875 to 0.9958 against f32 and feed-forward down projections could be quantised too
//! (PyTorch simulation of both schemes, 254 texts; measured again in Rust by the parity test).
//!
//! A few input channels of some layers carry weights tens of times larger than any other (in
//! all-mpnet-base-v2's sixth feed-forward down projection one channel reaches 15.5 where the
//! typical channel's largest weight is 0.16). Quantised per column with the rest, they set the
//! column's scale and every other weight of the column rounds to nothing: that layer alone took
//! the model's worst text to cosine 0.85. Such channels ([`ExactChannels`]) stay in f32, as a
//! rank-few product added to the integer one, and leave both the weights' and the inputs'
//! ranges. With them every dense layer runs in int8 (the down projections had to stay in f32
//! before) and every text of the parity test but one stays above cosine 0.99 for both
//! all-MiniLM-L6-v2 and all-mpnet-base-v2; the exception, one word repeated, is explained there.
//!
//! Why our own kernel: no crate of the field offers an int8 GEMM for CPU; the one instruction
//! that makes it pay, AVX-512 VNNI `vpdpbusd` (64 u8×i8 products summed into 16 i32 lanes), is a
//! few lines of intrinsics. The weights are packed for it: groups of 4 consecutive `k` for 16
//! columns fill one 64-byte vector.
//!
//! AVX2 machines (no VNNI) get the same sums from `vpmaddubsw` (u8×i8 pairs added into i16)
//! and `vpmaddwd` (i16 pairs into i32). The i16 step saturates unless `2 · 255 · |wq| < 2¹⁵`,
//! so for that kernel weights are quantised to 7 bits (−63..=63), as ONNX Runtime's
//! `reduce_range` does for the same instruction. Other machines run a portable loop of the same
//! arithmetic (correct, not fast). [`Int8Kernel::detect`] picks one per process.
//!
//! On a CPU with AMX-INT8 (Intel Xeon since Sapphire Rapids) the same integer sums run on its
//! tiles (`tdpbusd`, [`Int8Kernel::Amx`]): the same packing, `k` padded to 64.

use super::{reduce, Aligned};
use rayon::prelude::*;
use std::ops::Range;

/// Columns in one packed block: one 16-lane vector of i32 sums.
const COLS: usize = 16;
/// Rows one pass keeps in registers: 6 rows × 4 column vectors = 24 accumulators of 32.
const ROWS_PER_PASS: usize = 6;
/// Column vectors one pass covers.
const VECTORS: usize = 4;

/// Which instructions run the integer products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AMX tiles, `tdpbusd`: 8-bit weights.
    Amx,
    /// AVX-512 VNNI: 8-bit weights.
    Vnni,
    /// AVX2 `vpmaddubsw`: 7-bit weights, so the 16-bit pair sums cannot saturate.
    Avx2,
    /// Plain loops: 8-bit weights.
    Portable,
}

impl Int8Kernel {
    /// The fastest kernel this CPU runs. `QUIVER_INT8_KERNEL=vnni|avx2|portable` picks a slower
    /// one (to measure what machines without AMX or VNNI get); a kernel the CPU lacks is never
    /// chosen.
    pub fn detect() -> Int8Kernel {
        super::chosen(
            &Self::available(),
            "QUIVER_INT8_KERNEL",
            |name| match name {
                "vnni" => Some(Int8Kernel::Vnni),
                "avx2" => Some(Int8Kernel::Avx2),
                "portable" => Some(Int8Kernel::Portable),
                _ => None,
            },
        )
    }

    /// Kernels this CPU runs, fastest first (the portable loop always).
    pub fn available() -> Vec<Int8Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if super::amx::usable(super::amx::Products::Int8) {
                kernels.push(Int8Kernel::Amx);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
                kernels.push(Int8Kernel::Vnni);
            }
            if is_x86_feature_detected!("avx2") {
                kernels.push(Int8Kernel::Avx2);
            }
        }
        kernels.push(Int8Kernel::Portable);
        kernels
    }

    /// Largest weight magnitude the kernel's arithmetic allows.
    fn weight_levels(self) -> f32 {
        match self {
            Int8Kernel::Avx2 => 63.0,
            Int8Kernel::Amx | Int8Kernel::Vnni | Int8Kernel::Portable => 127.0,
        }
    }
}

/// An input channel is kept exact when its largest weight is this many times the median
/// channel's largest weight ...
const OUTLIER_RATIO: f32 = 16.0;
/// ... up to this many channels per matrix (all-mpnet-base-v2 needs at most 4 per layer at
/// ratio 16; ratio 8 marked twice as many and measured no better).
const MAX_EXACT_CHANNELS: usize = 16;

/// Input channels (rows `k` of the weights) computed in f32 beside the integer product.
#[derive(Debug, Clone, Default)]
struct ExactChannels {
    /// Ascending channel indices.
    channels: Vec<usize>,
    /// `[channels.len(), n]`: each channel's weights, row-major.
    weights: Vec<f32>,
}

impl ExactChannels {
    /// The channels of `w` (`k × n`) whose weights dwarf the typical channel's.
    fn find(w: &[f32], n: usize) -> ExactChannels {
        let largest: Vec<f32> = w
            .chunks_exact(n)
            .map(|row| row.iter().fold(0.0f32, |m, v| m.max(v.abs())))
            .collect();
        let mut sorted = largest.clone();
        sorted.sort_by(f32::total_cmp);
        let median = sorted[sorted.len() / 2];
        let mut outliers: Vec<usize> = (0..largest.len())
            .filter(|&k| largest[k] > OUTLIER_RATIO * median)
            .collect();
        outliers.sort_by(|&a, &b| largest[b].total_cmp(&largest[a]));
        outliers.truncate(MAX_EXACT_CHANNELS);
        outliers.sort_unstable();
        let weights = outliers
            .iter()
            .flat_map(|&k| w[k * n..(k + 1) * n].iter().copied())
            .collect();
        ExactChannels {
            channels: outliers,
            weights,
        }
    }

    /// `out_row += Σ x_row[k] · w[k, ·]` over the exact channels.
    fn add_products(&self, out_row: &mut [f32], x_row: &[f32]) {
        let n = out_row.len();
        for (&k, weights) in self.channels.iter().zip(self.weights.chunks_exact(n)) {
            let x = x_row[k];
            out_row
                .iter_mut()
                .zip(weights)
                .for_each(|(o, &w)| *o += x * w);
        }
    }
}

/// A `[k, n]` weight matrix quantised per column and packed for [`matmul_int8`].
#[derive(Debug, Clone)]
pub struct QuantizedMatrix {
    kernel: Int8Kernel,
    k: usize,
    n: usize,
    /// `k` rounded up to the kernel's step: a group of 4, or for AMX a tile row of 64.
    k4: usize,
    /// `[n / 16 blocks][k4 / 4][16 columns][4]`, zero-padded.
    data: Aligned<i8>,
    /// Per column: `sw[c]`.
    scales: Vec<f32>,
    /// Per column: `Σₖ wq[k, c]`, what each level of an input row's zero point adds.
    column_sums: Vec<i32>,
    /// Channels left out of the integer product (their `wq` are 0).
    exact: ExactChannels,
}

impl QuantizedMatrix {
    /// Quantises `w` (`k × n`, row-major) for the kernel this CPU runs best.
    pub fn quantize(w: &[f32], k: usize, n: usize) -> Self {
        Self::quantize_for(w, k, n, Int8Kernel::detect())
    }

    /// Quantises `w` for `kernel`, which must be one of [`Int8Kernel::available`].
    pub fn quantize_for(w: &[f32], k: usize, n: usize, kernel: Int8Kernel) -> Self {
        assert_eq!(w.len(), k * n, "w is not k × n");
        let levels = kernel.weight_levels();
        let step = if kernel == Int8Kernel::Amx { 64 } else { 4 };
        let k4 = k.div_ceil(step) * step;
        let blocks = n.div_ceil(COLS);
        let exact = ExactChannels::find(w, n);
        let quantized_rows = |p: &usize| exact.channels.binary_search(p).is_err();
        let mut scales = vec![0.0f32; n];
        for p in (0..k).filter(quantized_rows) {
            for (scale, &value) in scales.iter_mut().zip(&w[p * n..(p + 1) * n]) {
                *scale = scale.max(value.abs());
            }
        }
        scales.iter_mut().for_each(|s| *s /= levels);
        let mut data = Aligned::zeroed(blocks * k4 * COLS);
        let mut column_sums = vec![0i32; n];
        for p in (0..k).filter(quantized_rows) {
            for c in 0..n {
                let scale = scales[c];
                let q = if scale > 0.0 {
                    (w[p * n + c] / scale).round().clamp(-levels, levels) as i8
                } else {
                    0
                };
                let (block, lane) = (c / COLS, c % COLS);
                data[block * k4 * COLS + (p / 4) * COLS * 4 + lane * 4 + p % 4] = q;
                column_sums[c] += i32::from(q);
            }
        }
        QuantizedMatrix {
            kernel,
            k,
            n,
            k4,
            data,
            scales,
            column_sums,
            exact,
        }
    }

    fn block(&self, b: usize) -> &[i8] {
        &self.data[b * self.k4 * COLS..(b + 1) * self.k4 * COLS]
    }

    /// Adds the exact channels' products to each row of `out_rows` (`n` each), from the
    /// matching rows of `x_rows` (`k` each).
    fn add_exact(&self, out_rows: &mut [f32], x_rows: &[f32]) {
        if self.exact.channels.is_empty() {
            return;
        }
        let rows = out_rows.chunks_exact_mut(self.n);
        for (out_row, x_row) in rows.zip(x_rows.chunks_exact(self.k)) {
            self.exact.add_products(out_row, x_row);
        }
    }
}

/// Inputs quantised row by row: `xq` (`rows × k4`; the padding multiplies zero weights) and
/// each row's scale and zero point.
struct QuantizedRows {
    data: Vec<u8>,
    levels: Vec<RowLevels>,
}

/// How one input row maps to bytes: `x ≈ scale · (xq − zero)`.
#[derive(Clone, Copy, Default)]
struct RowLevels {
    scale: f32,
    zero: i32,
}

impl RowLevels {
    /// 256 levels from the minimum to the maximum of the values in `slices`, widened to hold
    /// 0.0 exactly (so zero padding and exact zeros stay exact).
    fn spanning<'a>(slices: impl Iterator<Item = &'a [f32]>) -> RowLevels {
        // Lane-wise minima and maxima: a plain fold over the values is a serial chain of
        // dependent min/max, and it took longer than the AMX tiles' products (perf record of
        // examples/kernel_speed).
        let (low, high) = slices.fold((0.0f32, 0.0f32), |(lo, hi), values| {
            (lo.min(reduce::min(values)), hi.max(reduce::max(values)))
        });
        Self::between(low, high)
    }

    /// 256 levels from `low` (≤ 0) to `high` (≥ 0).
    fn between(low: f32, high: f32) -> RowLevels {
        let scale = (high - low) / 255.0;
        if scale > 0.0 {
            let zero = (-low / scale).round().clamp(0.0, 255.0) as i32;
            RowLevels { scale, zero }
        } else {
            RowLevels::default()
        }
    }
}

/// Quantises each row of `x` (`rows × k`), leaving out the `exact` channels: they sit at the
/// row's zero level and do not widen its range.
fn quantize_rows(x: &[f32], rows: usize, k: usize, k4: usize, exact: &[usize]) -> QuantizedRows {
    let mut data = vec![0u8; rows * k4];
    let mut levels = vec![RowLevels::default(); rows];
    data.par_chunks_mut(k4)
        .zip(levels.par_iter_mut())
        .zip(x.par_chunks(k))
        .for_each(|((out, levels), row)| *levels = quantize_row(out, row, exact));
    QuantizedRows { data, levels }
}

/// One row of [`quantize_rows`] into `out` (`k4` bytes, padding included).
fn quantize_row(out: &mut [u8], row: &[f32], exact: &[usize]) -> RowLevels {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { avx512_rows::quantize_row(out, row, exact) };
    }
    quantize_row_portable(out, row, exact)
}

/// [`quantize_row`] on any CPU, with or without exact channels.
fn quantize_row_portable(out: &mut [u8], row: &[f32], exact: &[usize]) -> RowLevels {
    out[row.len()..].fill(0);
    let levels = RowLevels::spanning(slices_outside(row, exact));
    if levels.scale > 0.0 {
        let inverse = 1.0 / levels.scale;
        let zero = levels.zero as f32;
        for (o, &v) in out.iter_mut().zip(row) {
            *o = ((v * inverse).round() + zero).clamp(0.0, 255.0) as u8;
        }
        for &p in exact {
            out[p] = levels.zero as u8;
        }
    } else {
        out[..row.len()].fill(0);
    }
    levels
}

/// The slices of `row` between the ascending channel indices `exact`, so no value is checked
/// against the list.
fn slices_outside<'a>(row: &'a [f32], exact: &'a [usize]) -> impl Iterator<Item = &'a [f32]> {
    let starts = std::iter::once(0).chain(exact.iter().map(|&p| p + 1));
    let ends = exact.iter().copied().chain(std::iter::once(row.len()));
    starts.zip(ends).map(move |(start, end)| &row[start..end])
}

/// `out[r, c] ≈ Σₖ x[r, k] · w[k, c]` for `x` `rows × k`, `out` `rows × n`, row-major.
/// Passes of [`ROWS_PER_PASS`] rows run in parallel, each writing its own rows of `out`.
pub fn matmul_int8(out: &mut [f32], x: &[f32], rows: usize, w: &QuantizedMatrix) {
    matmul_int8_then(out, x, rows, w, |_, _| {});
}

/// [`matmul_int8`], then `then(block, rows)` on each block of finished rows of `out` by the
/// task that computed it, as [`super::matmul_bf16_then`] does.
pub fn matmul_int8_then<F>(out: &mut [f32], x: &[f32], rows: usize, w: &QuantizedMatrix, then: F)
where
    F: Fn(&mut [f32], Range<usize>) + Sync,
{
    let (k, n, k4) = (w.k, w.n, w.k4);
    assert_eq!(x.len(), rows * k, "x is not rows × k");
    assert_eq!(out.len(), rows * n, "out is not rows × n");
    #[cfg(target_arch = "x86_64")]
    if w.kernel == Int8Kernel::Amx {
        amx_tiles::product(out, x, w, &then);
        return;
    }
    let xq = quantize_rows(x, rows, k, k4, &w.exact.channels);
    let blocks = n.div_ceil(COLS);
    out.par_chunks_mut(ROWS_PER_PASS * n)
        .zip(xq.data.par_chunks(ROWS_PER_PASS * k4))
        .zip(xq.levels.par_chunks(ROWS_PER_PASS))
        .zip(x.par_chunks(ROWS_PER_PASS * k))
        .enumerate()
        .for_each(|(pass, (((out_rows, a), row_levels), x_rows))| {
            let count = row_levels.len();
            let mut tile = [0i32; ROWS_PER_PASS * VECTORS * COLS];
            for first_block in (0..blocks).step_by(VECTORS) {
                let vectors = VECTORS.min(blocks - first_block);
                let width = vectors * COLS;
                let tile = &mut tile[..count * width];
                let job = Tile {
                    a,
                    count,
                    k4,
                    w,
                    first_block,
                    vectors,
                };
                tile_product(tile, job);
                rescale(out_rows, tile, width, first_block * COLS, row_levels, w);
            }
            w.add_exact(out_rows, x_rows);
            let first = pass * ROWS_PER_PASS;
            then(out_rows, first..first + count);
        });
}

/// `out_rows[r][first_col + c] = sx[r] · sw[c] · (sums[r][c] − zx[r] · Σₖ wq[k, c])` for the
/// rows of `sums` (`width` integer sums each, from column `first_col`) that `out_rows` holds,
/// and the columns inside `n`.
fn rescale(
    out_rows: &mut [f32],
    sums: &[i32],
    width: usize,
    first_col: usize,
    row_levels: &[RowLevels],
    w: &QuantizedMatrix,
) {
    let n = w.n;
    let columns = first_col..first_col + width.min(n - first_col);
    for ((sums, out_row), levels) in sums
        .chunks_exact(width)
        .zip(out_rows.chunks_exact_mut(n))
        .zip(row_levels)
    {
        let targets = out_row[columns.clone()].iter_mut();
        for (((o, &sum), &column_scale), &column_sum) in targets
            .zip(sums)
            .zip(&w.scales[columns.clone()])
            .zip(&w.column_sums[columns.clone()])
        {
            let integer = sum - levels.zero * column_sum;
            *o = levels.scale * column_scale * integer as f32;
        }
    }
}

/// [`quantize_row`] in AVX-512: range and bytes 16 lanes at a time, with a fused multiply-add
/// and a rounding conversion.
///
/// Why: the compiler's loops (a lane-wise min/max, then `round`, `clamp` and a saturating
/// cast per value) were a quarter of an all-MiniLM-L6-v2 int8 run on AMX, twice the tiles'
/// products (perf record, 500 code chunks). Rows with exact channels took that slow path too
/// until they were given this one: 18.7 % of the same run, against the tiles' 13 %.
#[cfg(target_arch = "x86_64")]
mod avx512_rows {
    use super::{slices_outside, RowLevels};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F is available; `out` is at least as long as `row`; `exact` ascends and indexes
    /// `row`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quantize_row(out: &mut [u8], row: &[f32], exact: &[usize]) -> RowLevels {
        let len = row.len();
        let whole = len / 16 * 16;
        let tail: __mmask16 = ((1u32 << (len - whole)) - 1) as __mmask16;
        let x = row.as_ptr();
        // Zeros in the masked-off lanes: the range holds 0.0 anyway.
        let last = _mm512_maskz_loadu_ps(tail, x.add(whole));
        let levels = if exact.is_empty() {
            let (mut low, mut high) = (
                _mm512_min_ps(last, _mm512_setzero_ps()),
                _mm512_max_ps(last, _mm512_setzero_ps()),
            );
            for i in (0..whole).step_by(16) {
                let v = _mm512_loadu_ps(x.add(i));
                low = _mm512_min_ps(low, v);
                high = _mm512_max_ps(high, v);
            }
            RowLevels::between(_mm512_reduce_min_ps(low), _mm512_reduce_max_ps(high))
        } else {
            RowLevels::spanning(slices_outside(row, exact))
        };
        out[len..].fill(0);
        if levels.scale <= 0.0 {
            out[..len].fill(0);
            return levels;
        }
        let inverse = _mm512_set1_ps(1.0 / levels.scale);
        let zero = _mm512_set1_ps(levels.zero as f32);
        let (floor, ceiling) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
        // Rounded to nearest (ties to even; the portable loop rounds ties away from zero).
        let byte = |v: __m512| {
            let q = _mm512_cvtps_epi32(_mm512_fmadd_ps(v, inverse, zero));
            _mm512_min_epi32(_mm512_max_epi32(q, floor), ceiling)
        };
        let to = out.as_mut_ptr();
        for i in (0..whole).step_by(16) {
            let q = byte(_mm512_loadu_ps(x.add(i)));
            _mm_storeu_si128(to.add(i) as *mut __m128i, _mm512_cvtepi32_epi8(q));
        }
        _mm512_mask_cvtepi32_storeu_epi8(to.add(whole) as *mut _, tail, byte(last));
        for &p in exact {
            out[p] = levels.zero as u8;
        }
        levels
    }
}

/// The product on AMX tiles: tasks of 32 rows, each against every 32 columns of `w` in turn,
/// the integer sums of each 32 × 32 block rescaled while they are in cache.
#[cfg(target_arch = "x86_64")]
mod amx_tiles {
    use super::super::amx::{self, TILE_BYTES};
    use super::{quantize_row, rescale, Aligned, QuantizedMatrix, RowLevels, COLS};
    use rayon::prelude::*;
    use std::ops::Range;

    /// Rows one task takes: two tiles of inputs.
    const ROWS_PER_TASK: usize = 32;

    /// `out` (`rows × n`) ← `x` (`rows × k`) · `w`, then `then` on each task's rows.
    ///
    /// Each task quantises its own 32 rows just before it multiplies them, as the bf16 kernel
    /// rounds them: no pass over all rows into a fresh buffer first.
    pub fn product<F>(out: &mut [f32], x: &[f32], w: &QuantizedMatrix, then: &F)
    where
        F: Fn(&mut [f32], Range<usize>) + Sync,
    {
        let (n, k, k4) = (w.n, w.k, w.k4);
        out.par_chunks_mut(ROWS_PER_TASK * n)
            .zip(x.par_chunks(ROWS_PER_TASK * k))
            .enumerate()
            .for_each(|(index, (out, x))| {
                let rows = x.len() / k;
                let mut levels = [RowLevels::default(); ROWS_PER_TASK];
                amx::with_scratch(ROWS_PER_TASK * k4, |a| {
                    let quantized = a.chunks_exact_mut(k4).zip(x.chunks_exact(k));
                    for ((bytes, row), levels) in quantized.zip(&mut levels) {
                        *levels = quantize_row(bytes, row, &w.exact.channels);
                    }
                    // Rows past the input's end are zeros.
                    a[rows * k4..].fill(0);
                    // SAFETY: `w` was quantised for `Int8Kernel::Amx`, which `available` offers
                    // only when `amx::usable(Products::Int8)`; `a` holds 32 full rows of k4, a
                    // multiple of 64, 64-byte aligned.
                    unsafe { amx::with_full_tiles(|| task(out, a, &levels[..rows], w)) };
                });
                w.add_exact(out, x);
                let first = index * ROWS_PER_TASK;
                then(out, first..first + rows);
            });
    }

    /// # Safety
    /// As [`product`] promises.
    unsafe fn task(out: &mut [f32], a: &[u8], levels: &[RowLevels], w: &QuantizedMatrix) {
        let blocks = w.n.div_ceil(COLS);
        // Aligned, as every tile's memory must be to store at full speed.
        let mut sums = Aligned::<i32>::zeroed(ROWS_PER_TASK * 2 * COLS);
        for first in (0..blocks).step_by(2) {
            let right = (first + 1 < blocks).then(|| w.block(first + 1).as_ptr() as *const u8);
            let steps = w.k4 / TILE_BYTES;
            let left = w.block(first).as_ptr() as *const u8;
            amx::sum_32_rows::<amx::U8I8>(a.as_ptr(), w.k4, left, right, steps);
            let width = if right.is_some() { 2 * COLS } else { COLS };
            amx::store_32_rows(sums.as_mut_ptr() as *mut u8, width);
            rescale(
                out,
                &sums[..ROWS_PER_TASK * width],
                width,
                first * COLS,
                levels,
                w,
            );
        }
    }
}

/// One pass's work: `count` rows of quantised inputs (`k4` bytes each) against `vectors`
/// 16-column blocks of `w` from `first_block`.
#[derive(Clone, Copy)]
struct Tile<'a> {
    a: &'a [u8],
    count: usize,
    k4: usize,
    w: &'a QuantizedMatrix,
    first_block: usize,
    vectors: usize,
}

/// `tile[r][v·16 + c] = Σₖ a[r, k] · block(first_block + v)[k][c]`.
fn tile_product(tile: &mut [i32], job: Tile<'_>) {
    match job.w.kernel {
        // SAFETY (both): the matrix was quantised for a kernel of `Int8Kernel::available`, so
        // the CPU has its features; `a` holds count × k4 bytes, every block k4 × 16, `tile`
        // count × vectors × 16 sums, count ≤ 6 and vectors ≤ 4.
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Vnni => unsafe { vnni::tile(tile, job) },
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => unsafe { avx2::tile(tile, job) },
        _ => portable_tile(tile, job),
    }
}

fn portable_tile(tile: &mut [i32], job: Tile<'_>) {
    let width = job.vectors * COLS;
    for r in 0..job.count {
        let row = &job.a[r * job.k4..(r + 1) * job.k4];
        for v in 0..job.vectors {
            let block = job.w.block(job.first_block + v);
            for c in 0..COLS {
                let mut sum = 0i32;
                for (group, bytes) in row.chunks_exact(4).enumerate() {
                    let weights = &block[group * COLS * 4 + c * 4..][..4];
                    for (&x, &q) in bytes.iter().zip(weights) {
                        sum += i32::from(x) * i32::from(q);
                    }
                }
                tile[r * width + v * COLS + c] = sum;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{QuantizedMatrix, Tile, COLS, VECTORS};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F and AVX-512 VNNI are available; sizes as [`super::tile_product`] promises.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn tile(tile: &mut [i32], job: Tile<'_>) {
        match (job.count, job.vectors) {
            (6, 4) => rows::<6, 4>(tile, job.a, job.k4, job.w, job.first_block),
            (5, 4) => rows::<5, 4>(tile, job.a, job.k4, job.w, job.first_block),
            (4, 4) => rows::<4, 4>(tile, job.a, job.k4, job.w, job.first_block),
            (3, 4) => rows::<3, 4>(tile, job.a, job.k4, job.w, job.first_block),
            (2, 4) => rows::<2, 4>(tile, job.a, job.k4, job.w, job.first_block),
            (1, 4) => rows::<1, 4>(tile, job.a, job.k4, job.w, job.first_block),
            (r, v) => {
                for row in 0..r {
                    for vector in 0..v {
                        let mut one = [0i32; COLS];
                        rows::<1, 1>(
                            &mut one,
                            &job.a[row * job.k4..],
                            job.k4,
                            job.w,
                            job.first_block + vector,
                        );
                        let at = row * v * COLS + vector * COLS;
                        tile[at..at + COLS].copy_from_slice(&one);
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    unsafe fn rows<const R: usize, const V: usize>(
        tile: &mut [i32],
        a: &[u8],
        k4: usize,
        w: &QuantizedMatrix,
        first_block: usize,
    ) {
        debug_assert!(V <= VECTORS);
        let mut acc = [[_mm512_setzero_si512(); V]; R];
        let blocks: [*const i8; V] = std::array::from_fn(|v| w.block(first_block + v).as_ptr());
        let x = a.as_ptr();
        // Indexed loops over the const-sized arrays, here and in the stores below: the compiler
        // unrolls them and keeps all R × V accumulators in registers. Iterators (`iter_mut`,
        // `flatten`) take the arrays' addresses and it spilled every accumulator to the stack on
        // every step (perf annotate), at half the speed.
        #[allow(clippy::needless_range_loop)]
        for group in 0..k4 / 4 {
            let mut b = [_mm512_setzero_si512(); V];
            for v in 0..V {
                b[v] = _mm512_loadu_si512(blocks[v].add(group * COLS * 4) as *const _);
            }
            for r in 0..R {
                let bytes = (x.add(r * k4 + group * 4) as *const i32).read_unaligned();
                let broadcast = _mm512_set1_epi32(bytes);
                for v in 0..V {
                    acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], broadcast, b[v]);
                }
            }
        }
        let out = tile.as_mut_ptr();
        #[allow(clippy::needless_range_loop)]
        for r in 0..R {
            for v in 0..V {
                _mm512_storeu_si512(out.add((r * V + v) * COLS) as *mut _, acc[r][v]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tile, COLS};
    use std::arch::x86_64::*;

    /// Rows one pass keeps in registers: 4 rows × 2 vectors of 8 sums (one 16-column block),
    /// with the block's two weight vectors, the broadcast input and the products: 14 of the 16
    /// ymm registers.
    const ROWS: usize = 4;

    /// # Safety
    /// AVX2 is available; sizes as [`super::tile_product`] promises; weights within ±63.
    #[target_feature(enable = "avx2")]
    pub unsafe fn tile(tile: &mut [i32], job: Tile<'_>) {
        let width = job.vectors * COLS;
        for v in 0..job.vectors {
            let block = job.w.block(job.first_block + v);
            let mut first_row = 0;
            while first_row < job.count {
                let take = (job.count - first_row).min(ROWS);
                let x = &job.a[first_row * job.k4..];
                let out = &mut tile[first_row * width + v * COLS..];
                match take {
                    4 => rows::<4>(out, width, x, job.k4, block),
                    3 => rows::<3>(out, width, x, job.k4, block),
                    2 => rows::<2>(out, width, x, job.k4, block),
                    _ => rows::<1>(out, width, x, job.k4, block),
                }
                first_row += take;
            }
        }
    }

    /// `out[r · width + c] = Σₖ x[r, k] · block[k][c]` for `R` rows and the block's 16 columns.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn rows<const R: usize>(
        out: &mut [i32],
        width: usize,
        x: &[u8],
        k4: usize,
        block: &[i8],
    ) {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let (x, weights) = (x.as_ptr(), block.as_ptr());
        // Indexed loops keep the accumulators in registers (see the VNNI kernel).
        #[allow(clippy::needless_range_loop)]
        for group in 0..k4 / 4 {
            let low = _mm256_loadu_si256(weights.add(group * COLS * 4) as *const __m256i);
            let high = _mm256_loadu_si256(weights.add(group * COLS * 4 + 32) as *const __m256i);
            for r in 0..R {
                let bytes = (x.add(r * k4 + group * 4) as *const i32).read_unaligned();
                let broadcast = _mm256_set1_epi32(bytes);
                let pairs_low = _mm256_maddubs_epi16(broadcast, low);
                let pairs_high = _mm256_maddubs_epi16(broadcast, high);
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(pairs_low, ones));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(pairs_high, ones));
            }
        }
        let out = out.as_mut_ptr();
        #[allow(clippy::needless_range_loop)]
        for r in 0..R {
            _mm256_storeu_si256(out.add(r * width) as *mut __m256i, acc[r][0]);
            _mm256_storeu_si256(out.add(r * width + 8) as *mut __m256i, acc[r][1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::sample;

    #[test]
    fn integer_sums_equal_the_portable_loop_and_the_product_is_close_to_f32() {
        for kernel in Int8Kernel::available() {
            for rows in [1, 5, 6, 7, 13] {
                for (k, n) in [(37, 16), (64, 53), (384, 130)] {
                    check_kernel(kernel, rows, k, n);
                }
            }
        }
    }

    #[test]
    fn every_8_bit_kernel_gives_the_portable_loops_product_exactly() {
        for kernel in Int8Kernel::available() {
            if kernel.weight_levels() != Int8Kernel::Portable.weight_levels() {
                continue;
            }
            for rows in [1, 7, 32, 33, 70] {
                for (k, n) in [(37, 16), (64, 53), (200, 96), (384, 130)] {
                    let x = sample(rows * k, 3);
                    let mut w = sample(k * n, 4);
                    // One exact channel, so its f32 products are checked too.
                    w[5 * n..6 * n].iter_mut().for_each(|v| *v *= 100.0);
                    let product = |kernel| {
                        let q = QuantizedMatrix::quantize_for(&w, k, n, kernel);
                        let mut out = vec![f32::NAN; rows * n];
                        matmul_int8(&mut out, &x, rows, &q);
                        out
                    };
                    assert_eq!(
                        product(kernel),
                        product(Int8Kernel::Portable),
                        "{kernel:?}, rows {rows}, {k}×{n}"
                    );
                }
            }
        }
    }

    #[test]
    fn weights_fit_the_kernel() {
        let w = sample(64 * 32, 5);
        for kernel in Int8Kernel::available() {
            let q = QuantizedMatrix::quantize_for(&w, 64, 32, kernel);
            let largest = q.data.iter().map(|v| v.unsigned_abs()).max();
            assert_eq!(largest, Some(kernel.weight_levels() as u8), "{kernel:?}");
        }
    }

    #[test]
    fn rows_use_their_own_range_and_keep_zero_exact() {
        let lopsided = [0.0, 0.5, 2.55, -0.17, 1.0];
        let levels = RowLevels::spanning(std::iter::once(&lopsided[..]));
        assert!(
            (levels.scale - 2.72 / 255.0).abs() < 1e-6,
            "{}",
            levels.scale
        );
        let q = quantize_rows(&lopsided, 1, 5, 8, &[]);
        for (&x, &byte) in lopsided.iter().zip(&q.data) {
            let back = levels.scale * (i32::from(byte) - levels.zero) as f32;
            assert!(
                (back - x).abs() <= levels.scale / 2.0 + 1e-6,
                "{x} came back {back}"
            );
        }
        assert_eq!(
            i32::from(q.data[0]),
            levels.zero,
            "0.0 is a level of its own"
        );
        let zeros = quantize_rows(&[0.0; 4], 1, 4, 4, &[]);
        assert_eq!(zeros.levels[0].scale, 0.0);
    }

    #[test]
    fn a_row_quantises_alike_on_every_path() {
        // 45 values: two vectors and a tail; lopsided, as a GELU's output.
        let mut row: Vec<f32> = sample(45, 8).iter().map(|v| v * 2.0 + 0.7).collect();
        // An outlier on an exact channel, which must neither widen the range nor be stored.
        row[17] = 400.0;
        for exact in [&[][..], &[3, 17, 44]] {
            let mut portable = vec![7u8; 64];
            let levels = quantize_row_portable(&mut portable, &row, exact);
            let mut fast = vec![7u8; 64];
            let fast_levels = quantize_row(&mut fast, &row, exact);
            assert_eq!(
                (levels.scale, levels.zero),
                (fast_levels.scale, fast_levels.zero),
                "{exact:?}"
            );
            assert!(
                portable[45..].iter().chain(&fast[45..]).all(|&b| b == 0),
                "padding"
            );
            for &p in exact {
                assert_eq!(fast[p] as i32, levels.zero, "exact channel {p}");
            }
            for (i, (&p, &f)) in portable.iter().zip(&fast).enumerate() {
                // Only a tie may round the other way.
                assert!(p.abs_diff(f) <= 1, "{exact:?}, value {i}: {p} vs {f}");
            }
        }
        assert!(
            RowLevels::spanning(std::iter::once(&row[..])).scale
                > RowLevels::spanning(slices_outside(&row, &[17])).scale * 10.0,
            "the outlier would have widened the range"
        );
        let mut fast = vec![7u8; 64];
        let zeros = quantize_row(&mut fast, &[0.0; 20], &[]);
        assert_eq!(zeros.scale, 0.0);
        assert!(fast.iter().all(|&b| b == 0));
    }

    #[test]
    fn slices_outside_skip_exactly_the_listed_channels() {
        let row = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let kept = |exact: &[usize]| slices_outside(&row, exact).collect::<Vec<_>>().concat();
        assert_eq!(kept(&[]), row);
        assert_eq!(kept(&[0, 2, 3]), [1.0, 4.0, 5.0]);
        assert_eq!(kept(&[5]), [0.0, 1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn channels_with_outsized_weights_stay_exact() {
        let (k, n) = (96, 40);
        let mut w = sample(k * n, 4);
        for channel in [7, 50] {
            w[channel * n..(channel + 1) * n]
                .iter_mut()
                .for_each(|v| *v *= 100.0);
        }
        for kernel in Int8Kernel::available() {
            let q = QuantizedMatrix::quantize_for(&w, k, n, kernel);
            assert_eq!(q.exact.channels, [7, 50], "{kernel:?}");
            // Without them every other weight would round to a step of 100 / 127; an outsized
            // input on one of them must not widen its row's range either.
            let mut x = sample(8 * k, 3);
            x[k + 50] = 1000.0;
            check_product(&q, &x, &w, 8);
        }
    }

    fn check_kernel(kernel: Int8Kernel, rows: usize, k: usize, n: usize) {
        let x = sample(rows * k, 3);
        let w = sample(k * n, 4);
        let q = QuantizedMatrix::quantize_for(&w, k, n, kernel);
        assert!(
            q.exact.channels.is_empty(),
            "uniform weights have no outliers"
        );
        check_product(&q, &x, &w, rows);
        // The fast path's integer sums equal the portable loop's exactly.
        let xq = quantize_rows(&x, rows, k, q.k4, &q.exact.channels);
        let count = rows.min(ROWS_PER_PASS);
        let vectors = q.n.div_ceil(COLS).min(VECTORS);
        let mut fast = vec![0i32; count * vectors * COLS];
        let mut slow = fast.clone();
        let job = Tile {
            a: &xq.data,
            count,
            k4: q.k4,
            w: &q,
            first_block: 0,
            vectors,
        };
        tile_product(&mut fast, job);
        portable_tile(&mut slow, job);
        assert_eq!(fast, slow, "{kernel:?}");
    }

    /// `matmul_int8` is within rounding of the f32 product.
    fn check_product(q: &QuantizedMatrix, x: &[f32], w: &[f32], rows: usize) {
        let (k, n, kernel) = (q.k, q.n, q.kernel);
        let mut out = vec![f32::NAN; rows * n];
        matmul_int8(&mut out, x, rows, q);
        for r in 0..rows {
            for c in 0..n {
                let want: f32 = (0..k).map(|p| x[r * k + p] * w[p * n + c]).sum();
                let got = out[r * n + c];
                // Two roundings: error grows like √k · scale² (7-bit weights: twice).
                let tolerance = 0.02 * (k as f32).sqrt() * 127.0 / kernel.weight_levels();
                assert!(
                    (got - want).abs() < tolerance,
                    "{kernel:?}, rows {rows}, {k}×{n}, [{r}, {c}]: {got} vs {want}"
                );
            }
        }
    }
}
