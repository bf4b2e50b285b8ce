//! Prometheus metrics served at `GET /metrics`: requests and their latency by route and status,
//! what each model call carried (sequences, tokens) and took, the queue's depth, and tokens
//! embedded (their rate is tokens/s).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram>,
    batch_sequences: Histogram,
    batch_tokens: Histogram,
    inference_seconds: Histogram,
    /// Requests waiting for the model.
    pub queue_depth: Gauge,
    tokens: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("quiver");
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let latency =
            Family::<RouteOnly, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "request_duration_seconds",
            "Time from request to response, by route",
            latency.clone(),
        );
        let batch_sequences = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "batch_sequences",
            "Texts in one model call (dynamic batching merges requests)",
            batch_sequences.clone(),
        );
        let batch_tokens = Histogram::new(exponential_buckets(8.0, 2.0, 12));
        registry.register(
            "batch_tokens",
            "Tokens in one model call",
            batch_tokens.clone(),
        );
        let inference_seconds = latency_histogram();
        registry.register(
            "inference_duration_seconds",
            "Time one model call took",
            inference_seconds.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests waiting for the model",
            queue_depth.clone(),
        );
        let tokens = Counter::default();
        registry.register(
            "embedded_tokens",
            "Tokens run through the model (rate() of this is tokens/s)",
            tokens.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            batch_sequences,
            batch_tokens,
            inference_seconds,
            queue_depth,
            tokens,
        }
    }

    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteOnly {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_batch(&self, sequences: usize, tokens: usize, elapsed: Duration) {
        self.batch_sequences.observe(sequences as f64);
        self.batch_tokens.observe(tokens as f64);
        self.inference_seconds.observe(elapsed.as_secs_f64());
        self.tokens.inc_by(tokens as u64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl quiver_engine::BatchObserver for Metrics {
    fn queue_changed(&self, delta: i64) {
        self.queue_depth.inc_by(delta);
    }

    fn batch_ran(&self, sequences: usize, tokens: usize, elapsed: Duration) {
        self.record_batch(sequences, tokens, elapsed);
    }
}
