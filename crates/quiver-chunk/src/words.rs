//! Identifiers as words: what a person would type for `parseHttpRequest` or `max_len`.

/// Words of an identifier, lower-cased: split at `_`, at lower→upper case changes, before the
/// last capital of an acronym (`HTTPServer` → `http server`), and between letters and digits.
/// Words of one character are dropped.
pub fn identifier_words(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let mut parts = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            flush(&mut parts, &mut current);
            continue;
        }
        if let Some(&previous) = i.checked_sub(1).and_then(|p| chars.get(p)) {
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = (previous.is_lowercase() && c.is_uppercase())
                || (previous.is_uppercase() && c.is_uppercase() && next_is_lower)
                || (previous.is_alphabetic() && c.is_numeric())
                || (previous.is_numeric() && c.is_alphabetic());
            if boundary {
                flush(&mut parts, &mut current);
            }
        }
        current.extend(c.to_lowercase());
    }
    flush(&mut parts, &mut current);
    parts
}

fn flush(parts: &mut Vec<String>, current: &mut String) {
    if current.chars().count() >= 2 {
        parts.push(std::mem::take(current));
    } else {
        current.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_identifiers() {
        assert_eq!(
            identifier_words("parseHttpRequest"),
            ["parse", "http", "request"]
        );
        assert_eq!(identifier_words("HTTPServer"), ["http", "server"]);
        assert_eq!(identifier_words("max_len"), ["max", "len"]);
        assert_eq!(identifier_words("utf8Decode"), ["utf", "decode"]);
        assert_eq!(identifier_words("Foo<T>::bar"), ["foo", "bar"]);
    }
}
