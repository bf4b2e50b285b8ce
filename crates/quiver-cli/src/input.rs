//! Reading the texts to embed: plain lines, or JSONL objects with a `text` field.

use anyhow::{anyhow, bail, Context};
use std::io::Read;
use std::path::Path;

/// Reads `path` (or standard input). When the first non-blank line is a JSON object, every line
/// must be one with a string `text`; otherwise each line is a text.
pub fn read_texts(path: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let mut raw = Vec::new();
    match path {
        Some(path) => {
            raw = std::fs::read(path).with_context(|| format!("cannot open {}", path.display()))?
        }
        None => {
            std::io::stdin().read_to_end(&mut raw)?;
        }
    }
    let text = String::from_utf8(raw).map_err(|error| {
        anyhow!(
            "input is not valid UTF-8 (first bad byte at offset {})",
            error.utf8_error().valid_up_to()
        )
    })?;
    parse_texts(&text)
}

fn parse_texts(text: &str) -> anyhow::Result<Vec<String>> {
    let is_jsonl = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_start().starts_with('{'));
    if !is_jsonl {
        return Ok(text.lines().map(str::to_string).collect());
    }
    let mut texts = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("line {}: not valid JSON", number + 1))?;
        match value.get("text").and_then(|text| text.as_str()) {
            Some(text) => texts.push(text.to_string()),
            None => bail!("line {}: no string field \"text\"", number + 1),
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_and_jsonl() {
        assert_eq!(parse_texts("a\n\nb\n").unwrap(), vec!["a", "", "b"]);
        assert_eq!(
            parse_texts("{\"text\": \"x\", \"id\": 1}\n\n{\"text\": \"y\"}\n").unwrap(),
            vec!["x", "y"]
        );
        assert!(parse_texts("").unwrap().is_empty());
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let error = parse_texts("{\"text\": \"x\"}\n{\"body\": 1}\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        let error = parse_texts("{\"text\": \"x\"}\n{oops\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}
