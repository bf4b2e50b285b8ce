//! Reading request bodies: JSON parsed with the path of a bad field in the message, and the
//! `input`/`inputs` field that both APIs take as a string or a list of strings.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use quiver_embed::EmbedInput;
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
        let status = if error.inner().is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        invalid_body(status, error.path(), error.inner())
    })
}

/// Reads a request already parsed as JSON (a route that looks at it before choosing its
/// shape), naming the field that is wrong when it is.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        invalid_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            error.path(),
            error.inner(),
        )
    })
}

fn invalid_body(
    status: StatusCode,
    path: &serde_path_to_error::Path,
    inner: &serde_json::Error,
) -> ApiError {
    let path = path.to_string();
    let message = if path == "." || path.is_empty() {
        format!("invalid JSON body: {inner}")
    } else {
        format!("invalid JSON body: field `{path}`: {inner}")
    };
    ApiError::validation(status, message)
}

/// One text or a list of texts, as a request sent them (`/tokenize`, `/similarity`,
/// `/rerank`): an empty list is a valid request with an empty answer.
#[derive(Debug, Clone, Default)]
pub struct Texts(pub Vec<String>);

impl<'de> serde::Deserialize<'de> for Texts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextsVisitor)
    }
}

struct TextsVisitor;

impl<'de> Visitor<'de> for TextsVisitor {
    type Value = Texts;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Texts, E> {
        Ok(Texts(vec![text.to_string()]))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Texts, E> {
        Ok(Texts(vec![text]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Texts, A::Error> {
        let mut texts = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(text) = seq.next_element::<String>()? {
            texts.push(text);
        }
        Ok(Texts(texts))
    }
}

/// What the embedding routes take (TEI's `Input`, OpenAI's `input`): a text, an array of token
/// ids, or a list of texts and token-id arrays.
#[derive(Debug, Clone)]
pub struct Inputs(pub Vec<EmbedInput>);

impl<'de> serde::Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InputsVisitor)
    }
}

struct InputsVisitor;

impl<'de> Visitor<'de> for InputsVisitor {
    type Value = Inputs;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, an array of token ids, or an array of strings and token-id arrays")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Inputs, E> {
        Ok(Inputs(vec![EmbedInput::Text(text.to_string())]))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Inputs, E> {
        Ok(Inputs(vec![EmbedInput::Text(text)]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
        // `[1, 2]` is one input of token ids; `["a", [1, 2]]` two inputs.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        let ids = items
            .iter()
            .filter(|item| matches!(item, Item::Id(_)))
            .count();
        if ids > 0 && ids < items.len() {
            return Err(de::Error::custom(
                "mixes token ids with texts: send one array of ids, or an array of inputs",
            ));
        }
        if ids > 0 {
            let ids = items
                .into_iter()
                .filter_map(|item| match item {
                    Item::Id(id) => Some(id),
                    _ => None,
                })
                .collect();
            return Ok(Inputs(vec![EmbedInput::TokenIds(ids)]));
        }
        Ok(Inputs(
            items
                .into_iter()
                .filter_map(|item| match item {
                    Item::Input(input) => Some(input),
                    Item::Id(_) => None,
                })
                .collect(),
        ))
    }
}

/// One element of an `Inputs` array.
enum Item {
    Id(u32),
    Input(EmbedInput),
}

impl<'de> serde::Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, a token id, or an array of token ids")
    }

    fn visit_u64<E: de::Error>(self, id: u64) -> Result<Item, E> {
        u32::try_from(id)
            .map(Item::Id)
            .map_err(|_| E::custom(format!("token id {id} is out of range")))
    }

    fn visit_i64<E: de::Error>(self, id: i64) -> Result<Item, E> {
        u64::try_from(id)
            .map_err(|_| E::custom(format!("token id {id} is negative")))
            .and_then(|id| self.visit_u64(id))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Item, E> {
        Ok(Item::Input(EmbedInput::Text(text.to_string())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Item, E> {
        Ok(Item::Input(EmbedInput::Text(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(id) = seq.next_element::<u32>()? {
            ids.push(id);
        }
        Ok(Item::Input(EmbedInput::TokenIds(ids)))
    }
}

/// Limits every list of inputs is held to.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    pub max_inputs: usize,
}

impl InputLimits {
    /// Refuses a list of `count` items over the limit; `field` names the request's field.
    pub fn check(&self, field: &str, count: usize) -> Result<(), ApiError> {
        if count > self.max_inputs {
            return Err(ApiError::validation(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "`{field}` has {count} items; at most {} are accepted per request \
                     (see --max-client-batch-size)",
                    self.max_inputs
                ),
            ));
        }
        Ok(())
    }
}

impl Inputs {
    /// Refuses an empty list (nothing to embed) and a list over the limit; `field` names the
    /// request's field in the message.
    pub fn validate(&self, field: &str, limits: InputLimits) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Err(ApiError::bad_request(format!("`{field}` is an empty list")));
        }
        limits.check(field, self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Request {
        input: Inputs,
    }

    fn parse(body: &'static str) -> Result<Request, ApiError> {
        parse_body(Ok(Bytes::from_static(body.as_bytes())))
    }

    fn text(t: &str) -> EmbedInput {
        EmbedInput::Text(t.into())
    }

    #[test]
    fn accepts_texts_and_token_ids() {
        assert_eq!(parse(r#"{"input": "a"}"#).unwrap().input.0, vec![text("a")]);
        assert_eq!(
            parse(r#"{"input": ["a", ""]}"#).unwrap().input.0,
            vec![text("a"), text("")]
        );
        assert_eq!(
            parse(r#"{"input": [101, 2023, 102]}"#).unwrap().input.0,
            vec![EmbedInput::TokenIds(vec![101, 2023, 102])]
        );
        assert_eq!(
            parse(r#"{"input": [[101, 102], "b", []]}"#)
                .unwrap()
                .input
                .0,
            vec![
                EmbedInput::TokenIds(vec![101, 102]),
                text("b"),
                EmbedInput::TokenIds(vec![])
            ]
        );
    }

    #[test]
    fn names_the_bad_field_and_item() {
        let error = parse(r#"{"input": ["a", 5]}"#).unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            error.message.contains("mixes token ids"),
            "{}",
            error.message
        );
        let error = parse(r#"{"input": [[1, -2]]}"#).unwrap_err();
        assert!(error.message.contains("input[0][1]"), "{}", error.message);
        let error = parse(r#"{"input": [4294967296]}"#).unwrap_err();
        assert!(error.message.contains("out of range"), "{}", error.message);
        let error = parse(r#"{"input": [1.5]}"#).unwrap_err();
        assert!(error.message.contains("input[0]"), "{}", error.message);
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
    fn validation_rejects_empty_lists_and_too_many() {
        let limits = InputLimits { max_inputs: 2 };
        let many = Inputs(vec![text("a"); 3]);
        assert_eq!(
            many.validate("input", limits).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let empty = Inputs(vec![]).validate("input", limits).unwrap_err();
        assert_eq!(empty.status, StatusCode::BAD_REQUEST);
        assert!(
            empty.message.contains("`input` is an empty list"),
            "{}",
            empty.message
        );
        assert!(Inputs(vec![text("")]).validate("input", limits).is_ok());
    }
}
