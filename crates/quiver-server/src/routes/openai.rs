//! OpenAI-compatible `POST /v1/embeddings`, so the `openai` client libraries of every language
//! work unchanged against Quiver.

use crate::error::{ApiError, Flavor};
use crate::input::{parse_body, Inputs};
use crate::state::{AppState, EmbedRequest};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize)]
pub struct EmbeddingsRequest {
    input: Inputs,
    /// Accepted and echoed back as the served model: one model is served per process.
    #[allow(dead_code)]
    model: Option<String>,
    /// Accepted (OpenAI's end-user id); Quiver keeps no per-user state.
    #[allow(dead_code)]
    user: Option<String>,
    dimensions: Option<usize>,
    #[serde(default)]
    encoding_format: EncodingFormat,
    /// Extensions beyond OpenAI's API. `task` is Jina's name for the adapter of
    /// jina-embeddings-v3 (`retrieval.query`, `retrieval.passage`, ...).
    prompt_name: Option<String>,
    task: Option<String>,
    truncate: Option<bool>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian f32 bytes, base64: what the official Python client asks for by default.
    Base64,
}

#[derive(Serialize)]
pub struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingData {
    object: &'static str,
    embedding: EmbeddingValue,
    index: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    handle(&state, body)
        .await
        .map_err(|error| error.flavored(Flavor::OpenAi))
}

async fn handle(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let request: EmbeddingsRequest = parse_body(body)?;
    request.input.validate("input", state.input_limits())?;
    let format = request.encoding_format;
    let embedded = state
        .embed(
            request.input.0,
            EmbedRequest {
                prompt_name: request.prompt_name,
                task: request.task,
                dimensions: request.dimensions,
                truncate: request.truncate,
                ..EmbedRequest::default()
            },
        )
        .await?;
    let data = embedded
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingData {
            object: "embedding",
            embedding: match format {
                EncodingFormat::Float => EmbeddingValue::Float(vector),
                EncodingFormat::Base64 => EmbeddingValue::Base64(base64_f32(&vector)),
            },
            index,
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: state.model_id.clone(),
        usage: Usage {
            prompt_tokens: embedded.tokens,
            total_tokens: embedded.tokens,
        },
    }))
}

fn base64_f32(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let encoded = base64_f32(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let back: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(back, vec![1.0, -2.5]);
    }
}
