use crate::kernels;
use crate::weights::TensorStore;
use crate::Result;

/// RMSNorm (Qwen2, Llama): `x / rms(x) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    pub fn load(store: &TensorStore<'_>, name: &str, size: usize, eps: f32) -> Result<Self> {
        Ok(RmsNorm {
            weight: store.get(&format!("{name}.weight"), &[size])?,
            eps,
        })
    }

    /// From weights already in hand (Gemma's `1 + weight` form, say).
    pub fn new(weight: Vec<f32>, eps: f32) -> Self {
        RmsNorm { weight, eps }
    }

    /// Normalises every row of `values` in place.
    pub fn forward(&self, values: &mut [f32]) {
        kernels::rms_norm(values, &self.weight, self.eps);
    }
}
