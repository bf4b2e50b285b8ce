//! Quiver's MCP server: the index as tools a coding agent calls (Claude Code, Cursor, VS
//! Code, Codex), over stdio ([`serve_stdio`]) or streamable HTTP ([`router`]).
//!
//! What it does: answers the Model Context Protocol's `initialize`, `ping`, `tools/list` and
//! `tools/call` (JSON-RPC 2.0); its tools ([`tools`]) search the index, read whole
//! definitions, find symbols, report status and update the index, sending progress
//! notifications while an update runs when the client asked for them. What it does not: embed,
//! search or index by itself (`quiver-index` and `quiver-embed` do, through the same calls
//! the CLI makes), watch files (`quiver_index::watch` does, started by the CLI), or parse flags.
//!
//! Entry point: [`McpServer::new`] over an [`IndexUpdater`], then [`serve_stdio`] or
//! [`router`].

mod http;
pub mod protocol;
mod stdio;
pub mod tools;

pub use http::router;
pub use stdio::serve_stdio;

use protocol::{Incoming, INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND};
use quiver_embed::Embedder;
use quiver_index::{IndexError, IndexProgress, IndexReader, IndexSettings, IndexUpdater};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tools::ToolError;

/// What the server tells an agent about itself on `initialize`.
const INSTRUCTIONS: &str = "Quiver searches this codebase by meaning and by keywords. Start with \
`search` (give `max_tokens` to get whole definitions that fit your context budget); use \
`read_definition` on a hit to see all of it, `find_symbol` when you know a name. The index \
follows file edits by itself within a few seconds.";

/// One index and the model it was built with, answering MCP messages from any thread.
pub struct McpServer {
    updater: Arc<IndexUpdater>,
    /// Opened on first use: the first update may still be creating the index.
    reader: Mutex<Option<Arc<IndexReader>>>,
    watching: AtomicBool,
}

impl McpServer {
    pub fn new(updater: Arc<IndexUpdater>) -> McpServer {
        McpServer {
            updater,
            reader: Mutex::new(None),
            watching: AtomicBool::new(false),
        }
    }

    /// Tells `index_status` whether a watcher keeps the index fresh.
    pub fn set_watching(&self, watching: bool) {
        self.watching.store(watching, Ordering::Relaxed);
    }

    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    pub fn updater(&self) -> &IndexUpdater {
        &self.updater
    }

    pub fn embedder(&self) -> &Embedder {
        self.updater.embedder()
    }

    /// The index's reader, opened the first time the index can be read.
    fn reader(&self) -> Result<Arc<IndexReader>, ToolError> {
        let mut slot = lock(&self.reader);
        if let Some(reader) = slot.as_ref() {
            return Ok(reader.clone());
        }
        match IndexReader::open(self.updater.index_dir()) {
            Ok(reader) => Ok(slot.insert(Arc::new(reader)).clone()),
            Err(IndexError::NoIndex(_) | IndexError::EmptyIndex(_))
                if {
                    let state = self.updater.state();
                    state.running || state.runs == 0
                } =>
            {
                Err(ToolError::Failed(
                    "the index is still being built (its first run has not committed yet); \
                     try again shortly, or see index_status"
                        .into(),
                ))
            }
            Err(error) => Err(ToolError::Failed(error.to_string())),
        }
    }

    /// Queries are embedded with this server's model: an index re-embedded with another model
    /// or number format since it started cannot be searched by it.
    fn check_follows(&self, settings: &IndexSettings) -> Result<(), ToolError> {
        let model = &self.updater.options().model_id;
        let quantization = self.embedder().quantization();
        if &settings.model != model || settings.quantization != quantization {
            return Err(ToolError::Failed(format!(
                "the index was re-embedded with {} ({}) since this server started with {model} \
                 ({}); restart quiver mcp",
                settings.model,
                settings.quantization.name(),
                quantization.name()
            )));
        }
        Ok(())
    }

    /// Answers one message; `None` for notifications and responses. `send` carries
    /// notifications (progress) out while the request runs.
    pub fn handle(&self, incoming: Incoming, send: &(dyn Fn(Value) + Sync)) -> Option<Value> {
        let (id, method, params) = match incoming {
            Incoming::Request { id, method, params } => (id, method, params),
            Incoming::Invalid(error) => return Some(error),
            Incoming::Notification { .. } | Incoming::Response => return None,
        };
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.answer(&method, params, send)
        }));
        Some(match answer {
            Ok(Ok(result)) => protocol::response(id, result),
            Ok(Err((code, message))) => protocol::error(id, code, &message),
            Err(_) => protocol::error(
                id,
                INTERNAL_ERROR,
                &format!("{method} failed inside the server (a bug: see its log)"),
            ),
        })
    }

    fn answer(
        &self,
        method: &str,
        params: Value,
        send: &(dyn Fn(Value) + Sync),
    ) -> Result<Value, (i64, String)> {
        match method {
            "initialize" => Ok(json!({
                "protocolVersion": protocol::negotiate(params["protocolVersion"].as_str()),
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {
                    "name": "quiver",
                    "title": "Quiver code search",
                    "version": env!("CARGO_PKG_VERSION"),
                },
                "instructions": INSTRUCTIONS,
            })),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": tools::list()})),
            "tools/call" => {
                let Some(name) = params["name"].as_str() else {
                    return Err((INVALID_PARAMS, "tools/call needs a tool `name`".into()));
                };
                let progress = Progress::new(params["_meta"]["progressToken"].clone(), send);
                match tools::call(self, name, params["arguments"].clone(), &progress) {
                    Ok(output) => Ok(json!({
                        "content": [{"type": "text", "text": output.text}],
                        "structuredContent": output.structured,
                        "isError": false,
                    })),
                    Err(ToolError::Failed(message)) => Ok(json!({
                        "content": [{"type": "text", "text": message}],
                        "isError": true,
                    })),
                    Err(unknown @ ToolError::Unknown(_)) => {
                        Err((INVALID_PARAMS, unknown.to_string()))
                    }
                }
            }
            other => Err((
                METHOD_NOT_FOUND,
                format!("unknown method {other:?} (initialize, ping, tools/list, tools/call)"),
            )),
        }
    }
}

/// Progress notifications for one call, when the client gave a progress token: files done of
/// files found, at most a few a second.
pub struct Progress<'a> {
    token: Value,
    send: &'a (dyn Fn(Value) + Sync),
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    total: usize,
    done: usize,
    chunks: usize,
    last_sent: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(token: Value, send: &'a (dyn Fn(Value) + Sync)) -> Progress<'a> {
        Progress {
            token,
            send,
            state: Mutex::new(ProgressState::default()),
        }
    }

    fn report(&self, force: bool) {
        if self.token.is_null() {
            return;
        }
        let mut state = lock(&self.state);
        let due = state
            .last_sent
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(200));
        if !(force || due) {
            return;
        }
        state.last_sent = Some(Instant::now());
        (self.send)(protocol::notification(
            "notifications/progress",
            json!({
                "progressToken": self.token,
                "progress": state.done,
                "total": state.total,
                "message": format!(
                    "{} of {} files, {} chunks embedded",
                    state.done, state.total, state.chunks
                ),
            }),
        ));
    }
}

impl IndexProgress for Progress<'_> {
    fn files_found(&self, total: usize) {
        lock(&self.state).total = total;
        self.report(true);
    }

    fn files_done(&self, count: usize) {
        let finished = {
            let mut state = lock(&self.state);
            state.done += count;
            state.done >= state.total
        };
        self.report(finished);
    }

    fn chunks_embedded(&self, count: usize) {
        lock(&self.state).chunks += count;
        self.report(false);
    }
}

/// What these guard is replaced whole; a panic while holding one leaves nothing half-made.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
