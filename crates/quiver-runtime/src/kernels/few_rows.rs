//! `out = x · w` for a few rows of `x` (a short query, one at a time): our own kernel over a
//! copy of `w` packed in 16-column panels.
//!
//! Why: for a 13-token query `gemm` reached about 65 GFLOP/s against 164 on large batches. With
//! `w` stored `[k, n]` row-major, each step down `k` jumps a whole row (4.6 KB for n = 1152), so
//! its micro-kernels stall on loads. Packed panels are read front to back, one 24 KB panel at a
//! time, and up to [`ROWS_PER_PASS`] output rows stay in registers while a panel streams by.
//! The panels hold the weights in half precision (F16C widens them in registers): the copy
//! costs half the memory, and a small model's panels stay in the last-level cache between
//! queries (all-MiniLM-L6-v2: 21 MB of the 32 MB here). AVX2 + FMA + F16C (8 lanes), which every
//! x86-64 machine Quiver targets has; a portable loop of the same shape runs elsewhere.

use rayon::prelude::*;

/// Columns of `w` in one panel: two 8-lane vectors.
const PANEL: usize = 16;
/// Output rows one pass keeps in registers: 6 rows × 2 vectors = 12 of the 16 vector registers.
const ROWS_PER_PASS: usize = 6;

/// `w` (`k × n`, row-major) rearranged panel by panel: panel `p` holds columns
/// `16p..16p + 16` for every `k`, contiguous; the last panel is padded with zeros.
#[derive(Debug, Clone)]
pub struct PackedPanels {
    k: usize,
    n: usize,
    /// IEEE half precision: half the bytes, so a small model's panels stay in the last-level
    /// cache between queries.
    data: Vec<half::f16>,
}

impl PackedPanels {
    pub fn pack(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "w is not k × n");
        let panels = n.div_ceil(PANEL);
        let mut data = vec![half::f16::ZERO; panels * k * PANEL];
        for (p, panel) in data.chunks_exact_mut(k * PANEL).enumerate() {
            let first = p * PANEL;
            let width = PANEL.min(n - first);
            for (row, packed) in panel.chunks_exact_mut(PANEL).enumerate() {
                let source = &w[row * n + first..row * n + first + width];
                for (h, &x) in packed.iter_mut().zip(source) {
                    *h = half::f16::from_f32(x);
                }
            }
        }
        PackedPanels { k, n, data }
    }

    fn panel(&self, p: usize) -> &[half::f16] {
        &self.data[p * self.k * PANEL..(p + 1) * self.k * PANEL]
    }
}

/// `out[r, c] = Σₖ x[r, k] · w[k, c]` with `x` `rows × k` and `out` `rows × n`, row-major.
/// Panels are split over the rayon pool when `threads > 1`.
pub fn matmul_few_rows(out: &mut [f32], x: &[f32], rows: usize, w: &PackedPanels, threads: usize) {
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), rows * k, "x is not rows × k");
    assert_eq!(out.len(), rows * n, "out is not rows × n");
    let panels = n.div_ceil(PANEL);
    let per_task = panels.div_ceil(threads.max(1)).max(1);
    // Each task computes whole panels into its own buffer ([panel][row][16]); copying them
    // into `out` afterwards keeps every write safe without sharing `out` across tasks.
    let computed: Vec<(usize, Vec<f32>)> = (0..panels)
        .step_by(per_task)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first| {
            let last = (first + per_task).min(panels);
            let mut tiles = vec![0.0f32; (last - first) * rows * PANEL];
            for (p, tile) in (first..last).zip(tiles.chunks_exact_mut(rows * PANEL)) {
                panel_product(tile, x, rows, k, w.panel(p));
            }
            (first, tiles)
        })
        .collect();
    for (first, tiles) in computed {
        for (p, tile) in (first..).zip(tiles.chunks_exact(rows * PANEL)) {
            let column = p * PANEL;
            let width = PANEL.min(n - column);
            for (r, tile_row) in tile.chunks_exact(PANEL).enumerate() {
                out[r * n + column..r * n + column + width].copy_from_slice(&tile_row[..width]);
            }
        }
    }
}

/// `tile[r][c] = Σₖ x[r, k] · panel[k][c]` for every row, `ROWS_PER_PASS` rows at a time.
fn panel_product(tile: &mut [f32], x: &[f32], rows: usize, k: usize, panel: &[half::f16]) {
    for first in (0..rows).step_by(ROWS_PER_PASS) {
        let count = ROWS_PER_PASS.min(rows - first);
        let x_rows = &x[first * k..(first + count) * k];
        let out = &mut tile[first * PANEL..(first + count) * PANEL];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            // SAFETY: the features are present; x_rows holds count × k floats, panel k × 16,
            // out count × 16.
            unsafe { avx2::pass(out, x_rows, count, k, panel) };
            continue;
        }
        portable_pass(out, x_rows, count, k, panel);
    }
}

fn portable_pass(out: &mut [f32], x_rows: &[f32], count: usize, k: usize, panel: &[half::f16]) {
    for r in 0..count {
        let acc = &mut out[r * PANEL..(r + 1) * PANEL];
        acc.fill(0.0);
        for (p, w_row) in panel.chunks_exact(PANEL).enumerate() {
            let xv = x_rows[r * k + p];
            for (a, w) in acc.iter_mut().zip(w_row) {
                *a += xv * w.to_f32();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::PANEL;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA are available; `x_rows.len() >= count * k`, `panel.len() >= k * 16`,
    /// `out.len() >= count * 16`, `count <= 6`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn pass(
        out: &mut [f32],
        x_rows: &[f32],
        count: usize,
        k: usize,
        panel: &[half::f16],
    ) {
        match count {
            1 => rows::<1>(out, x_rows, k, panel),
            2 => rows::<2>(out, x_rows, k, panel),
            3 => rows::<3>(out, x_rows, k, panel),
            4 => rows::<4>(out, x_rows, k, panel),
            5 => rows::<5>(out, x_rows, k, panel),
            _ => rows::<6>(out, x_rows, k, panel),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn rows<const R: usize>(out: &mut [f32], x_rows: &[f32], k: usize, panel: &[half::f16]) {
        let mut low = [_mm256_setzero_ps(); R];
        let mut high = [_mm256_setzero_ps(); R];
        let w = panel.as_ptr() as *const __m128i;
        let x = x_rows.as_ptr();
        for p in 0..k {
            // Two 8-half loads per step down `k`, widened to f32 in registers.
            let w_low = _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * p)));
            let w_high = _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * p + 1)));
            for r in 0..R {
                let xv = _mm256_broadcast_ss(&*x.add(r * k + p));
                low[r] = _mm256_fmadd_ps(xv, w_low, low[r]);
                high[r] = _mm256_fmadd_ps(xv, w_high, high[r]);
            }
        }
        let o = out.as_mut_ptr();
        for r in 0..R {
            _mm256_storeu_ps(o.add(r * PANEL), low[r]);
            _mm256_storeu_ps(o.add(r * PANEL + 8), high[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::sample;

    #[test]
    fn matches_the_naive_product_for_every_row_count_and_ragged_columns() {
        for rows in [1, 2, 5, 6, 7, 13, 32] {
            for (k, n) in [(37, 16), (64, 53), (9, 130)] {
                let x = sample(rows * k, 3);
                let w = sample(k * n, 4);
                let packed = PackedPanels::pack(&w, k, n);
                for threads in [1, 3] {
                    let mut out = vec![f32::NAN; rows * n];
                    matmul_few_rows(&mut out, &x, rows, &packed, threads);
                    for r in 0..rows {
                        for c in 0..n {
                            // The panels round the weights to half precision.
                            let want: f32 = (0..k)
                                .map(|p| x[r * k + p] * half::f16::from_f32(w[p * n + c]).to_f32())
                                .sum();
                            let got = out[r * n + c];
                            assert!(
                                (got - want).abs() < 1e-3,
                                "rows {rows} k {k} n {n}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
