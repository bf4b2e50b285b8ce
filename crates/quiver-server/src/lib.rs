//! Quiver's HTTP server: embeddings over the APIs people already call, and search over an index.
//!
//! What it does: serves one loaded model over OpenAI's `POST /v1/embeddings` and Text
//! Embeddings Inference's `POST /embed`, `/similarity` and `/tokenize`; searches an index with
//! `POST /search`; reports itself on `GET /health`, `/info` and `/metrics`. Routes translate
//! JSON to calls of the engine (`quiver-engine`, which merges concurrent requests into
//! token-budgeted model calls; a full queue answers 429) and of the index reader
//! (`quiver_index::IndexReader`). What it does not: embed or search by itself, load models or
//! parse flags (the CLI does), or write indexes.
//!
//! Entry point: [`Server::new`], then [`Server::run`] on a bound listener.

mod error;
mod input;
mod metrics;
mod routes;
mod state;

pub use error::{ApiError, Flavor};
pub use quiver_engine::BatchSettings;
pub use state::{Limits, RequestDefaults};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics::Metrics;
use quiver_embed::{EmbedOptions, Embedder, Reranker};
use quiver_engine::{Engine, Reranking};

use quiver_index::IndexReader;
use state::AppState;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Everything about a server but its model.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The model as the user named it; responses echo it as `model`.
    pub model_id: String,
    /// A cross-encoder for `POST /rerank`, with its name as the user gave it.
    pub reranker: Option<(String, Arc<Reranker>)>,
    pub batching: BatchSettings,
    pub limits: Limits,
    pub defaults: RequestDefaults,
    /// Bearer token required on every route but `/health`.
    pub api_key: Option<String>,
    /// Index served by `POST /search`.
    pub index: Option<PathBuf>,
    /// Where the model runs, as `/info` reports it (`cpu`, `cuda:0`).
    pub backend: String,
    /// `Host` header values accepted besides the bound address's own (see [`HostCheck`]);
    /// `*` accepts any.
    pub allowed_hosts: Vec<String>,
    pub timeouts: Timeouts,
}

/// How long a client may take, so that connections that send slowly or nothing at all do not
/// hold the server's sockets.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a request's headers to arrive, counted from the connection's start or the previous
    /// response: also how long an idle keep-alive connection stays open.
    pub header: Duration,
    /// For a request's whole body to arrive once its headers have.
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(60),
        }
    }
}

/// The name a model is shown by to clients: a hub id as given, a local folder by its own name
/// only (its path on the server is no client's business).
pub fn public_model_name(spec: &str) -> String {
    let path = std::path::Path::new(spec);
    match path.file_name() {
        Some(name) if path.is_absolute() || path.is_dir() => name.to_string_lossy().into_owned(),
        _ => spec.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the index for /search: {0}")]
    Index(#[from] quiver_index::IndexError),
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
    #[error("the API key is empty: give a key, or none to serve without authentication")]
    EmptyApiKey,
    #[error("cannot start the model thread: {0}")]
    Thread(std::io::Error),
}

/// A loaded model, its model thread running, ready to serve.
pub struct Server {
    state: Arc<AppState>,
    model_thread: JoinHandle<()>,
    allowed_hosts: Vec<String>,
    timeouts: Timeouts,
}

impl Server {
    /// Opens the index (if any), runs one warm-up embedding so the first request is not a cold
    /// start, and starts the model thread.
    pub fn new(embedder: Embedder, options: ServerOptions) -> Result<Server, ServerError> {
        let index = options
            .index
            .as_deref()
            .map(IndexReader::open)
            .transpose()?;
        if let Some(index) = &index {
            let index_dimension = index.latest().settings.dimension;
            if index_dimension > embedder.dimension() {
                return Err(ServerError::IndexDimensions {
                    dir: index.dir().to_path_buf(),
                    index_dimension,
                    model_dimension: embedder.dimension(),
                });
            }
        }
        if options.api_key.as_deref() == Some("") {
            return Err(ServerError::EmptyApiKey);
        }
        embedder.embed(&["warm up the model"], &EmbedOptions::default())?;
        let embedder = Arc::new(embedder);
        let metrics = Arc::new(Metrics::new());
        let (engine, model_thread) =
            Engine::start(embedder.clone(), options.batching, metrics.clone())
                .map_err(ServerError::Thread)?;
        let reranking = options
            .reranker
            .map(|(name, reranker)| (name, Reranking::new(reranker, options.batching)));
        let state = Arc::new(AppState {
            model_id: options.model_id,
            reranking,
            embedder,
            engine,
            limits: options.limits,
            defaults: options.defaults,
            metrics,
            index_model: index.as_ref().map(|i| i.latest().settings.model.clone()),
            index: index.map(Arc::new),
            api_key: options.api_key,
            batching: options.batching,
            backend: options.backend,
        });
        Ok(Server {
            state,
            model_thread,
            allowed_hosts: options.allowed_hosts,
            timeouts: options.timeouts,
        })
    }

    /// Every route, with authentication, metrics and the body-size limit.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight and returns.
    /// Each connection is HTTP/1.1 with the [`Timeouts`]; without an API key, `Host` headers
    /// are checked ([`HostCheck`]).
    pub async fn run<F>(self, listener: tokio::net::TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let connection = Connection {
            authenticated: self.state.api_key.is_some(),
            allowed_hosts: self.allowed_hosts.clone(),
            timeouts: self.timeouts,
            payload_limit: self.state.limits.payload_limit,
        };
        serve(self.router(), listener, &connection, shutdown).await?;
        // Dropping the last queue sender (the router held the state too) lets the model
        // thread finish its loop.
        drop(self.state);
        let _ = tokio::task::spawn_blocking(move || self.model_thread.join()).await;
        Ok(())
    }
}

/// What every HTTP front end (this server, `quiver mcp --http`) asks of its connections.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Whether the routes require an API key; without one, `Host` headers are checked.
    pub authenticated: bool,
    /// See [`HostCheck`].
    pub allowed_hosts: Vec<String>,
    pub timeouts: Timeouts,
    /// Largest request body, in bytes.
    pub payload_limit: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then finishes the requests in flight
/// and returns. Each connection is HTTP/1.1 with the [`Timeouts`]; a body must arrive whole
/// within its timeout and limit; without an API key, `Host` headers are checked
/// ([`HostCheck`]).
pub async fn serve<F>(
    app: Router,
    listener: tokio::net::TcpListener,
    connection: &Connection,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let check = match connection.authenticated {
        // A page in the user's browser cannot present a key it does not know: rebinding a
        // name to this address gets it nothing.
        true => None,
        false => HostCheck::new(listener.local_addr()?, &connection.allowed_hosts),
    };
    let body_timeout = connection.timeouts.body;
    let payload_limit = connection.payload_limit;
    let app = app
        .layer(middleware::from_fn(move |request, next| {
            read_body_in_time(request, next, body_timeout, payload_limit)
        }))
        .layer(middleware::from_fn_with_state(
            check.map(Arc::new),
            check_host,
        ));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors, usually: wait for some to close.
                        tracing::warn!("accepting a connection failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(connection.timeouts.header)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!("connection closed: {error}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Reads a request's whole body within `timeout` (a client sending a byte a second is cut
/// off), refusing one over `limit` bytes as the routes would.
async fn read_body_in_time(
    request: Request,
    next: Next,
    timeout: Duration,
    limit: usize,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => ApiError::validation(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is too large (see --payload-limit)",
        )
        .into_response(),
        Err(_) => ApiError::validation(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// Which `Host` headers a server without an API key answers: names of its own address, so a
/// web page that rebinds some domain to 127.0.0.1 cannot talk to it from the user's browser.
/// A loopback server answers `localhost` and loopback addresses; one bound to a specific
/// address, that address; one bound to all addresses, any IP address; each also the names
/// given with `--allowed-host` (`*`: any).
#[derive(Debug, Clone)]
pub struct HostCheck {
    bound: std::net::IpAddr,
    allowed: Vec<String>,
}

impl HostCheck {
    /// `None`: every host is allowed.
    pub fn new(bound: std::net::SocketAddr, allowed: &[String]) -> Option<HostCheck> {
        if allowed.iter().any(|host| host == "*") {
            return None;
        }
        Some(HostCheck {
            bound: bound.ip(),
            allowed: allowed
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
        })
    }

    pub fn allows(&self, host_header: &str) -> bool {
        let host = host_name(host_header).to_ascii_lowercase();
        if self.allowed.contains(&host) {
            return true;
        }
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok();
        if self.bound.is_unspecified() {
            return ip.is_some() || host == "localhost";
        }
        if self.bound.is_loopback()
            && (host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()))
        {
            return true;
        }
        ip == Some(self.bound)
    }
}

/// The host part of a `Host` header: without its port, brackets kept for IPv6.
fn host_name(header: &str) -> &str {
    if header.starts_with('[') {
        return header.find(']').map_or(header, |end| &header[..=end]);
    }
    match header.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => header,
    }
}

async fn check_host(
    State(check): State<Option<Arc<HostCheck>>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    match (check, host) {
        (Some(check), Some(host)) if !check.allows(&host) => ApiError::validation(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} is not an address of this server. A server without --api-key \
                 answers only its own addresses (against DNS rebinding); start it with \
                 --allowed-host {} to accept this name",
                host_name(&host)
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(routes::tei::compat))
        .route("/v1/embeddings", post(routes::openai::embeddings))
        .route("/embed", post(routes::tei::embed))
        .route("/embed_all", post(routes::tei::embed_all))
        .route("/embed_sparse", post(routes::tei::embed_sparse))
        .route("/decode", post(routes::tei::decode))
        .route("/rerank", post(routes::tei::rerank))
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
    match presents_key(request.headers(), key) {
        true => next.run(request).await,
        false => {
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

/// Whether `headers` carry `Authorization: Bearer <key>`.
pub fn presents_key(headers: &axum::http::HeaderMap, key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| constant_time_eq(token.as_bytes(), key.as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::HostCheck;

    #[test]
    fn a_server_answers_only_hosts_that_name_it() {
        let check = |bound: &str, allowed: &[&str]| {
            let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
            HostCheck::new(bound.parse().unwrap(), &allowed)
        };
        let loopback = check("127.0.0.1:8080", &[]).expect("checked");
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LOCALHOST",
        ] {
            assert!(loopback.allows(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "10.0.0.1",
            "127.0.0.1.nip.io",
        ] {
            assert!(!loopback.allows(host), "{host}");
        }
        let everywhere = check("0.0.0.0:8080", &["quiver.internal"]).expect("checked");
        assert!(everywhere.allows("192.168.1.5:8080"));
        assert!(everywhere.allows("quiver.internal:8080"));
        assert!(!everywhere.allows("attacker.example"));
        let one = check("192.168.1.5:8080", &[]).expect("checked");
        assert!(one.allows("192.168.1.5"));
        assert!(!one.allows("192.168.1.6"));
        assert!(check("127.0.0.1:8080", &["*"]).is_none());
    }
}
