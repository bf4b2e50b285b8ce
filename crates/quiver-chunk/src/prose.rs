//! Units of prose: Markdown sections by heading, other text by paragraph.

use crate::segment::{is_blank, split_lines, LineIndex, Unit};
use crate::syntax::Symbol;

/// Markdown sections: each ATX heading (`#` to `######`, outside fenced code) opens one, named by
/// the heading and nested under the headings above it. Sections over budget are cut by lines.
pub fn markdown_units(text: &str, lines: &LineIndex, budget: usize) -> Vec<Unit> {
    let mut headings: Vec<(usize, usize, Symbol)> = Vec::new(); // (line, level, heading)
    let mut fence: Option<&str> = None;
    for line in 0..lines.line_count() {
        let content = text[lines.byte_range(line..line + 1)].trim_end();
        let trimmed = content.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            continue;
        }
        if let Some((level, title)) = atx_heading(content) {
            let symbol = Symbol {
                name: title.to_string(),
                kind: "section",
            };
            headings.push((line, level, symbol));
        }
    }
    let mut units = Vec::new();
    let mut stack: Vec<(usize, Symbol)> = Vec::new();
    let mut section_start = 0;
    let mut current: Option<Symbol> = None;
    let mut parents: Vec<Symbol> = Vec::new();
    for (line, level, symbol) in headings.into_iter().chain([(
        lines.line_count(),
        0,
        Symbol {
            name: String::new(),
            kind: "section",
        },
    )]) {
        if line > section_start {
            for piece in split_lines(section_start..line, text, lines, budget) {
                units.push(Unit {
                    lines: piece,
                    symbol: current.clone(),
                    parents: parents.clone(),
                    signature: None,
                });
            }
        }
        stack.retain(|(open_level, _)| *open_level < level);
        parents = stack.iter().map(|(_, s)| s.clone()).collect();
        stack.push((level, symbol.clone()));
        current = Some(symbol);
        section_start = line;
    }
    units
}

fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &trimmed[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then_some((level, title))
}

/// Plain text: paragraphs (runs of non-blank lines), each cut by lines when over budget.
pub fn paragraph_units(text: &str, lines: &LineIndex, budget: usize) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut start = 0;
    for line in 0..lines.line_count() {
        let ends_paragraph = is_blank(text, lines, line) || line + 1 == lines.line_count();
        if ends_paragraph {
            for piece in split_lines(start..line + 1, text, lines, budget) {
                units.push(Unit {
                    lines: piece,
                    symbol: None,
                    parents: Vec::new(),
                    signature: None,
                });
            }
            start = line + 1;
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_atx_headings_only() {
        assert_eq!(atx_heading("## Install ##"), Some((2, "Install")));
        assert_eq!(atx_heading("#hashtag"), None);
        assert_eq!(atx_heading("    # indented code"), None);
        assert_eq!(atx_heading("####### seven"), None);
    }
}
