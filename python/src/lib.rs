//! `quiver._quiver`: the engine's library calls made callable from Python.
//!
//! What it does: loads a model ([`Model`]) and embeds texts through `Embedder::embed_until`,
//! the same call `quiver embed` makes; opens an index ([`Index`]) and runs the indexer, the
//! search, the status and the exports of `quiver-index` and `quiver-export`, as the CLI does.
//! Every call releases the GIL while Rust works, checks for Ctrl-C between forward passes and
//! files, and hands vectors over as NumPy arrays built from one contiguous buffer.
//! What it does not: any sentence-transformers semantics (shapes, `convert_to_*`, prompts by
//! method name): the pure-Python layer in `python/quiver` adds those over these calls.

mod errors;
mod index;
mod model;

use pyo3::prelude::*;

/// The keyword vector of `text`: `{"indices": [...], "values": [...]}`, the sparse query vector
/// for the `keyword` vector of a Qdrant export (as `quiver embed --keywords` prints it).
#[pyfunction]
fn keyword_vector(py: Python<'_>, text: &str) -> PyResult<Py<pyo3::types::PyDict>> {
    let vector = quiver_index::keywords::query_vector(text)
        .map_err(|error| errors::QuiverError::new_err(error.to_string()))?;
    let dict = pyo3::types::PyDict::new(py);
    dict.set_item("indices", vector.indices)?;
    dict.set_item("values", vector.values)?;
    Ok(dict.unbind())
}

#[pymodule]
fn _quiver(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_class::<index::Index>()?;
    m.add_function(wrap_pyfunction!(keyword_vector, m)?)?;
    m.add("QuiverError", m.py().get_type::<errors::QuiverError>())?;
    m.add("DEFAULT_MODEL", quiver_embed::DEFAULT_MODEL)?;
    Ok(())
}
