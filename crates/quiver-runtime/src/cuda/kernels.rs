//! Quiver's CUDA kernels (`kernels.cu`), compiled at run time by NVRTC for the card at hand:
//! the build needs no CUDA toolkit, and the same source serves every compute capability.
//! The numbers the kernels take for an activation or a pooling are [`activation_code`] and
//! [`pooling_code`].

use crate::kernels::Activation;
use crate::{Pooling, Result, RuntimeError};
use cudarc::nvrtc::{CompileOptions, Ptx};

/// The CUDA C, kept in the repository beside this file.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Kernels instantiated once per matrix-product format, with suffix `_f32` or `_bf16`.
pub const PER_FORMAT: &[&str] = &[
    "embed",
    "layer_norm",
    "rms_norm",
    "head_rms_norm",
    "bias_activation",
    "gated_activation",
    "attention",
];

/// Kernels of f32 activations only.
pub const SHARED: &[&str] = &["rotary", "pool", "mask_rows", "add"];

/// Every entry point of [`SOURCE`], by the name a module exports it under.
pub fn entry_points() -> impl Iterator<Item = String> {
    PER_FORMAT
        .iter()
        .flat_map(|name| [format!("{name}_f32"), format!("{name}_bf16")])
        .chain(SHARED.iter().map(|name| name.to_string()))
}

/// Compiles [`SOURCE`] to PTX for compute capability `major.minor`. Never with fast math: the
/// kernels' erf, tanh and exp are meant to match the CPU's to f32 rounding.
pub fn compile((major, minor): (i32, i32)) -> Result<Ptx> {
    super::NVRTC.require()?;
    let options = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "--std=c++17".into(),
        ],
        name: Some("kernels.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, options).map_err(|error| {
        RuntimeError::KernelCompile {
            message: error.to_string(),
        }
    })
}

/// The number `kernels.cu` takes for an activation (`activate`).
pub fn activation_code(activation: Option<Activation>) -> i32 {
    match activation {
        None => 0,
        Some(Activation::GeluErf) => 1,
        Some(Activation::GeluTanh) => 2,
        Some(Activation::Relu) => 3,
        Some(Activation::Silu) => 4,
    }
}

/// The number `kernels.cu` takes for a pooling (`pool`).
pub fn pooling_code(pooling: Pooling) -> i32 {
    match pooling {
        Pooling::Cls => 0,
        Pooling::Mean => 1,
        Pooling::Max => 2,
        Pooling::MeanSqrtLen => 3,
        Pooling::LastToken => 4,
        Pooling::Splade => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC needs no GPU: where its library is found (CI installs it from PyPI), the kernels
    /// compile for the H100/H200's compute capability and an older one, and export every
    /// entry point by its plain name. `QUIVER_REQUIRE_NVRTC=1` (set by CI) makes a missing
    /// library a failure rather than the error it is for users.
    #[test]
    fn the_kernels_compile_and_export_every_entry_point() {
        for capability in [(9, 0), (8, 0)] {
            match compile(capability) {
                Ok(ptx) => {
                    let text = ptx.to_src();
                    for name in entry_points() {
                        assert!(
                            text.contains(&format!(".entry {name}(")),
                            "{name} is not exported for compute {capability:?}"
                        );
                    }
                }
                Err(RuntimeError::CudaLibrary { library, .. }) => {
                    assert_eq!(library, "libnvrtc");
                    assert!(
                        std::env::var("QUIVER_REQUIRE_NVRTC").is_err(),
                        "QUIVER_REQUIRE_NVRTC is set but libnvrtc is not on LD_LIBRARY_PATH"
                    );
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
}
