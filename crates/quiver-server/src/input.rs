//! Reading request bodies: JSON parsed with the path of a bad field in the message, and the
//! `input`/`inputs` field that both APIs take as a string or a list of strings.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use std::fmt;

/// Parses a request body, naming the field that is wrong when it is.
pub fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is too large (see --payload-limit)".to_string()
        } else {
            format!("cannot read request body: {}", rejection.body_text())
        };
        ApiError::validation(status, message)
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty: send a JSON object",
        ));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body: field `{path}`: {inner}")
        };
        let status = if inner.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::validation(status, message)
    })
}

/// One text or a list of texts, as a request sent them.
#[derive(Debug, Clone)]
pub struct Inputs(pub Vec<String>);

impl<'de> serde::Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InputsVisitor)
    }
}

struct InputsVisitor;

impl<'de> Visitor<'de> for InputsVisitor {
    type Value = Inputs;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings (token-id arrays are not accepted)")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Inputs, E> {
        Ok(Inputs(vec![text.to_string()]))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Inputs, E> {
        Ok(Inputs(vec![text]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
        let mut texts = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(text) = seq.next_element::<String>()? {
            texts.push(text);
        }
        Ok(Inputs(texts))
    }
}

/// Limits every list of inputs is held to.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    pub max_inputs: usize,
}

impl Inputs {
    /// Rejects an empty list, a list over the limit and empty texts; `field` names the
    /// request's field in the message.
    pub fn validate(&self, field: &str, limits: InputLimits) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Err(ApiError::bad_request(format!("`{field}` is an empty list")));
        }
        if self.0.len() > limits.max_inputs {
            return Err(ApiError::validation(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "`{field}` has {} items; at most {} are accepted per request \
                     (see --max-client-batch-size)",
                    self.0.len(),
                    limits.max_inputs
                ),
            ));
        }
        if let Some(position) = self.0.iter().position(|text| text.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "`{field}[{position}]` is an empty string"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Request {
        #[allow(dead_code)]
        input: Inputs,
    }

    fn parse(body: &'static str) -> Result<Request, ApiError> {
        parse_body(Ok(Bytes::from_static(body.as_bytes())))
    }

    #[test]
    fn accepts_a_string_or_a_list() {
        assert_eq!(parse(r#"{"input": "a"}"#).unwrap().input.0, vec!["a"]);
        assert_eq!(
            parse(r#"{"input": ["a", "b"]}"#).unwrap().input.0,
            vec!["a", "b"]
        );
    }

    #[test]
    fn names_the_bad_field_and_item() {
        let error = parse(r#"{"input": ["a", 5]}"#).unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.message.contains("input[1]"), "{}", error.message);
        let error = parse(r#"{"inputs": "a"}"#).unwrap_err();
        assert!(
            error.message.contains("missing field `input`"),
            "{}",
            error.message
        );
        let error = parse(r#"{"input": "a""#).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn validation_rejects_empty_and_too_many() {
        let limits = InputLimits { max_inputs: 2 };
        let empty = Inputs(vec!["a".into(), String::new()]);
        let error = empty.validate("input", limits).unwrap_err();
        assert!(error.message.contains("input[1]"), "{}", error.message);
        let many = Inputs(vec!["a".into(); 3]);
        assert_eq!(
            many.validate("input", limits).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert!(Inputs(vec![]).validate("input", limits).is_err());
        assert!(Inputs(vec!["a".into()]).validate("input", limits).is_ok());
    }
}
