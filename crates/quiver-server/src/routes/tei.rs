//! Hugging Face Text Embeddings Inference routes: `POST /embed`, `/embed_all`, `/similarity`,
//! `/tokenize` and `/decode`, with the request fields and response shapes of TEI's published
//! OpenAPI document (`tests/tei/openapi.json`), so TEI clients (its Python and JavaScript ones,
//! LangChain's and LlamaIndex's integrations) work unchanged.

use crate::error::ApiError;
use crate::input::{parse_body, parse_value, Inputs, Texts};
use crate::state::{AppState, EmbedRequest};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use quiver_embed::{EmbedInput, EmbedOptions, TruncationSide};
use quiver_engine::RerankRequest;
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

/// A field that may be left out but is never `null` (TEI's schema does not make it nullable).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
pub struct EmbedBody {
    inputs: Inputs,
    /// Absent: the server's `--normalize`, else true (TEI's default).
    #[serde(default, deserialize_with = "present")]
    normalize: Option<bool>,
    truncate: Option<bool>,
    #[serde(default, deserialize_with = "truncation_side")]
    truncation_direction: TruncationSide,
    prompt_name: Option<String>,
    /// Extension: the task adapter of models that have them (jina-embeddings-v3).
    task: Option<String>,
    /// Extension: Matryoshka width.
    dimensions: Option<usize>,
}

pub async fn embed(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    answer_embed(&state, parse_body(body)?).await
}

async fn answer_embed(
    state: &AppState,
    request: EmbedBody,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    request.inputs.validate("inputs", state.input_limits())?;
    let embedded = state
        .embed(
            request.inputs.0,
            EmbedRequest {
                prompt_name: request.prompt_name,
                task: request.task,
                dimensions: request.dimensions,
                normalize: Some(
                    request
                        .normalize
                        .or(state.defaults.normalize)
                        .unwrap_or(true),
                ),
                truncate: request.truncate,
                truncation: request.truncation_direction,
            },
        )
        .await?;
    Ok(Json(embedded.vectors))
}

/// What `/embed_all` and `/embed_sparse` take: TEI's `EmbedAllRequest` and
/// `EmbedSparseRequest`, which have the same fields.
#[derive(Deserialize)]
pub struct InputsBody {
    inputs: Inputs,
    truncate: Option<bool>,
    #[serde(default, deserialize_with = "truncation_side")]
    truncation_direction: TruncationSide,
    prompt_name: Option<String>,
    /// Extension: the task adapter of models that have them (jina-embeddings-v3).
    task: Option<String>,
}

impl InputsBody {
    /// The inputs, checked against the server's limits, and what the request asks of them.
    fn into_parts(self, state: &AppState) -> Result<(Vec<EmbedInput>, EmbedRequest), ApiError> {
        self.inputs.validate("inputs", state.input_limits())?;
        let request = EmbedRequest {
            prompt_name: self.prompt_name,
            task: self.task,
            truncate: self.truncate,
            truncation: self.truncation_direction,
            ..EmbedRequest::default()
        };
        Ok((self.inputs.0, request))
    }
}

/// The last hidden state of every token of each input (special and prompt tokens included,
/// as `/tokenize` lists them): the token vectors late-interaction search scores with.
pub async fn embed_all(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<Vec<f32>>>>, ApiError> {
    let (inputs, request) = parse_body::<InputsBody>(body)?.into_parts(&state)?;
    let states = state.token_states(inputs, request).await?;
    Ok(Json(states.states))
}

#[derive(Serialize)]
pub struct SparseValue {
    index: usize,
    value: f32,
}

/// The nonzero vocabulary weights of each input, by vocabulary index: for a model with SPLADE
/// pooling (a masked-language-model head, `1_SpladePooling` in its folder); TEI's 424 for
/// any other.
pub async fn embed_sparse(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<SparseValue>>>, ApiError> {
    let body: InputsBody = parse_body(body)?;
    if state.embedder.config().pooling != quiver_embed::Pooling::Splade {
        return Err(ApiError::no_model(
            "this server's model has no SPLADE pooling: serve a sparse encoder (a \
             masked-language-model checkpoint with sentence-transformers' SpladePooling)",
        ));
    }
    let (inputs, request) = body.into_parts(&state)?;
    let request = EmbedRequest {
        normalize: Some(false),
        ..request
    };
    let embedded = state.embed(inputs, request).await?;
    Ok(Json(
        embedded
            .vectors
            .into_iter()
            .map(|vector| {
                vector
                    .into_iter()
                    .enumerate()
                    .filter(|&(_, value)| value > 0.0)
                    .map(|(index, value)| SparseValue { index, value })
                    .collect()
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct SimilarityBody {
    inputs: SimilarityInputs,
    parameters: Option<SimilarityParameters>,
}

#[derive(Deserialize)]
struct SimilarityInputs {
    source_sentence: String,
    sentences: Vec<String>,
}

/// TEI's schema marks `truncation_direction` required here, but `huggingface_hub` sends
/// `"parameters": {}`, which TEI's own server accepts: so does Quiver.
#[derive(Deserialize)]
struct SimilarityParameters {
    truncate: Option<bool>,
    #[serde(default, deserialize_with = "truncation_side")]
    truncation_direction: TruncationSide,
    prompt_name: Option<String>,
}

/// Cosine similarity of `source_sentence` to each of `sentences`.
pub async fn similarity(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<f32>>, ApiError> {
    answer_similarity(&state, parse_body(body)?).await
}

async fn answer_similarity(
    state: &AppState,
    request: SimilarityBody,
) -> Result<Json<Vec<f32>>, ApiError> {
    let sentences = request.inputs.sentences;
    state
        .input_limits()
        .check("inputs.sentences", sentences.len())?;
    if sentences.is_empty() {
        return Ok(Json(Vec::new()));
    }
    let mut inputs = Vec::with_capacity(sentences.len() + 1);
    inputs.push(EmbedInput::Text(request.inputs.source_sentence));
    inputs.extend(sentences.into_iter().map(EmbedInput::Text));
    let parameters = request.parameters;
    let embedded = state
        .embed(
            inputs,
            EmbedRequest {
                normalize: Some(true),
                truncate: parameters.as_ref().and_then(|p| p.truncate),
                truncation: parameters
                    .as_ref()
                    .map_or(TruncationSide::Right, |p| p.truncation_direction),
                prompt_name: parameters.and_then(|p| p.prompt_name),
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
pub struct RerankBody {
    query: String,
    texts: Vec<String>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    truncate: Option<bool>,
    #[serde(default, deserialize_with = "truncation_side")]
    truncation_direction: TruncationSide,
}

#[derive(Serialize)]
pub struct Rank {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// Each text scored against the query by the server's cross-encoder, best first: TEI's
/// `/rerank`. Scores are the logit's sigmoid (0..1), or the logit with `raw_scores`.
pub async fn rerank(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Rank>>, ApiError> {
    let request: RerankBody = parse_body(body)?;
    state.input_limits().check("texts", request.texts.len())?;
    // The texts go to the reranker; a copy is kept only when the answer repeats them.
    let returned = request.return_text.then(|| request.texts.clone());
    let reranked = state
        .rerank(
            request.query,
            request.texts,
            RerankRequest {
                truncate: request.truncate.unwrap_or(state.defaults.auto_truncate),
                truncation: request.truncation_direction,
            },
        )
        .await?;
    let scores = if request.raw_scores {
        reranked.scores
    } else {
        reranked.probabilities()
    };
    let mut texts = returned.unwrap_or_default().into_iter();
    let mut ranks: Vec<Rank> = scores
        .into_iter()
        .enumerate()
        .map(|(index, score)| Rank {
            index,
            score,
            text: texts.next(),
        })
        .collect();
    // Stable: equal scores keep the order they were sent in.
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(Json(ranks))
}

/// `POST /`: TEI's route for clients that post to the server's own URL (`huggingface_hub`'s
/// `InferenceClient(model=URL)`, LangChain through it): `inputs` holding `source_sentence`
/// asks for similarity, anything else for embeddings.
pub async fn compat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: serde_json::Value = parse_body(body)?;
    if request["inputs"].is_object() {
        let request = parse_value(request)?;
        Ok(answer_similarity(&state, request).await?.into_response())
    } else {
        let request = parse_value(request)?;
        Ok(answer_embed(&state, request).await?.into_response())
    }
}

#[derive(Deserialize)]
pub struct DecodeBody {
    ids: TokenIdLists,
    #[serde(default = "default_true")]
    skip_special_tokens: bool,
}

/// TEI's `InputIds`: one array of token ids, or a list of them.
struct TokenIdLists(Vec<Vec<u32>>);

impl<'de> Deserialize<'de> for TokenIdLists {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Inputs::deserialize(deserializer)?.0.as_slice() {
            [] => Err(serde::de::Error::custom(
                "is an empty list: send token ids, or lists of them",
            )),
            inputs => inputs
                .iter()
                .map(|input| match input {
                    EmbedInput::TokenIds(ids) => Ok(ids.clone()),
                    EmbedInput::Text(_) => Err(serde::de::Error::custom(
                        "holds a string: send token ids, or lists of them",
                    )),
                })
                .collect::<Result<_, _>>()
                .map(TokenIdLists),
        }
    }
}

/// The text of each list of token ids.
pub async fn decode(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<String>>, ApiError> {
    let request: DecodeBody = parse_body(body)?;
    state.input_limits().check("ids", request.ids.0.len())?;
    let tokenizer = state.embedder.tokenizer();
    let texts = request
        .ids
        .0
        .iter()
        .enumerate()
        .map(|(index, ids)| {
            tokenizer
                .decode(ids, request.skip_special_tokens)
                .map_err(|error| match error {
                    quiver_embed::EmbedError::TokenId {
                        position,
                        id,
                        vocab,
                        ..
                    } => ApiError::validation(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "`ids[{index}][{position}]`: token id {id} is outside the \
                             vocabulary of {vocab} tokens"
                        ),
                    ),
                    other => ApiError::from(other),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Json(texts))
}

#[derive(Deserialize)]
pub struct TokenizeBody {
    inputs: Texts,
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
    state
        .input_limits()
        .check("inputs", request.inputs.0.len())?;
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
