//! Quiver's HTTP server: embeddings over the APIs people already call, and search over an index.
//!
//! What it does: serves one loaded model over OpenAI's `POST /v1/embeddings` and Text
//! Embeddings Inference's `POST /embed`, `/similarity` and `/tokenize`; searches an index with
//! `POST /search`; reports itself on `GET /health`, `/info` and `/metrics`. Concurrent requests
//! are merged into token-budgeted model calls by one model thread ([`batcher`]); a full queue
//! answers 429. What it does not: load models or parse flags (the CLI does), or write indexes.
//!
//! Entry point: [`Server::new`], then [`Server::run`] on a bound listener.

mod batcher;
mod error;
mod input;
mod metrics;
mod routes;
mod search_index;
mod state;

pub use batcher::BatchSettings;
pub use error::{ApiError, Flavor};
pub use search_index::{OpenIndexError, SearchIndex};
pub use state::Limits;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use batcher::Batcher;
use metrics::Metrics;
use quiver_embed::{EmbedOptions, Embedder};
use state::AppState;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Everything about a server but its model.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The model as the user named it; responses echo it as `model`.
    pub model_id: String,
    pub batching: BatchSettings,
    pub limits: Limits,
    /// Bearer token required on every route but `/health`.
    pub api_key: Option<String>,
    /// Index served by `POST /search`.
    pub index: Option<PathBuf>,
    /// Where the model runs, as `/info` reports it (`cpu`, `cuda:0`).
    pub backend: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the index for /search: {0}")]
    Index(#[from] OpenIndexError),
    #[error(
        "the index at {dir} holds {index_dimension}-dimension vectors, wider than the model's {model_dimension}"
    )]
    IndexDimensions {
        dir: PathBuf,
        index_dimension: usize,
        model_dimension: usize,
    },
    #[error("warm-up embedding failed: {0}")]
    WarmUp(#[from] quiver_embed::EmbedError),
    #[error("cannot start the model thread: {0}")]
    Thread(std::io::Error),
}

/// A loaded model, its model thread running, ready to serve.
pub struct Server {
    state: Arc<AppState>,
    model_thread: JoinHandle<()>,
}

impl Server {
    /// Opens the index (if any), runs one warm-up embedding so the first request is not a cold
    /// start, and starts the model thread.
    pub fn new(embedder: Embedder, options: ServerOptions) -> Result<Server, ServerError> {
        let index = options
            .index
            .as_deref()
            .map(SearchIndex::open)
            .transpose()?;
        if let Some(index) = &index {
            let index_dimension = index.settings().dimension;
            if index_dimension > embedder.dimension() {
                return Err(ServerError::IndexDimensions {
                    dir: index.dir().to_path_buf(),
                    index_dimension,
                    model_dimension: embedder.dimension(),
                });
            }
        }
        embedder.embed(&["warm up the model"], &EmbedOptions::default())?;
        let embedder = Arc::new(embedder);
        let metrics = Arc::new(Metrics::new());
        let (batcher, model_thread) =
            Batcher::start(embedder.clone(), options.batching, metrics.clone())
                .map_err(ServerError::Thread)?;
        let state = Arc::new(AppState {
            model_id: options.model_id,
            embedder,
            batcher,
            limits: options.limits,
            metrics,
            index: index.map(Arc::new),
            api_key: options.api_key.filter(|key| !key.is_empty()),
            batching: options.batching,
            backend: options.backend,
        });
        Ok(Server {
            state,
            model_thread,
        })
    }

    /// Every route, with authentication, metrics and the body-size limit.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight and returns.
    pub async fn run<F>(self, listener: tokio::net::TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        // Dropping the last queue sender lets the model thread finish its loop.
        drop(self.state);
        let _ = tokio::task::spawn_blocking(move || self.model_thread.join()).await;
        Ok(())
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(routes::openai::embeddings))
        .route("/embed", post(routes::tei::embed))
        .route("/similarity", post(routes::tei::similarity))
        .route("/tokenize", post(routes::tei::tokenize))
        .route("/search", post(routes::search::search))
        .route("/health", get(routes::info::health))
        .route("/info", get(routes::info::info))
        .route("/metrics", get(routes::info::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.payload_limit,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::validation(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::validation(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = &state.api_key else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), key.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let error = ApiError::unauthorized();
            let flavored = if request.uri().path().starts_with("/v1/") {
                error.flavored(Flavor::OpenAi)
            } else {
                error
            };
            flavored.into_response()
        }
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn record_metrics(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .record_request(&route, response.status().as_u16(), started.elapsed());
    response
}
