//! Where an index lives: `--index DIR`, or `.quiver/` under the indexed root; commands that
//! only read an index look for `.quiver/` in the current directory and its parents, as git
//! looks for `.git/`.

use anyhow::bail;
use quiver_index::{DATABASE_FILE, DEFAULT_INDEX_DIR};
use std::path::{Path, PathBuf};

pub fn for_root(index: Option<PathBuf>, root: &Path) -> PathBuf {
    index.unwrap_or_else(|| root.join(DEFAULT_INDEX_DIR))
}

pub fn find(index: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = index {
        return Ok(dir);
    }
    let cwd = std::env::current_dir()?;
    for dir in cwd.ancestors() {
        let candidate = dir.join(DEFAULT_INDEX_DIR);
        if candidate.join(DATABASE_FILE).is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no {DEFAULT_INDEX_DIR}/ index in {} or its parents: run `quiver index PATH` first, or pass --index DIR",
        cwd.display()
    )
}
