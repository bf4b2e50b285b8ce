//! `quiver models list` and `quiver models info`.

mod common;

use common::{json_of, model_dir, quiver};
use serde_json::Value;

#[test]
fn list_covers_every_model_the_users_named() {
    let cards = json_of(&["models", "list", "--json"]);
    let cards = cards.as_array().expect("array");
    let ids: Vec<&str> = cards.iter().map(|c| c["id"].as_str().unwrap()).collect();
    for wanted in [
        "sentence-transformers/all-MiniLM-L6-v2",
        "sentence-transformers/all-mpnet-base-v2",
        "microsoft/codebert-base",
        "flax-sentence-embeddings/st-codesearch-distilroberta-base",
        "jinaai/jina-embeddings-v3",
        "nomic-ai/nomic-embed-text-v1.5",
        "nomic-ai/CodeRankEmbed",
        "Qodo/Qodo-Embed-1-1.5B",
        "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
    ] {
        assert!(ids.contains(&wanted), "{wanted} missing from {ids:?}");
    }
    let (embedders, rerankers): (Vec<&Value>, Vec<&Value>) =
        cards.iter().partition(|card| card["task"] == "embed");
    assert!(rerankers.iter().all(|card| card["task"] == "rerank"));
    for card in &rerankers {
        for field in [
            "architecture",
            "max_tokens",
            "licence",
            "checked",
            "supported",
        ] {
            assert!(!card[field].is_null(), "{}: no {field}", card["id"]);
        }
    }
    let bge = rerankers
        .iter()
        .find(|c| c["id"] == "BAAI/bge-reranker-base")
        .expect("bge-reranker-base listed");
    assert_eq!(bge["supported"], true);
    assert!(bge["checked"].as_str().unwrap().contains("not tested here"));
    for card in embedders {
        for field in [
            "architecture",
            "dimensions",
            "matryoshka_dimensions",
            "max_tokens",
            "pooling",
            "prompts",
            "licence",
            "device",
            "supported",
        ] {
            assert!(!card[field].is_null(), "{}: no {field}", card["id"]);
        }
    }
    let nomic = cards
        .iter()
        .find(|c| c["id"] == "nomic-ai/nomic-embed-text-v1.5")
        .unwrap();
    assert_eq!(
        nomic["matryoshka_dimensions"],
        serde_json::json!([768, 512, 256, 128, 64])
    );
    assert_eq!(nomic["prompts"]["query"], "search_query: ");
}

#[test]
fn info_takes_a_short_id_or_reads_a_folder() {
    let card = json_of(&["models", "info", "all-mpnet-base-v2", "--json"]);
    assert_eq!(card["architecture"], "mpnet");
    assert_eq!(card["supported"], true);
    let folder = model_dir();
    let read = json_of(&["models", "info", folder.to_str().unwrap(), "--json"]);
    assert_eq!(read["architecture"], "bert");
    assert_eq!(read["dimensions"], 384);
    assert_eq!(read["max_tokens"], 256);
    assert_eq!(read["pooling"], "mean");
    assert_eq!(read["normalize"], true);
}

#[test]
fn an_unsupported_folder_is_named_with_the_supported_list() {
    let config = std::fs::read_to_string(model_dir().join("config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&config).unwrap();
    config["model_type"] = Value::from("t5");
    let dir = quiver_embed::testing::model_variant(
        "all-MiniLM-L6-v2",
        "models-t5",
        "config.json",
        Some(&config.to_string()),
    );
    let read = json_of(&["models", "info", dir.to_str().unwrap(), "--json"]);
    assert_eq!(read["supported"], false);
    let note = read["note"].as_str().unwrap();
    assert!(
        note.contains("t5") && note.contains("nomic_bert") && note.contains("qwen2"),
        "{note}"
    );
    let missing = quiver(&["models", "info", "no-such-thing"], "");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("quiver models list"));
}
