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

#[pymodule]
fn _quiver(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_class::<index::Index>()?;
    m.add("QuiverError", m.py().get_type::<errors::QuiverError>())?;
    m.add("DEFAULT_MODEL", quiver_embed::DEFAULT_MODEL)?;
    Ok(())
}
