//! Reranking requests: a query and candidate texts scored by a cross-encoder
//! ([`quiver_embed::Reranker`]), for `POST /rerank`, `quiver search --rerank` and the search
//! routes that rerank their top hits.
//!
//! Each request is one model call already (every pair of it, batched by tokens), so requests
//! are not merged as embedding requests are: they take turns on the model, so that two do not
//! split the cores and both finish late, and a full queue is refused at once
//! ([`EngineError::Overloaded`]).

use crate::{BatchSettings, EngineError};
use quiver_embed::{sigmoid, BatchBudget, Reranker, TruncationSide};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// What one rerank request asks.
#[derive(Debug, Clone, Copy, Default)]
pub struct RerankRequest {
    /// Cut an over-long pair instead of refusing it.
    pub truncate: bool,
    pub truncation: TruncationSide,
}

impl RerankRequest {
    /// How a search reranks its hits: a chunk longer than the model reads is cut, not refused.
    pub const SEARCH: RerankRequest = RerankRequest {
        truncate: true,
        truncation: TruncationSide::Right,
    };
}

/// The logit of each (query, text) pair, in input order, with the tokens they took.
#[derive(Debug, Clone)]
pub struct Reranked {
    pub scores: Vec<f32>,
    pub tokens: usize,
}

impl Reranked {
    /// Each score as a probability (the logit's sigmoid, 0..1): what TEI's `/rerank` reports
    /// unless asked for raw scores, and what reranked searches order by.
    pub fn probabilities(&self) -> Vec<f32> {
        self.scores.iter().copied().map(sigmoid).collect()
    }
}

/// A loaded cross-encoder, shared by every caller.
pub struct Reranking {
    reranker: Arc<Reranker>,
    /// Requests admitted (running or waiting for the model).
    admitted: Arc<Semaphore>,
    /// Held for the length of one request's model call.
    turn: Arc<Mutex<()>>,
    budget: BatchBudget,
}

impl Reranking {
    /// `settings` bound the forward passes (`max_batch_tokens`, `max_batch_sequences`) and the
    /// requests that may wait (`max_queued_requests`).
    pub fn new(reranker: Arc<Reranker>, settings: BatchSettings) -> Self {
        Reranking {
            reranker,
            admitted: Arc::new(Semaphore::new(settings.max_queued_requests.max(1))),
            turn: Arc::new(Mutex::new(())),
            budget: BatchBudget {
                max_sequences: settings.max_batch_sequences,
                max_tokens: settings.max_batch_tokens,
            },
        }
    }

    pub fn reranker(&self) -> &Arc<Reranker> {
        &self.reranker
    }

    /// Scores `texts` against `query` from async code, on a blocking thread.
    pub async fn score(
        &self,
        query: String,
        texts: Vec<String>,
        request: RerankRequest,
    ) -> Result<Reranked, EngineError> {
        let permit = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| EngineError::Overloaded)?;
        let reranker = self.reranker.clone();
        let turn = self.turn.clone();
        let budget = self.budget;
        tokio::task::spawn_blocking(move || {
            let reranked = score(&reranker, &turn, budget, &query, &texts, request);
            drop(permit);
            reranked
        })
        .await
        .map_err(|_| EngineError::Stopped)?
    }

    /// Scores `texts` against `query`, blocking this thread (not an async runtime's).
    pub fn score_blocking<S: AsRef<str>>(
        &self,
        query: &str,
        texts: &[S],
        request: RerankRequest,
    ) -> Result<Reranked, EngineError> {
        let _permit = self
            .admitted
            .try_acquire()
            .map_err(|_| EngineError::Overloaded)?;
        score(
            &self.reranker,
            &self.turn,
            self.budget,
            query,
            texts,
            request,
        )
    }
}

fn score<S: AsRef<str>>(
    reranker: &Reranker,
    turn: &Mutex<()>,
    budget: BatchBudget,
    query: &str,
    texts: &[S],
    request: RerankRequest,
) -> Result<Reranked, EngineError> {
    let pairs = reranker.encode(query, texts, request.truncation)?;
    if !request.truncate {
        if let Some(input) = pairs.truncated.iter().position(|&cut| cut) {
            return Err(EngineError::TooLong {
                input,
                max_length: reranker.max_length(),
            });
        }
    }
    let tokens = pairs.token_ids.iter().map(Vec::len).sum();
    // A caller that panicked while holding the turn left nothing half-done: the model is
    // read-only, so its poisoned lock is as good as a clean one.
    let _turn = turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let scores = reranker.score(&pairs, budget)?;
    Ok(Reranked { scores, tokens })
}
