//! Parity with sentence-transformers on real weights: all-MiniLM-L6-v2 (BERT) and
//! all-mpnet-base-v2 (MPNet).
//!
//! The reference vectors in `fixtures/<arch>/` were computed by sentence-transformers with
//! `fixtures/make_reference.py`. The weights come from `scripts/fetch-test-models` (PyPI, no hub).
//! Every check runs for every model (`parity_tests!` at the end).

use quiver_embed::testing::{max_abs_diff, Cosines};
use quiver_embed::{EmbedOptions, Embedder, EmbedderOptions, Quantization};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A real model and the fixture computed from it.
#[derive(Clone, Copy)]
struct Case {
    model: &'static str,
    fixture: &'static str,
}

const MINILM: Case = Case {
    model: "all-MiniLM-L6-v2",
    fixture: "bert/all-MiniLM-L6-v2.json",
};

const MPNET: Case = Case {
    model: "all-mpnet-base-v2",
    fixture: "mpnet/all-mpnet-base-v2.json",
};

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    texts: Vec<String>,
    token_counts: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
    dimension_cases: DimensionCases,
    prompt_cases: PromptCases,
    short_max_length: ShortCase,
}

#[derive(Deserialize)]
struct DimensionCases {
    texts: usize,
    embeddings: BTreeMap<String, Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
struct PromptCases {
    prompt: String,
    texts: usize,
    included: Vec<Vec<f32>>,
    excluded: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct ShortCase {
    max_length: usize,
    indices: Vec<usize>,
    token_counts: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

impl Case {
    fn model_dir(self) -> PathBuf {
        quiver_embed::testing::fetched_model_dir(self.model)
    }

    fn reference(self) -> Reference {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(self.fixture);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn load(self, options: &EmbedderOptions) -> Embedder {
        Embedder::load(&self.model_dir(), options).unwrap()
    }
}

/// [`quiver_embed::testing::assert_parity`], and every vector normalised.
fn assert_parity(label: &str, texts: &[String], got: &[Vec<f32>], want: &[Vec<f32>]) {
    quiver_embed::testing::assert_parity(label, texts, got, want);
    for (index, g) in got.iter().enumerate() {
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "{label}: text {index} is not normalised ({norm})"
        );
    }
}

fn matches_sentence_transformers_on_varied_texts(case: Case) {
    let reference = case.reference();
    assert!(reference.texts.len() >= 50);
    let embedder = case.load(&EmbedderOptions::f32());
    assert_eq!(embedder.max_length(), reference.max_seq_length);
    let counts: Vec<usize> = embedder
        .tokenizer()
        .encode_batch(&reference.texts)
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(
        counts, reference.token_counts,
        "token counts (truncation at the max length)"
    );
    let vectors = embedder
        .embed(&reference.texts, &EmbedOptions::default())
        .unwrap();
    assert_parity("full", &reference.texts, &vectors, &reference.embeddings);
}

fn matryoshka_truncation_matches(case: Case) {
    let reference = case.reference();
    let texts = &reference.texts[..reference.dimension_cases.texts];
    let embedder = case.load(&EmbedderOptions::f32());
    for (dimensions, want) in &reference.dimension_cases.embeddings {
        let options = EmbedOptions {
            dimensions: Some(dimensions.parse().unwrap()),
            ..EmbedOptions::default()
        };
        let got = embedder.embed(texts, &options).unwrap();
        assert_parity(&format!("{dimensions} dimensions"), texts, &got, want);
    }
    let too_many = EmbedOptions {
        dimensions: Some(embedder.dimension() + 1),
        ..EmbedOptions::default()
    };
    let error = embedder.embed(texts, &too_many).unwrap_err();
    assert!(
        matches!(error, quiver_embed::EmbedError::Dimensions { requested, available }
            if requested == available + 1 && available == embedder.dimension()),
        "{error}"
    );
}

fn configured_max_length_truncates_like_sentence_transformers(model: Case) {
    let reference = model.reference();
    let case = &reference.short_max_length;
    let texts: Vec<String> = case
        .indices
        .iter()
        .map(|&i| reference.texts[i].clone())
        .collect();
    let options = EmbedderOptions {
        max_length: Some(case.max_length),
        ..EmbedderOptions::f32()
    };
    let embedder = model.load(&options);
    let counts: Vec<usize> = embedder
        .tokenizer()
        .encode_batch(&texts)
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(counts, case.token_counts);
    let got = embedder.embed(&texts, &EmbedOptions::default()).unwrap();
    assert_parity("max length 32", &texts, &got, &case.embeddings);
}

fn batching_does_not_change_vectors(case: Case) {
    let reference = case.reference();
    let texts = &reference.texts[..20];
    let embedder = case.load(&EmbedderOptions::f32());
    let together = embedder.embed(texts, &EmbedOptions::default()).unwrap();
    let one_at_a_time = EmbedOptions {
        max_batch_sequences: 1,
        ..EmbedOptions::default()
    };
    let alone = embedder.embed(texts, &one_at_a_time).unwrap();
    let max_diff = max_abs_diff(&together, &alone);
    assert!(
        max_diff < 1e-5,
        "packed and single batches differ by {max_diff}"
    );
}

/// int8 dense layers: the bar is a mean cosine of 0.99 to f32; every text is held to
/// 0.95 so a broken layer cannot hide in an average (the kernel's arithmetic itself is tested
/// exactly in `kernels::int8`).
///
/// One kind of text is held to less, with the figure in the docs: one word repeated hundreds of
/// times. Its tokens are identical rows, so every layer's rounding errors are identical too and
/// add up under mean pooling instead of averaging out as they do over varied tokens.
/// all-mpnet-base-v2 is sensitive to it (0.78 with every dense layer in int8; keeping any half
/// of the early layers in f32 moved it anywhere between 0.74 and 0.99), all-MiniLM-L6-v2 is not
/// (0.999).
fn int8_stays_close_to_the_reference(case: Case) {
    let (reference, cosines) = in_format(case, Quantization::Int8);
    let Cosines {
        each: cosines,
        mean,
        ..
    } = cosines;
    eprintln!("{}: int8 mean cosine {mean:.5}", case.model);
    assert!(mean >= 0.99, "int8 mean cosine {mean}");
    for (text, &cos) in reference.texts.iter().zip(&cosines) {
        let bar = if is_one_word_repeated(text) {
            0.7
        } else {
            0.95
        };
        eprintln!("  {cos:.5} {:?}", text.chars().take(40).collect::<String>());
        assert!(cos >= bar, "int8 cosine {cos} < {bar} for {text:.60?}");
    }
    assert!(
        mean < 0.999_999,
        "int8 vectors equal f32: the int8 path did not run"
    );
}

/// The reference texts embedded with the dense layers in `format`, and their cosines to the
/// reference's vectors.
fn in_format(case: Case, format: Quantization) -> (Reference, Cosines) {
    let reference = case.reference();
    let embedder = case.load(&EmbedderOptions {
        quantization: format,
        ..EmbedderOptions::f32()
    });
    let got = embedder
        .embed(&reference.texts, &EmbedOptions::default())
        .unwrap();
    let cosines = Cosines::of(&got, &reference.embeddings);
    (reference, cosines)
}

/// bf16 dense layers: the bar is a mean cosine of 0.9999 to f32 (OpenVINO's bf16
/// measured 0.99998 on code); every text, the repeated word included, is held to 0.999.
fn bf16_stays_close_to_the_reference(case: Case) {
    let (reference, cosines) = in_format(case, Quantization::Bf16);
    let Cosines {
        each: cosines,
        mean,
        worst,
    } = cosines;
    eprintln!(
        "{}: bf16 mean cosine {mean:.6}, worst {worst:.6}",
        case.model
    );
    assert!(mean >= 0.9999, "bf16 mean cosine {mean}");
    for (text, &cos) in reference.texts.iter().zip(&cosines) {
        assert!(cos >= 0.999, "bf16 cosine {cos} for {text:.60?}");
    }
    assert!(
        mean < 0.999_999_9,
        "bf16 vectors equal f32: the bf16 path did not run"
    );
}

fn is_one_word_repeated(text: &str) -> bool {
    let mut words = text.split_whitespace();
    let first = words.next();
    let count = 1 + words.clone().count();
    count > 100 && words.all(|w| Some(w) == first)
}

fn few_row_kernels_give_the_same_vectors(case: Case) {
    let reference = case.reference();
    let texts = &reference.texts[..30];
    let one_at_a_time = EmbedOptions {
        max_batch_sequences: 1,
        ..EmbedOptions::default()
    };
    let plain = case.load(&EmbedderOptions::f32());
    let packed = case.load(&EmbedderOptions {
        few_row_kernels: true,
        ..EmbedderOptions::f32()
    });
    let want = plain.embed(texts, &one_at_a_time).unwrap();
    let got = packed.embed(texts, &one_at_a_time).unwrap();
    assert_parity("few-row kernels", texts, &got, &reference.embeddings[..30]);
    let max_diff = max_abs_diff(&got, &want);
    // The few-row panels hold the weights in half precision: within the 1e-4 the project
    // allows on a pooled vector (they measured 5.6e-5 and 6.2e-5 here).
    assert!(
        max_diff <= 1e-4,
        "few-row and gemm paths differ by {max_diff}"
    );
}

/// The model folder again, but with `include_prompt: false` in its pooling config, as
/// instruction-tuned models ship it.
fn model_pooling_without_prompt(case: Case) -> PathBuf {
    let pooling = case.model_dir().join("1_Pooling/config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pooling).unwrap()).unwrap();
    config["include_prompt"] = serde_json::Value::Bool(false);
    quiver_embed::testing::model_variant(
        case.model,
        &format!("no-prompt-pooling-{}", case.model),
        "1_Pooling/config.json",
        Some(&config.to_string()),
    )
}

fn prompts_are_prepended_and_left_out_of_pooling_when_configured(model: Case) {
    let reference = model.reference();
    let case = &reference.prompt_cases;
    let texts = &reference.texts[..case.texts];
    let options = EmbedOptions {
        prompt: Some(case.prompt.clone()),
        ..EmbedOptions::default()
    };
    let embedder = model.load(&EmbedderOptions::f32());
    let included = embedder.embed(texts, &options).unwrap();
    assert_parity("prompt included", texts, &included, &case.included);

    let embedder = Embedder::load(
        &model_pooling_without_prompt(model),
        &EmbedderOptions::f32(),
    )
    .unwrap();
    assert!(!embedder.config().include_prompt);
    let excluded = embedder.embed(texts, &options).unwrap();
    assert_parity("prompt excluded", texts, &excluded, &case.excluded);
}

/// Every parity check above, as tests of one model.
macro_rules! parity_tests {
    ($module:ident, $case:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn matches_sentence_transformers_on_varied_texts() {
                super::matches_sentence_transformers_on_varied_texts($case);
            }

            #[test]
            fn matryoshka_truncation_matches() {
                super::matryoshka_truncation_matches($case);
            }

            #[test]
            fn configured_max_length_truncates_like_sentence_transformers() {
                super::configured_max_length_truncates_like_sentence_transformers($case);
            }

            #[test]
            fn batching_does_not_change_vectors() {
                super::batching_does_not_change_vectors($case);
            }

            #[test]
            fn int8_stays_close_to_the_reference() {
                super::int8_stays_close_to_the_reference($case);
            }

            #[test]
            fn bf16_stays_close_to_the_reference() {
                super::bf16_stays_close_to_the_reference($case);
            }

            #[test]
            fn few_row_kernels_give_the_same_vectors() {
                super::few_row_kernels_give_the_same_vectors($case);
            }

            #[test]
            fn prompts_are_prepended_and_left_out_of_pooling_when_configured() {
                super::prompts_are_prepended_and_left_out_of_pooling_when_configured($case);
            }
        }
    };
}

parity_tests!(bert_all_minilm_l6_v2, MINILM);
parity_tests!(mpnet_all_mpnet_base_v2, MPNET);
