//! What Quiver knows about the models code-retrieval users pick, before any is downloaded:
//! `quiver models list` and `quiver models info ID` print it. The model folder stays the
//! authority at run time (its configs decide pooling, prompts and length); this table is for
//! choosing a model, and says whether Quiver runs its architecture yet and how that was checked.

use serde::Serialize;

/// Where a model is worth running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecommendedDevice {
    /// Small enough for a laptop CPU at indexing speed.
    Cpu,
    /// Over a billion parameters or long contexts: a GPU for indexing, a CPU only for queries.
    Gpu,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub id: &'static str,
    /// `model_type` in its config.json.
    pub architecture: &'static str,
    pub parameters_millions: u32,
    pub dimensions: usize,
    /// Widths it was trained to be truncated to (Matryoshka); empty when none.
    pub matryoshka_dimensions: &'static [usize],
    /// Tokens it reads (its `max_seq_length`, else its position table).
    pub max_tokens: usize,
    pub pooling: &'static str,
    /// Named prompts (`name`, text) as its config_sentence_transformers.json defines them.
    pub prompts: &'static [(&'static str, &'static str)],
    pub licence: &'static str,
    pub device: RecommendedDevice,
    /// The keyword weight of hybrid search for indexes of this model, where one was measured
    /// for it (`quiver eval`'s dev split, docs/evaluation.md); else the default.
    pub keyword_weight: Option<f64>,
    /// How Quiver's output was checked against the reference implementation.
    pub checked: &'static str,
    pub note: &'static str,
}

impl ModelCard {
    /// Whether this build runs the model.
    pub fn supported(&self) -> bool {
        self.checked != NOT_YET
    }
}

const PARITY_REAL: &str =
    "parity test on the real weights (cosine >= 0.9999 to sentence-transformers)";
const TINY: &str = "architecture checked on a tiny random-weight model against transformers";
const FAMILY: &str = "architecture covered by the BERT parity test; these weights not tested here";
const NOT_YET: &str = "architecture not supported yet";

const E5_PROMPTS: &[(&str, &str)] = &[("query", "query: "), ("passage", "passage: ")];
const BGE_PROMPTS: &[(&str, &str)] = &[(
    "query",
    "Represent this sentence for searching relevant passages: ",
)];
const NOMIC_PROMPTS: &[(&str, &str)] = &[
    ("query", "search_query: "),
    ("document", "search_document: "),
    ("clustering", "clustering: "),
    ("classification", "classification: "),
];
const WEB_SEARCH_INSTRUCTION: &[(&str, &str)] = &[(
    "query",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: ",
)];

const EMBEDDINGGEMMA_PROMPTS: &[(&str, &str)] = &[
    ("query", "task: search result | query: "),
    ("document", "title: none | text: "),
    ("InstructionRetrieval", "task: code retrieval | query: "),
];

/// A cross-encoder reranker (`quiver serve --rerank-model`, `quiver search --rerank`).
#[derive(Debug, Clone, Serialize)]
pub struct RerankerCard {
    pub id: &'static str,
    /// `architectures[0]` in its config.json.
    pub architecture: &'static str,
    pub parameters_millions: u32,
    pub max_tokens: usize,
    pub licence: &'static str,
    pub checked: &'static str,
    pub note: &'static str,
}

/// No reranker's real weights can be fetched where Quiver is built and tested (the package
/// registries carry none), so each architecture is checked on a tiny random-weight model built
/// by transformers with its reference logits, not on these weights.
const TINY_RERANKER: &str = "architecture checked on a tiny random-weight model against \
                             transformers (logits within 1e-4); these weights not tested here";

/// The rerankers code-retrieval users pick.
pub const KNOWN_RERANKERS: &[RerankerCard] = &[
    RerankerCard {
        id: "BAAI/bge-reranker-base",
        architecture: "XLMRobertaForSequenceClassification",
        parameters_millions: 278,
        max_tokens: 512,
        licence: "MIT",
        checked: TINY_RERANKER,
        note: "multilingual; the usual second stage over vector search",
    },
    RerankerCard {
        id: "BAAI/bge-reranker-v2-m3",
        architecture: "XLMRobertaForSequenceClassification",
        parameters_millions: 568,
        max_tokens: 8192,
        licence: "Apache-2.0",
        checked: TINY_RERANKER,
        note: "long inputs; slow on a CPU past a few dozen candidates",
    },
    RerankerCard {
        id: "cross-encoder/ms-marco-MiniLM-L6-v2",
        architecture: "BertForSequenceClassification",
        parameters_millions: 23,
        max_tokens: 512,
        licence: "Apache-2.0",
        checked: TINY_RERANKER,
        note: "English; fast enough for CPU reranking of 50 candidates",
    },
    RerankerCard {
        id: "Qwen/Qwen3-Reranker-0.6B",
        architecture: "Qwen3ForCausalLM",
        parameters_millions: 600,
        max_tokens: 32768,
        licence: "Apache-2.0",
        checked: TINY_RERANKER,
        note: "a decoder asked \"yes\" or \"no\" in its model card's prompt (default \
               instruction); a GPU for more than a few candidates",
    },
];

/// Every model the issues name, and the default.
pub const KNOWN_MODELS: &[ModelCard] = &[
    ModelCard {
        id: "sentence-transformers/all-MiniLM-L6-v2",
        architecture: "bert",
        parameters_millions: 23,
        dimensions: 384,
        matryoshka_dimensions: &[],
        max_tokens: 256,
        pooling: "mean",
        prompts: &[],
        licence: "apache-2.0",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: PARITY_REAL,
        note: "Quiver's default: fast on a CPU.",
    },
    ModelCard {
        id: "sentence-transformers/all-mpnet-base-v2",
        architecture: "mpnet",
        parameters_millions: 110,
        dimensions: 768,
        matryoshka_dimensions: &[],
        max_tokens: 384,
        pooling: "mean",
        prompts: &[],
        licence: "apache-2.0",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: PARITY_REAL,
        note: "",
    },
    ModelCard {
        id: "google/embeddinggemma-300m",
        architecture: "gemma3_text",
        parameters_millions: 308,
        dimensions: 768,
        matryoshka_dimensions: &[512, 256, 128],
        max_tokens: 2048,
        pooling: "mean, then two Dense projections (768 -> 3072 -> 768)",
        prompts: EMBEDDINGGEMMA_PROMPTS,
        licence: "gemma (Gemma Terms of Use: redistribution restricted)",
        device: RecommendedDevice::Cpu,
        keyword_weight: Some(0.25),
        checked: PARITY_REAL,
        note: "Trained for code retrieval among other tasks, multilingual, 2,048-token inputs: \
               pick it over the default when retrieval quality matters more than indexing \
               speed (about 6x the default's time per token on a CPU: 800 against about 4,700 \
               tokens/s at f32, 1,780 in int8) for nDCG@10 0.706 against 0.463 on the code-search \
               eval (vector search; docs/models.md). Its indexes weigh hybrid search's keyword \
               side 0.25, where the default's 0.75 costs it 0.026 nDCG@10 (docs/evaluation.md).",
    },
    ModelCard {
        id: "BAAI/bge-small-en-v1.5",
        architecture: "bert",
        parameters_millions: 33,
        dimensions: 384,
        matryoshka_dimensions: &[],
        max_tokens: 512,
        pooling: "cls",
        prompts: BGE_PROMPTS,
        licence: "mit",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: FAMILY,
        note: "The query instruction is optional; documents take none.",
    },
    ModelCard {
        id: "BAAI/bge-base-en-v1.5",
        architecture: "bert",
        parameters_millions: 109,
        dimensions: 768,
        matryoshka_dimensions: &[],
        max_tokens: 512,
        pooling: "cls",
        prompts: BGE_PROMPTS,
        licence: "mit",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: FAMILY,
        note: "The query instruction is optional; documents take none.",
    },
    ModelCard {
        id: "intfloat/e5-base-v2",
        architecture: "bert",
        parameters_millions: 109,
        dimensions: 768,
        matryoshka_dimensions: &[],
        max_tokens: 512,
        pooling: "mean",
        prompts: E5_PROMPTS,
        licence: "mit",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: FAMILY,
        note: "Queries and passages must carry their prefixes.",
    },
    ModelCard {
        id: "microsoft/codebert-base",
        architecture: "roberta",
        parameters_millions: 125,
        dimensions: 768,
        matryoshka_dimensions: &[],
        max_tokens: 512,
        pooling: "mean",
        prompts: &[],
        licence: "not stated on the model card",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: TINY,
        note: "A pre-trained encoder, not a sentence embedder: mean pooling is Quiver's default for a folder without sentence-transformers configs.",
    },
    ModelCard {
        id: "flax-sentence-embeddings/st-codesearch-distilroberta-base",
        architecture: "roberta",
        parameters_millions: 82,
        dimensions: 768,
        matryoshka_dimensions: &[],
        max_tokens: 128,
        pooling: "mean",
        prompts: &[],
        licence: "not stated on the model card",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: TINY,
        note: "Trained on CodeSearchNet for natural-language-to-code search.",
    },
    ModelCard {
        id: "jinaai/jina-embeddings-v3",
        architecture: "xlm-roberta",
        parameters_millions: 572,
        dimensions: 1024,
        matryoshka_dimensions: &[32, 64, 128, 256, 512, 768, 1024],
        max_tokens: 8192,
        pooling: "mean",
        prompts: &[
            ("retrieval.query", "Represent the query for retrieving evidence documents: "),
            ("retrieval.passage", "Represent the document for retrieval: "),
        ],
        licence: "cc-by-nc-4.0",
        device: RecommendedDevice::Gpu,
        keyword_weight: None,
        checked: TINY,
        note: "XLM-R with rotary positions and per-task LoRA adapters (retrieval.query, retrieval.passage, separation, classification, text-matching): a prompt name that names a task also selects its adapter; requests of different tasks share a batch. Indexing uses retrieval.passage, search retrieval.query.",
    },
    ModelCard {
        id: "nomic-ai/nomic-embed-text-v1.5",
        architecture: "nomic_bert",
        parameters_millions: 137,
        dimensions: 768,
        matryoshka_dimensions: &[768, 512, 256, 128, 64],
        max_tokens: 8192,
        pooling: "mean",
        prompts: NOMIC_PROMPTS,
        licence: "apache-2.0",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: TINY,
        note: "Every text needs a task prefix.",
    },
    ModelCard {
        id: "nomic-ai/CodeRankEmbed",
        architecture: "nomic_bert",
        parameters_millions: 137,
        dimensions: 768,
        matryoshka_dimensions: &[],
        max_tokens: 8192,
        pooling: "cls",
        prompts: &[("query", "Represent this query for searching relevant code: ")],
        licence: "mit",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: TINY,
        note: "Code retrieval; queries need the prefix, code takes none.",
    },
    ModelCard {
        id: "Qodo/Qodo-Embed-1-1.5B",
        architecture: "qwen2",
        parameters_millions: 1540,
        dimensions: 1536,
        matryoshka_dimensions: &[],
        max_tokens: 32768,
        pooling: "lasttoken",
        prompts: &[],
        licence: "qodoai-open-rail-m",
        device: RecommendedDevice::Gpu,
        keyword_weight: None,
        checked: TINY,
        note: "Code retrieval; its query prompt is read from the model folder. Causal unless its config says \"is_causal\": false.",
    },
    ModelCard {
        id: "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
        architecture: "qwen2",
        parameters_millions: 1540,
        dimensions: 1536,
        matryoshka_dimensions: &[],
        max_tokens: 32768,
        pooling: "lasttoken",
        prompts: WEB_SEARCH_INSTRUCTION,
        licence: "apache-2.0",
        device: RecommendedDevice::Gpu,
        keyword_weight: None,
        checked: TINY,
        note: "Queries carry an instruction; documents take none. Its authors train it bidirectionally: Quiver follows the config's \"is_causal\" (default causal, as transformers).",
    },
    ModelCard {
        id: "Qwen/Qwen3-Embedding-0.6B",
        architecture: "qwen3",
        parameters_millions: 596,
        dimensions: 1024,
        matryoshka_dimensions: &[32, 64, 128, 256, 512, 768, 1024],
        max_tokens: 32768,
        pooling: "lasttoken",
        prompts: WEB_SEARCH_INSTRUCTION,
        licence: "apache-2.0",
        device: RecommendedDevice::Gpu,
        keyword_weight: None,
        checked: TINY,
        note: "Queries carry an instruction; documents take none. Causal attention, last-token pooling.",
    },
    ModelCard {
        id: "Alibaba-NLP/gte-modernbert-base",
        architecture: "modernbert",
        parameters_millions: 149,
        dimensions: 768,
        matryoshka_dimensions: &[],
        max_tokens: 8192,
        pooling: "cls",
        prompts: &[],
        licence: "apache-2.0",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: TINY,
        note: "Alternating global and local (128-token window) attention; CLS pooling.",
    },
    ModelCard {
        id: "jinaai/jina-embeddings-v2-base-code",
        architecture: "jina_bert",
        parameters_millions: 161,
        dimensions: 768,
        matryoshka_dimensions: &[],
        max_tokens: 8192,
        pooling: "mean",
        prompts: &[],
        licence: "apache-2.0",
        device: RecommendedDevice::Cpu,
        keyword_weight: None,
        checked: NOT_YET,
        note: "Code and English; ALiBi positions.",
    },
];

/// The card for `id`: its full hub id, or the name after the `/`, in any case.
pub fn find_model(id: &str) -> Option<&'static ModelCard> {
    let wanted = id.trim().to_ascii_lowercase();
    KNOWN_MODELS.iter().find(|card| {
        let full = card.id.to_ascii_lowercase();
        full == wanted || full.rsplit('/').next() == Some(wanted.as_str())
    })
}

/// The card of a model folder on disk, by the names its path gives: a folder named as the model
/// (`all-MiniLM-L6-v2`), Hugging Face's cache (`models--google--embeddinggemma-300m/snapshots/REV`)
/// or Quiver's fetch scripts (`embeddinggemma-300m-` and 16 hex digits of the weights' sha256).
pub fn find_model_at(dir: &std::path::Path) -> Option<&'static ModelCard> {
    dir.components().rev().find_map(|component| {
        let name = component.as_os_str().to_str()?;
        let name = name
            .strip_prefix("models--")
            .map_or(name.to_string(), |hub| hub.replace("--", "/"));
        let unsuffixed = name
            .rsplit_once('-')
            .filter(|(_, digest)| {
                digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit())
            })
            .map(|(stem, _)| stem);
        find_model(&name).or_else(|| unsuffixed.and_then(find_model))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_runtime::models::is_supported;

    #[test]
    fn finds_by_full_or_short_id_in_any_case() {
        assert_eq!(
            find_model("BAAI/bge-small-en-v1.5").unwrap().dimensions,
            384
        );
        assert_eq!(
            find_model("all-mpnet-base-v2").unwrap().architecture,
            "mpnet"
        );
        assert_eq!(
            find_model("CODERANKEMBED").unwrap().id,
            "nomic-ai/CodeRankEmbed"
        );
        assert!(find_model("no-such-model").is_none());
    }

    #[test]
    fn finds_a_model_folder_by_its_path() {
        use std::path::Path;
        let id = |path: &str| find_model_at(Path::new(path)).map(|card| card.id);
        assert_eq!(
            id("models/all-MiniLM-L6-v2"),
            Some("sentence-transformers/all-MiniLM-L6-v2")
        );
        assert_eq!(
            id("/home/me/.cache/huggingface/hub/models--google--embeddinggemma-300m/snapshots/57c266a740f537b4dc058e1b0cda161fd15afa75"),
            Some("google/embeddinggemma-300m")
        );
        assert_eq!(
            id("/root/.cache/quiver/models/embeddinggemma-300m-cbf5a78393b6a033"),
            Some("google/embeddinggemma-300m")
        );
        // A suffix that is not a digest is part of the name.
        assert_eq!(id("/models/embeddinggemma-300m-finetuned"), None);
        assert_eq!(id("/tmp/my-model"), None);
    }

    #[test]
    fn cards_are_consistent() {
        for card in KNOWN_MODELS {
            assert!(card.dimensions > 0 && card.max_tokens > 0, "{}", card.id);
            assert!(
                card.matryoshka_dimensions
                    .iter()
                    .all(|&d| d <= card.dimensions),
                "{}: a Matryoshka width over the model's",
                card.id
            );
            // A model claimed to run must have an architecture this build loads.
            if card.supported() {
                assert!(is_supported(card.architecture), "{}", card.id);
            }
        }
        assert!(find_model(crate::DEFAULT_MODEL).is_some());
    }
}
