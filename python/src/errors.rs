//! Rust errors as the Python exceptions a caller expects: `FileNotFoundError` for a missing
//! model, file or index, `ValueError` for arguments the engine refuses, `KeyboardInterrupt`
//! passed through, and `quiver.QuiverError` for everything else.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyValueError};
use pyo3::PyErr;
use quiver_embed::EmbedError;
use quiver_export::ExportError;
use quiver_index::IndexError;

create_exception!(
    _quiver,
    QuiverError,
    PyException,
    "Base of the errors Quiver raises itself (a model that cannot run, a damaged index, a \
     refused export, ...)."
);

/// The first Python exception a hook caught (Ctrl-C, an error in a progress callback): it is
/// raised in place of the `Interrupted` error the Rust call returns after it.
pub type Pending = std::sync::Mutex<Option<PyErr>>;

pub fn take_pending(pending: &Pending) -> Option<PyErr> {
    pending.lock().ok().and_then(|mut slot| slot.take())
}

pub fn embed_error(error: EmbedError) -> PyErr {
    let message = error.to_string();
    match error {
        EmbedError::ModelNotFound { .. } => PyFileNotFoundError::new_err(message),
        EmbedError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        EmbedError::UnknownPrompt { .. }
        | EmbedError::UnknownTask { .. }
        | EmbedError::Dimensions { .. }
        | EmbedError::MaxLength(_) => PyValueError::new_err(message),
        _ => QuiverError::new_err(message),
    }
}

pub fn index_error(error: IndexError) -> PyErr {
    let message = error.to_string();
    match error {
        IndexError::Embed(inner) => embed_error(inner),
        IndexError::NoIndex(_) => PyFileNotFoundError::new_err(message),
        IndexError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        IndexError::BadGlob { .. }
        | IndexError::UnknownLanguage { .. }
        | IndexError::QueryWidth { .. } => PyValueError::new_err(message),
        _ => QuiverError::new_err(message),
    }
}

pub fn export_error(error: ExportError) -> PyErr {
    let message = error.to_string();
    match error {
        ExportError::Index(inner) => index_error(inner),
        ExportError::UnknownFormat(_) | ExportError::MissingOption { .. } => {
            PyValueError::new_err(message)
        }
        _ => QuiverError::new_err(message),
    }
}
