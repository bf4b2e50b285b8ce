//! Errors a request can get back. Every one is a JSON body naming the problem, shaped the way
//! the API the client speaks expects: OpenAI's `{"error": {"message", "type", ...}}` on `/v1/`
//! routes, Text Embeddings Inference's `{"error", "error_type"}` elsewhere. TEI's routes also
//! answer with TEI's status codes (see [`ApiError::status`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which API's error shape a response takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    /// TEI's routes: its body and its status codes.
    Tei,
    /// Quiver's own routes (`/search`): TEI's body, plain HTTP status codes.
    Quiver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for something impossible (4xx).
    Validation,
    /// The queue is full: try again later (429).
    Overloaded,
    /// Missing or wrong bearer token (401).
    Unauthorized,
    /// The model or index failed (500).
    Backend,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    pub flavor: Flavor,
}

/// Seconds a client is told to wait after a 429.
const RETRY_AFTER_SECONDS: &str = "1";

impl ApiError {
    pub fn validation(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: ErrorKind::Validation,
            message: message.into(),
            flavor: Flavor::Tei,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::validation(StatusCode::BAD_REQUEST, message)
    }

    pub fn overloaded() -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: ErrorKind::Overloaded,
            message: "the request queue is full; retry after a moment".into(),
            flavor: Flavor::Tei,
        }
    }

    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: ErrorKind::Unauthorized,
            message: "missing or wrong API key: send `Authorization: Bearer <key>`".into(),
            flavor: Flavor::Tei,
        }
    }

    pub fn backend(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: ErrorKind::Backend,
            message: message.into(),
            flavor: Flavor::Tei,
        }
    }

    /// The route needs a kind of model the server was not started with (TEI's 424).
    pub fn no_model(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FAILED_DEPENDENCY,
            kind: ErrorKind::Backend,
            message: message.into(),
            flavor: Flavor::Tei,
        }
    }

    pub fn flavored(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// The status sent. TEI's published contract documents 422 for every refused request but
    /// an oversized one (413) and 424 for a failed model call, so its routes answer those
    /// where others answer 400 and 500.
    pub fn status(&self) -> StatusCode {
        match (self.flavor, self.status) {
            (Flavor::Tei, StatusCode::BAD_REQUEST) => StatusCode::UNPROCESSABLE_ENTITY,
            (Flavor::Tei, StatusCode::INTERNAL_SERVER_ERROR) => StatusCode::FAILED_DEPENDENCY,
            (_, status) => status,
        }
    }

    fn body(&self) -> serde_json::Value {
        match self.flavor {
            Flavor::Tei | Flavor::Quiver => json!({
                "error": self.message,
                "error_type": match self.kind {
                    ErrorKind::Validation => "Validation",
                    ErrorKind::Overloaded => "Overloaded",
                    ErrorKind::Unauthorized => "Unauthorized",
                    ErrorKind::Backend => "Backend",
                },
            }),
            Flavor::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": match self.kind {
                        ErrorKind::Validation => "invalid_request_error",
                        ErrorKind::Overloaded => "rate_limit_exceeded",
                        ErrorKind::Unauthorized => "authentication_error",
                        ErrorKind::Backend => "server_error",
                    },
                    "param": null,
                    "code": null,
                }
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if self.kind == ErrorKind::Overloaded {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

impl ApiError {
    /// A failure inside the server. Its own message can name files on the server (model
    /// folders, the index database), which are no client's business: the log gets it, the
    /// client a description of what failed.
    pub fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!("{what} failed: {error}");
        ApiError::backend(format!("{what} failed; the server's log has the details"))
    }
}

impl From<quiver_embed::EmbedError> for ApiError {
    fn from(error: quiver_embed::EmbedError) -> Self {
        use quiver_embed::EmbedError;
        match error {
            EmbedError::UnknownPrompt { .. }
            | EmbedError::UnknownTask { .. }
            | EmbedError::Dimensions { .. } => ApiError::bad_request(error.to_string()),
            EmbedError::TokenId { .. }
            | EmbedError::PromptWithTokenIds { .. }
            | EmbedError::NoTokens { .. } => {
                ApiError::validation(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
            EmbedError::NonFiniteOutput { .. } => ApiError::backend(error.to_string()),
            other => ApiError::internal("embedding", &other),
        }
    }
}

impl From<quiver_index::IndexError> for ApiError {
    fn from(error: quiver_index::IndexError) -> Self {
        use quiver_index::IndexError;
        match error {
            IndexError::BadGlob { .. } | IndexError::UnknownLanguage { .. } => {
                ApiError::bad_request(format!("`languages` / `path`: {error}"))
            }
            IndexError::Damaged { .. } => {
                tracing::error!("{error}");
                ApiError::backend(
                    "the index is damaged; `quiver status --verify` on the server names what, \
                     and `quiver index --repair` rebuilds it",
                )
            }
            other => ApiError::internal("searching the index", &other),
        }
    }
}
