//! `GET /health`, `GET /info` and `GET /metrics`.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// 200 once the model is loaded (the server only listens after that).
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// What is served, with TEI's field names where TEI has one.
pub async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let embedder = &state.embedder;
    let config = embedder.config();
    // No paths: where the model and the index live on the server is no client's business.
    let index = state.index.as_ref().map(|index| {
        let snapshot = index.latest();
        json!({
            "model": crate::public_model_name(&snapshot.settings.model),
            "dimensions": snapshot.settings.dimension,
            "chunks": snapshot.len(),
        })
    });
    // TEI's `Info` fields first (its schema requires them), then Quiver's own.
    Json(json!({
        "model_id": state.model_id,
        "model_sha": null,
        "model_dtype": match embedder.quantization() {
            quiver_embed::Quantization::None => "float32",
            quiver_embed::Quantization::Int8 => "int8",
            quiver_embed::Quantization::Bf16 => "bfloat16",
        },
        "model_type": {"embedding": {"pooling": config.pooling.name()}},
        // Requests tokenise on the async workers that receive them (large ones on blocking
        // threads): as many as the machine has cores.
        "tokenization_workers": std::thread::available_parallelism().map_or(1, usize::from),
        "max_batch_requests": null,
        "dimensions": embedder.dimension(),
        "max_input_length": embedder.max_length(),
        "pooling": config.pooling.name(),
        "normalize": config.normalize,
        "prompts": config.prompts,
        "default_prompt_name": config.default_prompt_name,
        "backend": state.backend,
        "max_batch_tokens": state.batching.max_batch_tokens,
        "max_concurrent_requests": state.batching.max_queued_requests,
        "max_client_batch_size": state.limits.max_client_batch_size,
        "payload_limit": state.limits.payload_limit,
        "auto_truncate": state.defaults.auto_truncate,
        "auth": state.api_key.is_some(),
        "index": index,
        "rerank_model": state.reranking.as_ref().map(|(name, _)| name),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Prometheus text exposition: OpenMetrics to a scraper that asks for it (Prometheus does),
/// else labelled `text/plain` as TEI's contract documents (the same text parses as both).
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    )
}
