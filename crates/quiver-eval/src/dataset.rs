//! A code-search dataset on disk: `corpus/` (the files to index) and `queries.jsonl` (built by
//! `bench/eval/build_dataset.py`).

use crate::{EvalError, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
pub struct Query {
    pub id: String,
    pub query: String,
    pub language: String,
    /// Relative to `corpus/`.
    pub path: String,
    /// First line of the documented definition: a result holding it is a hit.
    pub line: usize,
    #[serde(default)]
    pub symbol: Option<String>,
}

pub struct Dataset {
    pub dir: PathBuf,
    pub corpus: PathBuf,
    pub queries: Vec<Query>,
}

impl Dataset {
    pub fn load(dir: &Path) -> Result<Dataset> {
        let corpus = dir.join("corpus");
        if !corpus.is_dir() {
            return Err(EvalError::NotADataset(dir.to_path_buf()));
        }
        let queries_path = dir.join("queries.jsonl");
        let text = std::fs::read_to_string(&queries_path).map_err(|source| EvalError::Io {
            path: queries_path.clone(),
            source,
        })?;
        let queries = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| EvalError::BadQuery {
                    path: queries_path.clone(),
                    line: i + 1,
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<Query>>>()?;
        if queries.is_empty() {
            return Err(EvalError::BadQuery {
                path: queries_path,
                line: 0,
                message: "no queries".into(),
            });
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            corpus,
            queries,
        })
    }
}
