//! Units of source code along its syntax tree: definitions whole where they fit the budget,
//! split into their members where they do not.

use crate::segment::{split_lines, LineIndex, Unit};
use crate::syntax::{attaches_forward, definition, has_no_body, is_type_kind, signature, Symbol};
use std::ops::Range;
use tree_sitter::Node;

pub struct CodeSplitter<'a> {
    pub text: &'a str,
    pub lines: &'a LineIndex,
    pub budget: usize,
    /// Split a node that fits the budget anyway when it holds several definitions.
    pub split_definitions: bool,
}

impl CodeSplitter<'_> {
    /// Units tiling `lines`, which hold `node` (and, for its first child, any header lines).
    pub fn units(
        &self,
        node: Node<'_>,
        lines: Range<usize>,
        parents: &[Symbol],
        out: &mut Vec<Unit>,
    ) {
        let in_type = parents.last().is_some_and(|p| is_type_kind(p.kind));
        let symbol = definition(node, self.text.as_bytes(), in_type);
        let fits = self.lines.tokens(lines.clone()) <= self.budget;
        if lines.len() <= 1
            || (fits && !(self.split_definitions && self.holds_definitions(node, in_type)))
        {
            let (symbol, signature) = match symbol {
                Some(symbol) => (Some(symbol), Some(signature(node))),
                None => self
                    .largest_child_definition(node, in_type)
                    .map_or((None, None), |(symbol, child)| {
                        (Some(symbol), Some(signature(child)))
                    }),
            };
            out.push(Unit {
                lines,
                symbol,
                parents: parents.to_vec(),
                signature,
            });
            return;
        }
        let own_signature = symbol.as_ref().map(|_| signature(node));
        let mut inner_parents = parents.to_vec();
        inner_parents.extend(symbol.clone());
        let groups = self.child_groups(node, lines.clone());
        if groups.is_empty() {
            self.split_leaf(lines, symbol, own_signature, parents, out);
            return;
        }
        let first = out.len();
        for (range, child) in groups {
            self.units(child, range, &inner_parents, out);
        }
        // The first piece holds the definition's own first lines (a class's signature); it is
        // about the definition unless it defines something itself.
        if let Some(head) = out.get_mut(first) {
            if head.symbol.is_none() && head.signature.is_none() {
                head.signature = own_signature;
            }
        }
    }

    /// The node's named children grouped by the line they start on, each group spanning up to
    /// the next group's first line. A comment or attribute joins the group of what follows it;
    /// the first group also takes any lines above the first child (a class's signature).
    fn child_groups<'t>(
        &self,
        node: Node<'t>,
        lines: Range<usize>,
    ) -> Vec<(Range<usize>, Node<'t>)> {
        let mut groups: Vec<(usize, Node<'t>)> = Vec::new();
        // Whether the open group holds only comments and attributes so far.
        let mut only_attached = false;
        let mut cursor = node.walk();
        let children: Vec<Node<'t>> = node.named_children(&mut cursor).collect();
        for (i, &child) in children.iter().enumerate() {
            let line = self
                .lines
                .line_of(child.start_byte())
                .clamp(lines.start, lines.end - 1);
            let attaches =
                attaches_forward(child) || self.overloads_next(child, &children[i + 1..]);
            match groups.last_mut() {
                Some((start, main)) if only_attached || line <= *start => {
                    if only_attached || !attaches {
                        *main = child;
                    }
                    only_attached &= attaches;
                }
                _ => {
                    groups.push((line, child));
                    only_attached = attaches;
                }
            }
        }
        if let Some(first) = groups.first_mut() {
            first.0 = lines.start;
        }
        let ends: Vec<usize> = groups
            .iter()
            .skip(1)
            .map(|(start, _)| *start)
            .chain([lines.end])
            .collect();
        groups
            .into_iter()
            .zip(ends)
            .map(|((start, child), end)| (start..end, child))
            .collect()
    }

    /// Whether `node` is an overload signature of the definition after it (past comments):
    /// TypeScript's `function f(a: string): T;` lines above `function f(a: any) {...}` are one
    /// function, found as one, where each had been a chunk of one line.
    fn overloads_next(&self, node: Node<'_>, after: &[Node<'_>]) -> bool {
        // The body check first: it is a field lookup, and most of a file's nodes have a body,
        // where naming a definition reads its text.
        if !has_no_body(node) {
            return false;
        }
        let source = self.text.as_bytes();
        let Some(symbol) = definition(node, source, false) else {
            return false;
        };
        let next = after.iter().find(|n| !attaches_forward(**n));
        next.is_some_and(|&next| {
            definition(next, source, false).is_some_and(|other| other.name == symbol.name)
        })
    }

    /// Whether `node` holds two or more definitions among its children and grandchildren
    /// (grandchildren: a class's methods sit in its body).
    fn holds_definitions(&self, node: Node<'_>, in_type: bool) -> bool {
        let source = self.text.as_bytes();
        let inner_in_type = in_type
            || definition(node, source, in_type).is_some_and(|symbol| is_type_kind(symbol.kind));
        let mut count = 0;
        let mut cursor = node.walk();
        for child in node.named_children(&mut cursor) {
            if definition(child, source, inner_in_type).is_some() {
                count += 1;
                continue;
            }
            let mut inner = child.walk();
            count += child
                .named_children(&mut inner)
                .filter(|grandchild| definition(*grandchild, source, inner_in_type).is_some())
                .count();
        }
        count >= 2
    }

    /// Names a unit that is not itself a definition (a whole small file, a statement block) after
    /// the largest definition directly inside it, which is returned with it.
    fn largest_child_definition<'t>(
        &self,
        node: Node<'t>,
        in_type: bool,
    ) -> Option<(Symbol, Node<'t>)> {
        let mut cursor = node.walk();
        let children: Vec<Node<'t>> = node.named_children(&mut cursor).collect();
        children
            .into_iter()
            .filter_map(|child| {
                let symbol = definition(child, self.text.as_bytes(), in_type)?;
                Some((symbol, child))
            })
            .max_by_key(|(_, child)| child.end_byte() - child.start_byte())
    }

    /// Cuts a definition with no children to split along into line runs; the first run holds
    /// its signature.
    fn split_leaf(
        &self,
        lines: Range<usize>,
        symbol: Option<Symbol>,
        mut signature: Option<Range<usize>>,
        parents: &[Symbol],
        out: &mut Vec<Unit>,
    ) {
        for piece in split_lines(lines, self.text, self.lines, self.budget) {
            out.push(Unit {
                lines: piece,
                symbol: symbol.clone(),
                parents: parents.to_vec(),
                signature: signature.take(),
            });
        }
    }
}
