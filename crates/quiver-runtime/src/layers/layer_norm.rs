use crate::kernels;
use crate::weights::Weights;
use crate::Result;

/// A layer or RMS norm's weights, borrowed: what a device backend uploads.
#[derive(Debug, Clone, Copy)]
pub struct NormParts<'a> {
    pub gamma: &'a [f32],
    /// The shift of a layer norm; RMS norms have none.
    pub beta: Option<&'a [f32]>,
    pub eps: f32,
    /// RMS norm: no mean is taken out.
    pub rms: bool,
}

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

    pub fn parts(&self) -> NormParts<'_> {
        NormParts {
            gamma: &self.gamma,
            beta: Some(&self.beta),
            eps: self.eps,
            rms: false,
        }
    }

    pub fn forward(&self, values: &mut [f32]) {
        kernels::layer_norm(values, &self.gamma, &self.beta, self.eps);
    }

    /// `values = LayerNorm(values + residual)`.
    pub fn forward_residual(&self, values: &mut [f32], residual: &[f32]) {
        kernels::add_layer_norm(values, residual, &self.gamma, &self.beta, self.eps);
    }
}
