//! Architectures with no real weights on the package registries, checked against tiny
//! random-weight models built by the reference implementation (Hugging Face `transformers`):
//! `fixtures/tiny/make_tiny.py` saved each model folder with its reference token ids and pooled
//! vectors (mean for encoders, last token for decoders). Tolerance: max abs diff 1e-4.

use quiver_embed::{EmbedOptions, Embedder, EmbedderOptions};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Reference {
    texts: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    pooled: Vec<Vec<f32>>,
}

fn check(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(name);
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let embedder = Embedder::load(&dir, &EmbedderOptions::default()).unwrap();
    let ids = embedder.tokenizer().encode_batch(&reference.texts).unwrap();
    assert_eq!(ids, reference.token_ids, "{name}: token ids");
    let vectors = embedder
        .embed(&reference.texts, &EmbedOptions::default())
        .unwrap();
    for (index, (got, want)) in vectors.iter().zip(&reference.pooled).enumerate() {
        assert_eq!(got.len(), want.len());
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-4, "{name}: text {index} differs by {diff}");
    }
    // The reference vectors are far from zero, so a broken network could not pass by chance.
    let norm: f32 = reference.pooled[0]
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    assert!(norm > 0.5, "{name}: degenerate fixture");
}

#[test]
fn roberta_matches_transformers() {
    check("roberta");
}

#[test]
fn xlm_roberta_matches_transformers() {
    check("xlm-roberta");
}

#[test]
fn qwen2_causal_matches_transformers() {
    check("qwen2");
}

#[test]
fn qwen2_bidirectional_matches_transformers() {
    check("qwen2-bidirectional");
}

#[test]
fn nomic_bert_hub_layout_matches_transformers() {
    check("nomic-bert");
}

#[test]
fn nomic_bert_transformers_layout_matches_transformers() {
    check("nomic-bert-transformers");
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3");
}
