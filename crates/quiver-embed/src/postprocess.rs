//! What happens to a pooled vector before it leaves: Matryoshka truncation, then normalisation.

/// Keeps the first `dimensions` components (Matryoshka models put the most information first).
pub fn truncate_dimensions(vector: &mut Vec<f32>, dimensions: usize) {
    vector.truncate(dimensions);
}

/// Scales to unit length. A zero vector stays zero, as `torch.nn.functional.normalize` leaves it.
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    let inverse = 1.0 / norm.max(1e-12);
    vector.iter_mut().for_each(|v| *v *= inverse);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_then_normalises() {
        let mut vector = vec![3.0, 4.0, 12.0];
        truncate_dimensions(&mut vector, 2);
        l2_normalize(&mut vector);
        assert_eq!(vector, vec![0.6, 0.8]);
        let mut zero = vec![0.0; 4];
        l2_normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 4]);
    }
}
