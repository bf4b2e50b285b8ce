//! The context header put in front of each chunk's text before it is embedded.
//!
//! Format (one line, then the chunk's text):
//!
//! ```text
//! {path} · {language}[ · {kind} {parent.}{symbol}[ ({symbol words})]]
//! ```
//!
//! for example `src/store.rs · rust · method Store.commitBatch (commit batch)`. The header tells
//! the model where the code lives and what it defines, which plain code often does not say (a
//! method body rarely names its class); the symbol's words let a query in prose meet an
//! identifier. It is part of what is embedded, so changing it re-embeds every chunk.

use crate::Chunk;

/// Bumped whenever [`embedding_text`] changes, so an index knows its vectors are stale.
pub const HEADER_VERSION: u32 = 2;

/// `{kind} {parent.}{symbol}`, as the header and search results show a definition.
pub fn symbol_label(kind: Option<&str>, parent: Option<&str>, symbol: &str) -> String {
    let mut label = String::new();
    if let Some(kind) = kind {
        label.push_str(kind);
        label.push(' ');
    }
    if let Some(parent) = parent {
        label.push_str(parent);
        label.push('.');
    }
    label.push_str(symbol);
    label
}

pub fn context_header(path: &str, chunk: &Chunk) -> String {
    let mut header = format!("{path} · {}", chunk.language);
    if let Some(symbol) = &chunk.symbol {
        header.push_str(" · ");
        header.push_str(&symbol_label(
            chunk.kind.as_deref(),
            chunk.parent.as_deref(),
            symbol,
        ));
        let words = crate::identifier_words(symbol);
        if words.len() > 1 {
            header.push_str(" (");
            header.push_str(&words.join(" "));
            header.push(')');
        }
    }
    header
}

/// What the model sees for a chunk: the header, a newline, the chunk's text.
pub fn embedding_text(path: &str, chunk: &Chunk) -> String {
    format!("{}\n{}", context_header(path, chunk), chunk.text)
}

/// The second text embedded for a chunk that starts a definition: the header and the
/// definition's signature alone. A short text's mean-pooled vector is about its name and
/// parameters, which a query in prose names more often than it names a body's statements.
pub fn signature_text(path: &str, chunk: &Chunk) -> Option<String> {
    let signature = chunk.signature.as_ref()?;
    Some(format!("{}\n{signature}", context_header(path, chunk)))
}
