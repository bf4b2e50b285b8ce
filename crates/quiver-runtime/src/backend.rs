//! Where a model runs. Models are reached only through [`crate::EncoderModel`], whose
//! [`crate::EncoderModel::embed`] takes a packed batch to pooled vectors, so a GPU backend is one
//! more type behind that trait that keeps hidden states on its card, chosen by [`Device`]. Its
//! out-of-memory errors ([`crate::RuntimeError::OutOfMemory`]) make the caller run the batch
//! again smaller. A build with the `cuda` or `cuda-13` feature has the CUDA backend
//! ([`crate::cuda`], not yet run on a GPU); [`DataParallel`] spreads one model over several
//! devices.

use crate::{PackedBatch, RuntimeError};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    /// Several GPUs (`cuda:0,cuda:1`): one copy of the model on each, batches split between
    /// them ([`DataParallel`]).
    Cards(CardSet),
    /// The first GPU where this build has the CUDA backend and a card opens; else the CPU.
    Auto,
}

/// GPUs by ordinal, 0 to 63.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CardSet(u64);

impl CardSet {
    pub fn ordinals(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |&i| self.0 & (1 << i) != 0)
    }
}

impl FromStr for Device {
    type Err = RuntimeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let unknown = || RuntimeError::DeviceUnavailable(text.to_string());
        let card = |name: &str| match name.trim() {
            "cuda" | "gpu" => Some(0),
            name => name.strip_prefix("cuda:")?.parse::<usize>().ok(),
        };
        match lower.as_str() {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            _ => {
                let mut set = 0u64;
                for name in lower.split(',') {
                    let ordinal = card(name).filter(|&n| n < 64).ok_or_else(unknown)?;
                    set |= 1 << ordinal;
                }
                Ok(match set.count_ones() {
                    1 => Device::Cuda(set.trailing_zeros() as usize),
                    _ => Device::Cards(CardSet(set)),
                })
            }
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(index) => write!(f, "cuda:{index}"),
            Device::Cards(set) => {
                let names: Vec<String> = set.ordinals().map(|i| format!("cuda:{i}")).collect();
                f.write_str(&names.join(","))
            }
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
            #[cfg(feature = "cudarc")]
            Device::Cards(set) => {
                for ordinal in set.ordinals() {
                    crate::cuda::open(ordinal)?;
                }
                Ok(self)
            }
            #[cfg(not(feature = "cudarc"))]
            Device::Cards(_) => Err(RuntimeError::DeviceUnavailable(self.to_string())),
            #[cfg(not(feature = "cudarc"))]
            Device::Cuda(ordinal) => {
                Err(RuntimeError::DeviceUnavailable(format!("cuda:{ordinal}")))
            }
        }
    }
}

/// One model on several devices, each batch cut between sequences into parts of about equal
/// tokens that the copies run at once: data parallelism for several GPUs. Each sequence's
/// output is what one copy alone gives it.
pub struct DataParallel {
    replicas: Vec<Box<dyn crate::EncoderModel>>,
}

impl DataParallel {
    /// `replicas`: the same model loaded on each device (at least one).
    pub fn new(replicas: Vec<Box<dyn crate::EncoderModel>>) -> Self {
        assert!(!replicas.is_empty(), "a model on no device");
        DataParallel { replicas }
    }

    /// Runs `work` on each part of `batch` on its replica (part `i` on replica `i % n`), all
    /// replicas at once, and returns the parts' outputs in order.
    fn each<T: Send>(
        &self,
        batch: &PackedBatch,
        work: impl Fn(&dyn crate::EncoderModel, &PackedBatch, usize) -> crate::Result<Vec<T>> + Sync,
    ) -> crate::Result<Vec<T>> {
        let n = self.replicas.len();
        let parts = batch.split(batch.num_tokens().div_ceil(n));
        let mut first_sequence = Vec::with_capacity(parts.len());
        let mut next = 0;
        for part in &parts {
            first_sequence.push(next);
            next += part.num_sequences();
        }
        let outputs: Vec<crate::Result<Vec<Vec<T>>>> = std::thread::scope(|scope| {
            let work = &work;
            let (parts, first_sequence) = (&parts, &first_sequence);
            let handles: Vec<_> = self
                .replicas
                .iter()
                .enumerate()
                .map(|(r, replica)| {
                    scope.spawn(move || {
                        (r..parts.len())
                            .step_by(n)
                            .map(|p| work(replica.as_ref(), &parts[p], first_sequence[p]))
                            .collect::<crate::Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut per_replica: Vec<std::vec::IntoIter<Vec<T>>> = Vec::with_capacity(n);
        for output in outputs {
            per_replica.push(output?.into_iter());
        }
        let mut joined = Vec::new();
        for p in 0..parts.len() {
            joined.extend(per_replica[p % n].next().unwrap_or_default());
        }
        Ok(joined)
    }
}

impl crate::EncoderModel for DataParallel {
    fn dims(&self) -> crate::models::ModelDims {
        self.replicas[0].dims()
    }

    fn adapters(&self) -> &[String] {
        self.replicas[0].adapters()
    }

    /// Each card's own budget: a batch is cut into one part per card.
    fn token_budget(&self) -> Option<usize> {
        let least = self.replicas.iter().map(|r| r.token_budget()).min()??;
        Some(least * self.replicas.len())
    }

    fn run(&self, batch: &PackedBatch) -> crate::Result<Vec<f32>> {
        self.each(batch, |replica, part, _| replica.forward(part))
    }

    fn embed(
        &self,
        batch: &PackedBatch,
        pooling: crate::Pooling,
        skip: &[usize],
    ) -> crate::Result<Vec<Vec<f32>>> {
        self.each(batch, |replica, part, first| {
            let end = (first + part.num_sequences()).min(skip.len());
            replica.embed(part, pooling, &skip[first.min(end)..end])
        })
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
        let two: Device = "cuda:1, cuda".parse().unwrap();
        assert_eq!(two.to_string(), "cuda:0,cuda:1");
        assert_eq!(two.to_string().parse::<Device>().unwrap(), two);
        assert_eq!("cuda:2,cuda:2".parse::<Device>().unwrap(), Device::Cuda(2));
        for bad in ["cuda:0,tpu", "cuda:64", "cuda:", ""] {
            assert!(bad.parse::<Device>().is_err(), "{bad:?}");
        }
        #[cfg(not(feature = "cudarc"))]
        {
            assert_eq!(
                Device::Cuda(0).ensure_available().unwrap_err().to_string(),
                "device `cuda:0` is not available in this build; Quiver runs on `cpu`"
            );
            assert_eq!(Device::Auto.ensure_available().unwrap(), Device::Cpu);
        }
    }

    /// Two copies on the CPU stand in for two cards: every sequence's pooled vector and hidden
    /// states are the one model's, whichever copy ran it, skips and all.
    #[test]
    fn data_parallel_copies_give_each_sequence_the_one_models_output() {
        let dir = crate::gpu_reference::tests::fixture("qwen2");
        let options = crate::LoadOptions {
            quantization: crate::Quantization::None,
            ..Default::default()
        };
        let load = || crate::load_model_with(&dir, options).unwrap();
        let one = load();
        let lengths = [9usize, 1, 30, 4, 17, 2, 11];
        let sequences: Vec<Vec<u32>> = lengths
            .iter()
            .map(|&n| (0..n as u32).map(|i| (i * 37 + n as u32) % 400).collect())
            .collect();
        let batch = PackedBatch::from_sequences(&sequences);
        let skip = [0, 0, 3, 1, 0, 0, 2];
        for copies in [2, 3] {
            let parallel = DataParallel::new((0..copies).map(|_| load()).collect());
            use crate::EncoderModel;
            assert_eq!(
                parallel.embed(&batch, crate::Pooling::Mean, &skip).unwrap(),
                one.embed(&batch, crate::Pooling::Mean, &skip).unwrap()
            );
            assert_eq!(
                parallel.forward(&batch).unwrap(),
                one.forward(&batch).unwrap()
            );
            assert_eq!(parallel.token_budget(), None, "the CPU sets no budget");
        }
    }
}
