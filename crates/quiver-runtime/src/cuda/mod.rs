//! NVIDIA GPUs through `cudarc`, with the driver, cuBLAS and NVRTC loaded at run time: the
//! `cuda` feature builds with no CUDA toolkit and on machines with no GPU, and a library that is
//! missing when a GPU is asked for is an error naming it (cudarc itself panics on one, so each
//! is looked for first). [`kernels`] are Quiver's CUDA kernels; [`encoder`] runs a model's
//! device stack on a card, checked at load against the CPU (it has not yet run on a GPU:
//! issue #20).

pub mod encoder;
pub mod kernels;

use crate::{Result, RuntimeError};
use cudarc::driver::CudaContext;
use std::sync::Arc;

/// An opened GPU.
#[derive(Debug)]
pub struct Gpu {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor): 9.0 for an H100 or H200.
    pub compute_capability: (i32, i32),
    pub context: Arc<CudaContext>,
}

impl std::fmt::Display for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor) = self.compute_capability;
        write!(
            f,
            "cuda:{} ({}, compute capability {major}.{minor})",
            self.ordinal, self.name
        )
    }
}

/// A library a GPU model needs: cudarc's probe for it, its file name, and what it is.
struct Library(unsafe fn() -> bool, &'static str, &'static str);

const DRIVER: Library = Library(
    cudarc::driver::sys::is_culib_present,
    "libcuda",
    "the NVIDIA driver",
);
const CUBLAS: Library = Library(cudarc::cublas::sys::is_culib_present, "libcublas", "cuBLAS");
const NVRTC: Library = Library(
    cudarc::nvrtc::sys::is_culib_present,
    "libnvrtc",
    "NVRTC (the CUDA run-time compiler)",
);

impl Library {
    /// An error naming the library where it cannot be loaded: cudarc would panic on first use.
    fn require(&self) -> Result<()> {
        let Library(present, library, what) = *self;
        // SAFETY: the probe only tries to dlopen the library by its usual names.
        if unsafe { present() } {
            Ok(())
        } else {
            Err(RuntimeError::CudaLibrary { library, what })
        }
    }
}

/// Opens GPU `ordinal`.
pub fn open(ordinal: usize) -> Result<Gpu> {
    for library in [DRIVER, CUBLAS, NVRTC] {
        library.require()?;
    }
    let device = format!("cuda:{ordinal}");
    let failed = |error: cudarc::driver::DriverError| RuntimeError::Cuda {
        device: device.clone(),
        message: error.to_string(),
    };
    let count = usize::try_from(CudaContext::device_count().map_err(failed)?).unwrap_or(0);
    if ordinal >= count {
        return Err(RuntimeError::NoSuchGpu { ordinal, count });
    }
    let context = CudaContext::new(ordinal).map_err(failed)?;
    Ok(Gpu {
        ordinal,
        name: context.name().map_err(failed)?,
        compute_capability: context.compute_capability().map_err(failed)?,
        context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    /// On a machine with a GPU it opens and models are refused naming it; on one without (CI),
    /// the error names the driver's library or says there is no card. Never a panic.
    #[test]
    fn a_gpu_opens_or_the_error_says_what_is_missing() {
        match open(0) {
            Ok(gpu) => {
                assert_eq!(gpu.ordinal, 0);
                assert_eq!(Device::Cuda(0).ensure_available().unwrap(), Device::Cuda(0));
                assert_eq!(Device::Auto.ensure_available().unwrap(), Device::Cuda(0));
            }
            Err(RuntimeError::CudaLibrary { library, .. }) => {
                assert_eq!(library, "libcuda", "the driver is looked for first");
                let refused = Device::Cuda(0).ensure_available().unwrap_err();
                assert!(refused.to_string().contains("libcuda"), "{refused}");
                assert_eq!(Device::Auto.ensure_available().unwrap(), Device::Cpu);
            }
            Err(RuntimeError::NoSuchGpu { count, .. }) => {
                assert_eq!(count, 0);
                assert_eq!(Device::Auto.ensure_available().unwrap(), Device::Cpu);
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }

    #[test]
    fn a_card_past_the_last_is_refused() {
        match open(usize::MAX) {
            Err(RuntimeError::NoSuchGpu { ordinal, .. }) => assert_eq!(ordinal, usize::MAX),
            Err(RuntimeError::CudaLibrary { .. }) => {} // no driver here: nothing to count
            other => panic!("unexpected: {other:?}"),
        }
    }
}
