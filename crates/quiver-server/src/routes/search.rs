//! `POST /search`: hybrid, vector or keyword search over the index the server was started
//! with (`--index DIR`), the same search as `quiver search`.

use crate::error::{ApiError, Flavor};
use crate::input::parse_body;
use crate::state::{AppState, EmbedRequest};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use quiver_embed::EmbedInput;
use quiver_engine::RerankRequest;
use quiver_index::{
    is_keyword_weight, rerank_hits, SearchFilter, SearchHit, SearchMode, SearchRequest,
    RERANK_CANDIDATES,
};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;

/// Most results one search may ask for.
const MAX_K: usize = 1000;

fn default_k() -> usize {
    10
}

fn search_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SearchMode, D::Error> {
    String::deserialize(deserializer)?
        .parse()
        .map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
pub struct SearchBody {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default, deserialize_with = "search_mode")]
    mode: SearchMode,
    /// Only chunks in these languages.
    #[serde(default)]
    languages: Vec<String>,
    /// Only chunks whose path matches this glob.
    path: Option<String>,
    /// Rerank the top hits with the server's cross-encoder (`--rerank-model`).
    #[serde(default)]
    rerank: bool,
    /// Hybrid: the keyword ranking's weight against the vector ranking's 1 (default: the one
    /// the index records).
    keyword_weight: Option<f64>,
}

impl SearchBody {
    fn search_request<'a>(
        &'a self,
        filter: &'a SearchFilter,
        query_vector: Option<&'a [f32]>,
        recorded_weight: f64,
    ) -> SearchRequest<'a> {
        SearchRequest {
            query: &self.query,
            query_vector,
            mode: self.mode,
            k: if self.rerank {
                RERANK_CANDIDATES.max(self.k)
            } else {
                self.k
            },
            filter,
            keyword_weight: self.keyword_weight.unwrap_or(recorded_weight),
            priors: true,
        }
    }
}

#[derive(Serialize)]
pub struct SearchResponse {
    results: Vec<SearchHit>,
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    handle(&state, body)
        .await
        .map_err(|error| error.flavored(Flavor::Quiver))
}

async fn handle(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Some(index) = &state.index else {
        return Err(ApiError::validation(
            StatusCode::NOT_FOUND,
            "no index is loaded: start the server with --index DIR",
        ));
    };
    let request: SearchBody = parse_body(body)?;
    if request.query.trim().is_empty() {
        return Err(ApiError::bad_request("`query` is empty"));
    }
    if request.k == 0 || request.k > MAX_K {
        return Err(ApiError::bad_request(format!(
            "`k` must be between 1 and {MAX_K}"
        )));
    }
    if let Some(weight) = request.keyword_weight.filter(|&w| !is_keyword_weight(w)) {
        return Err(ApiError::bad_request(format!(
            "`keyword_weight` {weight} is not a weight: give a number, 0 or more"
        )));
    }
    let filter = SearchFilter::from_names(&request.languages, request.path.as_deref())?;
    // The index as its last commit left it; the query is embedded for that very snapshot, so a
    // re-embedding under the server is followed, not answered with nothing.
    let snapshot = {
        let index = index.clone();
        tokio::task::spawn_blocking(move || index.current())
            .await
            .map_err(|e| ApiError::backend(format!("search task failed: {e}")))??
    };
    let (request, filter) = (Arc::new(request), Arc::new(filter));
    let task_failed =
        |e: tokio::task::JoinError| ApiError::backend(format!("search task failed: {e}"));
    // A hybrid search's keyword ranking is made while its query is embedded.
    let keywords = (request.mode == SearchMode::Hybrid).then(|| {
        let (index, snapshot) = (index.clone(), snapshot.clone());
        let (request, filter) = (request.clone(), filter.clone());
        tokio::task::spawn_blocking(move || {
            index.keyword_side(
                &snapshot,
                &request.search_request(&filter, None, snapshot.settings.keyword_weight),
            )
        })
    });
    let query_vector = match request.mode {
        SearchMode::Keyword => None,
        _ => {
            let settings = &snapshot.settings;
            state.follows(settings)?;
            let embedded = state
                .embed(
                    vec![EmbedInput::Text(request.query.clone())],
                    EmbedRequest {
                        truncate: Some(true),
                        ..EmbedRequest::from(settings.query_options())
                    },
                )
                .await?;
            embedded.vectors.into_iter().next()
        }
    };
    let keywords = match keywords {
        Some(making) => Some(making.await.map_err(task_failed)??),
        None => None,
    };
    let index = index.clone();
    let (query, rerank, k) = (request.query.clone(), request.rerank, request.k);
    let hits = tokio::task::spawn_blocking(move || {
        let search = request.search_request(
            &filter,
            query_vector.as_deref(),
            snapshot.settings.keyword_weight,
        );
        match keywords {
            Some(keywords) => index.search_with_keywords(&snapshot, keywords, &search),
            None => index.search(&snapshot, &search),
        }
    })
    .await
    .map_err(task_failed)??;
    if !rerank {
        return Ok(Json(SearchResponse { results: hits }));
    }
    let texts: Vec<String> = hits.iter().map(|hit| hit.chunk.text.clone()).collect();
    let scores = state
        .rerank(query, texts, RerankRequest::SEARCH)
        .await?
        .probabilities();
    let hits = rerank_hits(hits, k, &scores);
    Ok(Json(SearchResponse { results: hits }))
}
