use super::fast_exp;
use rayon::prelude::*;

/// Activation functions named by Hugging Face configs (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact form with erf, BERT's default.
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    pub fn from_config_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            "silu" | "swish" => Some(Activation::Silu),
            _ => None,
        }
    }

    pub fn apply(self, values: &mut [f32]) {
        match self {
            Activation::GeluErf => {
                #[cfg(target_arch = "x86_64")]
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    unsafe { avx512::gelu_erf(values) };
                    return;
                }
                values.iter_mut().for_each(|v| *v = gelu_erf(*v))
            }
            Activation::GeluTanh => values.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            Activation::Relu => values.iter_mut().for_each(|v| *v = relu(*v)),
            Activation::Silu => values.iter_mut().for_each(|v| *v = silu(*v)),
        }
    }
}

/// [`gelu_erf`] over a slice in AVX-512 with fused multiply-adds: the compiler's own loop ran
/// in 8 lanes without them (Rust does not contract `a * b + c`), and GELU was 6.7 % of an
/// all-MiniLM-L6-v2 bf16 run on AMX (perf record, 500 code chunks).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::softmax::avx512::exp;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F is available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_erf(values: &mut [f32]) {
        let whole = values.len() / 16 * 16;
        let ptr = values.as_mut_ptr();
        for i in (0..whole).step_by(16) {
            _mm512_storeu_ps(ptr.add(i), gelu(_mm512_loadu_ps(ptr.add(i))));
        }
        for v in &mut values[whole..] {
            *v = super::gelu_erf(*v);
        }
    }

    /// The same formula as [`super::erf`] and [`super::gelu_erf`], 16 lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn gelu(x: __m512) -> __m512 {
        let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let a = _mm512_abs_ps(z);
        let one = _mm512_set1_ps(1.0);
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(super::ERF_P), a, one));
        let [a0, a1, a2, a3, a4] = super::ERF_A;
        let mut poly = _mm512_set1_ps(a4);
        for c in [a3, a2, a1, a0] {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        poly = _mm512_mul_ps(poly, t);
        let e = exp(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a));
        // erf(|z|) = 1 − poly · e; erf(z) takes z's sign, so 1 + erf(z) = 1 ± (1 − poly · e).
        let erf_abs = _mm512_fnmadd_ps(poly, e, one);
        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z, _mm512_setzero_ps());
        let erf = _mm512_mask_sub_ps(erf_abs, negative, _mm512_setzero_ps(), erf_abs);
        _mm512_mul_ps(
            _mm512_mul_ps(_mm512_set1_ps(0.5), x),
            _mm512_add_ps(one, erf),
        )
    }
}

/// erf's Abramowitz & Stegun 7.1.26 constants: `t = 1 / (1 + P·|x|)` ...
const ERF_P: f32 = 0.327_591_1;
/// ... and `erf(|x|) = 1 − (A₀t + A₁t² + … + A₄t⁵) · e^(−x²)`.
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_8,
    -1.453_152_1,
    1.061_405_4,
];

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), branch-free so it vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const A: [f32; 5] = ERF_A;
    let sign = 1.0f32.copysign(x);
    let x = x.abs();
    let t = 1.0 / (1.0 + ERF_P * x);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    sign * (1.0 - poly * fast_exp(-x * x))
}

#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    // tanh(u) = 1 - 2 / (e^{2u} + 1), written with fast_exp to stay vectorisable.
    let tanh = 1.0 - 2.0 / (fast_exp(2.0 * inner) + 1.0);
    0.5 * x * (1.0 + tanh)
}

#[inline(always)]
pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + fast_exp(-x))
}

/// A gated linear unit over a `[tokens, 2 · width]` buffer holding each token's gate then its
/// other projection: `out[t, j] = act(gate[t, j]) · other[t, j]`, `[tokens, width]`. SwiGLU
/// (Qwen, NomicBERT) with `Silu`, GeGLU (ModernBERT) with a GELU.
pub fn gated_linear_unit(
    gate_up: &[f32],
    width: usize,
    activation: Activation,
    out: &mut Vec<f32>,
) {
    out.resize(gate_up.len() / 2, 0.0);
    out.par_chunks_mut(width)
        .zip(gate_up.par_chunks(2 * width))
        .for_each(|(row, both)| {
            let (gate, other) = both.split_at(width);
            row.copy_from_slice(gate);
            activation.apply(row);
            row.iter_mut().zip(other).for_each(|(o, u)| *o *= u);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::gpu_reference::erf as erf_reference;

    #[test]
    fn gelu_matches_reference_definitions() {
        let mut x = -6.0f64;
        while x < 6.0 {
            let exact = 0.5 * x * (1.0 + erf_reference(x / std::f64::consts::SQRT_2));
            assert!(
                (gelu_erf(x as f32) as f64 - exact).abs() < 1e-6,
                "gelu({x})"
            );
            let tanh = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!(
                (gelu_tanh(x as f32) as f64 - tanh).abs() < 1e-6,
                "gelu_tanh({x})"
            );
            let silu_ref = x / (1.0 + (-x).exp());
            assert!((silu(x as f32) as f64 - silu_ref).abs() < 1e-6, "silu({x})");
            x += 0.01;
        }
    }

    #[test]
    fn gelu_over_a_slice_matches_the_reference_in_every_lane_and_the_tail() {
        // 1,201 values: the vector kernel where the CPU has one, the scalar tail after it.
        let xs: Vec<f64> = (0..1201).map(|i| -6.0 + i as f64 * 0.01).collect();
        let mut values: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
        Activation::GeluErf.apply(&mut values);
        for (&x, &got) in xs.iter().zip(&values) {
            let exact = 0.5 * x * (1.0 + erf_reference(x / std::f64::consts::SQRT_2));
            assert!((got as f64 - exact).abs() < 1e-6, "gelu({x}) = {got}");
        }
    }

    #[test]
    fn names_map_to_activations() {
        assert_eq!(
            Activation::from_config_name("gelu"),
            Some(Activation::GeluErf)
        );
        assert_eq!(
            Activation::from_config_name("swish"),
            Some(Activation::Silu)
        );
        assert_eq!(Activation::from_config_name("mish"), None);
    }
}
