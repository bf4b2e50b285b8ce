//! Finding the real models that `scripts/fetch-test-models` put in place, for the tests of every
//! crate: `$QUIVER_TEST_MODELS/<name>`, else `models/<name>` at the repository root.

use std::path::PathBuf;

/// The folder of a fetched test model; panics with the command to run when it is missing.
pub fn fetched_model_dir(name: &str) -> PathBuf {
    let dir = std::env::var_os("QUIVER_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
        .join(name);
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model.safetensors: run scripts/fetch-test-models first",
        dir.display()
    );
    dir
}
