//! Architectures with no real weights on the package registries, checked against tiny
//! random-weight models built by the reference implementation (Hugging Face `transformers`):
//! `fixtures/tiny/make_tiny.py` saved each model folder with its reference token ids and pooled
//! vectors (mean for encoders, last token for decoders). Tolerance: max abs diff 1e-4.

use quiver_embed::{BatchBudget, EmbedOptions, Embedder, EmbedderOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Reference {
    texts: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    pooled: Vec<Vec<f32>>,
    /// Models with task adapters: each task's tokens (its prompt prepended) and vectors.
    #[serde(default)]
    tasks: BTreeMap<String, TaskReference>,
}

#[derive(Deserialize)]
struct TaskReference {
    token_ids: Vec<Vec<u32>>,
    pooled: Vec<Vec<f32>>,
}

fn fixture(name: &str) -> (PathBuf, Reference) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(name);
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (dir, reference)
}

fn assert_close(name: &str, vectors: &[Vec<f32>], reference: &[Vec<f32>]) {
    assert_eq!(vectors.len(), reference.len());
    for (index, (got, want)) in vectors.iter().zip(reference).enumerate() {
        assert_eq!(got.len(), want.len());
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-4, "{name}: text {index} differs by {diff}");
    }
}

fn check(name: &str) {
    let (dir, reference) = fixture(name);
    let embedder = Embedder::load(&dir, &EmbedderOptions::f32()).unwrap();
    let ids = embedder.tokenizer().encode_batch(&reference.texts).unwrap();
    assert_eq!(ids, reference.token_ids, "{name}: token ids");
    let vectors = embedder
        .embed(&reference.texts, &EmbedOptions::default())
        .unwrap();
    assert_close(name, &vectors, &reference.pooled);
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

#[test]
fn jina_v3_base_weights_match_transformers() {
    check("jina-v3");
}

#[test]
fn a_batch_longer_than_one_pass_gives_each_sequence_the_states_it_has_alone() {
    let (dir, reference) = fixture("jina-v3");
    let embedder = Embedder::load(&dir, &EmbedderOptions::f32()).unwrap();
    let options = ["retrieval.query", "retrieval.passage"].map(|task| EmbedOptions {
        task: Some(task.into()),
        prompt_name: Some(task.into()),
        ..EmbedOptions::default()
    });
    let encoded = options.map(|o| embedder.encode(&reference.texts, &o).unwrap());
    // Texts of both tasks, interleaved, until the batch is well past one pass: a model runs
    // 1,024 tokens per pool thread at most in one pass, and this pool has one thread.
    let mut sequences: Vec<&[u32]> = Vec::new();
    let mut setups = Vec::new();
    let texts = reference.texts.len();
    for i in 0.. {
        if sequences.iter().map(|s| s.len()).sum::<usize>() >= 2_500 {
            break;
        }
        let (task, index) = (i % 2, (i / 2) % texts);
        sequences.push(&encoded[task].token_ids[index]);
        setups.push(encoded[task].setup);
    }
    let budget = BatchBudget {
        max_sequences: sequences.len(),
        max_tokens: 1 << 20,
    };
    let go_on = |_| std::ops::ControlFlow::Continue(());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let together = embedder
            .embed_sequences(&sequences, &setups, budget, go_on)
            .unwrap();
        for (index, (sequence, setup)) in sequences.iter().zip(&setups).enumerate() {
            let alone = embedder
                .embed_sequences(&[sequence], &[*setup], budget, go_on)
                .unwrap();
            assert_close(
                &format!("sequence {index}"),
                &together[index..=index],
                &alone,
            );
        }
    });
}

#[test]
fn jina_v3_task_adapters_match_the_merged_reference() {
    let (dir, reference) = fixture("jina-v3");
    let embedder = Embedder::load(&dir, &EmbedderOptions::f32()).unwrap();
    assert_eq!(
        embedder.tasks(),
        ["retrieval.query", "retrieval.passage", "text-matching"]
    );
    for (task, expected) in &reference.tasks {
        // The prompt name selects the adapter of the same name (and prepends its prompt).
        let options = EmbedOptions {
            prompt_name: Some(task.clone()),
            ..EmbedOptions::default()
        };
        let encoded = embedder.encode(&reference.texts, &options).unwrap();
        assert_eq!(encoded.token_ids, expected.token_ids, "{task}: token ids");
        let vectors = embedder.embed(&reference.texts, &options).unwrap();
        assert_close(task, &vectors, &expected.pooled);
        assert!(
            vectors[0] != reference.pooled[0],
            "{task}: the adapter changed nothing"
        );
    }
    // Sequences of different tasks share one forward pass, each with its own adapter.
    let query = EmbedOptions {
        prompt_name: Some("retrieval.query".into()),
        ..EmbedOptions::default()
    };
    let passage = EmbedOptions {
        task: Some("retrieval.passage".into()),
        prompt_name: Some("retrieval.passage".into()),
        ..EmbedOptions::default()
    };
    let (q, p) = (
        embedder.encode(&reference.texts[..2], &query).unwrap(),
        embedder.encode(&reference.texts[..2], &passage).unwrap(),
    );
    let sequences: Vec<&[u32]> = q
        .token_ids
        .iter()
        .chain(&p.token_ids)
        .map(Vec::as_slice)
        .collect();
    let setups = [q.setup, q.setup, p.setup, p.setup];
    let budget = BatchBudget {
        max_sequences: 64,
        max_tokens: 8192,
    };
    let mixed = embedder
        .embed_sequences(&sequences, &setups, budget, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_close(
        "mixed query",
        &mixed[..2],
        &reference.tasks["retrieval.query"].pooled[..2],
    );
    assert_close(
        "mixed passage",
        &mixed[2..],
        &reference.tasks["retrieval.passage"].pooled[..2],
    );

    let unknown = EmbedOptions {
        task: Some("summarization".into()),
        ..EmbedOptions::default()
    };
    let error = embedder.embed(&["x"], &unknown).unwrap_err().to_string();
    assert!(
        error.contains("summarization") && error.contains("text-matching"),
        "{error}"
    );
}

#[test]
fn modernbert_with_local_and_global_layers_matches_transformers() {
    check("modernbert");
}

#[derive(Deserialize)]
struct RerankReference {
    pairs: Vec<(String, String)>,
    token_ids: Vec<Vec<u32>>,
    type_ids: Vec<Vec<u8>>,
    scores: Vec<f32>,
}

/// A cross-encoder: pair tokenisation (ids and segments) and the head's logit per pair.
fn check_reranker(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(name);
    let reference: RerankReference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let reranker = quiver_embed::Reranker::load(&dir, &EmbedderOptions::f32()).unwrap();
    let mut encoded = quiver_embed::EncodedPairs::default();
    for (query, text) in &reference.pairs {
        let one = reranker
            .encode(query, &[text], quiver_embed::TruncationSide::Right)
            .unwrap();
        encoded.token_ids.extend(one.token_ids);
        encoded.token_types.extend(one.token_types);
        encoded.truncated.extend(one.truncated);
    }
    assert_eq!(encoded.token_ids, reference.token_ids, "{name}: token ids");
    assert_eq!(
        encoded.token_types, reference.type_ids,
        "{name}: token types"
    );
    // Small batches and one large one: packing pairs of other lengths together changes nothing.
    for max_tokens in [40, 100_000] {
        let budget = BatchBudget {
            max_sequences: 64,
            max_tokens,
        };
        let scores = reranker.score(&encoded, budget).unwrap();
        let diff = scores
            .iter()
            .zip(&reference.scores)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-4, "{name}: scores differ by {diff}");
    }
    // Different pairs score differently: a broken head could not pass by chance.
    let spread = reference.scores.iter().cloned().fold(f32::MIN, f32::max)
        - reference.scores.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.1, "{name}: reference scores barely differ");
}

#[test]
fn bert_cross_encoder_matches_transformers() {
    check_reranker("bert-reranker");
}

#[test]
fn xlm_roberta_cross_encoder_matches_transformers() {
    check_reranker("xlm-roberta-reranker");
}

#[test]
fn an_embedding_model_is_not_a_reranker() {
    let (dir, _) = fixture("roberta");
    let Err(error) = quiver_embed::Reranker::load(&dir, &EmbedderOptions::f32()) else {
        panic!("an embedding model loaded as a reranker");
    };
    let message = error.to_string();
    assert!(
        message.contains("BertForSequenceClassification"),
        "{message}"
    );
}

#[test]
fn splade_matches_transformers_masked_lm_with_splade_pooling() {
    check("splade");
    let (dir, reference) = fixture("splade");
    let embedder = Embedder::load(&dir, &EmbedderOptions::f32()).unwrap();
    assert_eq!(embedder.config().pooling, quiver_embed::Pooling::Splade);
    // One weight per vocabulary entry, none negative, some zero: a sparse vector.
    assert_eq!(embedder.dimension(), reference.pooled[0].len());
    assert!(reference.pooled[0].iter().all(|&w| w >= 0.0));
    assert!(reference.pooled.iter().flatten().any(|&w| w == 0.0));
}

#[test]
fn qwen3_decoder_reranker_matches_transformers() {
    check_reranker("qwen3-reranker");
}
