//! Pre-chunked input (`quiver index --chunks DIR`): JSON or JSONL files of chunks that another
//! tool cut, each with a `text` and any metadata the caller wants kept.
//!
//! Accepted shapes: JSONL (one object per line), a JSON array of objects, or a JSON object with
//! a `chunks` array. Known fields (`path`, `language`, `symbol`, `kind`, `parent`,
//! `start_line`, `end_line`, `chunk_index`) fill the chunk's columns; the whole object except
//! `text` is kept as its metadata, with `source_subdir` added: the chunk file's directory
//! relative to DIR.

use crate::error::{IndexError, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// One chunk as the caller gave it.
#[derive(Debug, Clone)]
pub struct GivenChunk {
    pub text: String,
    pub path: Option<String>,
    pub language: Option<String>,
    pub symbol: Option<String>,
    pub kind: Option<String>,
    pub parent: Option<String>,
    pub start_line: usize,
    pub end_line: usize,
    pub chunk_index: Option<usize>,
    pub metadata: Map<String, Value>,
}

pub fn is_chunk_file(path: &str) -> bool {
    path.ends_with(".jsonl") || path.ends_with(".json")
}

/// The source of a chunk file's chunks (the repository part of their ids): the subdirectory
/// the file sits in, relative to the chunks directory (`.` at the top).
pub fn source_of(relative: &str) -> String {
    match relative.rsplit_once('/') {
        Some((dir, _)) => dir.to_string(),
        None => ".".to_string(),
    }
}

/// Parses one chunk file. `path` is only for error messages.
pub fn parse_chunk_file(path: &Path, text: &str, source: &str) -> Result<Vec<GivenChunk>> {
    let bad = |line: usize, message: String| IndexError::BadChunkFile {
        path: path.to_path_buf(),
        line,
        message,
    };
    let records: Vec<(usize, Value)> = if path.extension().is_some_and(|e| e == "jsonl") {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .map(|v| (i + 1, v))
                    .map_err(|e| bad(i + 1, format!("not JSON: {e}")))
            })
            .collect::<Result<_>>()?
    } else {
        let value: Value =
            serde_json::from_str(text).map_err(|e| bad(e.line(), format!("not JSON: {e}")))?;
        let items = match value {
            Value::Array(items) => items,
            Value::Object(mut object) => match object.remove("chunks") {
                Some(Value::Array(items)) => items,
                _ => vec![Value::Object(object)],
            },
            _ => return Err(bad(1, "expected an array of chunk objects".into())),
        };
        items.into_iter().map(|v| (1, v)).collect()
    };
    records
        .into_iter()
        .map(|(line, value)| given_chunk(value, source).map_err(|message| bad(line, message)))
        .collect()
}

fn given_chunk(value: Value, source: &str) -> std::result::Result<GivenChunk, String> {
    let Value::Object(mut metadata) = value else {
        return Err("a chunk must be a JSON object".into());
    };
    let text = match metadata.remove("text") {
        Some(Value::String(text)) if !text.trim().is_empty() => text,
        Some(Value::String(_)) => return Err("field `text` is empty".into()),
        Some(_) => return Err("field `text` must be a string".into()),
        None => return Err("missing field `text`".into()),
    };
    let string = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let number = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
    };
    let lines = text.lines().count().max(1);
    let start_line = number("start_line").unwrap_or(1);
    let chunk = GivenChunk {
        path: string("path"),
        language: string("language"),
        symbol: string("symbol"),
        kind: string("kind"),
        parent: string("parent"),
        start_line,
        end_line: number("end_line").unwrap_or(start_line + lines - 1),
        chunk_index: number("chunk_index"),
        text,
        metadata: Map::new(),
    };
    metadata.insert("source_subdir".into(), Value::String(source.to_string()));
    Ok(GivenChunk { metadata, ..chunk })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jsonl_and_json_shapes() {
        let jsonl = "{\"text\": \"fn a() {}\", \"path\": \"src/a.rs\", \"team\": \"core\"}\n\n{\"text\": \"b\"}\n";
        let chunks = parse_chunk_file(Path::new("x/c.jsonl"), jsonl, "x").expect("parses");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].path.as_deref(), Some("src/a.rs"));
        assert_eq!(chunks[0].metadata["team"], "core");
        assert_eq!(chunks[0].metadata["source_subdir"], "x");
        assert!(!chunks[0].metadata.contains_key("text"));
        let json = "{\"chunks\": [{\"text\": \"one\"}, {\"text\": \"two\", \"start_line\": 5}]}";
        let chunks = parse_chunk_file(Path::new("c.json"), json, ".").expect("parses");
        assert_eq!(chunks[1].start_line, 5);
    }

    #[test]
    fn bad_records_name_the_file_and_line() {
        let error = parse_chunk_file(
            Path::new("d/c.jsonl"),
            "{\"text\": \"ok\"}\n{\"path\": 1}\n",
            "d",
        )
        .expect_err("missing text");
        let message = error.to_string();
        assert!(message.contains("d/c.jsonl, line 2"), "{message}");
        assert!(message.contains("missing field `text`"), "{message}");
        assert_eq!(source_of("a/b/c.jsonl"), "a/b");
        assert_eq!(source_of("c.jsonl"), ".");
    }
}
