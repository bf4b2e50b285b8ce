//! Reading safetensors weights (single file or sharded) into f32 buffers.

use crate::{LoadOptions, Quantization, Result, RuntimeError};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SINGLE_FILE: &str = "model.safetensors";
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The memory-mapped weight files of one model folder.
pub struct WeightFiles {
    dir: PathBuf,
    /// Shared, so an embedding [`Table`] can keep its rows in the map after the load.
    files: Vec<(PathBuf, Arc<Mmap>)>,
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
                Ok((path, Arc::new(map)))
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
                views.insert(name, (view, path.as_path(), map));
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
    /// Each tensor with the file it is in, for messages, and that file's map.
    views: HashMap<String, (safetensors::tensor::TensorView<'a>, &'a Path, &'a Arc<Mmap>)>,
    options: LoadOptions,
}

impl TensorStore<'_> {
    /// The whole checkpoint, from which each model takes the view its weights sit under.
    pub fn root(&self) -> Weights<'_> {
        Weights {
            store: self,
            prefix: String::new(),
            quantization: None,
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
    /// The number format of this view's dense layers, where it is not the model's.
    quantization: Option<Quantization>,
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
            quantization: self.quantization,
        }
    }

    /// This view for a dense layer whose inputs carry a few outsized channels (see
    /// [`Quantization::for_outlier_inputs`]).
    pub fn for_outlier_inputs(&self) -> Weights<'a> {
        Weights {
            quantization: Some(self.options().quantization.for_outlier_inputs()),
            ..self.clone()
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
        LoadOptions {
            quantization: self.quantization.unwrap_or(self.store.options.quantization),
            ..self.store.options
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.views.contains_key(&self.full_name(name))
    }

    fn full_name(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// Reads a tensor, checking its shape against what the config promised.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (full, view, file, _) = self.view(name, shape)?;
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

    /// An embedding table `[rows, width]`, left where it is in the mapped file: a model reads
    /// only the rows of the tokens it embeds, and copying the whole vocabulary (half of a small
    /// model's weights) was a third of a command-line search's model load.
    pub fn table(&self, name: &str, shape: [usize; 2]) -> Result<Table> {
        let (full, view, file, map) = self.view(name, &shape)?;
        let dtype = view.dtype();
        let (size, exponent) = match dtype {
            Dtype::F32 => (4, 0x7f80_0000),
            Dtype::F16 => (2, 0x7c00),
            Dtype::BF16 => (2, 0x7f80),
            other => {
                return Err(RuntimeError::TensorDtype {
                    name: full,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let data = view.data();
        // The same refusal as `get`'s: a value whose exponent bits are all set is a NaN or an
        // infinity, whatever the format. Words read whole, so the loop is vectorised.
        let bad = match size {
            4 => data.chunks_exact(4).fold(false, |bad, w| {
                bad | (u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & exponent == exponent)
            }),
            _ => data.chunks_exact(2).fold(false, |bad, w| {
                bad | (u32::from(u16::from_le_bytes([w[0], w[1]])) & exponent == exponent)
            }),
        };
        if bad {
            let word = |w: &[u8]| match *w {
                [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
                [a, b] => u32::from(u16::from_le_bytes([a, b])),
                _ => 0,
            };
            let index = data
                .chunks_exact(size)
                .position(|w| word(w) & exponent == exponent)
                .unwrap_or(0);
            return Err(RuntimeError::NonFiniteWeight {
                path: file.to_path_buf(),
                name: full,
                index,
            });
        }
        Ok(Table {
            start: data.as_ptr() as usize - map.as_ptr() as usize,
            map: Arc::clone(map),
            dtype,
            width: shape[1],
        })
    }

    /// The tensor `name`, checked to have `shape`, with its full name, file and file's map.
    #[allow(clippy::type_complexity)]
    fn view(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(
        String,
        &safetensors::tensor::TensorView<'a>,
        &'a Path,
        &'a Arc<Mmap>,
    )> {
        let full = self.full_name(name);
        let (view, file, map) =
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
        Ok((full, view, file, map))
    }

    pub fn get_optional(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// An embedding table kept in its memory-mapped checkpoint (see [`Weights::table`]), decoded
/// to f32 a row at a time.
pub struct Table {
    map: Arc<Mmap>,
    /// Where the table's bytes start in the map.
    start: usize,
    dtype: Dtype,
    width: usize,
}

impl Table {
    /// Row `id` decoded into `out`, which holds a row's width of values.
    pub fn row_into(&self, id: usize, out: &mut [f32]) {
        let size = if self.dtype == Dtype::F32 { 4 } else { 2 };
        let at = self.start + id * self.width * size;
        decode(self.dtype, &self.map[at..at + self.width * size], out);
    }

    /// The rows for `ids`, one after another.
    pub fn gather(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![0.0; ids.len() * self.width];
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(self.width.max(1))) {
            self.row_into(id as usize, row);
        }
        out
    }
}

/// Decodes the values in `bytes` (F32, F16 or BF16, little-endian) into `out`.
fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 if cfg!(target_endian = "little") => {
            bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(bytes)
        }
        Dtype::F16 => {
            for (value, w) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *value = half::f16::from_le_bytes([w[0], w[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (value, w) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *value = half::bf16::from_le_bytes([w[0], w[1]]).to_f32();
            }
        }
        _ => {
            for (value, w) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *value = f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            }
        }
    }
}

fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let size = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            return Err(RuntimeError::TensorDtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    let mut values = vec![0.0; bytes.len() / size];
    decode(dtype, bytes, &mut values);
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// A model folder whose `model.safetensors` holds one `[2, 3]` tensor `t` of `dtype`.
    fn folder(name: &str, dtype: Dtype, values: &[f32]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("quiver-weights-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = match dtype {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            _ => values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
        };
        let view = TensorView::new(dtype, vec![2, 3], &bytes).unwrap();
        let file = safetensors::serialize([("t", view)], None).unwrap();
        std::fs::write(dir.join(SINGLE_FILE), file).unwrap();
        dir
    }

    #[test]
    fn a_table_left_in_the_file_reads_the_rows_a_copy_would_and_refuses_a_nan() {
        let values = [0.5, -1.0, 2.0, 0.25, 3.0, -0.125];
        for (name, dtype) in [
            ("f32", Dtype::F32),
            ("f16", Dtype::F16),
            ("bf16", Dtype::BF16),
        ] {
            let dir = folder(name, dtype, &values);
            let files = WeightFiles::open(&dir).unwrap();
            let tensors = files.tensors(LoadOptions::default()).unwrap();
            let table = tensors.root().table("t", [2, 3]).unwrap();
            drop(tensors);
            drop(files);
            // The table outlives the files it was loaded through.
            let mut row = [0.0; 3];
            table.row_into(1, &mut row);
            assert_eq!(row, [0.25, 3.0, -0.125], "{name}");
            assert_eq!(table.gather(&[0, 1]), values, "{name}");

            let mut poisoned = values;
            poisoned[4] = f32::NAN;
            let dir = folder(&format!("{name}-nan"), dtype, &poisoned);
            let files = WeightFiles::open(&dir).unwrap();
            let tensors = files.tensors(LoadOptions::default()).unwrap();
            let error = tensors.root().table("t", [2, 3]).err().expect("refused");
            assert!(
                matches!(error, RuntimeError::NonFiniteWeight { index: 4, .. }),
                "{name}: {error}"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A view for outlier inputs changes only int8, only where bf16 runs natively, and what
    /// its submodules load.
    #[test]
    fn a_view_for_outlier_inputs_runs_int8_in_bf16_where_bf16_is_native() {
        let dir = folder("outliers", Dtype::F32, &[1.0; 6]);
        let files = WeightFiles::open(&dir).unwrap();
        let native_bf16 = Quantization::for_this_machine() == Quantization::Bf16;
        for (model, expected) in [
            (Quantization::None, Quantization::None),
            (Quantization::Bf16, Quantization::Bf16),
            (
                Quantization::Int8,
                if native_bf16 {
                    Quantization::Bf16
                } else {
                    Quantization::Int8
                },
            ),
        ] {
            let tensors = files
                .tensors(LoadOptions {
                    quantization: model,
                    ..LoadOptions::default()
                })
                .unwrap();
            let root = tensors.root();
            assert_eq!(root.pp("layer").options().quantization, model);
            let view = root.pp("layer").for_outlier_inputs();
            assert_eq!(view.pp("up").options().quantization, expected);
        }
        drop(files);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
