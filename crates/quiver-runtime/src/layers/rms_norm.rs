use crate::kernels;
use crate::layers::{AttentionShape, NormParts};
use crate::weights::Weights;
use crate::Result;
use rayon::prelude::*;

/// RMSNorm (Qwen2, Llama): `x / rms(x) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    pub fn load(weights: &Weights<'_>, size: usize, eps: f32) -> Result<Self> {
        Ok(RmsNorm {
            weight: weights.get("weight", &[size])?,
            eps,
        })
    }

    /// From weights already in hand (Gemma's `1 + weight` form, say).
    pub fn new(weight: Vec<f32>, eps: f32) -> Self {
        RmsNorm { weight, eps }
    }

    pub fn parts(&self) -> NormParts<'_> {
        NormParts {
            gamma: &self.weight,
            beta: None,
            eps: self.eps,
            rms: true,
        }
    }

    /// Normalises every row of `values` in place.
    pub fn forward(&self, values: &mut [f32]) {
        kernels::rms_norm(values, &self.weight, self.eps);
    }
}

/// Normalises every query head with `q_norm` and every key head with `k_norm`, in a fused
/// `[tokens, qkv_width]` buffer (Qwen3, Gemma 3: before the rotation).
pub fn normalize_heads(qkv: &mut [f32], shape: AttentionShape, q_norm: &RmsNorm, k_norm: &RmsNorm) {
    let queries = shape.num_heads * shape.head_dim;
    let keys = shape.num_kv_heads * shape.head_dim;
    qkv.par_chunks_mut(shape.qkv_width()).for_each(|token| {
        let (q, rest) = token.split_at_mut(queries);
        q_norm.forward(q);
        k_norm.forward(&mut rest[..keys]);
    });
}
