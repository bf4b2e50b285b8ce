//! JSON-RPC 2.0 as MCP uses it: messages in, responses and notifications out.

use serde_json::{json, Value};

/// Revisions this server speaks through the `initialize` handshake, newest first. A client
/// asking for one of them gets it; any other gets the newest, as the specification says.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// One message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
    },
    /// A response to something the server asked (it asks nothing): ignored.
    Response,
    /// Not a message this server can act on: the error response to send.
    Invalid(Value),
}

impl Incoming {
    /// Reads one message. Malformed JSON and anything that is not a JSON-RPC 2.0 message
    /// become [`Incoming::Invalid`] with the error response the specification asks for.
    pub fn parse(text: &str) -> Incoming {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                return Incoming::Invalid(error(
                    Value::Null,
                    PARSE_ERROR,
                    &format!("not JSON: {e}"),
                ))
            }
        };
        Incoming::from_value(value)
    }

    pub fn from_value(value: Value) -> Incoming {
        let Value::Object(mut message) = value else {
            return Incoming::Invalid(error(
                Value::Null,
                INVALID_REQUEST,
                "a message must be one JSON-RPC 2.0 object (batches are not part of MCP)",
            ));
        };
        let id = message.remove("id");
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Incoming::Invalid(error(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "\"jsonrpc\" must be \"2.0\"",
            ));
        }
        let method = match message.remove("method") {
            Some(Value::String(method)) => method,
            Some(_) => {
                return Incoming::Invalid(error(
                    id.unwrap_or(Value::Null),
                    INVALID_REQUEST,
                    "\"method\" must be a string",
                ))
            }
            None if message.contains_key("result") || message.contains_key("error") => {
                return Incoming::Response
            }
            None => {
                return Incoming::Invalid(error(
                    id.unwrap_or(Value::Null),
                    INVALID_REQUEST,
                    "a request needs a \"method\"",
                ))
            }
        };
        let params = message.remove("params").unwrap_or(Value::Null);
        match id {
            None => Incoming::Notification { method },
            Some(id @ (Value::String(_) | Value::Number(_))) => {
                Incoming::Request { id, method, params }
            }
            Some(_) => Incoming::Invalid(error(
                Value::Null,
                INVALID_REQUEST,
                "\"id\" must be a string or a number",
            )),
        }
    }
}

pub fn response(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// The revision to answer a client that asked for `requested`.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|asked| PROTOCOL_VERSIONS.iter().find(|v| **v == asked))
        .copied()
        .unwrap_or(PROTOCOL_VERSIONS[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(incoming: Incoming) -> i64 {
        match incoming {
            Incoming::Invalid(error) => error["error"]["code"].as_i64().expect("a code"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_messages_get_the_errors_json_rpc_names() {
        assert_eq!(code(Incoming::parse("{not json")), PARSE_ERROR);
        assert_eq!(code(Incoming::parse("[1, 2]")), INVALID_REQUEST);
        assert_eq!(
            code(Incoming::parse(r#"{"id": 1, "method": "ping"}"#)),
            INVALID_REQUEST
        );
        assert_eq!(
            code(Incoming::parse(
                r#"{"jsonrpc": "2.0", "id": 1, "method": 7}"#
            )),
            INVALID_REQUEST
        );
        assert_eq!(
            code(Incoming::parse(
                r#"{"jsonrpc": "2.0", "id": [1], "method": "ping"}"#
            )),
            INVALID_REQUEST
        );
        assert_eq!(
            Incoming::parse(r#"{"jsonrpc": "2.0", "method": "notifications/initialized"}"#),
            Incoming::Notification {
                method: "notifications/initialized".into()
            }
        );
        assert_eq!(
            Incoming::parse(r#"{"jsonrpc": "2.0", "id": 3, "result": {}}"#),
            Incoming::Response
        );
    }

    #[test]
    fn a_known_revision_is_kept_and_an_unknown_one_answered_with_the_newest() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2099-01-01")), PROTOCOL_VERSIONS[0]);
        assert_eq!(negotiate(None), PROTOCOL_VERSIONS[0]);
    }
}
