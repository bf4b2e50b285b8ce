//! Reading safetensors weights (single file or sharded) into f32 buffers.

use crate::{LoadOptions, Result, RuntimeError};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

const SINGLE_FILE: &str = "model.safetensors";
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The memory-mapped weight files of one model folder.
pub struct WeightFiles {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
}

impl WeightFiles {
    /// Maps `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let paths = weight_paths(dir)?;
        let files = paths
            .into_iter()
            .map(|path| {
                let file = File::open(&path).map_err(|source| RuntimeError::Io {
                    path: path.clone(),
                    source,
                })?;
                // SAFETY: the map is read-only and lives no longer than `WeightFiles`; like every
                // safetensors reader we assume nobody truncates the file while a model loads.
                let map = unsafe { Mmap::map(&file) }.map_err(|source| RuntimeError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok((path, map))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WeightFiles {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// Parses the headers of every file: the tensors become addressable by name. Dense layers
    /// loaded from them are laid out as `options` say.
    pub fn tensors(&self, options: LoadOptions) -> Result<TensorStore<'_>> {
        let mut views = HashMap::new();
        for (path, map) in &self.files {
            let parsed =
                SafeTensors::deserialize(map).map_err(|error| RuntimeError::Safetensors {
                    path: path.clone(),
                    message: error.to_string(),
                })?;
            for (name, view) in parsed.tensors() {
                views.insert(name, (view, path.as_path()));
            }
        }
        Ok(TensorStore {
            dir: &self.dir,
            views,
            options,
        })
    }
}

fn weight_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join(SHARD_INDEX);
    let text = std::fs::read_to_string(&index_path).map_err(|_| RuntimeError::Io {
        path: single.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("neither {SINGLE_FILE} nor {SHARD_INDEX} exists in the model folder"),
        ),
    })?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| RuntimeError::Config {
            path: index_path.clone(),
            message: error.to_string(),
        })?;
    let weight_map = index
        .get("weight_map")
        .and_then(|map| map.as_object())
        .ok_or_else(|| RuntimeError::Config {
            path: index_path.clone(),
            message: "field `weight_map` is missing or not an object".into(),
        })?;
    let mut shards: Vec<PathBuf> = weight_map
        .values()
        .filter_map(|file| file.as_str())
        .map(|file| dir.join(file))
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// Named tensors of a model, read as f32 whatever their stored dtype.
pub struct TensorStore<'a> {
    dir: &'a Path,
    /// Each tensor with the file it is in, for messages.
    views: HashMap<String, (safetensors::tensor::TensorView<'a>, &'a Path)>,
    options: LoadOptions,
}

impl TensorStore<'_> {
    /// The whole checkpoint, from which each model takes the view its weights sit under.
    pub fn root(&self) -> Weights<'_> {
        Weights {
            store: self,
            prefix: String::new(),
        }
    }
}

/// The tensors of one module: an immutable view of the checkpoint under a name prefix, handed
/// to the module's `load` (as candle's `VarBuilder::pp`). A module names its tensors relative
/// to where its parent placed it; no loader can move another's view.
#[derive(Clone)]
pub struct Weights<'a> {
    store: &'a TensorStore<'a>,
    /// Empty, or ending in `.`.
    prefix: String,
}

impl<'a> Weights<'a> {
    /// The view of the submodule `name` (`"encoder.layer"`, then `3`, ...).
    pub fn pp(&self, name: impl std::fmt::Display) -> Weights<'a> {
        let name = name.to_string();
        if name.is_empty() {
            return self.clone();
        }
        Weights {
            store: self.store,
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// Checkpoints keep the same network under `""`, `"bert"` or `"model"` depending on how
    /// they were saved: the view of the first of `scopes` under which `probe` exists.
    pub fn first_with(&self, scopes: &[&str], probe: &str) -> Result<Weights<'a>> {
        scopes
            .iter()
            .map(|scope| self.pp(scope))
            .find(|scoped| scoped.contains(probe))
            .ok_or_else(|| RuntimeError::MissingTensor {
                name: self.full_name(probe),
                dir: self.store.dir.to_path_buf(),
            })
    }

    /// How dense layers loaded from this view lay out their weights.
    pub fn options(&self) -> LoadOptions {
        self.store.options
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.views.contains_key(&self.full_name(name))
    }

    fn full_name(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// Reads a tensor, checking its shape against what the config promised.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = self.full_name(name);
        let (view, file) =
            self.store
                .views
                .get(&full)
                .ok_or_else(|| RuntimeError::MissingTensor {
                    name: full.clone(),
                    dir: self.store.dir.to_path_buf(),
                })?;
        if view.shape() != shape {
            return Err(RuntimeError::TensorShape {
                name: full,
                actual: view.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        let values = to_f32(&full, view.dtype(), view.data())?;
        // A NaN or infinity in a weight turns every vector it touches into NaN: refuse the
        // model rather than serve `null`s. The flag first, as a loop without an early exit is
        // vectorised; the position only for the error.
        if values.iter().fold(false, |bad, v| bad | !v.is_finite()) {
            let index = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(RuntimeError::NonFiniteWeight {
                path: file.to_path_buf(),
                name: full,
                index,
            });
        }
        Ok(values)
    }

    pub fn get_optional(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let words = |size: usize| bytes.chunks_exact(size);
    let values = match dtype {
        // A copy, as loading a model from the command line waits on it: little-endian is the
        // machine's order.
        Dtype::F32 if cfg!(target_endian = "little") => bytemuck::pod_collect_to_vec(bytes),
        Dtype::F32 => words(4)
            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
        Dtype::F16 => words(2)
            .map(|w| half::f16::from_le_bytes([w[0], w[1]]).to_f32())
            .collect(),
        Dtype::BF16 => words(2)
            .map(|w| half::bf16::from_le_bytes([w[0], w[1]]).to_f32())
            .collect(),
        other => {
            return Err(RuntimeError::TensorDtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    Ok(values)
}
