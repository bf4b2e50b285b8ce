use crate::kernels;
use crate::weights::Weights;
use crate::Result;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// Loads `weight` / `bias` (old checkpoints: `gamma` / `beta`).
    pub fn load(weights: &Weights<'_>, size: usize, eps: f32) -> Result<Self> {
        let (gamma_name, beta_name) = if weights.contains("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            gamma: weights.get(gamma_name, &[size])?,
            beta: weights.get(beta_name, &[size])?,
            eps,
        })
    }

    /// Loads `weight` of a norm that has no bias (ModernBERT's `norm_bias: false`).
    pub fn load_without_bias(weights: &Weights<'_>, size: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            gamma: weights.get("weight", &[size])?,
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
