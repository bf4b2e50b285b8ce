//! `Model`: one loaded model, embedding through the same `Embedder::embed_until` call as
//! `quiver embed`.

use crate::errors::{embed_error, take_pending, Pending, QuiverError};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use quiver_embed::{
    resolve_model, Device, EmbedError, EmbedOptions, Embedder, EmbedderOptions, Quantization,
};
use quiver_index::recorded_model_id;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

#[pyclass(module = "quiver._quiver", name = "Model", frozen)]
pub struct Model {
    pub(crate) embedder: Arc<Embedder>,
    /// How an index records this model ([`recorded_model_id`]).
    pub(crate) model_id: String,
    /// A pool of the asked-for size; `None`: rayon's global pool (one thread per core).
    threads: Option<Arc<rayon::ThreadPool>>,
}

impl Model {
    /// Resolves `spec` (a folder, a cached hub id, else a hub download) and loads it. Runs
    /// without the GIL.
    pub(crate) fn load(
        py: Python<'_>,
        spec: &str,
        quantization: Quantization,
        max_length: Option<usize>,
        threads: Option<usize>,
        device: Device,
    ) -> PyResult<Model> {
        let threads = match threads {
            Some(0) => return Err(PyValueError::new_err("threads must be at least 1")),
            Some(count) => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(count)
                    .build()
                    .map_err(|e| QuiverError::new_err(format!("starting {count} threads: {e}")))?,
            )),
            None => None,
        };
        let embedder = py
            .detach(|| {
                let dir = resolve_model(spec)?;
                Embedder::load(
                    &dir,
                    &EmbedderOptions {
                        max_length,
                        device,
                        quantization,
                        ..EmbedderOptions::default()
                    },
                )
            })
            .map_err(embed_error)?;
        Ok(Model {
            embedder: Arc::new(embedder),
            model_id: recorded_model_id(spec),
            threads,
        })
    }

    /// Runs `work` on this model's threads.
    pub(crate) fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        match &self.threads {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }
}

/// `quantize=` as Python callers spell it: `None`, `"none"`, `"f32"`, `"int8"` or `"bf16"`.
pub(crate) fn quantization(name: Option<&str>) -> PyResult<Option<Quantization>> {
    match name {
        None => Ok(None),
        Some("f32") => Ok(Some(Quantization::None)),
        Some(name) => Quantization::from_name(name).map(Some).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown quantize={name:?}: use None, \"f32\", \"int8\" or \"bf16\""
            ))
        }),
    }
}

pub(crate) fn device(name: Option<&str>) -> PyResult<Device> {
    match name {
        None => Ok(Device::Cpu),
        Some(name) => name.parse().map_err(|_| {
            PyValueError::new_err(format!(
                "unknown device={name:?}: use \"cpu\", \"cuda\", \"cuda:N\" or \"auto\""
            ))
        }),
    }
}

/// Calls `progress(n)` with the texts each forward pass finished and checks for Ctrl-C; a
/// Python exception from either stops the job and is kept in `pending` to be raised.
pub(crate) fn python_hook<'a>(
    progress: Option<&'a Py<PyAny>>,
    pending: &'a Pending,
) -> impl FnMut(usize) -> ControlFlow<()> + 'a {
    move |done| {
        let outcome = Python::attach(|py| -> PyResult<()> {
            if let Some(progress) = progress {
                progress.call1(py, (done,))?;
            }
            py.check_signals()
        });
        match outcome {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                if let Ok(mut slot) = pending.lock() {
                    slot.get_or_insert(error);
                }
                ControlFlow::Break(())
            }
        }
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (model_name_or_path, *, quantize=None, threads=None, device=None, max_seq_length=None))]
    fn new(
        py: Python<'_>,
        model_name_or_path: &str,
        quantize: Option<&str>,
        threads: Option<usize>,
        device: Option<&str>,
        max_seq_length: Option<usize>,
    ) -> PyResult<Model> {
        let quantization = quantization(quantize)?.unwrap_or_default();
        let device = self::device(device)?;
        Model::load(
            py,
            model_name_or_path,
            quantization,
            max_seq_length,
            threads,
            device,
        )
    }

    /// Vectors of `texts` (a list of str) as a float32 matrix, one row per text, pooled and
    /// normalised as the model's own pipeline says; no Matryoshka cut (the caller's).
    #[pyo3(signature = (texts, *, batch_size=32, prompt_name=None, prompt=None, progress=None))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        batch_size: usize,
        prompt_name: Option<String>,
        prompt: Option<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if batch_size == 0 {
            return Err(PyValueError::new_err("batch_size must be at least 1"));
        }
        let options = EmbedOptions {
            prompt_name,
            prompt,
            max_batch_sequences: batch_size,
            ..EmbedOptions::default()
        };
        let pending = Pending::default();
        let embedded = py.detach(|| {
            self.run(|| {
                self.embedder.embed_until(
                    &texts,
                    &options,
                    python_hook(progress.as_ref(), &pending),
                )
            })
        });
        let vectors = match embedded {
            Ok(vectors) => vectors,
            Err(EmbedError::Interrupted) => {
                return Err(
                    take_pending(&pending).unwrap_or_else(|| QuiverError::new_err("interrupted"))
                )
            }
            Err(error) => return Err(embed_error(error)),
        };
        let width = self.embedder.dimension();
        let mut flat = Vec::with_capacity(vectors.len() * width);
        for vector in &vectors {
            flat.extend_from_slice(vector);
        }
        let matrix = Array2::from_shape_vec((vectors.len(), width), flat)
            .map_err(|e| QuiverError::new_err(format!("vectors of uneven width: {e}")))?;
        Ok(matrix.into_pyarray(py))
    }

    /// Token ids of each text as the model sees them (special tokens included, cut at the max
    /// length, lowercased when the model asks), without any prompt.
    fn token_ids(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Vec<Vec<u32>>> {
        let lower = self.embedder.config().do_lower_case;
        py.detach(|| {
            let texts: Vec<String> = if lower {
                texts.iter().map(|t| t.to_lowercase()).collect()
            } else {
                texts
            };
            self.embedder.tokenizer().encode_batch(&texts)
        })
        .map_err(embed_error)
    }

    /// Width of the vectors the model gives.
    #[getter]
    fn dimension(&self) -> usize {
        self.embedder.dimension()
    }

    #[getter]
    fn max_seq_length(&self) -> usize {
        self.embedder.max_length()
    }

    /// Whether the model's pipeline ends in a `Normalize` module.
    #[getter]
    fn normalizes(&self) -> bool {
        self.embedder.config().normalize
    }

    #[getter]
    fn prompts(&self) -> BTreeMap<String, String> {
        self.embedder.config().prompts.clone()
    }

    #[getter]
    fn default_prompt_name(&self) -> Option<String> {
        self.embedder.config().default_prompt_name.clone()
    }

    #[getter]
    fn pad_token_id(&self) -> u32 {
        self.embedder.tokenizer().pad_id()
    }

    /// How an index records this model: a folder's absolute path, or the hub id.
    #[getter]
    fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The number format of the dense layers: `"none"` (f32), `"int8"` or `"bf16"`.
    #[getter]
    fn quantization(&self) -> &'static str {
        self.embedder.quantization().name()
    }
}
