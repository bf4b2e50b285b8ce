//! Quiver's chunker: cuts one file's text into chunks that fit a model's token budget, along
//! the file's structure.
//!
//! What it does: detects the language from the path ([`Language`]); splits code along its
//! tree-sitter syntax tree (functions, methods and classes whole where they fit, split into
//! members where they do not, small neighbours merged), Markdown by headings and other text by
//! paragraphs; records for each [`Chunk`] its lines, bytes, symbol, kind and parent; builds the
//! context header that is embedded with it ([`embedding_text`]).
//! What it does not: read files, decide which files to index, or embed (the index does that).
//! Token counts come from a [`TokenCounter`], normally the model's own tokenizer.
//!
//! Entry point: [`chunk_file`].

mod code;
mod doc;
mod header;
mod language;
mod parse_view;
mod prose;
mod segment;
mod syntax;
mod words;

pub use doc::{code_length, doc_comment, first_sentence};
pub use header::{context_header, embedding_text, signature_text, symbol_label, HEADER_VERSION};
pub use language::{is_test_path, Language};
pub use syntax::{Symbol, SYNTAX_RULES_VERSION};
pub use words::identifier_words;

use code::CodeSplitter;
use segment::{merge_units, LineIndex, MergePolicy, Unit};

/// Counts tokens the way the embedding model will.
pub trait TokenCounter {
    /// Byte offsets in `text` where each token starts, special tokens left out, no truncation.
    fn token_starts(&self, text: &str) -> Result<Vec<usize>, ChunkError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("tokenizing for chunk sizes failed: {0}")]
    Tokenizer(String),
    #[error("tree-sitter could not load the {0} grammar")]
    Grammar(&'static str),
}

/// A piece of a file, cut on whole lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    pub language: &'static str,
    /// First and last line, 1-based and inclusive.
    pub start_line: usize,
    pub end_line: usize,
    /// Byte range of `text` in the file.
    pub start_byte: usize,
    pub end_byte: usize,
    /// The definition the chunk is about (the largest one it holds, or the one it is part of).
    pub symbol: Option<String>,
    pub kind: Option<String>,
    /// Enclosing definitions, outermost first, joined with `.`.
    pub parent: Option<String>,
    /// Tokens of `text` alone (the header comes on top).
    pub tokens: usize,
    /// The signature of the definition that starts in this chunk (its first line up to its
    /// body, whitespace collapsed): embedded on its own with the header as a second vector
    /// ([`signature_text`]). `None` for chunks that continue a definition or define nothing.
    pub signature: Option<String>,
}

/// How to cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Token budget of a chunk's text.
    pub max_tokens: usize,
    /// Code: pack small neighbouring definitions into one chunk while they fit. Off (the
    /// default), every definition gets its own chunk, and only code around definitions (imports,
    /// statements) joins a neighbour: `quiver eval` measured +0.04 nDCG@10 for vector search.
    pub pack_definitions: bool,
    /// Code, one definition per chunk: a chunk under this many tokens takes its next
    /// definition too (0: never).
    pub definition_floor: usize,
}

/// Cuts `text` (the contents of `path`) into chunks of at most `options.max_tokens` tokens each.
/// A single line longer than the budget stays one chunk; the embedder truncates it.
pub fn chunk_file(
    path: &std::path::Path,
    text: &str,
    options: &ChunkOptions,
    counter: &dyn TokenCounter,
) -> Result<Vec<Chunk>, ChunkError> {
    let budget = options.max_tokens;
    let language = Language::from_path(path);
    let lines = LineIndex::new(text, counter.token_starts(text)?);
    if lines.line_count() == 0 {
        return Ok(Vec::new());
    }
    let budget = budget.max(1);
    let (units, policy) = match language.grammar() {
        Some(grammar) => {
            let split = !options.pack_definitions;
            let policy = if split {
                MergePolicy::Definitions {
                    floor: options.definition_floor,
                }
            } else {
                MergePolicy::SameParents
            };
            (
                code_units(language, grammar, text, &lines, budget, split)?,
                policy,
            )
        }
        None if language == Language::Markdown => (
            prose::markdown_units(text, &lines, budget),
            MergePolicy::Any,
        ),
        None => (
            prose::paragraph_units(text, &lines, budget),
            MergePolicy::Any,
        ),
    };
    let units = merge_units(units, &lines, budget, policy);
    Ok(units
        .into_iter()
        .filter_map(|unit| to_chunk(unit, language, text, &lines))
        .collect())
}

/// Fixed windows of `lines_per_chunk` lines with no regard for syntax: the chunking most Python
/// pipelines use today, kept as the evaluation baseline. Chunks carry no symbol.
pub fn chunk_fixed_lines(
    path: &std::path::Path,
    text: &str,
    lines_per_chunk: usize,
    counter: &dyn TokenCounter,
) -> Result<Vec<Chunk>, ChunkError> {
    let language = Language::from_path(path);
    let lines = LineIndex::new(text, counter.token_starts(text)?);
    let step = lines_per_chunk.max(1);
    Ok((0..lines.line_count())
        .step_by(step)
        .filter_map(|start| {
            let unit = Unit {
                lines: start..(start + step).min(lines.line_count()),
                symbol: None,
                parents: Vec::new(),
                signature: None,
            };
            to_chunk(unit, language, text, &lines)
        })
        .collect())
}

fn code_units(
    language: Language,
    grammar: tree_sitter::Language,
    text: &str,
    lines: &LineIndex,
    budget: usize,
    split_definitions: bool,
) -> Result<Vec<Unit>, ChunkError> {
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&grammar)
        .map_err(|_| ChunkError::Grammar(language.name()))?;
    let view = parse_view::parse_view(language, text);
    let Some(tree) = parser.parse(view.as_deref().unwrap_or(text), None) else {
        // The parser gave up (it has no timeout set, so this is rare): fall back to paragraphs.
        return Ok(prose::paragraph_units(text, lines, budget));
    };
    let splitter = CodeSplitter {
        text,
        lines,
        budget,
        split_definitions,
    };
    let mut units = Vec::new();
    splitter.units(tree.root_node(), 0..lines.line_count(), &[], &mut units);
    if view.is_some() && matches!(language, Language::C | Language::Cpp) {
        // A declaration the parser read past a macro starts after it; its signature is the
        // line as written (`GIT_EXTERN(int) git_repository_open(...)`).
        for signature in units.iter_mut().filter_map(|unit| unit.signature.as_mut()) {
            let line_start = text[..signature.start].rfind('\n').map_or(0, |at| at + 1);
            let before = &text[line_start..signature.start];
            signature.start = line_start + before.len() - before.trim_start().len();
        }
    }
    Ok(units)
}

/// Trims blank lines off both ends; a unit of only blank lines makes no chunk.
fn to_chunk(unit: Unit, language: Language, text: &str, lines: &LineIndex) -> Option<Chunk> {
    let mut range = unit.lines;
    while !range.is_empty() && segment::is_blank(text, lines, range.start) {
        range.start += 1;
    }
    while !range.is_empty() && segment::is_blank(text, lines, range.end - 1) {
        range.end -= 1;
    }
    if range.is_empty() {
        return None;
    }
    let bytes = lines.byte_range(range.clone());
    let signature = unit
        .signature
        .filter(|signature| bytes.contains(&signature.start))
        .and_then(|signature| {
            // The length cap may have cut a character in two.
            let mut end = signature.end.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.get(signature.start..end)
        })
        .map(|signature| signature.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|signature| !signature.is_empty());
    let mut parents = unit.parents;
    // A piece of a definition that defines nothing itself is about its innermost parent.
    let symbol = unit.symbol.or_else(|| parents.pop());
    let parent = (!parents.is_empty()).then(|| {
        parents
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(".")
    });
    Some(Chunk {
        text: text[bytes.clone()]
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        language: language.name(),
        start_line: range.start + 1,
        end_line: range.end,
        start_byte: bytes.start,
        end_byte: bytes.end,
        symbol: symbol.as_ref().map(|s| s.name.clone()),
        kind: symbol.map(|s| s.kind.to_string()),
        parent,
        tokens: lines.tokens(range),
        signature,
    })
}
