//! Line-aligned units, their token counts, and the packing of units into chunks.
//!
//! Every splitter (syntax tree, Markdown headings, paragraphs) produces [`Unit`]s that tile the
//! file's lines with no gap or overlap; [`merge_units`] then packs neighbours together while they
//! fit the token budget. Tiling is what guarantees that every line of a file lands in exactly one
//! chunk.

use crate::syntax::Symbol;
use std::ops::Range;

/// Byte offsets of line starts, and the token starts of the whole file, so that the token count
/// of any line range is two binary searches.
pub struct LineIndex {
    line_starts: Vec<usize>,
    token_starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str, mut token_starts: Vec<usize>) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        // A final newline ends the last line rather than starting an empty one.
        if line_starts.last() != Some(&text.len()) {
            line_starts.push(text.len());
        }
        token_starts.sort_unstable();
        LineIndex {
            line_starts,
            token_starts,
        }
    }

    /// Number of lines; lines are `0..line_count()`.
    pub fn line_count(&self) -> usize {
        self.line_starts.len() - 1
    }

    pub fn byte_range(&self, lines: Range<usize>) -> Range<usize> {
        self.line_starts[lines.start]..self.line_starts[lines.end]
    }

    /// The line that holds `byte`, clamped to the last line.
    pub fn line_of(&self, byte: usize) -> usize {
        let line = self.line_starts.partition_point(|&start| start <= byte);
        line.saturating_sub(1)
            .min(self.line_count().saturating_sub(1))
    }

    pub fn tokens(&self, lines: Range<usize>) -> usize {
        let bytes = self.byte_range(lines);
        let from = self.token_starts.partition_point(|&t| t < bytes.start);
        let to = self.token_starts.partition_point(|&t| t < bytes.end);
        to - from
    }
}

/// A run of whole lines with what it defines (if anything) and the definitions around it.
#[derive(Debug, Clone)]
pub struct Unit {
    pub lines: Range<usize>,
    pub symbol: Option<Symbol>,
    /// Enclosing definitions, outermost first.
    pub parents: Vec<Symbol>,
    /// Byte range of the signature of `symbol`'s definition, when this unit holds its start.
    pub signature: Option<Range<usize>>,
}

/// Which neighbours may share a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergePolicy {
    /// Only units with the same enclosing definitions (code: never glue a method to the next
    /// top-level function).
    SameParents,
    /// As `SameParents`, and two definitions share a chunk only while it is under `floor`
    /// tokens: a run of one-line prototypes or accessors makes one chunk, anything larger gets
    /// a chunk of its own (`floor` 0: one definition per chunk).
    Definitions { floor: usize },
    /// Any neighbours (prose).
    Any,
}

/// Packs neighbouring units into chunks of at most `budget` tokens. A merged chunk is named after
/// its largest defining unit.
pub fn merge_units(
    units: Vec<Unit>,
    lines: &LineIndex,
    budget: usize,
    policy: MergePolicy,
) -> Vec<Unit> {
    let mut merged: Vec<Unit> = Vec::with_capacity(units.len());
    let mut named_weight = 0usize;
    for unit in units {
        let weight = lines.tokens(unit.lines.clone());
        if let Some(current) = merged.last_mut() {
            let compatible = match policy {
                MergePolicy::Any => true,
                MergePolicy::SameParents => current.parents == unit.parents,
                MergePolicy::Definitions { floor } => {
                    current.parents == unit.parents
                        && (current.symbol.is_none()
                            || unit.symbol.is_none()
                            || lines.tokens(current.lines.clone()) < floor)
                }
            };
            if compatible && lines.tokens(current.lines.start..unit.lines.end) <= budget {
                current.lines.end = unit.lines.end;
                if unit.symbol.is_some() && (current.symbol.is_none() || weight > named_weight) {
                    current.symbol = unit.symbol;
                    current.signature = unit.signature;
                    named_weight = weight;
                } else if current.symbol.is_none() && current.signature.is_none() {
                    // Both are about their parent; the parent's signature may sit in the second.
                    current.signature = unit.signature;
                }
                continue;
            }
        }
        named_weight = if unit.symbol.is_some() { weight } else { 0 };
        merged.push(unit);
    }
    merged
}

/// Cuts `range` into pieces of at most `budget` tokens, preferring to cut after a blank line.
/// A single line over budget becomes a piece of its own (the embedder truncates it).
pub fn split_lines(
    range: Range<usize>,
    text: &str,
    lines: &LineIndex,
    budget: usize,
) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let mut end = start + 1;
        let mut last_blank = None;
        while end < range.end && lines.tokens(start..end + 1) <= budget {
            if is_blank(text, lines, end) {
                last_blank = Some(end + 1);
            }
            end += 1;
        }
        if end < range.end {
            if let Some(cut) =
                last_blank.filter(|&cut| cut - start >= (end - start) / 2 && cut < end)
            {
                end = cut;
            }
        }
        pieces.push(start..end);
        start = end;
    }
    pieces
}

pub fn is_blank(text: &str, lines: &LineIndex, line: usize) -> bool {
    text[lines.byte_range(line..line + 1)].trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whitespace_tokens(text: &str) -> Vec<usize> {
        let mut starts = Vec::new();
        let mut previous_space = true;
        for (i, c) in text.char_indices() {
            if !c.is_whitespace() && previous_space {
                starts.push(i);
            }
            previous_space = c.is_whitespace();
        }
        starts
    }

    #[test]
    fn counts_tokens_per_line_range() {
        let text = "a b c\nd e\n\nf\n";
        let index = LineIndex::new(text, whitespace_tokens(text));
        assert_eq!(index.line_count(), 4);
        assert_eq!(index.tokens(0..1), 3);
        assert_eq!(index.tokens(1..3), 2);
        assert_eq!(index.tokens(0..4), 6);
        assert_eq!(index.line_of(6), 1);
        let no_final_newline = LineIndex::new("x\ny", vec![0, 2]);
        assert_eq!(no_final_newline.line_count(), 2);
        assert_eq!(no_final_newline.tokens(1..2), 1);
    }

    #[test]
    fn split_respects_budget_and_prefers_blank_lines() {
        let text = "a b\nc d\n\ne f\ng h\ni j\n";
        let index = LineIndex::new(text, whitespace_tokens(text));
        let pieces = split_lines(0..index.line_count(), text, &index, 7);
        assert_eq!(pieces, vec![0..3, 3..6]);
        for piece in &pieces {
            assert!(index.tokens(piece.clone()) <= 7);
        }
    }

    #[test]
    fn merge_keeps_parents_apart_and_names_after_the_largest() {
        let text = "a\nb b b\nc\nd\n";
        let index = LineIndex::new(text, whitespace_tokens(text));
        let sym = |name: &str| Symbol {
            name: name.into(),
            kind: "function",
        };
        let unit = |lines: Range<usize>, symbol: Option<Symbol>, parents: Vec<Symbol>| Unit {
            lines,
            symbol,
            parents,
            signature: None,
        };
        let units = vec![
            unit(0..1, Some(sym("small")), vec![]),
            unit(1..2, Some(sym("big")), vec![]),
            unit(2..3, None, vec![sym("Class")]),
            unit(3..4, None, vec![sym("Class")]),
        ];
        let merged = merge_units(units.clone(), &index, 10, MergePolicy::SameParents);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].lines, 0..2);
        assert_eq!(
            merged[0].symbol.as_ref().map(|s| s.name.as_str()),
            Some("big")
        );
        assert_eq!(merged[1].lines, 2..4);
        let merged_any = merge_units(units, &index, 10, MergePolicy::Any);
        assert_eq!(merged_any.len(), 1);
    }

    #[test]
    fn a_floor_lets_small_definitions_share_a_chunk_until_it_is_reached() {
        // Tokens per line: 1, 1, 1, 3, 1.
        let text = "a\nb\nc\nd d d\ne\n";
        let index = LineIndex::new(text, whitespace_tokens(text));
        let units: Vec<Unit> = ["a", "b", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(line, name)| Unit {
                lines: line..line + 1,
                symbol: Some(Symbol {
                    name: (*name).into(),
                    kind: "function",
                }),
                parents: Vec::new(),
                signature: None,
            })
            .collect();
        let lines_of = |floor| {
            merge_units(
                units.clone(),
                &index,
                10,
                MergePolicy::Definitions { floor },
            )
            .into_iter()
            .map(|unit| unit.lines)
            .collect::<Vec<_>>()
        };
        assert_eq!(lines_of(0), vec![0..1, 1..2, 2..3, 3..4, 4..5]);
        // Under 2 tokens a chunk takes the next definition: a+b reach 2, c takes d (and is
        // named after it, the larger), which leaves e alone.
        assert_eq!(lines_of(2), vec![0..2, 2..4, 4..5]);
        let merged = merge_units(
            units.clone(),
            &index,
            10,
            MergePolicy::Definitions { floor: 2 },
        );
        assert_eq!(
            merged[1].symbol.as_ref().map(|s| s.name.as_str()),
            Some("d")
        );
        // The budget still bounds a chunk.
        assert_eq!(lines_of(100).len(), 1);
        assert_eq!(
            merge_units(units, &index, 4, MergePolicy::Definitions { floor: 100 })
                .into_iter()
                .map(|unit| unit.lines)
                .collect::<Vec<_>>(),
            vec![0..3, 3..5]
        );
    }
}
