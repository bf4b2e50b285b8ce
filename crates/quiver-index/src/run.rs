//! What an indexing run embeds with, decided once from what the caller asks and what the index
//! already holds: the CLI's `quiver index` and the Python `Index.update` both ask here.

use crate::error::{IndexError, Result};
use crate::indexer::{Chunking, IndexOptions, Input};
use crate::store::{IndexSettings, Store};
use crate::walk::WalkOptions;
use quiver_embed::{Quantization, DEFAULT_MODEL};
use std::path::Path;

/// The first part of every chunk id when the caller names none.
pub const DEFAULT_ID_PREFIX: &str = "default";
/// Files larger than this are skipped when the caller names no limit.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 20;
/// Chunks embedded per commit when the caller names no count: what a crash can cost at most.
pub const DEFAULT_COMMIT_EVERY: usize = 256;

/// The model and number format a run embeds with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunModel {
    /// How the index records the model ([`recorded_model_id`]).
    pub model_id: String,
    pub quantization: Quantization,
}

impl RunModel {
    /// What the caller names wins; else what the index holds; else the defaults.
    pub fn resolve(
        stored: Option<&IndexSettings>,
        model: Option<&str>,
        quantization: Option<Quantization>,
    ) -> RunModel {
        RunModel {
            model_id: model
                .map(recorded_model_id)
                .or_else(|| stored.map(|s| s.model.clone()))
                .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
            quantization: quantization
                .or_else(|| stored.map(|s| s.quantization))
                .unwrap_or_default(),
        }
    }

    /// For what must keep the index's vectors as they are (a watcher, a server): the index's
    /// model and number format, or the caller's where they name the same; other ones are
    /// refused, naming both.
    pub fn following(
        index_dir: &Path,
        stored: Option<&IndexSettings>,
        model: Option<&str>,
        quantization: Option<Quantization>,
    ) -> Result<RunModel> {
        let run = RunModel::resolve(stored, model, quantization);
        let Some(stored) = stored else {
            return Ok(run);
        };
        if !same_model(&run.model_id, &stored.model) || run.quantization != stored.quantization {
            return Err(IndexError::ModelMismatch {
                path: index_dir.to_path_buf(),
                stored: format!("{} ({})", stored.model, stored.quantization.name()),
                requested: format!("{} ({})", run.model_id, run.quantization.name()),
            });
        }
        // The index's spelling: what its vectors are recorded under.
        Ok(RunModel {
            model_id: stored.model.clone(),
            ..run
        })
    }
}

/// Two recorded model ids name the same model: equal, or the same folder reached two ways (a
/// folder and its absolute path, or a hub id and its cached snapshot). Nothing is downloaded:
/// an id not on this machine can only match by name.
fn same_model(a: &str, b: &str) -> bool {
    let folder = |spec: &str| {
        quiver_embed::resolve_local_model(spec)
            .ok()
            .and_then(|dir| dir.canonicalize().ok())
    };
    a == b || matches!((folder(a), folder(b)), (Some(a), Some(b)) if a == b)
}

/// How the index records a model: a local folder by its absolute path, so that a search finds
/// it from any directory; a hub id as given.
pub fn recorded_model_id(spec: &str) -> String {
    let path = Path::new(spec);
    if path.is_dir() {
        if let Ok(absolute) = std::path::absolute(path) {
            return absolute.to_string_lossy().into_owned();
        }
    }
    spec.to_string()
}

impl IndexOptions {
    /// A run over `input` with `model_id` and every other setting at its default; the index
    /// directory `index_dir` is left out of the walk when it lies inside the tree.
    pub fn new(input: Input, model_id: String, index_dir: &Path) -> IndexOptions {
        IndexOptions {
            input,
            id_prefix: DEFAULT_ID_PREFIX.to_string(),
            model_id,
            chunk_tokens: None,
            chunking: Chunking::Syntax,
            context_header: true,
            walk: WalkOptions {
                max_file_bytes: DEFAULT_MAX_FILE_BYTES,
                exclude_dir: index_dir.canonicalize().ok(),
            },
            reembed: false,
            dimensions: None,
            batch_chunks: DEFAULT_COMMIT_EVERY,
            query_prompt: None,
            keyword_weight: None,
            adapt: true,
        }
    }
}

/// Meta key: whether the index's last run kept a query adapter (`on`/`off`).
pub(crate) const ADAPT: &str = "adapt";

impl IndexOptions {
    /// These options with the chunking and chunk-id prefix the index's last run used, so that
    /// a run started without the original flags (a watcher's) changes only what changed.
    pub fn like_last_run(mut self, store: &Store) -> Result<IndexOptions> {
        if let Some(prefix) = store.meta("id_prefix")? {
            self.id_prefix = prefix;
        }
        if let Some(adapt) = store.meta(ADAPT)? {
            self.adapt = adapt != "off";
        }
        if let Some(fingerprint) = store.meta("chunking")? {
            for part in fingerprint.split(';') {
                match part.split_once('=') {
                    Some(("tokens", tokens)) => self.chunk_tokens = tokens.parse().ok(),
                    Some(("header", header)) => self.context_header = header != "none",
                    _ if part.starts_with("syntax-packed") => {
                        self.chunking = Chunking::SyntaxPacked
                    }
                    _ if part.starts_with("syntax-per-definition") => {
                        self.chunking = Chunking::Syntax
                    }
                    _ => {
                        if let Some(lines) =
                            part.strip_prefix("lines-").and_then(|n| n.parse().ok())
                        {
                            self.chunking = Chunking::FixedLines(lines);
                        } else if let Some(floor) = part
                            .strip_prefix("syntax-floor-")
                            .and_then(|rest| rest.split_once('-'))
                            .and_then(|(n, _)| n.parse().ok())
                        {
                            self.chunking = Chunking::SyntaxFloor(floor);
                        }
                    }
                }
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(model: &str, dimension: usize) -> IndexSettings {
        IndexSettings {
            model: model.to_string(),
            dimension,
            normalize: true,
            document_prompt: None,
            query_prompt: None,
            quantization: Quantization::Int8,
            keyword_weight: crate::DEFAULT_KEYWORD_WEIGHT,
        }
    }

    #[test]
    fn the_caller_wins_then_the_index_then_the_default() {
        let held = stored("some/model", 128);
        let run = RunModel::resolve(Some(&held), None, None);
        assert_eq!(run.model_id, "some/model");
        assert_eq!(run.quantization, Quantization::Int8);
        let run = RunModel::resolve(Some(&held), Some("other/model"), Some(Quantization::None));
        assert_eq!(run.model_id, "other/model");
        assert_eq!(run.quantization, Quantization::None);
        let run = RunModel::resolve(None, None, None);
        assert_eq!(run.model_id, DEFAULT_MODEL);
        assert_eq!(run.quantization, Quantization::for_this_machine());
    }

    #[test]
    fn what_follows_an_index_keeps_its_model_and_refuses_others_by_name() {
        let held = stored("some/model", 128);
        let dir = Path::new("/tmp/index");
        let run = RunModel::following(dir, Some(&held), None, None).unwrap();
        assert_eq!(run.model_id, "some/model");
        assert_eq!(run.quantization, Quantization::Int8);
        let same = RunModel::following(dir, Some(&held), Some("some/model"), None).unwrap();
        assert_eq!(same, run);
        let other = RunModel::following(dir, Some(&held), Some("other/model"), None).unwrap_err();
        assert!(
            matches!(other, IndexError::ModelMismatch { .. }),
            "{other:?}"
        );
        assert_eq!(
            other.to_string(),
            "the index at /tmp/index holds vectors of some/model (int8); this asks for \
             other/model (int8). Leave --model/--quantize out to follow the index, or re-embed \
             it first with `quiver index --reembed`"
        );
        let f32 = RunModel::following(dir, Some(&held), None, Some(Quantization::None))
            .unwrap_err()
            .to_string();
        assert!(f32.contains("this asks for some/model (none)"), "{f32}");
        let fresh = RunModel::following(dir, None, Some("other/model"), None).unwrap();
        assert_eq!(fresh.model_id, "other/model");
    }
}
