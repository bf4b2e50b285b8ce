use rayon::prelude::*;

/// `x = LayerNorm(x + residual)` row by row, in place: the residual add and the normalisation
/// share one pass over memory instead of two.
pub fn add_layer_norm(values: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let cols = gamma.len();
    assert_eq!(values.len(), residual.len());
    for (row, res) in values
        .chunks_exact_mut(cols)
        .zip(residual.chunks_exact(cols))
    {
        for (v, r) in row.iter_mut().zip(res) {
            *v += r;
        }
        normalise_row(row, gamma, beta, eps);
    }
}

/// `x = LayerNorm(x)` row by row, in place.
pub fn layer_norm(values: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in values.chunks_exact_mut(gamma.len()) {
        normalise_row(row, gamma, beta, eps);
    }
}

/// `x = x / rms(x) * gamma` row by row, in place (RMSNorm: no mean, no shift).
pub fn rms_norm(values: &mut [f32], gamma: &[f32], eps: f32) {
    for row in values.chunks_exact_mut(gamma.len()) {
        let mean_square = super::reduce::squared_deviation(row, 0.0) / row.len() as f32;
        let inverse_rms = 1.0 / (mean_square + eps).sqrt();
        for (v, g) in row.iter_mut().zip(gamma) {
            *v = *v * inverse_rms * g;
        }
    }
}

#[inline]
fn normalise_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = super::reduce::sum(row) / n;
    let variance = super::reduce::squared_deviation(row, mean) / n;
    let inverse_std = 1.0 / (variance + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inverse_std * g + b;
    }
}

/// `values += residual`, in parallel: the residual connection of pre-norm layers.
pub fn add_residual(values: &mut [f32], residual: &[f32]) {
    values
        .par_iter_mut()
        .zip(residual.par_iter())
        .for_each(|(v, r)| *v += r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_scales_rows_to_unit_root_mean_square() {
        let mut values = vec![3.0, 4.0, -1.0, 1.0];
        rms_norm(&mut values, &[1.0, 2.0], 0.0);
        // Row 0: rms = sqrt((9 + 16) / 2).
        let rms = 12.5f32.sqrt();
        assert!((values[0] - 3.0 / rms).abs() < 1e-6);
        assert!((values[1] - 8.0 / rms).abs() < 1e-6);
        assert_eq!(values[2..], [-1.0, 2.0]);
    }

    #[test]
    fn normalises_each_row_after_adding_the_residual() {
        let mut values = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 14.0];
        let residual = vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let gamma = vec![2.0; 4];
        let beta = vec![0.5; 4];
        add_layer_norm(&mut values, &residual, &gamma, &beta, 1e-12);
        // Row 0 becomes [2,2,4,4]: mean 3, std 1.
        let expected_row0 = [-1.5, -1.5, 2.5, 2.5];
        for (got, want) in values[..4].iter().zip(expected_row0) {
            assert!((got - want).abs() < 1e-5);
        }
        // Row 1 [10,10,10,14]: mean 11, std sqrt(3).
        let std = 3.0f32.sqrt();
        assert!((values[7] - (3.0 / std * 2.0 + 0.5)).abs() < 1e-5);
    }
}
