//! Quiver's embedding engine: the one place where texts from many callers become vectors.
//!
//! What it does: holds one loaded model and a model thread; [`Engine::embed`] (async) and
//! [`Engine::embed_blocking`] (any thread) tokenise a request's texts with its options (prompt,
//! task, truncation side), refuse over-long ones unless asked to truncate, queue the sequences
//! for the model thread, which merges what many callers queued into token-budgeted forward
//! passes ([`batcher`]), and cut and normalise each request's vectors as it asked. A full queue
//! is refused at once ([`EngineError::Overloaded`]) rather than held in memory.
//! [`Reranking`] does the same for a cross-encoder: (query, text) pairs in, relevance logits out.
//! What it does not: speak HTTP or any other protocol (front ends translate), load models
//! (`quiver-embed` does), or read indexes.
//!
//! Entry point: [`Engine::start`].

mod batcher;
mod rerank;

pub use batcher::BatchSettings;
pub use rerank::{RerankRequest, Reranked, Reranking};

use batcher::{Batcher, Output, Outputs};
use quiver_embed::{EmbedError, EmbedInput, EmbedOptions, Embedder, EncodedTexts, OutputOptions};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Requests up to this size are tokenised on the async thread that received them: tens of
/// microseconds, less than the hand-off to a blocking thread costs.
const INLINE_TOKENIZE_BYTES: usize = 2048;

/// Hears what the model thread does, for metrics.
pub trait BatchObserver: Send + Sync {
    /// A request joined (`+1`) or left (`-1`) the queue.
    fn queue_changed(&self, _delta: i64) {}
    /// One model call ran `sequences` texts of `tokens` tokens in all.
    fn batch_ran(&self, _sequences: usize, _tokens: usize, _elapsed: Duration) {}
}

/// Observes nothing.
pub struct NoObserver;
impl BatchObserver for NoObserver {}

/// What one request asks: the embedding options (prompt, task, dimensions, normalisation,
/// truncation side) and whether an over-long text is cut or refused.
#[derive(Debug, Clone, Default)]
pub struct EmbedRequest {
    pub options: EmbedOptions,
    pub truncate: bool,
}

/// Vectors for a request's texts, in order, with the tokens they took.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// The hidden state of every token of each of a request's inputs, in order.
#[derive(Debug, Clone)]
pub struct TokenStates {
    pub states: Vec<Vec<Vec<f32>>>,
    pub tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("input {input} is longer than the model's {max_length} tokens")]
    TooLong { input: usize, max_length: usize },
    #[error("the request queue is full")]
    Overloaded,
    #[error("the model thread stopped")]
    Stopped,
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The model call failed for the whole batch the request was part of.
    #[error("{0}")]
    Model(String),
}

/// A loaded model with its model thread running.
pub struct Engine {
    embedder: Arc<Embedder>,
    batcher: Batcher,
}

impl Engine {
    /// Starts the model thread, which runs until the engine is dropped; the handle joins it.
    pub fn start(
        embedder: Arc<Embedder>,
        settings: BatchSettings,
        observer: Arc<dyn BatchObserver>,
    ) -> std::io::Result<(Engine, JoinHandle<()>)> {
        let (batcher, thread) = Batcher::start(embedder.clone(), settings, observer)?;
        Ok((Engine { embedder, batcher }, thread))
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    /// Embeds `texts` as `request` asks, from async code: large inputs are tokenised on a
    /// blocking thread, and the model call is awaited, not waited on.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        request: &EmbedRequest,
    ) -> Result<Embedded, EngineError> {
        self.embed_inputs(texts.into_iter().map(EmbedInput::Text).collect(), request)
            .await
    }

    /// Like [`Engine::embed`] for inputs that may be token ids (see
    /// [`Embedder::encode_inputs`]).
    pub async fn embed_inputs(
        &self,
        inputs: Vec<EmbedInput>,
        request: &EmbedRequest,
    ) -> Result<Embedded, EngineError> {
        // Checked first: a width the model cannot give is refused before any model time.
        let output = self.embedder.output_options(&request.options)?;
        let encoded = self.encode(inputs, &request.options).await?;
        let (receiver, tokens) = self.submit(encoded, request, Output::Pooled)?;
        let reply = receiver.await.map_err(|_| EngineError::Stopped)?;
        finish(reply, tokens, output)
    }

    /// The model's hidden state of every token of each input (see
    /// [`Embedder::token_states`]): no pooling, projection or normalisation.
    pub async fn token_states(
        &self,
        inputs: Vec<EmbedInput>,
        request: &EmbedRequest,
    ) -> Result<TokenStates, EngineError> {
        let encoded = self.encode(inputs, &request.options).await?;
        let (receiver, tokens) = self.submit(encoded, request, Output::TokenStates)?;
        match receiver.await.map_err(|_| EngineError::Stopped)? {
            Ok(Outputs::TokenStates(states)) => Ok(TokenStates { states, tokens }),
            Ok(Outputs::Pooled(_)) => Err(EngineError::Model("pooled outputs came back".into())),
            Err(error) => Err(EngineError::Model(error)),
        }
    }

    /// Embeds `texts` as `request` asks, blocking this thread (not an async runtime's).
    pub fn embed_blocking<S: AsRef<str>>(
        &self,
        texts: &[S],
        request: &EmbedRequest,
    ) -> Result<Embedded, EngineError> {
        let output = self.embedder.output_options(&request.options)?;
        let encoded = self.embedder.encode(texts, &request.options)?;
        let (receiver, tokens) = self.submit(encoded, request, Output::Pooled)?;
        let reply = receiver.blocking_recv().map_err(|_| EngineError::Stopped)?;
        finish(reply, tokens, output)
    }

    /// Tokenises on this thread when the texts are small, else on a blocking thread.
    async fn encode(
        &self,
        inputs: Vec<EmbedInput>,
        options: &EmbedOptions,
    ) -> Result<EncodedTexts, EngineError> {
        let bytes: usize = inputs
            .iter()
            .map(|input| match input {
                EmbedInput::Text(text) => text.len(),
                EmbedInput::TokenIds(_) => 0,
            })
            .sum();
        if bytes <= INLINE_TOKENIZE_BYTES {
            return Ok(self.embedder.encode_inputs(&inputs, options)?);
        }
        let embedder = self.embedder.clone();
        let options = options.clone();
        Ok(
            tokio::task::spawn_blocking(move || embedder.encode_inputs(&inputs, &options))
                .await
                .map_err(|_| EngineError::Stopped)??,
        )
    }

    fn submit(
        &self,
        encoded: EncodedTexts,
        request: &EmbedRequest,
        output: Output,
    ) -> Result<(tokio::sync::oneshot::Receiver<batcher::Reply>, usize), EngineError> {
        if !request.truncate {
            if let Some(input) = encoded.truncated.iter().position(|&cut| cut) {
                return Err(EngineError::TooLong {
                    input,
                    max_length: self.embedder.max_length(),
                });
            }
        }
        let tokens = encoded.token_ids.iter().map(Vec::len).sum();
        let receiver = self
            .batcher
            .submit(encoded.token_ids, encoded.setup, output)
            .map_err(|_| EngineError::Overloaded)?;
        Ok((receiver, tokens))
    }
}

/// Cuts and normalises a request's pooled vectors as it asked.
fn finish(
    reply: batcher::Reply,
    tokens: usize,
    output: OutputOptions,
) -> Result<Embedded, EngineError> {
    let mut vectors = match reply.map_err(EngineError::Model)? {
        Outputs::Pooled(vectors) => vectors,
        Outputs::TokenStates(_) => return Err(EngineError::Model("token states came back".into())),
    };
    for vector in &mut vectors {
        output.apply(vector);
    }
    Ok(Embedded { vectors, tokens })
}
