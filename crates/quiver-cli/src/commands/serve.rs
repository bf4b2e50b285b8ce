//! `quiver serve`: settings from flags, environment variables and a TOML file (in that order of
//! precedence), the model loaded before the port opens, and a clean stop on Ctrl-C or SIGTERM
//! that lets requests in flight finish.

use crate::model::{load_embedder_with, load_reranker, QuantizeArg};
use anyhow::{bail, Context};
use clap::Args;
use quiver_embed::{Device, EmbedderOptions, Quantization};
use quiver_index::{RunModel, Store};
use quiver_server::{BatchSettings, Limits, RequestDefaults, Server, ServerOptions, Timeouts};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Every setting is read from flags, environment variables and the `--config` file (its keys
/// are the fields' names), so each is declared once, here.
#[derive(Args, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// A model folder or a Hugging Face hub id (default: the index's model with --index, else
    /// all-MiniLM-L6-v2).
    #[arg(long, short, env = "QUIVER_MODEL")]
    model: Option<String>,
    /// Address to listen on; 127.0.0.1 keeps the server to this machine. `--hostname` (TEI's
    /// name for it) is accepted too.
    #[arg(long, env = "QUIVER_HOST", alias = "hostname")]
    host: Option<String>,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, env = "QUIVER_PORT")]
    port: Option<u16>,
    /// A cross-encoder (sequence-classification model with one label: bge-reranker,
    /// ms-marco cross-encoders) to serve `POST /rerank` with.
    #[arg(long, env = "QUIVER_RERANK_MODEL", value_name = "MODEL")]
    rerank_model: Option<String>,
    /// Index directory to serve `POST /search` from.
    #[arg(long, env = "QUIVER_INDEX", value_name = "DIR")]
    index: Option<PathBuf>,
    /// With --index: keep the index fresh, re-indexing its tree (the one it was built from) in
    /// the background as files change; searches follow each commit.
    #[arg(long, env = "QUIVER_WATCH", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    watch: Option<bool>,
    #[arg(long, env = "QUIVER_DEVICE", help = super::DEVICE_HELP)]
    device: Option<Device>,
    /// Truncate inputs at this many tokens (default: the model's max_seq_length).
    #[arg(long, env = "QUIVER_MAX_LENGTH")]
    max_length: Option<usize>,
    /// Tokens in one model call (dynamic batching fills calls up to this).
    #[arg(long, env = "QUIVER_MAX_BATCH_TOKENS")]
    max_batch_tokens: Option<usize>,
    /// Texts in one forward pass.
    #[arg(long, env = "QUIVER_BATCH_SIZE")]
    batch_size: Option<usize>,
    /// Milliseconds the model thread waits for more requests before running a batch.
    #[arg(long, env = "QUIVER_MAX_WAIT_MS")]
    max_wait_ms: Option<u64>,
    /// Requests that may wait for the model; more get 429 with Retry-After.
    #[arg(long, env = "QUIVER_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: Option<usize>,
    /// Texts one request may send.
    #[arg(long, env = "QUIVER_MAX_CLIENT_BATCH_SIZE")]
    max_client_batch_size: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long, env = "QUIVER_PAYLOAD_LIMIT")]
    payload_limit: Option<usize>,
    /// Cut over-long inputs instead of answering 413 when a request does not say.
    #[arg(long, env = "QUIVER_AUTO_TRUNCATE")]
    auto_truncate: Option<bool>,
    /// Normalise vectors when a request does not say (default: the model's own setting).
    #[arg(long, env = "QUIVER_NORMALIZE")]
    normalize: Option<bool>,
    /// Keep the weights a second time, packed in half precision for short inputs: single short
    /// queries run about a third faster for 1.5 times the weight memory (default true).
    #[arg(long, env = "QUIVER_FEW_ROW_KERNELS")]
    few_row_kernels: Option<bool>,
    /// Number format of the dense layers: none (f32), int8 or bf16 (default: bf16 where the
    /// CPU multiplies bf16 natively (AMX, AVX-512 BF16), else none). With --index: the index's
    /// own (a different one is refused).
    #[arg(long, value_enum, env = "QUIVER_QUANTIZE")]
    quantize: Option<QuantizeArg>,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "QUIVER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Also answer requests whose `Host` header names HOST (repeatable; `*`: any). Without an
    /// API key the server answers only its own addresses, so web pages cannot reach it by
    /// rebinding a domain to it.
    #[arg(
        long = "allowed-host",
        value_name = "HOST",
        env = "QUIVER_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    #[serde(default)]
    allowed_hosts: Vec<String>,
    /// Seconds a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open (default 10).
    #[arg(long, env = "QUIVER_HEADER_TIMEOUT", value_name = "SECONDS")]
    header_timeout: Option<f64>,
    /// Seconds a client has to send a request's body (default 60).
    #[arg(long, env = "QUIVER_BODY_TIMEOUT", value_name = "SECONDS")]
    body_timeout: Option<f64>,
    /// A TOML file with any of these settings (keys as the flags, with underscores).
    #[arg(long, env = "QUIVER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
}

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 8080;
const DEFAULT_MAX_BATCH_TOKENS: usize = 16384;
const DEFAULT_BATCH_SIZE: usize = 64;
const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;
const DEFAULT_MAX_CLIENT_BATCH_SIZE: usize = 512;
/// TEI's default payload limit.
const DEFAULT_PAYLOAD_LIMIT: usize = 2_000_000;

impl ServeArgs {
    /// Fills what flags and environment left unset (absent, or an empty list) from the TOML
    /// file.
    fn merge_file(self) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut file: ServeArgs =
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        file.index = file.index.map(|dir| relative_to(&path, dir));
        let (serde_json::Value::Object(mut merged), serde_json::Value::Object(file)) =
            (serde_json::to_value(&self)?, serde_json::to_value(file)?)
        else {
            bail!("serve settings are not a table");
        };
        for (key, value) in file {
            let unset = merged
                .get(&key)
                .is_none_or(|own| own.is_null() || own.as_array().is_some_and(Vec::is_empty));
            if unset {
                merged.insert(key, value);
            }
        }
        let mut merged: ServeArgs = serde_json::from_value(serde_json::Value::Object(merged))?;
        merged.config = self.config;
        Ok(merged)
    }
}

/// A path in the config file is read from the file's folder, as a user writing it expects.
fn relative_to(config: &Path, dir: PathBuf) -> PathBuf {
    match config.parent() {
        Some(parent) if dir.is_relative() => parent.join(dir),
        _ => dir,
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let args = args.merge_file()?;
    let watch = args.watch.unwrap_or(false);
    if watch && args.index.is_none() {
        bail!("--watch follows the tree of --index: give --index DIR");
    }
    // clap drops an empty environment variable as if unset; an empty key must not silently
    // mean "no authentication" either way.
    let empty_env = std::env::var_os("QUIVER_API_KEY").is_some_and(|v| v.is_empty());
    if args.api_key.as_deref() == Some("") || (args.api_key.is_none() && empty_env) {
        bail!(
            "the API key is empty (--api-key, QUIVER_API_KEY or api_key in the config file): \
             give a key, or leave it out to serve without authentication"
        );
    }
    let timeouts = Timeouts {
        header: seconds(
            args.header_timeout,
            Timeouts::default().header,
            "--header-timeout",
        )?,
        body: seconds(
            args.body_timeout,
            Timeouts::default().body,
            "--body-timeout",
        )?,
    };
    let RunModel {
        model_id: model,
        quantization,
    } = served_model(
        args.model.as_deref(),
        args.quantize.map(Into::into),
        args.index.as_deref(),
    )?;
    let device = args.device.unwrap_or_default();
    let embedder = load_embedder_with(
        &model,
        &EmbedderOptions {
            max_length: args.max_length,
            device,
            few_row_kernels: args.few_row_kernels.unwrap_or(true),
            quantization,
            ..EmbedderOptions::default()
        },
    )?;
    let reranker = args
        .rerank_model
        .as_deref()
        .map(|spec| load_reranker(spec, device).map(|reranker| (spec, reranker)))
        .transpose()?;
    let options = ServerOptions {
        model_id: quiver_server::public_model_name(&model),
        reranker: reranker
            .map(|(spec, reranker)| (quiver_server::public_model_name(spec), Arc::new(reranker))),
        batching: BatchSettings {
            max_batch_tokens: positive(
                args.max_batch_tokens,
                DEFAULT_MAX_BATCH_TOKENS,
                "--max-batch-tokens",
            )?,
            max_batch_sequences: positive(args.batch_size, DEFAULT_BATCH_SIZE, "--batch-size")?,
            max_queued_requests: positive(
                args.max_concurrent_requests,
                DEFAULT_MAX_CONCURRENT_REQUESTS,
                "--max-concurrent-requests",
            )?,
            max_wait: Duration::from_millis(args.max_wait_ms.unwrap_or(0)),
        },
        limits: Limits {
            max_client_batch_size: positive(
                args.max_client_batch_size,
                DEFAULT_MAX_CLIENT_BATCH_SIZE,
                "--max-client-batch-size",
            )?,
            payload_limit: positive(args.payload_limit, DEFAULT_PAYLOAD_LIMIT, "--payload-limit")?,
        },
        defaults: RequestDefaults {
            auto_truncate: args.auto_truncate.unwrap_or(false),
            normalize: args.normalize,
        },
        api_key: args.api_key.clone(),
        index: args.index,
        backend: device.to_string(),
        allowed_hosts: args.allowed_hosts.clone(),
        timeouts,
    };
    let has_index = options.index.is_some();
    let watched = match (watch, &options.index) {
        (true, Some(index)) => Some(watch_index(index, device)?),
        _ => None,
    };
    let server = Server::new(embedder, options).context("starting the server")?;
    let host = args.host.unwrap_or_else(|| DEFAULT_HOST.to_string());
    let port = args.port.unwrap_or(DEFAULT_PORT);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("listening on {host}:{port}"))?;
        let address = listener.local_addr()?;
        if let Some(warning) = exposure_warning(address, args.api_key.is_some(), has_index) {
            eprintln!("quiver: {warning}");
        }
        eprintln!("quiver: serving {model} on http://{address}");
        server.run(listener, shutdown_signal()).await?;
        drop(watched);
        eprintln!("quiver: stopped");
        Ok(())
    })
}

/// Brings the index up to date with the tree it was built from, then watches that tree. The
/// updater loads the index's model once more for itself: the server's copy may run with
/// settings (a shorter --max-length) that would change how files are chunked.
fn watch_index(index: &Path, device: Device) -> anyhow::Result<quiver_index::Watcher> {
    let root = Store::open(index)?
        .status()?
        .root
        .with_context(|| format!("{} records no tree to watch", index.display()))?;
    let updater = super::watch::updater(&super::watch::TreeArgs {
        path: PathBuf::from(&root),
        index: Some(index.to_path_buf()),
        model: None,
        quantize: None,
        device,
    })?;
    let report = updater
        .update(&quiver_index::NoProgress)
        .with_context(|| format!("updating {} from {root}", index.display()))?;
    eprintln!("quiver: index up to date: {}", report.summary());
    eprintln!("quiver: watching {root} for changes");
    Ok(quiver_index::watch(
        updater,
        quiver_index::WatchOptions::default(),
        |outcome| match outcome {
            Ok(report) => eprintln!("quiver: {}", report.summary()),
            Err(error) => eprintln!("quiver: updating the index failed: {error}"),
        },
    )?)
}

/// What to shout when a server without a key listens where others can reach it.
fn exposure_warning(
    address: std::net::SocketAddr,
    has_key: bool,
    has_index: bool,
) -> Option<String> {
    (!address.ip().is_loopback() && !has_key).then(|| {
        format!(
            "WARNING: listening on {address} WITHOUT AN API KEY: anyone who can reach this \
             address can use the model{}. Pass --api-key (or QUIVER_API_KEY) unless the \
             network is yours alone.",
            if has_index { " and read the index" } else { "" }
        )
    })
}

fn seconds(value: Option<f64>, default: Duration, flag: &str) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => bail!("{flag} must be a positive number of seconds (got {s})"),
    }
}

fn positive(value: Option<usize>, default: usize, flag: &str) -> anyhow::Result<usize> {
    match value {
        Some(0) => bail!("{flag} must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// The model to serve and its number format: with an index, the index's (a different one
/// asked for is refused); without, the one asked for, else the default.
fn served_model(
    model: Option<&str>,
    quantization: Option<Quantization>,
    index: Option<&Path>,
) -> anyhow::Result<RunModel> {
    let Some(dir) = index else {
        return Ok(RunModel::resolve(None, model, quantization));
    };
    let store = Store::open(dir).with_context(|| format!("opening index {}", dir.display()))?;
    let settings = store.indexed_settings()?;
    Ok(RunModel::following(
        dir,
        Some(&settings),
        model,
        quantization,
    )?)
}

/// Ctrl-C, or SIGTERM where there is one.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    eprintln!("quiver: stopping; finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::exposure_warning;

    #[test]
    fn only_a_reachable_server_without_a_key_is_warned_about() {
        let at = |text: &str| text.parse().unwrap();
        assert!(exposure_warning(at("127.0.0.1:8080"), false, true).is_none());
        assert!(exposure_warning(at("[::1]:8080"), false, false).is_none());
        assert!(exposure_warning(at("0.0.0.0:8080"), true, true).is_none());
        let warning = exposure_warning(at("0.0.0.0:8080"), false, true).expect("a warning");
        assert!(warning.contains("WITHOUT AN API KEY"), "{warning}");
        assert!(warning.contains("read the index"), "{warning}");
        assert!(exposure_warning(at("192.168.1.5:80"), false, false).is_some());
    }
}
