//! Terms for keyword (BM25) search over code: identifiers are kept whole and also split into
//! their words (`parseHttpRequest` → `parsehttprequest parse http request`, `max_len` →
//! `max_len max len`), so a query in words finds code in identifiers and the other way round.
//! SQLite FTS5 then stems the terms (Porter) and ranks with BM25.

/// Space-separated lower-case terms of `text`.
pub fn terms(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for word in text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
    {
        let whole = word.trim_matches('_').to_lowercase();
        if whole.is_empty() {
            continue;
        }
        push_term(&mut out, &whole);
        let parts = quiver_chunk::identifier_words(word);
        if parts.len() > 1 {
            for part in parts {
                push_term(&mut out, &part);
            }
        }
    }
    out
}

fn push_term(out: &mut String, term: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(term);
}

/// An FTS5 query matching any of the query's terms, each quoted so no input is read as FTS5
/// syntax. `None` when the query has no terms.
pub fn match_expression(query: &str) -> Option<String> {
    let mut seen = std::collections::BTreeSet::new();
    let quoted: Vec<String> = terms(query)
        .split(' ')
        .filter(|t| !t.is_empty() && seen.insert(t.to_string()))
        .map(|t| format!("\"{}\"", t.replace('"', "")))
        .collect();
    (!quoted.is_empty()).then(|| quoted.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_identifiers_into_words() {
        assert_eq!(
            terms("parseHttpRequest"),
            "parsehttprequest parse http request"
        );
        assert_eq!(
            terms("HTTPServer max_len"),
            "httpserver http server max_len max len"
        );
        assert_eq!(terms("utf8Decode"), "utf8decode utf decode");
        assert_eq!(terms("a + b"), "a b");
        assert_eq!(terms("__init__"), "init");
    }

    #[test]
    fn match_expressions_are_quoted_and_deduplicated() {
        assert_eq!(
            match_expression("read \"file\" read").as_deref(),
            Some("\"read\" OR \"file\"")
        );
        assert_eq!(match_expression("+-*"), None);
    }
}
