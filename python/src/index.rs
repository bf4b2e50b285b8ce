//! `Index`: an index folder, updated by the incremental indexer and searched, exported and
//! read as `quiver index`, `search`, `export` and `status` do, through the same library calls.

use crate::errors::{export_error, index_error, take_pending, Pending, QuiverError};
use crate::model::{self, python_hook, Model};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use quiver_embed::Quantization;
use quiver_export::postgres::IndexMethod;
use quiver_export::qdrant::QdrantOptions;
use quiver_export::{export_index, Outcome, Target, TargetOptions};
use quiver_index::{
    is_keyword_weight, search, IndexError, IndexOptions, IndexProgress, Input, RunModel,
    SearchFilter, SearchMode, SearchRequest, Store,
};
use std::path::PathBuf;
use std::sync::Mutex;

#[pyclass(module = "quiver._quiver", name = "Index", frozen)]
pub struct Index {
    dir: PathBuf,
    /// The model the caller gave: a loaded one, or a name to load when a run needs it.
    given: Option<Given>,
    /// The last model this index loaded itself (the index's own, for searches).
    loaded: Mutex<Option<Py<Model>>>,
}

enum Given {
    Model(Py<Model>),
    Spec(String),
}

/// Progress events for a Python callable `progress(event, count)`, and Ctrl-C checks.
struct PythonProgress<'a> {
    callback: Option<&'a Py<PyAny>>,
    pending: &'a Pending,
}

impl PythonProgress<'_> {
    fn send(&self, event: &str, count: usize) {
        let Some(callback) = self.callback else {
            return;
        };
        if let Err(error) = Python::attach(|py| callback.call1(py, (event, count)).map(drop)) {
            if let Ok(mut slot) = self.pending.lock() {
                slot.get_or_insert(error);
            }
        }
    }
}

impl IndexProgress for PythonProgress<'_> {
    fn files_found(&self, total: usize) {
        self.send("files_found", total);
    }
    fn files_done(&self, count: usize) {
        self.send("files_done", count);
    }
    fn chunks_embedded(&self, count: usize) {
        self.send("chunks_embedded", count);
    }
    fn interrupted(&self) -> bool {
        python_hook(None, self.pending)(0).is_break()
            || self.pending.lock().map_or(true, |slot| slot.is_some())
    }
}

impl Index {
    /// A model with `model_id` in `quantization`: the caller's when it is that one, else one
    /// this index loaded before, else loaded now.
    fn model_for(
        &self,
        py: Python<'_>,
        model_id: &str,
        quantization: Quantization,
    ) -> PyResult<Py<Model>> {
        let fits = |model: &Model| {
            model.model_id == model_id && model.embedder.quantization() == quantization
        };
        if let Some(Given::Model(model)) = &self.given {
            if fits(model.get()) {
                return Ok(model.clone_ref(py));
            }
        }
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| QuiverError::new_err("a model load failed in another thread"))?;
        if let Some(model) = loaded.as_ref().filter(|model| fits(model.get())) {
            return Ok(model.clone_ref(py));
        }
        let model = Py::new(
            py,
            Model::load(py, model_id, quantization, None, None, Default::default())?,
        )?;
        *loaded = Some(model.clone_ref(py));
        Ok(model)
    }

    fn open(&self) -> PyResult<Store> {
        Store::open(&self.dir).map_err(index_error)
    }
}

#[pymethods]
impl Index {
    #[new]
    #[pyo3(signature = (path, *, model=None))]
    fn new(path: PathBuf, model: Option<&Bound<'_, PyAny>>) -> PyResult<Index> {
        let given = match model {
            None => None,
            Some(model) => match model.cast::<Model>() {
                Ok(model) => Some(Given::Model(model.clone().unbind())),
                Err(_) => Some(Given::Spec(model.extract::<String>().map_err(|_| {
                    PyValueError::new_err("model= takes a quiver.Model or a model name or path")
                })?)),
            },
        };
        Ok(Index {
            dir: std::path::absolute(&path).unwrap_or(path),
            given,
            loaded: Mutex::new(None),
        })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Brings the index up to date with the tree at `root`; returns the run's report as JSON.
    #[pyo3(signature = (root, *, progress=None, reembed=false, dimensions=None, quantize=None, id_prefix=None, chunk_tokens=None, adapt=true, keyword_weight=None))]
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        py: Python<'_>,
        root: PathBuf,
        progress: Option<Py<PyAny>>,
        reembed: bool,
        dimensions: Option<usize>,
        quantize: Option<&str>,
        id_prefix: Option<String>,
        chunk_tokens: Option<usize>,
        adapt: bool,
        keyword_weight: Option<f64>,
    ) -> PyResult<String> {
        if !root.is_dir() {
            return Err(PyFileNotFoundError::new_err(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let root = root
            .canonicalize()
            .map_err(|e| PyFileNotFoundError::new_err(format!("{}: {e}", root.display())))?;
        let quantize = model::quantization(quantize)?;
        let mut store = py
            .detach(|| Store::open_writer(&self.dir))
            .map_err(index_error)?;
        let stored = store.settings().map_err(index_error)?;
        let asked = match &self.given {
            Some(Given::Model(model)) => {
                let model = model.get();
                let format = model.embedder.quantization();
                if quantize.is_some_and(|asked| asked != format) {
                    return Err(PyValueError::new_err(format!(
                        "quantize= differs from the given model's number format ({}): load the \
                         model with that quantize= instead",
                        format.name()
                    )));
                }
                RunModel {
                    model_id: model.model_id.clone(),
                    quantization: format,
                }
            }
            Some(Given::Spec(spec)) => RunModel::resolve(stored.as_ref(), Some(spec), quantize),
            None => RunModel::resolve(stored.as_ref(), None, quantize),
        };
        let model = self.model_for(py, &asked.model_id, asked.quantization)?;
        let model = model.get();
        let mut options = IndexOptions::new(
            Input::Tree { root: root.clone() },
            asked.model_id.clone(),
            &self.dir,
        );
        options.dimensions = dimensions;
        options.reembed = reembed;
        options.chunk_tokens = chunk_tokens;
        options.adapt = adapt;
        options.keyword_weight = keyword_weight;
        if let Some(prefix) = id_prefix {
            options.id_prefix = prefix;
        }
        let pending = Pending::default();
        let report = py.detach(|| {
            let progress = PythonProgress {
                callback: progress.as_ref(),
                pending: &pending,
            };
            model.run(|| quiver_index::index(&mut store, &model.embedder, &options, &progress))
        });
        match report {
            Ok(report) => serde_json::to_string(&report).map_err(json_error),
            Err(IndexError::Interrupted) => Err(take_pending(&pending)
                .unwrap_or_else(|| QuiverError::new_err("the run was interrupted"))),
            Err(error) => Err(take_pending(&pending).unwrap_or_else(|| index_error(error))),
        }
    }

    /// The best `k` chunks for `query` as JSON hits, embedded with the index's own model.
    #[pyo3(signature = (query, *, k=10, mode="hybrid", languages=None, path=None, keyword_weight=None))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        query: &str,
        k: usize,
        mode: &str,
        languages: Option<Vec<String>>,
        path: Option<&str>,
        keyword_weight: Option<f64>,
    ) -> PyResult<String> {
        let mode: SearchMode = mode.parse().map_err(PyValueError::new_err)?;
        if let Some(weight) = keyword_weight.filter(|&w| !is_keyword_weight(w)) {
            return Err(PyValueError::new_err(format!(
                "keyword_weight={weight} is not a weight: give a number, 0 or more"
            )));
        }
        let filter =
            SearchFilter::from_names(&languages.unwrap_or_default(), path).map_err(index_error)?;
        let store = self.open()?;
        let settings = store.indexed_settings().map_err(index_error)?;
        let keyword_weight = keyword_weight.unwrap_or(settings.keyword_weight);
        let query_vector = match mode {
            SearchMode::Keyword => None,
            _ => {
                let model = self.model_for(py, &settings.model, settings.quantization)?;
                let model = model.get();
                let options = settings.query_options();
                let pending = Pending::default();
                let mut vectors = py
                    .detach(|| {
                        model.run(|| {
                            model.embedder.embed_until(
                                &[query],
                                &options,
                                python_hook(None, &pending),
                            )
                        })
                    })
                    .map_err(|e| take_pending(&pending).unwrap_or_else(|| index_error(e.into())))?;
                vectors.pop()
            }
        };
        let hits = py
            .detach(move || {
                search(
                    &store,
                    &SearchRequest {
                        query,
                        query_vector: query_vector.as_deref(),
                        mode,
                        k,
                        filter: &filter,
                        keyword_weight,
                        priors: true,
                    },
                )
            })
            .map_err(index_error)?;
        serde_json::to_string(&hits).map_err(json_error)
    }

    /// What the index holds and how it was made, as JSON (`quiver status --json`).
    fn status(&self, py: Python<'_>) -> PyResult<String> {
        let status = py
            .detach(|| Store::open(&self.dir).and_then(|store| store.status()))
            .map_err(index_error)?;
        serde_json::to_string(&status).map_err(json_error)
    }

    /// Sends the index to `format` at `destination` as `quiver export --to` does; returns
    /// what it did as JSON.
    #[pyo3(signature = (format, destination, *, collection=None, table=None, api_key=None, points_per_request=256, vector_index="hnsw"))]
    #[allow(clippy::too_many_arguments)]
    fn export(
        &self,
        py: Python<'_>,
        format: &str,
        destination: &str,
        collection: Option<String>,
        table: Option<String>,
        api_key: Option<String>,
        points_per_request: usize,
        vector_index: &str,
    ) -> PyResult<String> {
        let vector_index = match vector_index {
            "hnsw" => IndexMethod::Hnsw,
            "ivfflat" => IndexMethod::IvfFlat,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown vector_index={other:?}: use \"hnsw\" or \"ivfflat\""
                )))
            }
        };
        if points_per_request == 0 {
            return Err(PyValueError::new_err(
                "points_per_request must be at least 1",
            ));
        }
        let target = Target::parse(
            format,
            destination,
            TargetOptions {
                collection,
                table,
                qdrant: QdrantOptions {
                    batch_size: points_per_request,
                    api_key,
                    ..QdrantOptions::default()
                },
                vector_index,
            },
        )
        .map_err(export_error)?;
        let store = self.open()?;
        let exported = py
            .detach(move || export_index(&store, &target, &|_, _| {}))
            .map_err(export_error)?;
        let mut report = serde_json::json!({
            "format": format,
            "destination": destination,
            "model": exported.settings.model,
            "dimension": exported.settings.dimension,
        });
        match exported.outcome {
            Outcome::Written(written) => report["written"] = written.into(),
            Outcome::Synced(summary) => {
                report["upserted"] = summary.upserted.into();
                report["deleted"] = summary.deleted.into();
                report["unchanged"] = summary.unchanged.into();
            }
        }
        Ok(report.to_string())
    }

    /// The chunks with these numeric ids (`Hit.uid`, the ids of `vectors()`), as JSON in the
    /// order asked; `null` for an id the index does not hold.
    fn chunks(&self, py: Python<'_>, uids: Vec<i64>) -> PyResult<String> {
        let store = self.open()?;
        let chunks = py
            .detach(move || store.chunks_by_uid(&uids))
            .map_err(index_error)?;
        serde_json::to_string(&chunks).map_err(json_error)
    }

    /// Every chunk's numeric id (`Hit.uid`) and text vector, read in one pass into two arrays.
    fn vectors<'py>(&self, py: Python<'py>) -> PyResult<UidsAndMatrix<'py>> {
        let store = self.open()?;
        let dimension = store.indexed_settings().map_err(index_error)?.dimension;
        let (uids, flat) = py
            .detach(move || {
                let (mut uids, mut flat) = (Vec::new(), Vec::new());
                store
                    .for_each_vector(|stored| {
                        if stored.vector.len() == dimension {
                            uids.push(stored.uid);
                            flat.extend_from_slice(stored.vector);
                        }
                    })
                    .map(|()| (uids, flat))
            })
            .map_err(index_error)?;
        let rows = uids.len();
        let matrix = Array2::from_shape_vec((rows, dimension), flat)
            .map_err(|e| QuiverError::new_err(format!("stored vectors of uneven width: {e}")))?;
        Ok((uids.into_pyarray(py), matrix.into_pyarray(py)))
    }
}

/// `Index.vectors()`: chunk uids and their vectors, row for row.
type UidsAndMatrix<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray2<f32>>);

fn json_error(error: serde_json::Error) -> PyErr {
    QuiverError::new_err(format!("encoding the answer as JSON: {error}"))
}
