//! Finding the real models that `scripts/fetch-test-models` put in place, for the tests of every
//! crate: `$QUIVER_TEST_MODELS/<name>`, else `models/<name>` at the repository root; and
//! EmbeddingGemma, which `scripts/fetch-embeddinggemma` caches outside the clone.

use std::path::{Path, PathBuf};

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

/// The sha256 of EmbeddingGemma's `model.safetensors`, whose first 16 digits name the folder
/// `scripts/fetch-embeddinggemma` caches it in.
const EMBEDDINGGEMMA_SHA256: &str =
    "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2";

/// google/embeddinggemma-300m as `scripts/fetch-embeddinggemma` caches it: `$QUIVER_EMBEDDINGGEMMA`,
/// else its folder under `$QUIVER_MODEL_CACHE` or `~/.cache/quiver/models`. Panics with the
/// command to run when it is missing.
pub fn embeddinggemma_dir() -> PathBuf {
    let dir = std::env::var_os("QUIVER_EMBEDDINGGEMMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("QUIVER_MODEL_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .map(|dir| PathBuf::from(dir).join("quiver/models"))
                })
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|home| PathBuf::from(home).join(".cache/quiver/models"))
                })
                .unwrap_or_default();
            cache.join(format!(
                "embeddinggemma-300m-{}",
                &EMBEDDINGGEMMA_SHA256[..16]
            ))
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model.safetensors: run scripts/fetch-embeddinggemma first",
        dir.display()
    );
    dir
}

/// A scratch copy of a fetched model (its entries symlinked) with the file at `relative` replaced
/// by `body`, or removed when `body` is `None`: how tests build broken or re-configured folders.
pub fn model_variant(name: &str, label: &str, relative: &str, body: Option<&str>) -> PathBuf {
    let source = fetched_model_dir(name);
    let dir = std::env::temp_dir().join(format!("quiver-model-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_as_links(&source, &dir, Path::new(relative));
    if let Some(body) = body {
        std::fs::write(dir.join(relative), body).expect("writing the replaced file");
    }
    dir
}

/// Mirrors `source` into `target` with symlinks, descending only into the folders on the way to
/// `skip`, which is left out.
fn copy_as_links(source: &Path, target: &Path, skip: &Path) {
    std::fs::create_dir_all(target).expect("creating a scratch model folder");
    let entries = std::fs::read_dir(source).expect("reading the fetched model folder");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let mut parts = skip.components();
        let on_skip_path = parts.next().is_some_and(|first| first.as_os_str() == name);
        if !on_skip_path {
            std::os::unix::fs::symlink(entry.path(), target.join(&name))
                .expect("linking a model file");
        } else if entry.path().is_dir() {
            copy_as_links(&entry.path(), &target.join(&name), parts.as_path());
        }
    }
}

/// Cosine similarity, accumulated in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Each vector's cosine to its reference, with their mean and the worst.
pub struct Cosines {
    pub each: Vec<f64>,
    pub mean: f64,
    pub worst: f64,
}

impl Cosines {
    pub fn of(got: &[Vec<f32>], want: &[Vec<f32>]) -> Cosines {
        assert_eq!(got.len(), want.len(), "vector count");
        let each: Vec<f64> = got.iter().zip(want).map(|(g, w)| cosine(g, w)).collect();
        let mean = each.iter().sum::<f64>() / each.len().max(1) as f64;
        let worst = each.iter().copied().fold(1.0, f64::min);
        Cosines { each, mean, worst }
    }
}

/// The parity bar: every vector of `got` has `want`'s width and a cosine of at least 0.9999 to
/// it; a failure names `label` and the text.
pub fn assert_parity(label: &str, texts: &[String], got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{label}: vector count");
    for (index, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{label}: dimension of text {index}");
        let similarity = cosine(g, w);
        assert!(
            similarity >= 0.9999,
            "{label}: text {index} {:?} has cosine {similarity} to the reference",
            texts[index].chars().take(40).collect::<String>()
        );
    }
}

/// The largest element-wise difference of two runs' vectors.
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}
