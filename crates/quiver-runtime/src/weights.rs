//! Reading safetensors weights (single file or sharded) into f32 buffers.

use crate::{Result, RuntimeError};
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

    /// Parses the headers of every file: the tensors become addressable by name.
    pub fn tensors(&self) -> Result<TensorStore<'_>> {
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
            prefix: String::new(),
            few_row_panels: false,
            int8: false,
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
    prefix: String,
    /// Layers loaded from this store keep a second, panel-packed copy of their weights for
    /// inputs of a few tokens ([`crate::kernels::matmul_few_rows`]).
    few_row_panels: bool,
    /// Dense layers loaded from this store keep their weights in int8 (see
    /// [`crate::kernels::matmul_int8`]).
    int8: bool,
}

impl TensorStore<'_> {
    pub fn set_few_row_panels(&mut self, enabled: bool) {
        self.few_row_panels = enabled;
    }

    pub fn few_row_panels(&self) -> bool {
        self.few_row_panels
    }

    pub fn set_int8(&mut self, enabled: bool) {
        self.int8 = enabled;
    }

    pub fn int8(&self) -> bool {
        self.int8
    }

    /// Checkpoints name the same tensor `x`, `bert.x` or `model.x` depending on how they were
    /// saved; picks the first candidate prefix under which `probe` exists.
    pub fn select_prefix(&mut self, probe: &str, candidates: &[&str]) -> Result<()> {
        let found = candidates
            .iter()
            .find(|prefix| self.views.contains_key(&format!("{prefix}{probe}")));
        match found {
            Some(prefix) => {
                self.prefix = prefix.to_string();
                Ok(())
            }
            None => Err(RuntimeError::MissingTensor {
                name: probe.to_string(),
                dir: self.dir.to_path_buf(),
            }),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.views.contains_key(&self.full_name(name))
    }

    /// Whether `name` exists outside any prefix (heads saved beside the base model's weights).
    pub fn contains_at_root(&self, name: &str) -> bool {
        self.views.contains_key(name)
    }

    fn full_name(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// Reads a tensor, checking its shape against what the config promised.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = self.full_name(name);
        let (view, file) = self
            .views
            .get(&full)
            .ok_or_else(|| RuntimeError::MissingTensor {
                name: full.clone(),
                dir: self.dir.to_path_buf(),
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
        // model rather than serve `null`s.
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
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
