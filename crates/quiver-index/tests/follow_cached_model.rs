//! A hub id and its cached snapshot are one model to whatever follows an index. In a file of its
//! own because it points the process's Hugging Face cache at a folder of its making.

use quiver_embed::Quantization;
use quiver_index::{IndexError, IndexSettings, RunModel};
use std::path::Path;

#[test]
fn a_hub_id_follows_an_index_recorded_under_its_cached_snapshot() {
    let cache = std::env::temp_dir().join(format!("quiver-follow-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let repo = cache.join("models--some--model");
    let snapshot = repo.join("snapshots").join("abc123");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "abc123").unwrap();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(snapshot.join(file), "{}").unwrap();
    }
    // The only test in this process, so nothing reads the environment while it changes.
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let recorded = |model: &str| IndexSettings {
        model: model.to_string(),
        dimension: 8,
        normalize: true,
        document_prompt: None,
        query_prompt: None,
        quantization: Quantization::None,
        keyword_weight: quiver_index::DEFAULT_KEYWORD_WEIGHT,
    };
    let dir = Path::new("/tmp/index");
    let folder = snapshot.to_string_lossy().into_owned();

    let by_id = RunModel::following(dir, Some(&recorded(&folder)), Some("some/model"), None)
        .expect("the hub id names the recorded snapshot");
    assert_eq!(by_id.model_id, folder, "the index's spelling is kept");
    let by_folder = RunModel::following(dir, Some(&recorded("some/model")), Some(&folder), None)
        .expect("the snapshot names the recorded hub id");
    assert_eq!(by_folder.model_id, "some/model");
    let other =
        RunModel::following(dir, Some(&recorded(&folder)), Some("other/model"), None).unwrap_err();
    assert!(
        matches!(other, IndexError::ModelMismatch { .. }),
        "{other:?}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}
