//! Where a model runs. Models are reached only through [`crate::EncoderModel`], whose
//! [`crate::EncoderModel::embed`] takes a packed batch to pooled vectors, so a GPU backend is one
//! more type behind that trait that keeps hidden states on its card, chosen by [`Device`]. Its
//! out-of-memory errors ([`crate::RuntimeError::OutOfMemory`]) make the caller run the batch
//! again smaller. Today only the CPU backend runs models; a build with the `cuda` feature opens
//! an NVIDIA GPU ([`crate::cuda`]), says what it found, and holds the kernels a GPU backend runs.

use crate::RuntimeError;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    /// The first GPU where this build has the CUDA backend and a card opens; else the CPU.
    Auto,
}

impl FromStr for Device {
    type Err = RuntimeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => lower
                .strip_prefix("cuda:")
                .and_then(|index| index.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| RuntimeError::DeviceUnavailable(text.to_string())),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(index) => write!(f, "cuda:{index}"),
            Device::Auto => f.write_str("auto"),
        }
    }
}

/// Written and read as its name (`cpu`, `cuda:1`), as on the command line.
impl serde::Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl Device {
    /// The device a model will run on, or why it cannot: `auto` becomes a GPU or the CPU, and
    /// a GPU asked for by name is opened (with the `cuda` feature), so that the error says what
    /// is missing (a library, the card). A model never falls back to the CPU from a GPU asked
    /// for by name.
    pub fn ensure_available(self) -> crate::Result<Self> {
        match self {
            Device::Cpu => Ok(self),
            #[cfg(feature = "cudarc")]
            Device::Auto => Ok(match crate::cuda::open(0) {
                Ok(_) => Device::Cuda(0),
                Err(_) => Device::Cpu,
            }),
            #[cfg(not(feature = "cudarc"))]
            Device::Auto => Ok(Device::Cpu),
            #[cfg(feature = "cudarc")]
            Device::Cuda(ordinal) => crate::cuda::open(ordinal).map(|_| self),
            #[cfg(not(feature = "cudarc"))]
            Device::Cuda(ordinal) => {
                Err(RuntimeError::DeviceUnavailable(format!("cuda:{ordinal}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("CUDA:1".parse::<Device>().unwrap(), Device::Cuda(1));
        let unknown = "tpu".parse::<Device>().unwrap_err();
        assert!(
            matches!(&unknown, RuntimeError::DeviceUnavailable(name) if name == "tpu"),
            "{unknown:?}"
        );
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        #[cfg(not(feature = "cudarc"))]
        {
            assert_eq!(
                Device::Cuda(0).ensure_available().unwrap_err().to_string(),
                "device `cuda:0` is not available in this build; Quiver runs on `cpu`"
            );
            assert_eq!(Device::Auto.ensure_available().unwrap(), Device::Cpu);
        }
    }
}
