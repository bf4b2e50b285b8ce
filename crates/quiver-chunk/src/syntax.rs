//! What counts as a definition in each grammar, and how to read its name.
//!
//! Node kinds are the grammars' own (see each tree-sitter grammar's `node-types.json`). The
//! table is deliberately shallow: a definition is a node whose kind appears here; its name is
//! its `name` field, or for C-like declarators the identifier at the end of the declarator chain.

use std::ops::Range;
use tree_sitter::Node;

/// Bumped whenever what counts as a definition changes, so that indexes re-chunk their files
/// (reusing every vector whose text did not change). 4: JavaScript assignments of functions are
/// definitions, associated types are not, chunks that start a definition carry its signature.
/// 5: C and C++ prototypes are definitions, and headers' declaration macros are read past.
/// 6: overload signatures join the definition of the same name that follows them.
pub const SYNTAX_RULES_VERSION: u32 = 6;

/// A named definition: what a chunk is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    /// `function`, `method`, `class`, `struct`, `enum`, `interface`, `trait`, `impl`, `module`,
    /// `type`, `macro`, `constant` or `section` (Markdown).
    pub kind: &'static str,
}

/// The kind label of a definition node, or `None` when the node defines nothing.
fn definition_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "function_definition"
        | "function_declaration"
        | "function_item"
        | "function_signature_item"
        | "generator_function_declaration"
        | "function_signature" => "function",
        "method_definition"
        | "method_declaration"
        | "constructor_declaration"
        | "method"
        | "singleton_method"
        | "abstract_method_signature"
        | "method_signature" => "method",
        "class_definition"
        | "class_declaration"
        | "abstract_class_declaration"
        | "class_specifier"
        | "class"
        | "record_declaration" => "class",
        "struct_item" | "struct_specifier" | "struct_declaration" => "struct",
        "enum_item" | "enum_specifier" | "enum_declaration" => "enum",
        "union_item" | "union_specifier" => "struct",
        "interface_declaration" | "annotation_type_declaration" => "interface",
        "trait_item" | "trait_declaration" => "trait",
        "impl_item" => "impl",
        "mod_item"
        | "module"
        | "namespace_definition"
        | "namespace_declaration"
        | "file_scoped_namespace_declaration"
        | "internal_module" => "module",
        "type_item" | "type_alias_declaration" | "type_definition" | "type_declaration" => "type",
        "macro_definition" | "macro_rules" => "macro",
        "const_item" | "static_item" => "constant",
        "property_declaration" => "method",
        _ => return None,
    })
}

/// Whether a JavaScript/TypeScript value node defines a function or class.
fn is_function_value(node: Node<'_>) -> bool {
    matches!(
        node.kind(),
        "arrow_function" | "function_expression" | "function" | "class"
    )
}

/// Wrappers whose meaning is the definition inside them (`@decorator def f`, `export class C`,
/// `template <T> class C`, `const f = () => ...`, `app.handle = function (req) {...}`).
fn wrapped_definition<'t>(node: Node<'t>) -> Option<Node<'t>> {
    match node.kind() {
        "decorated_definition" => node.child_by_field_name("definition"),
        "export_statement" => node.child_by_field_name("declaration"),
        "template_declaration" => {
            let mut cursor = node.walk();
            let last = node.named_children(&mut cursor).last();
            last
        }
        "lexical_declaration" | "variable_declaration" => {
            let mut cursor = node.walk();
            let declarator = node
                .named_children(&mut cursor)
                .find(|c| c.kind() == "variable_declarator")?;
            let value = declarator.child_by_field_name("value")?;
            is_function_value(value).then_some(declarator)
        }
        // CommonJS and prototype style: `exports.parse = function`, `Foo.prototype.bar = ...`.
        "expression_statement" => {
            let assignment = node.named_child(0)?;
            let value = assignment.child_by_field_name("right")?;
            (assignment.kind() == "assignment_expression" && is_function_value(value))
                .then_some(assignment)
        }
        _ => None,
    }
}

/// The definition `node` makes, if any. `in_type` says the node sits inside a class-like
/// definition, which turns functions into methods.
pub fn definition(node: Node<'_>, source: &[u8], in_type: bool) -> Option<Symbol> {
    if let Some(inner) = wrapped_definition(node) {
        if inner.kind() == "variable_declarator" {
            let name = text(inner.child_by_field_name("name")?, source)?;
            let kind = if in_type { "method" } else { "function" };
            return Some(Symbol { name, kind });
        }
        if inner.kind() == "assignment_expression" {
            let target = inner.child_by_field_name("left")?;
            // `app.handle = function` attaches a method to an object; `handle = function`
            // (re)defines a function.
            let kind = if in_type || target.kind() == "member_expression" {
                "method"
            } else {
                "function"
            };
            return Some(Symbol {
                name: text(target, source)?,
                kind,
            });
        }
        return definition(inner, source, in_type);
    }
    let mut kind = match node.kind() {
        "declaration" | "field_declaration" if declares_function(node) => "function",
        other => definition_kind(other)?,
    };
    if kind == "type" && in_type {
        // An associated type (`type Item = A;` in an impl) belongs to the impl's signature: it
        // stays with the first member rather than becoming a chunk that says nothing alone.
        return None;
    }
    if kind == "function" && in_type {
        kind = "method";
    }
    let name = definition_name(node, source)?;
    Some(Symbol { name, kind })
}

/// Whether a C or C++ declaration declares a function: a prototype (`int f(void);`, a method
/// in a class body), which a header documents as other languages document a definition. A
/// function pointer (`int (*f)(void);`) is a variable, and other grammars' declarations (Java's
/// fields) have no `function_declarator`.
fn declares_function(node: Node<'_>) -> bool {
    let mut declarator = node.child_by_field_name("declarator");
    while let Some(d) = declarator {
        if d.kind() == "function_declarator" {
            return inner_declarator(d)
                .is_some_and(|name| name.kind() != "parenthesized_declarator");
        }
        declarator = inner_declarator(d);
    }
    false
}

/// The declarator a C or C++ declarator wraps (`*f` in `**f`, `f` in `f(void)`).
fn inner_declarator(declarator: Node<'_>) -> Option<Node<'_>> {
    match declarator.kind() {
        // `T &f()`: C++'s reference declarator holds its declarator without naming the field.
        "reference_declarator" => {
            let mut cursor = declarator.walk();
            let last = declarator.named_children(&mut cursor).last();
            last
        }
        _ => declarator.child_by_field_name("declarator"),
    }
}

/// Whether definitions of this kind contain methods.
pub fn is_type_kind(kind: &str) -> bool {
    matches!(
        kind,
        "class" | "struct" | "interface" | "trait" | "impl" | "enum"
    )
}

fn definition_name(node: Node<'_>, source: &[u8]) -> Option<String> {
    if node.kind() == "impl_item" {
        let ty = text(node.child_by_field_name("type")?, source)?;
        return Some(match node.child_by_field_name("trait") {
            Some(tr) => format!("{} for {ty}", text(tr, source)?),
            None => ty,
        });
    }
    if node.kind() == "type_declaration" {
        // Go: `type ( A struct{}; B int )`; the first spec names the chunk.
        let mut cursor = node.walk();
        let spec = node
            .named_children(&mut cursor)
            .find(|c| c.kind().ends_with("_spec"))?;
        return text(spec.child_by_field_name("name")?, source);
    }
    if let Some(name) = node.child_by_field_name("name") {
        return text(name, source);
    }
    // C and C++: `int *f(void)` names the function through nested declarators.
    let mut declarator = node.child_by_field_name("declarator")?;
    while let Some(inner) = inner_declarator(declarator) {
        declarator = inner;
    }
    text(declarator, source)
}

fn text(node: Node<'_>, source: &[u8]) -> Option<String> {
    let raw = source.get(node.start_byte()..node.end_byte())?;
    let name = String::from_utf8_lossy(raw);
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    (!name.is_empty()).then_some(name)
}

/// Longest signature kept, in bytes: a signature is a name and its parameters, not a body.
const MAX_SIGNATURE_BYTES: usize = 300;

/// Bytes of the signature of the definition `node` makes: from the definition's first line (past
/// decorators and attributes) to where its body starts, or its first bytes when it has no body.
pub fn signature(node: Node<'_>) -> Range<usize> {
    let (start, definition) = match node.kind() {
        "decorated_definition" => {
            let inner = node.child_by_field_name("definition").unwrap_or(node);
            (inner.start_byte(), inner)
        }
        _ => (node.start_byte(), innermost_definition(node)),
    };
    let end = body_start(definition)
        .filter(|&end| end > start)
        .unwrap_or(definition.end_byte());
    start..end.min(start + MAX_SIGNATURE_BYTES)
}

/// The node whose `body` field holds a wrapped definition's body (`export function`,
/// `const f = () => {}`, `app.handle = function () {}`).
fn innermost_definition(node: Node<'_>) -> Node<'_> {
    let Some(inner) = wrapped_definition(node) else {
        return node;
    };
    let value = match inner.kind() {
        "variable_declarator" => inner.child_by_field_name("value"),
        "assignment_expression" => inner.child_by_field_name("right"),
        _ => None,
    };
    match value {
        Some(value) => value,
        None => innermost_definition(inner),
    }
}

fn body_start(node: Node<'_>) -> Option<usize> {
    node.child_by_field_name("body")
        .map(|body| body.start_byte())
}

/// Whether `node`, a definition, declares without a body: a TypeScript overload signature, a
/// C prototype, an abstract method.
pub fn has_no_body(node: Node<'_>) -> bool {
    body_start(innermost_definition(node)).is_none()
}

/// Nodes that belong to whatever follows them: doc comments, attributes, decorators.
pub fn attaches_forward(node: Node<'_>) -> bool {
    let kind = node.kind();
    kind.contains("comment") || kind == "attribute_item" || kind == "decorator"
}
