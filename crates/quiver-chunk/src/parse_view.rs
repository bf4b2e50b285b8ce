//! The text the parser reads: the file's own bytes, with what a grammar misreads rewritten in
//! place, byte for byte the same length and lines, so that every node's offsets hold for the
//! original text, from which chunks, names and signatures are taken.
//!
//! **C and C++ headers** wrap their declarations in macros the parser cannot expand: an export
//! macro before the return type (`ZSTDLIB_API size_t ZSTD_compress(...)`), one around it
//! (`GIT_EXTERN(int) git_repository_open(...)`), a linkage macro alone on a line
//! (`GIT_BEGIN_DECL`, `EVENT2_EXPORT_SYMBOL`). tree-sitter reads them as types or calls and
//! recovers by swallowing what follows: in libgit2's `repository.h` one `function_definition`
//! named `GIT_EXTERN` spanned the first 120 lines and five prototypes. A macro here is a word of
//! capitals, digits and underscores with an underscore in it (`FILE` or `BOOL` are types, not
//! macros); it is blanked only where the line still declares something without it: alone on its
//! line, or before at least a type and a name.
//!
//! **TypeScript** interfaces may list generic call signatures with no separator between
//! members (`<T>(value: T[]): Array<T>` on the line after another member, as mobx and Redux
//! Toolkit write them); tree-sitter-typescript reads the `<` as the previous member's type
//! arguments and fails, leaving the rest of the file an `ERROR` node with no definitions in it
//! (733 of `createSlice.ts`'s lines). The line's first space becomes the `;` that separates
//! them.

use crate::language::Language;
use std::ops::Range;

/// The text to parse for `text` in `language`, or `None` when it is `text` itself.
pub fn parse_view(language: Language, text: &str) -> Option<String> {
    match language {
        Language::C | Language::Cpp => blank_declaration_macros(text),
        Language::TypeScript => separate_call_signatures(text),
        _ => None,
    }
}

/// `text` with its declaration macros blanked, or `None` when it has none.
fn blank_declaration_macros(text: &str) -> Option<String> {
    let mut bytes: Option<Vec<u8>> = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let blanks = macros_of_line(line.as_bytes());
        for range in blanks.ranges {
            let copy = bytes.get_or_insert_with(|| text.as_bytes().to_vec());
            let span = &mut copy[line_start + range.start..line_start + range.end];
            span.fill(b' ');
            if blanks.alone {
                // A comment of the same length, which the chunker attaches to the declaration
                // below as it does a doc comment (a blank line would leave the macro's line to
                // the chunk above). Macro names are 4 bytes or more.
                let last = span.len() - 2;
                span[..2].copy_from_slice(b"/*");
                span[last..].copy_from_slice(b"*/");
            }
        }
        line_start += line.len();
    }
    // Only ASCII bytes were replaced by spaces, so the copy is still UTF-8.
    bytes.map(|b| String::from_utf8(b).unwrap_or_else(|_| text.to_string()))
}

/// What to blank in one line.
#[derive(Default)]
struct Blanks {
    ranges: Vec<Range<usize>>,
    /// The line holds nothing but the macros.
    alone: bool,
}

/// Byte ranges of `line` to blank.
fn macros_of_line(line: &[u8]) -> Blanks {
    let mut at = skip_space(line, 0);
    let mut blanks = Vec::new();
    while let Some(end) = macro_name(line, at) {
        let after = skip_space(line, end);
        if after == line.len() {
            // Alone on its line, or after the line's other macros: one span for them all.
            let start = blanks
                .first()
                .map_or(at, |first: &Range<usize>| first.start);
            return Blanks {
                ranges: std::iter::once(start..end).collect(),
                alone: true,
            };
        }
        if line[end] == b'(' {
            let Some(close) = closing_paren(line, end) else {
                return Blanks::default();
            };
            let inner = skip_space(line, end + 1);
            let rest = skip_space(line, close + 1);
            let keeps_type = inner < close && is_word_start(line[inner]);
            let declared = if keeps_type {
                [&line[inner..close], b" ", &line[rest..]].concat()
            } else {
                line[rest..].to_vec()
            };
            if !declares(&declared) {
                return Blanks::default();
            }
            if keeps_type {
                // `GIT_EXTERN(int)`: the argument is the return type, which stays.
                blanks.push(at..end + 1);
                blanks.push(close..close + 1);
            } else {
                blanks.push(at..close + 1);
            }
            at = rest;
            continue;
        }
        if end == after || !declares(&line[after..]) {
            break;
        }
        blanks.push(at..end);
        at = after;
    }
    Blanks {
        ranges: blanks,
        alone: false,
    }
}

/// Whether `rest` reads as the start of a declaration: a type and a name before its first
/// parenthesis (`size_t ZSTD_compress(`, `struct event_base *event_base_new(`), or words alone
/// up to the line's end (`LWS_VISIBLE LWS_EXTERN int` above the name's line), or more macros.
fn declares(rest: &[u8]) -> bool {
    let mut words = 0;
    let mut at = 0;
    while at < rest.len() {
        let b = rest[at];
        if is_word_start(b) {
            if words == 0 && macro_name(rest, at).is_some() {
                return true;
            }
            words += 1;
            while at < rest.len() && is_word(rest[at]) {
                at += 1;
            }
            continue;
        }
        match b {
            b'(' => return words >= 2,
            b'*' | b'&' | b':' | b' ' | b'\t' | b'\r' | b'\n' => at += 1,
            // Template arguments: `batch<T, A> abs(`.
            b'<' | b'>' | b',' => at += 1,
            _ => return false,
        }
    }
    words >= 1
}

/// The end of a macro name starting at `at`, if one does.
fn macro_name(line: &[u8], at: usize) -> Option<usize> {
    if at >= line.len() || !is_word_start(line[at]) {
        return None;
    }
    let mut end = at;
    while end < line.len() && is_word(line[end]) {
        end += 1;
    }
    let word = &line[at..end];
    let shaped = word.len() >= 4
        && word.contains(&b'_')
        && word.iter().any(u8::is_ascii_uppercase)
        && word
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
    shaped.then_some(end)
}

fn closing_paren(line: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &b) in line.iter().enumerate().skip(open) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn skip_space(line: &[u8], mut at: usize) -> usize {
    while at < line.len() && line[at].is_ascii_whitespace() {
        at += 1;
    }
    at
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `text` with a `;` before each generic call signature that starts a line after a member that
/// did not end with a separator, or `None` when there is none.
fn separate_call_signatures(text: &str) -> Option<String> {
    let mut bytes: Option<Vec<u8>> = None;
    let mut line_start = 0;
    // The last character of the last line of code (not blank, not a comment).
    let mut previous_end: Option<u8> = None;
    for line in text.split_inclusive('\n') {
        let code = line.trim();
        let indent = line.len() - line.trim_start().len();
        if code.starts_with('<')
            && indent > 0
            && previous_end.is_some_and(|b| b.is_ascii_alphanumeric() || b"_$>)]".contains(&b))
        {
            let copy = bytes.get_or_insert_with(|| text.as_bytes().to_vec());
            copy[line_start] = b';';
        }
        if !(code.is_empty()
            || code.starts_with("//")
            || code.starts_with('*')
            || code.starts_with("/*"))
        {
            previous_end = code.bytes().last();
        }
        line_start += line.len();
    }
    // Only an ASCII space was replaced.
    bytes.map(|b| String::from_utf8(b).unwrap_or_else(|_| text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{blank_declaration_macros, separate_call_signatures};

    fn blanked(line: &str) -> String {
        blank_declaration_macros(line).unwrap_or_else(|| line.to_string())
    }

    #[test]
    fn export_and_linkage_macros_are_blanked_in_place() {
        for (line, parsed) in [
            (
                "GIT_EXTERN(int) git_repository_open(git_repository **out);",
                "           int  git_repository_open(git_repository **out);",
            ),
            (
                "GIT_EXTERN(const char *) git_repository_path(const git_repository *repo);",
                "           const char *  git_repository_path(const git_repository *repo);",
            ),
            (
                "ZSTDLIB_API size_t ZSTD_compress(void *dst);",
                "            size_t ZSTD_compress(void *dst);",
            ),
            (
                "GLM_FUNC_DECL GLM_CONSTEXPR genType abs(genType x);",
                "                            genType abs(genType x);",
            ),
            (
                "XSIMD_INLINE batch<T, A> abs(batch<T, A> const& x) noexcept",
                "             batch<T, A> abs(batch<T, A> const& x) noexcept",
            ),
            (
                "JSON_HEDLEY_NON_NULL(3) static int parse(char *s);",
                "                        static int parse(char *s);",
            ),
            ("GIT_BEGIN_DECL\n", "/*          */\n"),
            ("  LWS_VISIBLE LWS_EXTERN\n", "  /*                  */\n"),
            (
                "LWS_VISIBLE LWS_EXTERN int\n",
                "                       int\n",
            ),
        ] {
            assert_eq!(blanked(line), parsed);
            assert_eq!(blanked(line).len(), line.len());
        }
    }

    #[test]
    fn types_calls_and_preprocessor_lines_stay() {
        for line in [
            "FILE *fopen(const char *path);",
            "SIZE_T length(void);",
            "MY_TYPE *make(void);",
            "TAILQ_HEAD(list, entry);",
            "DEFINE_HANDLER(on_read) {",
            "#define GIT_EXTERN(type) extern type",
            "  GIT_REPOSITORY_OPEN_NO_SEARCH = (1 << 0),",
            " * GIT_EXTERN(int) in a comment stays a comment",
            "return ERROR_CODE;",
            "int x = MAX_SIZE;",
        ] {
            assert_eq!(blank_declaration_macros(line), None, "{line}");
        }
    }

    #[test]
    fn typescript_call_signatures_get_a_separator_where_a_member_ends_without_one() {
        let interface = "interface Factory {\n  <T = any>(value: T[]): Array<T>\n  <T = any>(value: Set<T>): Set<T>\n  box: number\n}\n";
        assert_eq!(
            separate_call_signatures(interface).as_deref(),
            Some("interface Factory {\n  <T = any>(value: T[]): Array<T>\n; <T = any>(value: Set<T>): Set<T>\n  box: number\n}\n")
        );
        for text in [
            "interface A {\n  a(): void;\n  <T>(x: T): T\n}\n",
            "interface A {\n  a(): void,\n  <T>(x: T): T\n}\n",
            "const x =\n  <Foo>bar\n",
            "call(\n  <Foo>bar)\n",
        ] {
            assert_eq!(separate_call_signatures(text), None, "{text}");
        }
    }
}
