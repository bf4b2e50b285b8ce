/// `e^x` without a libm call, so loops over slices vectorise (AVX2/AVX-512 here).
///
/// Range reduction `x = n·ln2 + r` and Cephes' degree-6 polynomial for `e^r`: about 1 ulp in
/// the normal range, which keeps softmax and GELU far inside the 1e-4 parity budget. `n` is
/// rounded and turned into an exponent with the 1.5·2²³ trick instead of a float→int cast:
/// Rust's saturating `as i32` compiles to scalar code and kept softmax from vectorising (it was
/// ~10 % of an all-MiniLM-L6-v2 run; perf record, 300 code chunks).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let poly = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = poly * r * r + r + 1.0;
    let exponent = shifted
        .to_bits()
        .wrapping_sub(ROUNDER.to_bits())
        .wrapping_add(127)
        << 23;
    e_r * f32::from_bits(exponent)
}

/// Row-wise softmax of a row-major `[rows, cols]` buffer, left unnormalised: each row becomes
/// `e^(x − max)` in place, and `sums[r]` its sum, by which the caller divides.
///
/// Why unnormalised: attention divides its weighted values instead, `head_dim` numbers a row
/// where the weights are the sequence's length; and the sum is taken in lanes in the same pass
/// as the exponentials. Two passes over the row, where a normalised softmax took four.
pub fn exp_rows(values: &mut [f32], cols: usize, sums: &mut [f32]) {
    for (row, sum) in values.chunks_exact_mut(cols).zip(sums) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            *sum = unsafe { avx512::exp_row(row) };
            continue;
        }
        *sum = exp_row(row);
    }
}

/// One row of [`exp_rows`], portable.
fn exp_row(row: &mut [f32]) -> f32 {
    const LANES: usize = 16;
    let max = super::reduce::max(row);
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (value, lane) in chunk.iter_mut().zip(&mut lanes) {
            *value = fast_exp(*value - max);
            *lane += *value;
        }
    }
    let mut total: f32 = lanes.iter().sum();
    for value in chunks.into_remainder() {
        *value = fast_exp(*value - max);
        total += *value;
    }
    total
}

/// [`exp_rows`] for one row in AVX-512, with fused multiply-adds and `vscalefps` for the
/// power of two.
///
/// Why by hand: the compiler vectorised the portable loop in 8 lanes without fused
/// multiply-adds (Rust does not contract `a * b + c`), and the exponentials were 13.6 % of an
/// all-MiniLM-L6-v2 bf16 run on AMX (perf record, 500 code chunks).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    /// `row[i] = e^(row[i] − max)`, returning their sum. Same range reduction and polynomial
    /// as [`super::fast_exp`].
    ///
    /// # Safety
    /// AVX-512F is available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_row(row: &mut [f32]) -> f32 {
        let len = row.len();
        let whole = len / 16 * 16;
        let tail: __mmask16 = ((1u32 << (len - whole)) - 1) as __mmask16;
        let ptr = row.as_mut_ptr();
        let mut highest = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..whole).step_by(16) {
            highest = _mm512_max_ps(highest, _mm512_loadu_ps(ptr.add(i)));
        }
        let rest = _mm512_mask_loadu_ps(highest, tail, ptr.add(whole));
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_max_ps(highest, rest)));
        let mut sum = _mm512_setzero_ps();
        for i in (0..whole).step_by(16) {
            let e = exp(_mm512_sub_ps(_mm512_loadu_ps(ptr.add(i)), max));
            _mm512_storeu_ps(ptr.add(i), e);
            sum = _mm512_add_ps(sum, e);
        }
        if tail != 0 {
            let x = _mm512_maskz_loadu_ps(tail, ptr.add(whole));
            let e = _mm512_maskz_mov_ps(tail, exp(_mm512_sub_ps(x, max)));
            _mm512_mask_storeu_ps(ptr.add(whole), tail, e);
            sum = _mm512_add_ps(sum, e);
        }
        _mm512_reduce_add_ps(sum)
    }

    /// `e^x` in 16 lanes (inputs below −87 give e^−87).
    ///
    /// # Safety
    /// AVX-512F is available.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn exp(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut poly = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_2e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let e_r = _mm512_fmadd_ps(poly, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        _mm512_scalef_ps(e_r, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_tracks_std_exp() {
        let mut x = -80.0f32;
        while x < 80.0 {
            let relative = (fast_exp(x) - x.exp()).abs() / x.exp();
            assert!(relative < 5e-7, "exp({x}): relative error {relative}");
            x += 0.173;
        }
        assert_eq!(fast_exp(-1000.0), (-87.0f32).exp());
    }

    #[test]
    fn exp_rows_divided_by_their_sums_match_a_reference_softmax() {
        let mut kernels: Vec<fn(&mut [f32]) -> f32> = vec![exp_row];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            kernels.push(|row| unsafe { avx512::exp_row(row) });
        }
        // Rows of 3, 16 and 37 (two lane chunks and a remainder).
        for (kernel, cols) in kernels.into_iter().flat_map(|k| [(k, 3), (k, 16), (k, 37)]) {
            let mut values: Vec<f32> = (0..2 * cols).map(|i| (i % 7) as f32 * 0.6 - 1.0).collect();
            values[cols + 1] = 1000.0;
            let rows = values.clone();
            let mut sums = [0.0; 2];
            for (row, sum) in values.chunks_exact_mut(cols).zip(&mut sums) {
                *sum = kernel(row);
            }
            for ((got, row), sum) in values.chunks(cols).zip(rows.chunks(cols)).zip(sums) {
                let max = row.iter().copied().fold(f32::MIN, f32::max);
                let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                let total: f32 = e.iter().sum();
                for (g, want) in got.iter().zip(&e) {
                    assert!((g / sum - want / total).abs() < 1e-6, "{g} / {sum}");
                }
            }
            assert!((values[cols + 1] / sums[1] - 1.0).abs() < 1e-6 && values[cols] < 1e-30);
        }
    }
}
