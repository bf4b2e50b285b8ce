//! Chunking real-shaped sources in every supported language, with a word counter standing in
//! for a tokenizer so that budgets are easy to reason about.

use quiver_chunk::{chunk_file, chunk_fixed_lines, Chunk, ChunkError, ChunkOptions, TokenCounter};
use std::path::Path;

/// One token per run of word characters or per other non-space character.
struct WordCounter;

impl TokenCounter for WordCounter {
    fn token_starts(&self, text: &str) -> Result<Vec<usize>, ChunkError> {
        let mut starts = Vec::new();
        let mut in_word = false;
        for (i, c) in text.char_indices() {
            let word = c.is_alphanumeric() || c == '_';
            if (word && !in_word) || (!word && !c.is_whitespace()) {
                starts.push(i);
            }
            in_word = word;
        }
        Ok(starts)
    }
}

fn chunks(path: &str, text: &str, budget: usize) -> Vec<Chunk> {
    let options = ChunkOptions {
        max_tokens: budget,
        pack_definitions: true,
        definition_floor: 0,
    };
    chunk_file(Path::new(path), text, &options, &WordCounter).expect("chunking succeeds")
}

fn assert_tiles(text: &str, chunks: &[Chunk], budget: usize) {
    let mut covered = vec![false; text.lines().count()];
    for chunk in chunks {
        assert_eq!(
            &text[chunk.start_byte..chunk.end_byte].trim_end(),
            &chunk.text.trim_end()
        );
        assert!(
            chunk.tokens <= budget || chunk.start_line == chunk.end_line,
            "{chunk:?}"
        );
        for line in chunk.start_line..=chunk.end_line {
            assert!(!covered[line - 1], "line {line} in two chunks");
            covered[line - 1] = true;
        }
    }
    for (i, line) in text.lines().enumerate() {
        assert!(
            covered[i] || line.trim().is_empty(),
            "line {} left out: {line}",
            i + 1
        );
    }
}

/// Chunks of one definition each, under a budget nothing here reaches; checks they tile `text`.
fn per_definition(path: &str, text: &str) -> Vec<Chunk> {
    let options = ChunkOptions {
        max_tokens: 10_000,
        pack_definitions: false,
        definition_floor: 0,
    };
    let chunks = chunk_file(Path::new(path), text, &options, &WordCounter).expect("chunks");
    assert_tiles(text, &chunks, 10_000);
    chunks
}

fn symbol_of<'a>(chunks: &'a [Chunk], needle: &str) -> &'a Chunk {
    chunks
        .iter()
        .find(|c| c.text.contains(needle))
        .unwrap_or_else(|| panic!("no chunk holds {needle}"))
}

const PYTHON: &str = r#"import os
import sys


class Store:
    """Keeps things."""

    def __init__(self, root):
        self.root = root
        self.items = {}
        self.count = 0

    def put(self, key, value):
        """Store a value under a key, replacing any earlier one."""
        if key in self.items:
            self.count -= 1
        self.items[key] = value
        self.count += 1
        return value

    @property
    def size(self):
        return self.count


def open_store(path):
    # Opens a store at the given path.
    return Store(os.path.abspath(path))
"#;

#[test]
fn python_splits_a_large_class_into_methods() {
    let chunks = chunks("pkg/store.py", PYTHON, 40);
    assert_tiles(PYTHON, &chunks, 40);
    let put = symbol_of(&chunks, "def put");
    assert_eq!(put.symbol.as_deref(), Some("put"));
    assert_eq!(put.kind.as_deref(), Some("method"));
    assert_eq!(put.parent.as_deref(), Some("Store"));
    let open = symbol_of(&chunks, "def open_store");
    assert_eq!(open.symbol.as_deref(), Some("open_store"));
    assert_eq!(open.kind.as_deref(), Some("function"));
    assert_eq!(open.parent, None);
    assert!(
        open.text.contains("# Opens a store"),
        "the comment above stays with its function"
    );
    assert!(!open.text.contains("class Store"));
    assert_eq!(open.language, "python");
}

#[test]
fn python_keeps_a_small_file_whole() {
    let chunks = chunks("pkg/store.py", PYTHON, 10_000);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].start_line, 1);
    assert_eq!(chunks[0].end_line, PYTHON.lines().count());
}

const RUST: &str = r#"use std::collections::HashMap;

/// A cache of parsed values.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<String, u64>,
}

impl Cache {
    /// Looks a key up, counting the miss.
    pub fn get(&mut self, key: &str) -> Option<u64> {
        let value = self.entries.get(key).copied();
        if value.is_none() {
            self.entries.insert(key.to_string(), 0);
        }
        value
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.entries.shrink_to_fit();
    }
}

fn helper(x: u64) -> u64 {
    x * 2 + 1
}
"#;

#[test]
fn rust_names_impl_methods_and_keeps_doc_comments() {
    let chunks = chunks("src/cache.rs", RUST, 45);
    assert_tiles(RUST, &chunks, 45);
    let get = symbol_of(&chunks, "pub fn get");
    assert_eq!(get.symbol.as_deref(), Some("get"));
    assert_eq!(get.kind.as_deref(), Some("method"));
    assert_eq!(get.parent.as_deref(), Some("Cache"));
    assert!(get.text.contains("/// Looks a key up"));
    let cache = symbol_of(&chunks, "pub struct Cache");
    assert!(cache.text.contains("/// A cache of parsed values."));
    assert!(cache.text.contains("#[derive"));
    let helper = symbol_of(&chunks, "fn helper");
    assert_eq!(helper.symbol.as_deref(), Some("helper"));
}

#[test]
fn every_language_names_its_definitions() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "a.js",
            "export function parseArgs(argv) {\n  return argv.slice(2);\n}\n",
            "parseArgs",
            "function",
        ),
        (
            "a.js",
            "const render = (props) => {\n  return props.title;\n};\n",
            "render",
            "function",
        ),
        (
            "a.js",
            "app.handle = function handle(req, res) {\n  return req;\n};\n",
            "app.handle",
            "method",
        ),
        (
            "a.js",
            "module.exports = createApplication;\nexports.parse = (text) => {\n  return text.trim();\n};\n",
            "exports.parse",
            "method",
        ),
        (
            "a.ts",
            "interface Shape {\n  area(): number;\n}\n",
            "Shape",
            "interface",
        ),
        (
            "a.tsx",
            "export class View extends Base {\n  render() { return <div/>; }\n}\n",
            "View",
            "class",
        ),
        (
            "a.go",
            "func (s *Server) Start(addr string) error {\n\treturn nil\n}\n",
            "Start",
            "method",
        ),
        (
            "a.go",
            "type Config struct {\n\tName string\n}\n",
            "Config",
            "type",
        ),
        (
            "A.java",
            "public class Parser {\n  int depth;\n}\n",
            "Parser",
            "class",
        ),
        (
            "a.c",
            "static int *find_slot(struct table *t, int key) {\n  return 0;\n}\n",
            "find_slot",
            "function",
        ),
        (
            "a.cpp",
            "namespace io {\nclass Reader {\n  int fd;\n};\n}\n",
            "io",
            "module",
        ),
        (
            "a.cs",
            "public class Account {\n  public int Id { get; set; }\n}\n",
            "Account",
            "class",
        ),
        (
            "a.rb",
            "class Invoice\n  def total\n    1\n  end\nend\n",
            "Invoice",
            "class",
        ),
        (
            "a.php",
            "<?php\nfunction slugify($text) {\n  return $text;\n}\n",
            "slugify",
            "function",
        ),
    ];
    for (path, source, symbol, kind) in cases {
        let chunks = chunks(path, source, 1000);
        let named: Vec<_> = chunks.iter().filter_map(|c| c.symbol.clone()).collect();
        assert_eq!(chunks.len(), 1, "{path}: a small file stays whole");
        let found = chunks[0].symbol.as_deref() == Some(*symbol)
            && chunks[0].kind.as_deref() == Some(*kind);
        assert!(
            found,
            "{path}: expected {kind} {symbol}, got {named:?} {chunks:?}"
        );
    }
}

#[test]
fn markdown_splits_by_heading_with_parents() {
    let text = "# Guide\n\nIntro text here.\n\n## Install\n\nRun the installer with care and patience.\n\n```sh\n# not a heading\nmake install\n```\n\n## Usage\n\nCall the tool with arguments and options.\n";
    let chunks = chunks("docs/guide.md", text, 14);
    assert_tiles(text, &chunks, 14);
    let install = symbol_of(&chunks, "Run the installer");
    assert_eq!(install.symbol.as_deref(), Some("Install"));
    assert_eq!(install.kind.as_deref(), Some("section"));
    assert!(chunks
        .iter()
        .all(|c| c.symbol.as_deref() != Some("not a heading")));
    let usage = symbol_of(&chunks, "Call the tool");
    assert_eq!(usage.symbol.as_deref(), Some("Usage"));
    assert_eq!(usage.parent.as_deref(), Some("Guide"));
}

#[test]
fn oversized_definitions_are_split_within_budget() {
    let mut body = String::from("def long_function(x):\n");
    for i in 0..200 {
        body.push_str(&format!("    x = x + {i}\n"));
    }
    let chunks = chunks("long.py", &body, 50);
    assert!(chunks.len() > 5);
    assert_tiles(&body, &chunks, 50);
    assert!(chunks
        .iter()
        .all(|c| c.symbol.as_deref() == Some("long_function")));
}

#[test]
fn plain_text_and_edge_cases() {
    assert!(chunks("empty.txt", "", 10).is_empty());
    assert!(chunks("blank.py", "\n\n\n", 10).is_empty());
    let one_line = "word ".repeat(500);
    let pieces = chunks("min.js", &one_line, 20);
    assert_eq!(pieces.len(), 1, "one line cannot be cut on lines");
    let text = "alpha beta\ngamma\n\ndelta epsilon\n";
    let paragraphs = chunks("notes.txt", text, 3);
    assert_eq!(paragraphs.len(), 2);
    assert_eq!(paragraphs[0].language, "text");
    assert_eq!((paragraphs[1].start_line, paragraphs[1].end_line), (4, 4));
    let broken = "def broken(:\n    pass\n\nclass Fine:\n    x = 1\n";
    assert_tiles(broken, &chunks("broken.py", broken, 4), 4);
}

#[test]
fn fixed_windows_cut_every_n_lines() {
    let windows =
        chunk_fixed_lines(Path::new("store.py"), PYTHON, 10, &WordCounter).expect("chunks");
    assert_eq!(windows[0].start_line, 1);
    assert!(windows
        .iter()
        .all(|c| c.end_line - c.start_line < 10 && c.symbol.is_none()));
    assert!(windows.windows(2).all(|w| w[1].start_line > w[0].end_line));
    assert_eq!(windows.len(), PYTHON.lines().count().div_ceil(10));
}

#[test]
fn javascript_assigned_functions_get_chunks_of_their_own() {
    let text = "var app = exports = module.exports = {};\n\napp.init = function init() {\n  this.cache = {};\n};\n\napp.enabled = function enabled(setting) {\n  return Boolean(this.set(setting));\n};\n\nApp.prototype.render = (view) => view;\n";
    let options = ChunkOptions {
        max_tokens: 10_000,
        pack_definitions: false,
        definition_floor: 0,
    };
    let chunks = chunk_file(Path::new("lib/app.js"), text, &options, &WordCounter).expect("chunks");
    assert_tiles(text, &chunks, 10_000);
    let names: Vec<_> = chunks.iter().filter_map(|c| c.symbol.as_deref()).collect();
    assert_eq!(names, ["app.init", "app.enabled", "App.prototype.render"]);
    assert_eq!(symbol_of(&chunks, "app.enabled = ").start_line, 7);
}

#[test]
fn one_definition_per_chunk_keeps_small_definitions_apart() {
    let options = ChunkOptions {
        max_tokens: 10_000,
        pack_definitions: false,
        definition_floor: 0,
    };
    let chunks =
        chunk_file(Path::new("pkg/store.py"), PYTHON, &options, &WordCounter).expect("chunks");
    assert_tiles(PYTHON, &chunks, 10_000);
    let names: Vec<_> = chunks.iter().filter_map(|c| c.symbol.as_deref()).collect();
    for name in ["__init__", "put", "size", "open_store"] {
        assert!(names.contains(&name), "{name} has its own chunk: {names:?}");
    }
    assert!(
        symbol_of(&chunks, "import os").text.contains("import sys"),
        "imports stay together"
    );
}

#[test]
fn chunks_that_start_a_definition_carry_its_signature() {
    let options = ChunkOptions {
        max_tokens: 10_000,
        pack_definitions: false,
        definition_floor: 0,
    };
    let signatures = |path: &str, text: &str| -> Vec<(Option<String>, Option<String>)> {
        chunk_file(Path::new(path), text, &options, &WordCounter)
            .expect("chunks")
            .into_iter()
            .map(|c| (c.symbol, c.signature))
            .collect()
    };
    let python = "import os\n\n@cached\ndef load(path,\n         mode='r'):\n    return open(path, mode)\n\nclass Store:\n    def put(self, key):\n        pass\n\n    def get(self, key):\n        pass\n";
    let found = signatures("a.py", python);
    let sig = |name: &str| {
        found
            .iter()
            .find(|(symbol, _)| symbol.as_deref() == Some(name))
            .and_then(|(_, signature)| signature.clone())
    };
    assert_eq!(sig("load").as_deref(), Some("def load(path, mode='r'):"));
    assert_eq!(sig("put").as_deref(), Some("def put(self, key):"));

    let rust = "pub struct Positions<I, F> {\n    iter: I,\n}\n\nimpl<I, F> Iterator for Positions<I, F>\nwhere\n    I: Iterator,\n{\n    type Item = usize;\n\n    fn next(&mut self) -> Option<usize> {\n        None\n    }\n\n    fn size_hint(&self) -> (usize, Option<usize>) {\n        (0, None)\n    }\n}\n";
    let found = signatures("a.rs", rust);
    let next = found
        .iter()
        .find(|(symbol, _)| symbol.as_deref() == Some("next"))
        .expect("next has a chunk");
    assert_eq!(
        next.1.as_deref(),
        Some("fn next(&mut self) -> Option<usize>"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .all(|(symbol, _)| symbol.as_deref() != Some("Item")),
        "associated types join the impl's first member: {found:?}"
    );

    let js = "app.enabled = function enabled(setting) {\n  return Boolean(this.set(setting));\n};\n\nconst render = (props) => {\n  return props.title;\n};\n";
    let found = signatures("a.js", js);
    assert_eq!(
        found,
        [
            (
                Some("app.enabled".to_string()),
                Some("app.enabled = function enabled(setting)".to_string())
            ),
            (
                Some("render".to_string()),
                Some("const render = (props) =>".to_string())
            ),
        ]
    );
}

#[test]
fn only_the_first_piece_of_a_split_definition_carries_the_signature() {
    let body: String = (0..40).map(|i| format!("    x{i} = {i}\n")).collect();
    let text = format!("def long_one(a, b):\n{body}");
    let options = ChunkOptions {
        max_tokens: 30,
        pack_definitions: false,
        definition_floor: 0,
    };
    let chunks = chunk_file(Path::new("a.py"), &text, &options, &WordCounter).expect("chunks");
    assert!(chunks.len() > 2);
    assert_eq!(chunks[0].signature.as_deref(), Some("def long_one(a, b):"));
    assert!(
        chunks[1..].iter().all(|c| c.signature.is_none()),
        "{chunks:?}"
    );
}

/// A header as C libraries write them: a linkage macro, export macros around or before the
/// return type, doc comments above each prototype.
const C_HEADER: &str = r#"#ifndef GIT_REPOSITORY_H
#define GIT_REPOSITORY_H
#include "common.h"

GIT_BEGIN_DECL

/**
 * Open a git repository.
 */
GIT_EXTERN(int) git_repository_open(git_repository **out, const char *path);

/**
 * Free a previously allocated repository.
 */
GIT_EXTERN(void) git_repository_free(git_repository *repo);

/** Compress src into dst. */
ZSTDLIB_API size_t ZSTD_compress(void *dst, size_t capacity, const void *src);

EVENT2_EXPORT_SYMBOL
struct event_base *event_base_new(void);

/** Called for each entry. */
int (*entry_callback)(const char *name);

GIT_END_DECL
#endif
"#;

#[test]
fn c_prototypes_behind_export_macros_are_definitions_of_their_own() {
    let chunks = per_definition("include/git2/repository.h", C_HEADER);
    let named = |name: &str| {
        chunks
            .iter()
            .find(|c| c.symbol.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} has a chunk of its own: {chunks:?}"))
    };
    let open = named("git_repository_open");
    assert_eq!(open.kind.as_deref(), Some("function"));
    assert!(
        open.text.contains("Open a git repository."),
        "its doc comment joins it"
    );
    assert!(!open.text.contains("git_repository_free"), "{open:?}");
    assert_eq!(
        open.signature.as_deref(),
        Some("GIT_EXTERN(int) git_repository_open(git_repository **out, const char *path);"),
        "the signature is the line as written"
    );
    assert_eq!(
        named("git_repository_free").kind.as_deref(),
        Some("function")
    );
    assert_eq!(
        named("ZSTD_compress").signature.as_deref(),
        Some("ZSTDLIB_API size_t ZSTD_compress(void *dst, size_t capacity, const void *src);")
    );
    assert!(
        named("event_base_new")
            .text
            .starts_with("EVENT2_EXPORT_SYMBOL\n"),
        "a macro on the line above belongs to the declaration: {chunks:?}"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c.symbol.as_deref() != Some("entry_callback")),
        "a function pointer is a variable: {chunks:?}"
    );
}

#[test]
fn cpp_method_prototypes_and_reference_returns_are_named_by_their_identifiers() {
    let cpp = "class Option {\n  public:\n    /// The option's group.\n    const std::string &get_group() const;\n\n    /// Whether it must be given.\n    bool get_required() const;\n};\n\n/// Parses the command line.\nvoid parse(int argc, char **argv);\n";
    let chunks = per_definition("Option.hpp", cpp);
    let methods: Vec<_> = chunks
        .iter()
        .filter(|c| c.kind.as_deref() != Some("class"))
        .map(|c| (c.symbol.as_deref(), c.kind.as_deref(), c.parent.as_deref()))
        .collect();
    assert_eq!(
        methods,
        [
            (Some("get_group"), Some("method"), Some("Option")),
            (Some("get_required"), Some("method"), Some("Option")),
            (Some("parse"), Some("function"), None),
        ],
        "{chunks:?}"
    );
}

#[test]
fn overload_signatures_join_the_definition_they_declare() {
    let ts = "import { from } from './from';\n\nexport function concat<T>(a: T): T;\nexport function concat<T, U>(a: T, b: U): T | U;\n/**\n * Emits the values of each input in turn.\n */\nexport function concat(...args: any[]): unknown {\n  return from(args);\n}\n\nexport function merge(...args: any[]): unknown {\n  return from(args);\n}\n";
    let chunks = per_definition("concat.ts", ts);
    let concat: Vec<_> = chunks
        .iter()
        .filter(|c| c.symbol.as_deref() == Some("concat"))
        .collect();
    assert_eq!(concat.len(), 1, "one chunk for the function: {chunks:?}");
    assert!(concat[0].text.contains("concat<T>(a: T): T;"), "{chunks:?}");
    assert!(concat[0].text.contains("return from(args);"), "{chunks:?}");
    assert!(
        chunks
            .iter()
            .any(|c| c.symbol.as_deref() == Some("merge") && !c.text.contains("concat")),
        "{chunks:?}"
    );
}
