//! Dynamic batching: requests queue their token sequences; one model thread takes what is
//! queued, up to a token budget, and runs it as one call, so that under load many small
//! requests share forward passes and throughput approaches offline `quiver embed`.
//!
//! The queue is bounded in requests: when it is full a request is refused at once (the route
//! answers 429) rather than held in memory.

use crate::BatchObserver;
use quiver_embed::{BatchBudget, Embedder, SequenceSetup};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How the model thread forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Tokens in one model call; a single request over this still runs, alone.
    pub max_batch_tokens: usize,
    /// Texts in one forward pass.
    pub max_batch_sequences: usize,
    /// Requests that may wait for the model before new ones get 429.
    pub max_queued_requests: usize,
    /// How long the model thread waits for more requests to fill a batch once it has one.
    /// Zero: it takes what is queued and goes; requests that arrive meanwhile form the next.
    pub max_wait: Duration,
}

/// What a request wants of the model for each of its sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One pooled vector (model width, not normalised).
    Pooled,
    /// The hidden state of every token.
    TokenStates,
}

/// A request's outputs, in order.
pub enum Outputs {
    Pooled(Vec<Vec<f32>>),
    TokenStates(Vec<Vec<Vec<f32>>>),
}

/// A request's outputs, or why the model failed.
pub type Reply = Result<Outputs, String>;

/// One request's sequences, outputs coming back on `reply`.
struct Job {
    sequences: Vec<Vec<u32>>,
    setup: SequenceSetup,
    output: Output,
    reply: oneshot::Sender<Reply>,
}

impl Job {
    fn tokens(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }
}

/// The queue was full.
#[derive(Debug)]
pub struct QueueFull;

/// The sending half of the queue.
pub struct Batcher {
    sender: SyncSender<Job>,
    observer: Arc<dyn BatchObserver>,
}

impl Batcher {
    /// Starts the model thread. It runs until every [`Batcher`] is dropped.
    pub fn start(
        embedder: Arc<Embedder>,
        settings: BatchSettings,
        observer: Arc<dyn BatchObserver>,
    ) -> std::io::Result<(Batcher, JoinHandle<()>)> {
        let (sender, receiver) = sync_channel(settings.max_queued_requests.max(1));
        let worker = ModelThread {
            embedder,
            settings,
            observer: observer.clone(),
            receiver,
            held_over: None,
        };
        // The model thread is itself a worker of the pool the model's parallel loops run on:
        // its dozens of parallel sections per forward pass then split work with a neighbour
        // instead of injecting each one into the pool from outside and sleeping until it ends.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("quiver-model-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let handle = std::thread::Builder::new()
            .name("quiver-model".into())
            .spawn(move || pool.install(|| worker.run()))?;
        Ok((Batcher { sender, observer }, handle))
    }

    /// Queues sequences for the model; their outputs come back on the returned receiver, in
    /// order.
    pub fn submit(
        &self,
        sequences: Vec<Vec<u32>>,
        setup: SequenceSetup,
        output: Output,
    ) -> Result<oneshot::Receiver<Reply>, QueueFull> {
        let (reply, receiver) = oneshot::channel();
        let job = Job {
            sequences,
            setup,
            output,
            reply,
        };
        // Counted before sending so the model thread's decrement never runs first.
        self.observer.queue_changed(1);
        match self.sender.try_send(job) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.observer.queue_changed(-1);
                Err(QueueFull)
            }
        }
    }
}

struct ModelThread {
    embedder: Arc<Embedder>,
    settings: BatchSettings,
    observer: Arc<dyn BatchObserver>,
    receiver: Receiver<Job>,
    /// A job taken from the queue that did not fit the last batch; it opens the next.
    held_over: Option<Job>,
}

impl ModelThread {
    fn run(mut self) {
        while let Some(first) = self.next_job() {
            let jobs = self.fill_batch(first);
            self.run_batch(jobs);
        }
    }

    fn next_job(&mut self) -> Option<Job> {
        if let Some(job) = self.held_over.take() {
            return Some(job);
        }
        let job = self.receiver.recv().ok()?;
        self.observer.queue_changed(-1);
        Some(job)
    }

    /// Adds queued jobs to `first` until the token budget is reached, the queue is empty and
    /// the wait is over.
    fn fill_batch(&mut self, first: Job) -> Vec<Job> {
        let deadline = Instant::now() + self.settings.max_wait;
        let mut tokens = first.tokens();
        let mut jobs = vec![first];
        while tokens < self.settings.max_batch_tokens {
            let waited = match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => self.receiver.recv_timeout(left),
                _ => self
                    .receiver
                    .try_recv()
                    .map_err(|_| RecvTimeoutError::Timeout),
            };
            let Ok(job) = waited else { break };
            self.observer.queue_changed(-1);
            let job_tokens = job.tokens();
            if tokens + job_tokens > self.settings.max_batch_tokens {
                self.held_over = Some(job);
                break;
            }
            tokens += job_tokens;
            jobs.push(job);
        }
        jobs
    }

    fn run_batch(&self, jobs: Vec<Job>) {
        // A client that went away no longer needs its outputs.
        let (pooled, token_states): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .filter(|j| !j.reply.is_closed())
            .partition(|job| job.output == Output::Pooled);
        for jobs in [pooled, token_states] {
            if !jobs.is_empty() {
                self.run_jobs(jobs);
            }
        }
    }

    /// One model call for jobs that all want the same output.
    fn run_jobs(&self, jobs: Vec<Job>) {
        let sequences: Vec<&[u32]> = jobs
            .iter()
            .flat_map(|job| job.sequences.iter().map(Vec::as_slice))
            .collect();
        let setups: Vec<SequenceSetup> = jobs
            .iter()
            .flat_map(|job| std::iter::repeat_n(job.setup, job.sequences.len()))
            .collect();
        let tokens: usize = sequences.iter().map(|s| s.len()).sum();
        let budget = BatchBudget {
            max_sequences: self.settings.max_batch_sequences,
            max_tokens: self.settings.max_batch_tokens,
        };
        let started = Instant::now();
        let outputs = match jobs[0].output {
            Output::Pooled => self
                .embedder
                .embed_sequences(&sequences, &setups, budget, |_| {
                    std::ops::ControlFlow::Continue(())
                })
                .map(|vectors| split(vectors, &jobs, Outputs::Pooled)),
            Output::TokenStates => self
                .embedder
                .token_states(&sequences, &setups, budget)
                .map(|states| split(states, &jobs, Outputs::TokenStates)),
        };
        self.observer
            .batch_ran(sequences.len(), tokens, started.elapsed());
        match outputs {
            Ok(outputs) => {
                for (job, output) in jobs.into_iter().zip(outputs) {
                    let _ = job.reply.send(Ok(output));
                }
            }
            Err(error) => {
                tracing::error!("model call failed: {error}");
                for job in jobs {
                    let _ = job.reply.send(Err(error.to_string()));
                }
            }
        }
    }
}

/// Hands each job its own outputs, in order.
fn split<T>(outputs: Vec<T>, jobs: &[Job], wrap: fn(Vec<T>) -> Outputs) -> Vec<Outputs> {
    let mut outputs = outputs.into_iter();
    jobs.iter()
        .map(|job| wrap(outputs.by_ref().take(job.sequences.len()).collect()))
        .collect()
}
