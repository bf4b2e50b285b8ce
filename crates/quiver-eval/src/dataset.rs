//! A code-search dataset on disk: `corpus/` (the files to index) and `queries.jsonl` (built by
//! `bench/eval/build_dataset.py`). A dataset with splits keeps each split's packages apart in
//! `corpus/<split>/`, and each query names its split; one split is loaded at a time.

use crate::{EvalError, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
pub struct Query {
    pub id: String,
    pub query: String,
    pub language: String,
    /// `dev` or `test` in a dataset with splits.
    #[serde(default)]
    pub split: Option<String>,
    /// Relative to the corpus folder of its split.
    pub path: String,
    /// First line of the documented definition: a result holding it is a hit.
    pub line: usize,
    #[serde(default)]
    pub symbol: Option<String>,
}

impl Query {
    /// The package the query was taken from: its path's first two folders (language, then
    /// package, as `bench/eval/build_dataset.py` lays out a corpus). `None` for a shallower path.
    pub fn package(&self) -> Option<&str> {
        package_of(&self.path)
    }
}

/// The first two folders of a corpus path: language, then package.
pub fn package_of(path: &str) -> Option<&str> {
    let mut slashes = path.match_indices('/').map(|(at, _)| at);
    let _language = slashes.next()?;
    let end = slashes.next()?;
    Some(&path[..end])
}

pub struct Dataset {
    pub dir: PathBuf,
    /// The split loaded, in a dataset with splits.
    pub split: Option<String>,
    pub corpus: PathBuf,
    pub queries: Vec<Query>,
}

/// The split scored when none is named: choices are made on dev, results reported on test.
pub const DEFAULT_SPLIT: &str = "test";

impl Dataset {
    /// Loads `dir`; in a dataset with splits, `split` (default [`DEFAULT_SPLIT`]) picks the
    /// corpus and the queries.
    pub fn load(dir: &Path, split: Option<&str>) -> Result<Dataset> {
        let root = dir.join("corpus");
        if !root.is_dir() {
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
        let has_splits = queries.iter().any(|q| q.split.is_some());
        let split = match (has_splits, split) {
            (true, split) => Some(split.unwrap_or(DEFAULT_SPLIT).to_string()),
            (false, None) => None,
            (false, Some(split)) => {
                return Err(EvalError::NoSplits {
                    dir: dir.to_path_buf(),
                    split: split.to_string(),
                })
            }
        };
        let queries: Vec<Query> = queries.into_iter().filter(|q| q.split == split).collect();
        let corpus = match &split {
            Some(split) => root.join(split),
            None => root,
        };
        if queries.is_empty() || !corpus.is_dir() {
            return Err(EvalError::BadQuery {
                path: queries_path,
                line: 0,
                message: match &split {
                    Some(split) => format!("no queries or no corpus folder for the split {split}"),
                    None => "no queries".into(),
                },
            });
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            split,
            corpus,
            queries,
        })
    }

    /// Where this split's indexes are kept.
    pub fn indexes(&self) -> PathBuf {
        match &self.split {
            Some(split) => self.dir.join("indexes").join(split),
            None => self.dir.join("indexes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Query;

    fn query(path: &str) -> Query {
        Query {
            id: path.into(),
            query: "q".into(),
            language: "python".into(),
            split: None,
            path: path.into(),
            line: 1,
            symbol: None,
        }
    }

    #[test]
    fn a_query_s_package_is_its_path_s_first_two_folders() {
        assert_eq!(
            query("python/rich-13.9.2/rich/text.py").package(),
            Some("python/rich-13.9.2")
        );
        assert_eq!(query("python/a.py").package(), None);
    }
}
