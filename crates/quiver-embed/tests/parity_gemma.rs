//! Parity with sentence-transformers on google/embeddinggemma-300m's real weights: the Gemma 3
//! encoder, mean pooling, two `Dense` modules and `Normalize`, under the model's own prompts.
//!
//! The reference in `fixtures/gemma3/` was computed by sentence-transformers with
//! `fixtures/make_reference.py --named-prompts`. The weights come from
//! `scripts/fetch-embeddinggemma` (PyPI, no hub; cached outside the clone).

use quiver_embed::testing::{assert_parity, max_abs_diff, Cosines};
use quiver_embed::{EmbedOptions, Embedder, EmbedderOptions, Quantization};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    texts: Vec<String>,
    document_prompt: String,
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
    query_prompt: String,
    query_texts: usize,
    query_embeddings: Vec<Vec<f32>>,
    dimension_cases: DimensionCases,
}

#[derive(Deserialize)]
struct DimensionCases {
    texts: usize,
    embeddings: BTreeMap<String, Vec<Vec<f32>>>,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gemma3/embeddinggemma-300m.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

/// One f32 model for the tests that share it: loading 1.2 GB of weights once is enough.
fn model() -> &'static Embedder {
    static MODEL: OnceLock<Embedder> = OnceLock::new();
    MODEL.get_or_init(|| {
        Embedder::load(
            &quiver_embed::testing::embeddinggemma_dir(),
            &EmbedderOptions::f32(),
        )
        .unwrap()
    })
}

fn prompted(name: &str) -> EmbedOptions {
    EmbedOptions {
        prompt_name: Some(name.to_string()),
        ..EmbedOptions::default()
    }
}

#[test]
fn token_ids_and_vectors_match_sentence_transformers_under_the_document_prompt() {
    let reference = reference();
    let embedder = model();
    assert_eq!(embedder.max_length(), reference.max_seq_length);
    assert_eq!(embedder.dimension(), 768);
    let options = prompted(&reference.document_prompt);
    let prompt = embedder
        .config()
        .prompt(&reference.document_prompt)
        .unwrap();
    let prompted_texts: Vec<String> = reference
        .texts
        .iter()
        .map(|text| format!("{prompt}{text}"))
        .collect();
    let ids = embedder.tokenizer().encode_batch(&prompted_texts).unwrap();
    assert_eq!(ids, reference.token_ids, "token ids (with <bos> and <eos>)");
    let vectors = embedder.embed(&reference.texts, &options).unwrap();
    assert_parity(
        "document",
        &reference.texts,
        &vectors,
        &reference.embeddings,
    );
}

#[test]
fn the_query_prompt_and_matryoshka_widths_match() {
    let reference = reference();
    let embedder = model();
    let texts = &reference.texts[..reference.query_texts];
    let queries = embedder
        .embed(texts, &prompted(&reference.query_prompt))
        .unwrap();
    assert_parity("query", texts, &queries, &reference.query_embeddings);
    let texts = &reference.texts[..reference.dimension_cases.texts];
    for (dimensions, want) in &reference.dimension_cases.embeddings {
        let options = EmbedOptions {
            dimensions: Some(dimensions.parse().unwrap()),
            ..prompted(&reference.document_prompt)
        };
        let got = embedder.embed(texts, &options).unwrap();
        assert_parity(&format!("{dimensions} dimensions"), texts, &got, want);
    }
}

#[test]
fn batching_does_not_change_vectors() {
    let reference = reference();
    let embedder = model();
    let texts = &reference.texts[..16];
    let options = prompted(&reference.document_prompt);
    let together = embedder.embed(texts, &options).unwrap();
    let alone = embedder
        .embed(
            texts,
            &EmbedOptions {
                max_batch_sequences: 1,
                ..options
            },
        )
        .unwrap();
    let max_diff = max_abs_diff(&together, &alone);
    assert!(
        max_diff < 1e-5,
        "packed and single batches differ by {max_diff}"
    );
}

/// int8 dense layers (the Dense modules stay f32): the mean cosine to f32, printed for the docs,
/// held to the bar the other models meet.
#[test]
fn int8_stays_close_to_the_reference() {
    let reference = reference();
    let embedder = Embedder::load(
        &quiver_embed::testing::embeddinggemma_dir(),
        &EmbedderOptions {
            quantization: Quantization::Int8,
            ..EmbedderOptions::default()
        },
    )
    .unwrap();
    let got = embedder
        .embed(&reference.texts, &prompted(&reference.document_prompt))
        .unwrap();
    let Cosines { mean, worst, .. } = Cosines::of(&got, &reference.embeddings);
    eprintln!("embeddinggemma-300m: int8 mean cosine {mean:.5}, worst {worst:.5}");
    assert!(mean >= 0.99, "int8 mean cosine {mean}");
    assert!(
        mean < 0.999_999,
        "int8 vectors equal f32: the int8 path did not run"
    );
}
