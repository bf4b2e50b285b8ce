//! `GET /health`, `GET /info` and `GET /metrics`.

use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
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
    Json(json!({
        "model_id": state.model_id,
        "model_type": "embedding",
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
        "auto_truncate": state.limits.auto_truncate,
        "auth": state.api_key.is_some(),
        "index": index,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
