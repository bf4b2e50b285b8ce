//! Hugging Face Text Embeddings Inference routes: `POST /embed`, `POST /similarity`,
//! `POST /tokenize`, with TEI's request fields and response shapes, so TEI clients (its Python
//! and JavaScript ones, LangChain's and LlamaIndex's integrations) work unchanged.

use crate::error::ApiError;
use crate::input::{parse_body, Inputs};
use crate::state::{AppState, EmbedRequest};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use quiver_embed::{EmbedOptions, TruncationSide};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;

/// `"Right"` or `"Left"` (any case), as TEI spells it.
fn truncation_side<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TruncationSide, D::Error> {
    let name = String::deserialize(deserializer)?;
    match name.to_ascii_lowercase().as_str() {
        "right" => Ok(TruncationSide::Right),
        "left" => Ok(TruncationSide::Left),
        _ => Err(serde::de::Error::custom(format!(
            "unknown truncation direction {name:?} (Right or Left)"
        ))),
    }
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
pub struct EmbedBody {
    inputs: Inputs,
    /// Absent: the server's `--normalize`, else true (TEI's default).
    normalize: Option<bool>,
    truncate: Option<bool>,
    #[serde(default, deserialize_with = "truncation_side")]
    truncation_direction: TruncationSide,
    prompt_name: Option<String>,
    /// Extension: the task adapter of models that have them (jina-embeddings-v3).
    task: Option<String>,
    dimensions: Option<usize>,
}

pub async fn embed(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let request: EmbedBody = parse_body(body)?;
    request.inputs.validate("inputs", state.input_limits())?;
    let embedded = state
        .embed(
            request.inputs.0,
            EmbedRequest {
                prompt_name: request.prompt_name,
                task: request.task,
                dimensions: request.dimensions,
                normalize: Some(request.normalize.or(state.limits.normalize).unwrap_or(true)),
                truncate: request.truncate,
                truncation: request.truncation_direction,
            },
        )
        .await?;
    Ok(Json(embedded.vectors))
}

#[derive(Deserialize)]
pub struct SimilarityBody {
    inputs: SimilarityInputs,
    truncate: Option<bool>,
    #[serde(default, deserialize_with = "truncation_side")]
    truncation_direction: TruncationSide,
    prompt_name: Option<String>,
}

#[derive(Deserialize)]
struct SimilarityInputs {
    source_sentence: String,
    sentences: Inputs,
}

/// Cosine similarity of `source_sentence` to each of `sentences`.
pub async fn similarity(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<f32>>, ApiError> {
    let request: SimilarityBody = parse_body(body)?;
    let sentences = request.inputs.sentences;
    sentences.validate("inputs.sentences", state.input_limits())?;
    if request.inputs.source_sentence.is_empty() {
        return Err(ApiError::bad_request(
            "`inputs.source_sentence` is an empty string",
        ));
    }
    let mut texts = Vec::with_capacity(sentences.0.len() + 1);
    texts.push(request.inputs.source_sentence);
    texts.extend(sentences.0);
    let embedded = state
        .embed(
            texts,
            EmbedRequest {
                prompt_name: request.prompt_name,
                normalize: Some(true),
                truncate: request.truncate,
                truncation: request.truncation_direction,
                ..EmbedRequest::default()
            },
        )
        .await?;
    let (source, others) = embedded
        .vectors
        .split_first()
        .ok_or_else(|| ApiError::backend("no vectors"))?;
    Ok(Json(
        others
            .iter()
            .map(|v| source.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct TokenizeBody {
    inputs: Inputs,
    #[serde(default = "default_true")]
    add_special_tokens: bool,
    prompt_name: Option<String>,
}

#[derive(Serialize)]
pub struct TokenView {
    id: u32,
    text: String,
    special: bool,
    start: Option<usize>,
    stop: Option<usize>,
}

/// Every token of each input (untruncated), with byte offsets into the input as sent.
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<TokenView>>>, ApiError> {
    let request: TokenizeBody = parse_body(body)?;
    request.inputs.validate("inputs", state.input_limits())?;
    let embedder = state.embedder.clone();
    let options = EmbedOptions {
        prompt_name: request.prompt_name,
        ..EmbedOptions::default()
    };
    let add_special = request.add_special_tokens;
    let tokenized = tokio::task::spawn_blocking(move || {
        request
            .inputs
            .0
            .iter()
            .map(|text| {
                // Offsets are reported in the input as sent: outside the prompt, and back
                // through any lowercasing.
                let input = embedder.input_text(text, &options)?;
                let tokens = embedder.tokenizer().tokens(&input.text, add_special)?;
                Ok(tokens
                    .into_iter()
                    .map(|token| {
                        let span = (!token.special)
                            .then(|| input.original_offset(token.start))
                            .flatten()
                            .zip(input.original_offset(token.end));
                        TokenView {
                            id: token.id,
                            text: token.text,
                            special: token.special,
                            start: span.map(|(start, _)| start),
                            stop: span.map(|(_, stop)| stop),
                        }
                    })
                    .collect())
            })
            .collect::<Result<Vec<_>, quiver_embed::EmbedError>>()
    })
    .await
    .map_err(|e| ApiError::backend(format!("tokenizer task failed: {e}")))??;
    Ok(Json(tokenized))
}
