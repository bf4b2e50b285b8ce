//! MCP's streamable HTTP transport on `POST /mcp`: a request is answered with its JSON-RPC
//! response as `application/json`, or, when it carries a progress token and the client accepts
//! `text/event-stream`, as an event stream of its progress notifications ending with the
//! response; notifications and responses get `202 Accepted`. The server keeps no session, so
//! it opens no stream of its own (`GET` is 405, as the specification allows).

use crate::protocol::{self, Incoming, PROTOCOL_VERSIONS};
use crate::McpServer;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use quiver_server::HostCheck;
use serde_json::Value;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

struct HttpState {
    server: Arc<McpServer>,
    api_key: Option<String>,
    /// Browsers send `Origin`: one naming another site is refused (DNS rebinding), as the
    /// specification asks. `None` with an API key, which a foreign page cannot know.
    origins: Option<HostCheck>,
}

/// The `/mcp` route for `server`, bound at `bound`. With `api_key`, every request must carry
/// `Authorization: Bearer <key>`.
pub fn router(
    server: Arc<McpServer>,
    api_key: Option<String>,
    bound: std::net::SocketAddr,
    allowed_hosts: &[String],
) -> Router {
    let origins = match api_key {
        Some(_) => None,
        None => HostCheck::new(bound, allowed_hosts),
    };
    let state = Arc::new(HttpState {
        server,
        api_key,
        origins,
    });
    Router::new()
        .route("/mcp", post(message).get(no_stream).delete(no_stream))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn refusal(status: StatusCode, message: &str) -> Response {
    let code = if status == StatusCode::BAD_REQUEST {
        protocol::INVALID_REQUEST
    } else {
        protocol::INTERNAL_ERROR
    };
    (status, Json(protocol::error(Value::Null, code, message))).into_response()
}

/// The key, the origin and the protocol revision, before any message is read.
async fn guard(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Some(key) = &state.api_key {
        if !quiver_server::presents_key(headers, key) {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send `Authorization: Bearer <key>`",
            );
        }
    }
    if let (Some(check), Some(origin)) = (&state.origins, header_text(headers, header::ORIGIN)) {
        let host = origin.split_once("://").map_or(origin, |(_, host)| host);
        if origin != "null" && !check.allows(host) {
            return refusal(
                StatusCode::FORBIDDEN,
                &format!("requests from origin {origin:?} are not accepted"),
            );
        }
    }
    if let Some(version) = header_text(headers, "mcp-protocol-version") {
        if !PROTOCOL_VERSIONS.contains(&version) {
            return refusal(
                StatusCode::BAD_REQUEST,
                &format!(
                    "unsupported MCP-Protocol-Version {version:?} (this server speaks {})",
                    PROTOCOL_VERSIONS.join(", ")
                ),
            );
        }
    }
    next.run(request).await
}

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

async fn no_stream() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        "this server opens no event stream of its own: POST JSON-RPC messages to /mcp",
    )
        .into_response()
}

async fn message(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let incoming = Incoming::parse(&body);
    match &incoming {
        Incoming::Invalid(error) => {
            return (StatusCode::BAD_REQUEST, Json(error.clone())).into_response()
        }
        Incoming::Notification { .. } | Incoming::Response => {
            return StatusCode::ACCEPTED.into_response()
        }
        Incoming::Request { .. } => {}
    }
    let streams = header_text(&headers, header::ACCEPT)
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let wants_progress = matches!(
        &incoming,
        Incoming::Request { params, .. } if !params["_meta"]["progressToken"].is_null()
    );
    let server = state.server.clone();
    if !(streams && wants_progress) {
        let reply = tokio::task::spawn_blocking(move || server.handle(incoming, &|_| {})).await;
        return match reply {
            Ok(Some(reply)) => Json(reply).into_response(),
            _ => refusal(StatusCode::INTERNAL_SERVER_ERROR, "the request failed"),
        };
    }
    let (sender, receiver) = mpsc::unbounded_channel::<Value>();
    tokio::task::spawn_blocking(move || {
        let notify = |message: Value| {
            let _ = sender.send(message);
        };
        if let Some(reply) = server.handle(incoming, &notify) {
            let _ = sender.send(reply);
        }
    });
    Sse::new(Messages(receiver)).into_response()
}

/// The messages of one streamed request as server-sent events; the stream ends when the
/// request's work drops its sender, after the response.
struct Messages(mpsc::UnboundedReceiver<Value>);

impl futures_core::Stream for Messages {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(context).map(|message| {
            message.map(|m| Ok(Event::default().event("message").data(m.to_string())))
        })
    }
}
