//! The doc comment of the definition a chunk starts with, as prose: what a repository says its
//! own code does, in the words its users search with. The index mines (doc comment, definition)
//! pairs from these to adapt search to the repository.

use crate::Language;

/// The doc comment of the definition that `chunk_text` starts with, markers, tags and inline
/// markup stripped: the comment lines directly above it (`///`, `/** */`, `//`, `#`), or, in
/// Python, the docstring that opens its body. `None` when the chunk starts with anything else,
/// or when a blank line parts the comment from the code (a licence header, a file comment).
pub fn doc_comment(language: Language, chunk_text: &str) -> Option<String> {
    let text = match language {
        Language::Python => python_docstring(chunk_text)?,
        Language::Markdown | Language::Text => return None,
        _ => leading_comment(language, chunk_text)?,
    };
    let prose = prose_of(&text);
    (!prose.is_empty()).then_some(prose)
}

/// The first sentence of a doc comment's first paragraph (at most 300 bytes): what a short
/// query says.
pub fn first_sentence(doc: &str) -> String {
    let paragraph = doc.split("\n\n").next().unwrap_or_default();
    let words: Vec<&str> = paragraph.split_whitespace().collect();
    let mut sentence = String::new();
    for word in words {
        if !sentence.is_empty() {
            sentence.push(' ');
        }
        sentence.push_str(word);
        if word.ends_with(['.', '!', '?']) {
            break;
        }
    }
    let mut end = sentence.len().min(300);
    while !sentence.is_char_boundary(end) {
        end -= 1;
    }
    sentence.truncate(end);
    sentence
}

/// The characters of code in a chunk's text: its lines less indentation, blank lines, comment
/// lines (`//`, `#`, `*`) and block comments and docstrings (`/* */`, `"""`, `\'\'\'`) that open a
/// line. What a definition holds whether or not it is documented: search weighs it as a
/// prior, where the text's whole length would reward a documented chunk for its comment.
/// Lines opening with `#` count as comment in every language, preprocessor lines and
/// attributes too: the prior was measured so (docs/evaluation.md), and it only has to rank
/// a declaration below a body, not count exactly.
pub fn code_length(text: &str) -> usize {
    let mut length = 0;
    let mut open_block: Option<&str> = None;
    for line in text.lines() {
        let mut code = line.trim();
        if let Some(close) = open_block {
            let Some(at) = code.find(close) else {
                continue;
            };
            code = code[at + close.len()..].trim();
            open_block = None;
        }
        for (open, close) in [("/*", "*/"), ("\"\"\"", "\"\"\""), ("\'\'\'", "\'\'\'")] {
            if let Some(rest) = code.strip_prefix(open) {
                match rest.find(close) {
                    Some(at) => code = rest[at + close.len()..].trim(),
                    None => {
                        open_block = Some(close);
                        code = "";
                    }
                }
                break;
            }
        }
        if code.starts_with("//") || code.starts_with('#') || code.starts_with('*') {
            continue;
        }
        length += code.len();
    }
    length
}

fn python_docstring(text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|line| {
        let line = line.trim_start();
        line.is_empty() || line.starts_with('@') || line.starts_with('#')
    });
    let definition = lines.next()?.trim_start();
    if !(definition.starts_with("def ")
        || definition.starts_with("async def ")
        || definition.starts_with("class "))
    {
        return None;
    }
    // The signature may run over several lines; the body starts after the line ending in `:`.
    let mut rest: Vec<&str> = lines.collect();
    if !definition.trim_end().ends_with(':') {
        let end = rest.iter().position(|l| l.trim_end().ends_with(':'))?;
        rest.drain(..=end);
    }
    let body = rest.join("\n");
    let body = body.trim_start();
    let body = body.trim_start_matches(['r', 'R', 'u', 'U']);
    let quote = ["\"\"\"", "'''"]
        .into_iter()
        .find(|q| body.starts_with(q))?;
    let inner = &body[3..];
    Some(inner[..inner.find(quote)?].to_string())
}

fn leading_comment(language: Language, text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|line| line.trim().is_empty());
    let mut comment = Vec::new();
    let mut in_block = false;
    for line in lines.by_ref() {
        let trimmed = line.trim();
        if in_block {
            in_block = !trimmed.contains("*/");
            comment.push(trimmed.trim_end_matches("*/").trim_start_matches('*'));
            continue;
        }
        if let Some(rest) = trimmed
            .strip_prefix("/**")
            .or_else(|| trimmed.strip_prefix("/*!"))
        {
            in_block = !rest.contains("*/");
            comment.push(rest.trim_end_matches("*/"));
        } else if let Some(rest) = line_comment(language, trimmed) {
            comment.push(rest);
        } else {
            // The first line after the comment must be code (an attribute, an annotation, or
            // the definition itself): a blank line parts a file's comment from its first item.
            if comment.is_empty() || trimmed.is_empty() {
                return None;
            }
            break;
        }
    }
    Some(comment.join("\n"))
}

/// The text of a line comment in the language's doc style, or `None` for other lines.
fn line_comment(language: Language, line: &str) -> Option<&str> {
    let marker = match language {
        Language::Ruby => "#",
        Language::Php if line.starts_with('#') && !line.starts_with("#[") => "#",
        _ => "//",
    };
    let rest = line.strip_prefix(marker)?;
    // `//!` documents the enclosing module, `////` is a rule; `#!` a shebang, `#[` an attribute.
    if rest.starts_with(['!', '/']) && !rest.starts_with("/ ") && rest != "/" {
        return None;
    }
    Some(rest.trim_start_matches('/'))
}

/// A comment's prose: leading stars gone, tag lines (`@param`, `\return`) and everything after
/// them dropped (but `@brief`'s text kept), `{@code x}` and `{@link A#x}` reduced to `x`, HTML
/// tags removed.
fn prose_of(comment: &str) -> String {
    let mut kept = Vec::new();
    for line in comment.lines() {
        let line = line.trim().trim_start_matches('*').trim();
        let line = line
            .strip_prefix("@brief ")
            .or_else(|| line.strip_prefix("\\brief "))
            .unwrap_or(line);
        if line.starts_with(['@', '\\']) && line[1..].starts_with(char::is_alphabetic) {
            break;
        }
        kept.push(inline_markup(line));
    }
    kept.join("\n").trim().to_string()
}

fn inline_markup(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(['{', '<']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let close = if tail.starts_with('{') { '}' } else { '>' };
        let inline_tag = tail.starts_with("{@");
        let html_tag = tail.starts_with('<')
            && tail[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/');
        match tail.find(close) {
            Some(end) if inline_tag => {
                // `{@link java.util.List#add(Object) add}`: the label, else the name after `#`.
                let inner = &tail[2..end];
                let mut parts = inner.splitn(3, char::is_whitespace).skip(1);
                let target = parts.next().unwrap_or_default();
                let label = parts.next().map(str::trim).filter(|l| !l.is_empty());
                let name = target.rsplit('#').next().unwrap_or(target);
                out.push_str(label.unwrap_or(name));
                rest = &tail[end + 1..];
            }
            Some(end) if html_tag => rest = &tail[end + 1..],
            _ => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_length_leaves_out_comments_docstrings_and_indentation() {
        let documented = "/**\n * Returns the larger.\n */\nint max(int a, int b);";
        assert_eq!(code_length(documented), "int max(int a, int b);".len());
        assert_eq!(
            code_length("/// Doc.\n#[inline]\nfn f() {}"),
            "fn f() {}".len()
        );
        let python = "def f(x):\n    \"\"\"Doubles.\n\n    More.\n    \"\"\"\n    return 2 * x";
        assert_eq!(code_length(python), "def f(x):return 2 * x".len());
        assert_eq!(
            code_length("x = 1  /* trailing */"),
            "x = 1  /* trailing */".len()
        );
        assert_eq!(code_length("/* a */ int x;"), "int x;".len());
    }

    #[test]
    fn doc_comments_in_each_style() {
        let cases = [
            (
                Language::Rust,
                "/// Returns the larger of two numbers.\n///\n/// More.\n#[inline]\npub fn max() {}",
                "Returns the larger of two numbers.\n\nMore.",
            ),
            (
                Language::Java,
                "  /**\n   * Returns the {@code Duration} between {@link Instant#now instants}.\n   *\n   * @param a first\n   */\n  @Override\n  public Duration between() {",
                "Returns the Duration between instants.",
            ),
            (
                Language::Go,
                "// Execute runs the command.\nfunc (c *Command) Execute() error {",
                "Execute runs the command.",
            ),
            (
                Language::Ruby,
                "  # Returns the host.\n  def host\n  end",
                "Returns the host.",
            ),
            (
                Language::Cpp,
                "/// @brief parse a <b>JSON</b> value\n/// @sa dump\ntemplate<typename T>\nstatic json parse(T&& i);",
                "parse a JSON value",
            ),
            (
                Language::C,
                "/** Open a repository. */\nGIT_EXTERN(int) git_repository_open(void);",
                "Open a repository.",
            ),
            (
                Language::Python,
                "@decorator\ndef put(self, key,\n        value):\n    \"\"\"Store a value.\n\n    More.\n    \"\"\"\n    pass",
                "Store a value.\n\nMore.",
            ),
        ];
        for (language, text, doc) in cases {
            assert_eq!(doc_comment(language, text).as_deref(), Some(doc), "{text}");
        }
    }

    #[test]
    fn comments_parted_from_code_or_not_doc_comments_are_none() {
        let cases = [
            (Language::Rust, "// Licence text.\n\nuse std::io;"),
            (Language::Rust, "//! The crate.\nfn x() {}"),
            (Language::Rust, "pub fn x() {}"),
            (Language::Python, "def put(self):\n    return 1"),
            (Language::Python, "x = 1\n\"\"\"Not a docstring.\"\"\""),
            (Language::Go, "// @param only tags\nfunc X() {}"),
        ];
        for (language, text) in cases {
            assert_eq!(doc_comment(language, text), None, "{text}");
        }
    }

    #[test]
    fn first_sentence_of_the_first_paragraph() {
        assert_eq!(
            first_sentence("Store a value under a key. Then more.\n\nDetails."),
            "Store a value under a key."
        );
        assert_eq!(
            first_sentence("No full stop\nat all"),
            "No full stop at all"
        );
        assert_eq!(first_sentence(&"é".repeat(200)).len(), 300);
    }
}
