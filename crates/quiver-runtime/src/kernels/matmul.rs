//! Safe, bounds-checked views over the `gemm` crate's strided matrix product.

/// A read-only strided matrix view: element `(r, c)` is `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

fn assert_fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) {
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * row_stride + (cols - 1) * col_stride;
        assert!(
            last < len,
            "matrix view {rows}x{cols} (strides {row_stride},{col_stride}) overruns a buffer of {len}"
        );
    }
}

impl<'a> MatRef<'a> {
    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        assert_fits(data.len(), rows, cols, row_stride, col_stride);
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// The same memory read as the transposed matrix; no copy.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

impl<'a> MatMut<'a> {
    pub fn strided(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        assert_fits(data.len(), rows, cols, row_stride, col_stride);
        MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }
}

/// `dst = scale * lhs × rhs`, or `dst += scale * lhs × rhs` when `accumulate` is set.
///
/// `threads` > 1 splits the product over the current rayon pool; pass 1 from code that is
/// already running inside a parallel loop.
pub fn matmul(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    accumulate: bool,
    threads: usize,
) {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions differ");
    assert_eq!(dst.rows, lhs.rows, "output rows differ");
    assert_eq!(dst.cols, rhs.cols, "output columns differ");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three views were bounds-checked at construction, so every index the product
    // touches (rows × cols under the given strides) lies inside its slice; `dst` is borrowed
    // mutably, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr(),
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::sample;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matches_naive_product_with_transposed_rhs_and_accumulation() {
        let (m, k, n) = (7, 13, 5);
        let a = sample(m * k, 1);
        let b = sample(k * n, 2);
        let expected = naive(&a, &b, m, k, n);
        // Store b transposed, as Linear weights are stored ([out, in]).
        let mut b_t = vec![0.0; k * n];
        for p in 0..k {
            for j in 0..n {
                b_t[j * k + p] = b[p * n + j];
            }
        }
        let mut out = vec![1.0; m * n];
        matmul(
            MatMut::row_major(&mut out, m, n),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b_t, n, k).t(),
            2.0,
            true,
            2,
        );
        for (got, want) in out.iter().zip(&expected) {
            assert!((got - (1.0 + 2.0 * want)).abs() < 1e-4, "{got} vs {want}");
        }
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn rejects_views_that_overrun() {
        let data = vec![0.0; 10];
        let _ = MatRef::row_major(&data, 3, 4);
    }
}
