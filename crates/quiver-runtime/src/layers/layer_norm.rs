use crate::kernels;
use crate::weights::TensorStore;
use crate::Result;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` / `{prefix}.bias` (old checkpoints: `gamma` / `beta`).
    pub fn load(store: &TensorStore<'_>, prefix: &str, size: usize, eps: f32) -> Result<Self> {
        let (gamma_name, beta_name) = if store.contains(&format!("{prefix}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            gamma: store.get(&format!("{prefix}.{gamma_name}"), &[size])?,
            beta: store.get(&format!("{prefix}.{beta_name}"), &[size])?,
            eps,
        })
    }

    /// Loads `{prefix}.weight` of a norm that has no bias (ModernBERT's `norm_bias: false`).
    pub fn load_without_bias(
        store: &TensorStore<'_>,
        prefix: &str,
        size: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(LayerNorm {
            gamma: store.get(&format!("{prefix}.weight"), &[size])?,
            beta: vec![0.0; size],
            eps,
        })
    }

    pub fn forward(&self, values: &mut [f32]) {
        kernels::layer_norm(values, &self.gamma, &self.beta, self.eps);
    }

    /// `values = LayerNorm(values + residual)`.
    pub fn forward_residual(&self, values: &mut [f32], residual: &[f32]) {
        kernels::add_layer_norm(values, residual, &self.gamma, &self.beta, self.eps);
    }
}
