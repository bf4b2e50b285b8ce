//! Whole definitions around chunks, and search results packed into a token budget.
//!
//! The chunker splits what does not fit a chunk: a long function into pieces, a class into its
//! head and its members. A reader (a coding agent, mostly) wants the definition whole, with
//! what encloses it named, and a search's results to fill a context window without repeating
//! themselves. Both are assembled here from the stored chunks of one file, which tile it.

use crate::error::{IndexError, Result};
use crate::search::SearchHit;
use crate::store::{ChunkRecord, Store};
use quiver_chunk::TokenCounter;
use std::collections::hash_map::{Entry, HashMap};

/// A run of consecutive chunks of one file: a whole definition, or several merged.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Definition {
    pub path: String,
    pub language: String,
    /// The definition's own name, kind and enclosing definitions (outermost first, joined
    /// with `.`), as its first chunk records them.
    pub symbol: Option<String>,
    pub kind: Option<String>,
    pub parent: Option<String>,
    pub start_line: usize,
    pub end_line: usize,
    /// The chunks it spans, in file order.
    pub chunk_ids: Vec<String>,
    pub text: String,
    /// Index file key and the span of chunk positions, to merge overlapping definitions.
    #[serde(skip)]
    file: String,
    #[serde(skip)]
    seqs: (usize, usize),
}

impl Definition {
    /// `kind parent.symbol`, or the path when the chunks define nothing.
    pub fn label(&self) -> String {
        match &self.symbol {
            Some(symbol) => {
                quiver_chunk::symbol_label(self.kind.as_deref(), self.parent.as_deref(), symbol)
            }
            None => self.path.clone(),
        }
    }

    fn from_chunks(chunks: &[ChunkRecord]) -> Definition {
        let first = &chunks[0];
        let last = &chunks[chunks.len() - 1];
        let mut text = String::new();
        let mut previous_end = None;
        for chunk in chunks {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            // Blank lines between chunks belong to neither: put them back, so the text reads
            // as the file does and its lines keep their numbers.
            if let Some(end) = previous_end {
                let blank = chunk.start_line.saturating_sub(end + 1);
                text.push_str(&"\n".repeat(blank));
            }
            text.push_str(&chunk.text);
            previous_end = Some(chunk.end_line);
        }
        Definition {
            path: first.path.clone(),
            language: first.language.clone(),
            symbol: first.symbol.clone(),
            kind: first.kind.clone(),
            parent: first.parent.clone(),
            start_line: first.start_line,
            end_line: last.end_line,
            chunk_ids: chunks.iter().map(|c| c.chunk_id.clone()).collect(),
            text,
            file: first.file.clone(),
            seqs: (first.seq, last.seq),
        }
    }
}

/// The whole definition `chunk` belongs to: the pieces of a split function or method around
/// it, or for the head of a type (a class whose members were cut apart), the type with every
/// member. A chunk that defines nothing is returned alone.
pub fn definition_of(store: &Store, chunk: &ChunkRecord) -> Result<Definition> {
    Ok(definition_in(&store.chunks_of_file(&chunk.file)?, chunk))
}

/// [`definition_of`] among `chunks`, the stored chunks of `chunk`'s file in order.
fn definition_in(chunks: &[ChunkRecord], chunk: &ChunkRecord) -> Definition {
    let Some(at) = chunks.iter().position(|c| c.chunk_id == chunk.chunk_id) else {
        // Removed by a commit since the hit was found: the hit alone is all there is.
        return Definition::from_chunks(std::slice::from_ref(chunk));
    };
    let (start, end) = definition_span(chunks, at);
    Definition::from_chunks(&chunks[start..=end])
}

/// The chunk a reader names by `path:line` (the innermost definition holding that line).
pub fn chunk_at(store: &Store, path: &str, line: usize) -> Result<ChunkRecord> {
    store
        .chunks_at_line(path, line)?
        .into_iter()
        .next()
        .ok_or_else(|| IndexError::NoChunkAt {
            path: path.to_string(),
            line,
        })
}

/// The position in `chunks` (one file, in order) of the piece that starts the definition `at`
/// is a piece of (the one with its signature): `at` itself unless it continues a function cut
/// in pieces.
pub(crate) fn definition_start(chunks: &[ChunkRecord], at: usize) -> usize {
    let mut start = at;
    while chunks[start].signature_hash.is_none()
        && start > 0
        && same_definition(&chunks[at], &chunks[start - 1])
    {
        start -= 1;
    }
    start
}

/// Whether `other` is a piece of the same definition as `chunk`: the same symbol (one there is)
/// in the same enclosing definition.
fn same_definition(chunk: &ChunkRecord, other: &ChunkRecord) -> bool {
    chunk.symbol.is_some() && other.symbol == chunk.symbol && other.parent == chunk.parent
}

/// Positions `[start, end]` in `chunks` (one file, in order) of the definition `at` is part of.
fn definition_span(chunks: &[ChunkRecord], at: usize) -> (usize, usize) {
    let chunk = &chunks[at];
    let Some(symbol) = &chunk.symbol else {
        return (at, at);
    };
    let start = definition_start(chunks, at);
    let qualified = match &chunk.parent {
        Some(parent) => format!("{parent}.{symbol}"),
        None => symbol.clone(),
    };
    let member = |other: &ChunkRecord| {
        other.parent.as_deref().is_some_and(|parent| {
            parent == qualified || parent.starts_with(&format!("{qualified}."))
        })
    };
    let mut end = start;
    while end + 1 < chunks.len() {
        let next = &chunks[end + 1];
        let continues = same_definition(chunk, next) && next.signature_hash.is_none();
        if continues || member(next) {
            end += 1;
        } else {
            break;
        }
    }
    (start, end.max(at))
}

/// A definition found by name ([`find_symbols`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FoundSymbol {
    pub symbol: String,
    /// `None` for a definition known only as what encloses others (a class whose head was
    /// chunked with its first member).
    pub kind: Option<String>,
    pub parent: Option<String>,
    pub path: String,
    pub language: String,
    pub start_line: usize,
    pub end_line: usize,
    /// The chunk the definition starts in.
    pub chunk_id: String,
}

/// Rows looked at per search: more than any name has definitions in a sane codebase.
const SYMBOL_CANDIDATES: usize = 5_000;

/// Definitions named `name` (or, with `prefix`, whose name starts with it, ASCII case
/// ignored), at most `limit`, in path order. `Outer.name` names a member. A name is found as a
/// chunk's own symbol, or as a definition enclosing chunks (the chunker records a class whose
/// members were split apart only as their parent).
pub fn find_symbols(
    store: &Store,
    name: &str,
    prefix: bool,
    limit: usize,
) -> Result<Vec<FoundSymbol>> {
    let wanted: Vec<&str> = name.split('.').filter(|s| !s.is_empty()).collect();
    let Some(last) = wanted.last() else {
        return Ok(Vec::new());
    };
    let matches = |qualified: &[&str]| {
        if qualified.len() < wanted.len() {
            return false;
        }
        let tail = &qualified[qualified.len() - wanted.len()..];
        let (own, outer) = tail.split_last().expect("wanted is not empty");
        let own_matches = if prefix {
            own.len() >= last.len() && own[..last.len()].eq_ignore_ascii_case(last)
        } else {
            own == last
        };
        own_matches && outer == &wanted[..wanted.len() - 1]
    };
    let mut found: Vec<FoundSymbol> = Vec::new();
    for chunk in store.chunks_mentioning(last, SYMBOL_CANDIDATES)? {
        if found.len() == limit {
            break;
        }
        let Some(symbol) = &chunk.symbol else {
            continue;
        };
        let mut qualified: Vec<&str> = chunk
            .parent
            .as_deref()
            .map_or_else(Vec::new, |p| p.split('.').collect());
        qualified.push(symbol);
        // The chunk's own definition, then each definition enclosing it, innermost first.
        for depth in (1..=qualified.len()).rev() {
            let names = &qualified[..depth];
            if !matches(names) {
                continue;
            }
            let (own, outer) = names.split_last().expect("depth is at least 1");
            let parent = (!outer.is_empty()).then(|| outer.join("."));
            let seen = found
                .iter()
                .any(|f| f.path == chunk.path && f.symbol == *own && f.parent == parent);
            if seen || found.len() == limit {
                continue;
            }
            // Later pieces of a split definition come after its first, and are `seen`.
            let own_chunk = depth == qualified.len();
            let (start_line, end_line, chunk_id) = if own_chunk {
                let whole = definition_of(store, &chunk)?;
                (whole.start_line, whole.end_line, chunk.chunk_id.clone())
            } else {
                enclosing_span(store, &chunk, &names.join("."))?
            };
            found.push(FoundSymbol {
                symbol: own.to_string(),
                kind: if own_chunk { chunk.kind.clone() } else { None },
                parent,
                path: chunk.path.clone(),
                language: chunk.language.clone(),
                start_line,
                end_line,
                chunk_id,
            });
        }
    }
    Ok(found)
}

/// Lines and first chunk of the run of chunks around `chunk` enclosed by `qualified`.
fn enclosing_span(
    store: &Store,
    chunk: &ChunkRecord,
    qualified: &str,
) -> Result<(usize, usize, String)> {
    let inside = |c: &ChunkRecord| {
        c.parent
            .as_deref()
            .is_some_and(|p| p == qualified || p.starts_with(&format!("{qualified}.")))
    };
    let chunks = store.chunks_of_file(&chunk.file)?;
    let Some(at) = chunks.iter().position(|c| c.chunk_id == chunk.chunk_id) else {
        return Ok((chunk.start_line, chunk.end_line, chunk.chunk_id.clone()));
    };
    let mut start = at;
    while start > 0 && inside(&chunks[start - 1]) {
        start -= 1;
    }
    let mut end = at;
    while end + 1 < chunks.len() && inside(&chunks[end + 1]) {
        end += 1;
    }
    Ok((
        chunks[start].start_line,
        chunks[end].end_line,
        chunks[start].chunk_id.clone(),
    ))
}

/// Hits a packed search draws from: enough to fill a large budget after merging.
pub const PACK_CANDIDATES: usize = 100;

/// Search results as whole definitions within a token budget.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Packed {
    pub definitions: Vec<PackedDefinition>,
    /// Tokens of the definitions' texts, counted with the model's tokenizer.
    pub tokens: usize,
    pub max_tokens: usize,
    /// Hits whose definition was already in the pack (inside or overlapping one).
    pub hits_merged: usize,
    /// Hits whose definition did not fit what was left of the budget.
    pub hits_left_out: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PackedDefinition {
    #[serde(flatten)]
    pub definition: Definition,
    /// The best score of the hits it holds.
    pub score: f64,
    pub tokens: usize,
}

/// Packs `hits` (best first) into at most `max_tokens` tokens of whole definitions: each hit
/// is widened to its definition ([`definition_of`]); one inside a definition already packed
/// adds nothing (a method inside its class's hit), one overlapping a packed definition is
/// merged with it; a definition that does not fit is left out and the next
/// tried, so the budget fills with the best that fit.
pub fn pack(
    store: &Store,
    hits: &[SearchHit],
    max_tokens: usize,
    counter: &dyn TokenCounter,
) -> Result<Packed> {
    let count = |text: &str| -> Result<usize> { Ok(counter.token_starts(text)?.len()) };
    let mut packed = Packed {
        definitions: Vec::new(),
        tokens: 0,
        max_tokens,
        hits_merged: 0,
        hits_left_out: 0,
    };
    // Each file's chunks are read once per pack: hits cluster in few files.
    let mut files: HashMap<String, Vec<ChunkRecord>> = HashMap::new();
    for hit in hits {
        let chunks = match files.entry(hit.chunk.file.clone()) {
            Entry::Occupied(read) => read.into_mut(),
            Entry::Vacant(slot) => slot.insert(store.chunks_of_file(&hit.chunk.file)?),
        };
        let definition = definition_in(chunks, &hit.chunk);
        let overlapping = packed.definitions.iter().position(|held| {
            held.definition.file == definition.file
                && definition.seqs.0 <= held.definition.seqs.1
                && held.definition.seqs.0 <= definition.seqs.1
        });
        match overlapping {
            Some(at) => {
                let held = &packed.definitions[at].definition;
                if held.seqs.0 <= definition.seqs.0 && definition.seqs.1 <= held.seqs.1 {
                    packed.hits_merged += 1;
                    continue;
                }
                let merged = merge(chunks, held, &definition);
                let tokens = count(&merged.text)?;
                let grown = packed.tokens - packed.definitions[at].tokens + tokens;
                if grown > max_tokens {
                    packed.hits_left_out += 1;
                    continue;
                }
                packed.tokens = grown;
                packed.hits_merged += 1;
                let entry = &mut packed.definitions[at];
                entry.definition = merged;
                entry.tokens = tokens;
                entry.score = entry.score.max(hit.score);
            }
            None => {
                let tokens = count(&definition.text)?;
                if packed.tokens + tokens > max_tokens {
                    packed.hits_left_out += 1;
                    continue;
                }
                packed.tokens += tokens;
                packed.definitions.push(PackedDefinition {
                    definition,
                    score: hit.score,
                    tokens,
                });
            }
        }
    }
    Ok(packed)
}

/// One definition spanning both (same file), named as the one that starts first.
fn merge(chunks: &[ChunkRecord], a: &Definition, b: &Definition) -> Definition {
    let start = a.seqs.0.min(b.seqs.0);
    let end = a.seqs.1.max(b.seqs.1);
    let span: Vec<ChunkRecord> = chunks
        .iter()
        .filter(|c| (start..=end).contains(&c.seq))
        .cloned()
        .collect();
    if span.is_empty() {
        return a.clone();
    }
    let mut merged = Definition::from_chunks(&span);
    let first = if a.seqs.0 <= b.seqs.0 { a } else { b };
    merged.symbol = first.symbol.clone();
    merged.kind = first.kind.clone();
    merged.parent = first.parent.clone();
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: usize, symbol: Option<&str>, parent: Option<&str>, starts: bool) -> ChunkRecord {
        ChunkRecord {
            chunk_id: format!("c{seq}"),
            uid: seq as i64,
            uuid: String::new(),
            file: "a.py".into(),
            path: "a.py".into(),
            seq,
            source: String::new(),
            language: "python".into(),
            symbol: symbol.map(Into::into),
            kind: symbol.map(|_| "function".into()),
            parent: parent.map(Into::into),
            start_line: seq * 10 + 1,
            end_line: seq * 10 + 10,
            start_byte: 0,
            end_byte: 0,
            content_hash: String::new(),
            text: format!("line {seq}\n"),
            embed_hash: String::new(),
            signature_hash: starts.then(|| format!("s{seq}")),
            metadata: None,
        }
    }

    #[test]
    fn a_split_function_and_a_split_class_are_found_whole() {
        let chunks = vec![
            chunk(0, None, None, false),
            chunk(1, Some("long"), None, true),
            chunk(2, Some("long"), None, false),
            chunk(3, Some("long"), None, false),
            chunk(4, Some("Shape"), None, true),
            chunk(5, Some("area"), Some("Shape"), true),
            chunk(6, Some("Inner"), Some("Shape"), true),
            chunk(7, Some("f"), Some("Shape.Inner"), true),
            chunk(8, Some("after"), None, true),
        ];
        // A middle piece of a split function: all three pieces.
        assert_eq!(definition_span(&chunks, 2), (1, 3));
        assert_eq!(definition_span(&chunks, 1), (1, 3));
        // The head of a class: the class with its members, nested ones too.
        assert_eq!(definition_span(&chunks, 4), (4, 7));
        // A method: itself only; a nested class: itself and its members.
        assert_eq!(definition_span(&chunks, 5), (5, 5));
        assert_eq!(definition_span(&chunks, 6), (6, 7));
        // Code outside definitions, and a definition right after a class.
        assert_eq!(definition_span(&chunks, 0), (0, 0));
        assert_eq!(definition_span(&chunks, 8), (8, 8));
        let whole = Definition::from_chunks(&chunks[1..=3]);
        assert_eq!((whole.start_line, whole.end_line), (11, 40));
        // Lines 11-20, 21-30, 31-40: no gaps. A gap of blank lines is put back.
        assert_eq!(whole.text, "line 1\nline 2\nline 3\n");
        let mut gapped = chunks[1..=2].to_vec();
        gapped[1].start_line = 23;
        assert_eq!(
            Definition::from_chunks(&gapped).text,
            "line 1\n\n\nline 2\n"
        );
        assert_eq!(whole.chunk_ids, ["c1", "c2", "c3"]);
    }
}
