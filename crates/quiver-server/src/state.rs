//! What every route shares: the engine, limits, metrics and the optional index reader; and the
//! server's defaults for what a request leaves out.

use crate::error::ApiError;
use crate::input::InputLimits;
use crate::metrics::Metrics;
use axum::http::StatusCode;
use quiver_embed::{EmbedInput, EmbedOptions, Embedder, TruncationSide};
use quiver_engine::{
    BatchSettings, Embedded, Engine, EngineError, RerankRequest, Reranked, Reranking, TokenStates,
};
use quiver_index::{IndexReader, IndexSettings};
use std::sync::Arc;

/// What the server refuses beyond.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Texts one request may send.
    pub max_client_batch_size: usize,
    /// Largest request body, in bytes.
    pub payload_limit: usize,
}

/// What a request that does not say gets.
#[derive(Debug, Clone, Default)]
pub struct RequestDefaults {
    /// Cut over-long inputs instead of answering 413.
    pub auto_truncate: bool,
    /// Normalise vectors; `None`: the model's own setting.
    pub normalize: Option<bool>,
}

pub struct AppState {
    /// The model id or folder as the user named it (echoed as `model` in responses).
    pub model_id: String,
    pub embedder: Arc<Embedder>,
    pub engine: Engine,
    /// The cross-encoder `POST /rerank` runs (`--rerank-model`), with its public name.
    pub reranking: Option<(String, Reranking)>,
    pub limits: Limits,
    pub defaults: RequestDefaults,
    pub metrics: Arc<Metrics>,
    pub index: Option<Arc<IndexReader>>,
    /// The model the index was built with when the server started: the one it embeds queries
    /// with, so a later run with another model cannot be followed.
    pub index_model: Option<String>,
    /// Bearer token every route but `/health` requires, when set.
    pub api_key: Option<String>,
    pub batching: BatchSettings,
    /// Where the model runs, for `/info` (`cpu`, `cuda:0`).
    pub backend: String,
}

/// What one request asks of the embedding pipeline.
#[derive(Debug, Clone, Default)]
pub struct EmbedRequest {
    pub prompt_name: Option<String>,
    /// The task adapter (jina-embeddings-v3); `None`: the one named like the prompt, if any.
    pub task: Option<String>,
    pub dimensions: Option<usize>,
    /// `None`: the model's own setting.
    pub normalize: Option<bool>,
    /// `None`: the server's `--auto-truncate`.
    pub truncate: Option<bool>,
    pub truncation: TruncationSide,
}

impl From<EmbedOptions> for EmbedRequest {
    fn from(options: EmbedOptions) -> Self {
        EmbedRequest {
            prompt_name: options.prompt_name,
            task: options.task,
            dimensions: options.dimensions,
            normalize: options.normalize,
            truncate: None,
            truncation: options.truncation,
        }
    }
}

impl AppState {
    /// Whether this server can embed queries for an index with `settings` (which a later
    /// `quiver index` run may have changed under it): the same model and number format, and a
    /// width the model gives. Prompts and a narrower width it follows.
    pub fn follows(&self, settings: &IndexSettings) -> Result<(), ApiError> {
        let conflict = |what: String| {
            Err(ApiError::validation(
                StatusCode::CONFLICT,
                format!(
                    "the index was re-embedded {what} since this server started; restart the \
                     server to serve it"
                ),
            ))
        };
        if self.index_model.as_deref() != Some(settings.model.as_str()) {
            return conflict(format!(
                "with model {}",
                crate::public_model_name(&settings.model)
            ));
        }
        if settings.quantization != self.embedder.quantization() {
            return conflict(format!("with --quantize {}", settings.quantization.name()));
        }
        if settings.dimension > self.embedder.dimension() {
            return conflict(format!(
                "at {} dimensions, more than the model's {}",
                settings.dimension,
                self.embedder.dimension()
            ));
        }
        Ok(())
    }

    pub fn input_limits(&self) -> InputLimits {
        InputLimits {
            max_inputs: self.limits.max_client_batch_size,
        }
    }

    /// Embeds a request's inputs through the engine, the server's defaults filled in (its
    /// `--normalize` and `--auto-truncate`).
    pub async fn embed(
        &self,
        inputs: Vec<EmbedInput>,
        request: EmbedRequest,
    ) -> Result<Embedded, ApiError> {
        let request = self.engine_request(request);
        self.engine
            .embed_inputs(inputs, &request)
            .await
            .map_err(engine_error)
    }

    /// The hidden state of every token of each input, through the engine.
    pub async fn token_states(
        &self,
        inputs: Vec<EmbedInput>,
        request: EmbedRequest,
    ) -> Result<TokenStates, ApiError> {
        let request = self.engine_request(request);
        self.engine
            .token_states(inputs, &request)
            .await
            .map_err(engine_error)
    }

    /// The relevance logit of each text to `query`, through the reranker; TEI's 424 when the
    /// server has none.
    pub async fn rerank(
        &self,
        query: String,
        texts: Vec<String>,
        request: RerankRequest,
    ) -> Result<Reranked, ApiError> {
        let Some((_, reranking)) = &self.reranking else {
            return Err(ApiError::no_model(
                "this server has no reranker: start it with --rerank-model MODEL (a \
                 cross-encoder such as BAAI/bge-reranker-base)",
            ));
        };
        reranking
            .score(query, texts, request)
            .await
            .map_err(engine_error)
    }

    fn engine_request(&self, request: EmbedRequest) -> quiver_engine::EmbedRequest {
        quiver_engine::EmbedRequest {
            options: EmbedOptions {
                prompt_name: request.prompt_name,
                task: request.task,
                dimensions: request.dimensions,
                normalize: request.normalize.or(self.defaults.normalize),
                truncation: request.truncation,
                ..EmbedOptions::default()
            },
            truncate: request.truncate.unwrap_or(self.defaults.auto_truncate),
        }
    }
}

fn engine_error(error: EngineError) -> ApiError {
    match error {
        EngineError::TooLong { input, max_length } => ApiError::validation(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "input {input} is longer than the model's {max_length} tokens: send \
                 \"truncate\": true, or start the server with --auto-truncate"
            ),
        ),
        EngineError::Overloaded => ApiError::overloaded(),
        EngineError::Embed(error) => error.into(),
        other => ApiError::backend(other.to_string()),
    }
}
