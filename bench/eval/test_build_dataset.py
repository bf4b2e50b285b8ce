"""Tests of the dataset builder's extraction, on inline sources (no network).

    python3 -m unittest discover -s bench/eval -p 'test_*.py'
"""

import unittest

from build_dataset import blank, definitions_in, first_sentence, kept_files, split_of, usable


def process_file(language, text):
    """The file with every doc comment blanked, and its documented definitions."""
    definitions = definitions_in(language, text)
    return blank(text, [(d[3], d[4]) for d in definitions]), definitions

PYTHON = '''import os


class Store:
    """Keeps values by key. More text."""

    def put(self, key, value):
        """Store a value under a key.

        Details that are not the query.
        """
        self.items[key] = value


def one_liner(): """Docstring on the def line is left alone."""
'''

JAVASCRIPT = '''import baseClone from './_baseClone.js';

/**
 * Creates a shallow clone of `value`.
 *
 * @since 0.1.0
 * @param {*} value The value to clone.
 */
function clone(value) {
  return baseClone(value, 4);
}
'''

RUST = '''/// Returns the larger of two numbers.
///
/// More detail.
#[inline]
pub fn max_of(a: u32, b: u32) -> u32 {
    if a > b { a } else { b }
}
'''


GO = """package cobra

// Execute runs the command tree.
// It parses the arguments first.
func (c *Command) Execute() error {
	return nil
}

//go:noinline
func helper() {}
"""

JAVA = """/**
 * Returns the {@code Duration} between two {@link java.time.Instant#now instants}.
 *
 * @param a the first
 */
@Override
public static <T> Duration between(Temporal a, Temporal b) {
"""

C = """/**
 * Open a git repository.
 *
 * @param out pointer to the repo
 */
GIT_EXTERN(int) git_repository_open(git_repository **out, const char *path);

/** Declare a parser. */
YAML_DECLARE(int)
yaml_parser_initialize(yaml_parser_t *parser);
"""

CPP = """/// @brief parse a JSON value from a string
/// @sa dump
template<typename T>
static basic_json parse(T&& input);
"""

RUBY = """module Rack
  # Returns the request's host name.
  def host
    @host
  end
end
"""

PHP = """<?php
/**
 * Formats bytes into a human readable string.
 *
 * @param int $bytes
 */
public function formatBytes(int $bytes): string
"""

TYPESCRIPT = """/**
 * Creates a slice of state with its reducers.
 */
export function createSlice<S>(options: Options<S>): Slice<S> {
  return build(options)
}
"""


class ExtractionTest(unittest.TestCase):
    def test_python_docstrings_become_queries_and_blank_lines(self):
        blanked, definitions = process_file("python", PYTHON)
        self.assertEqual(len(blanked.split("\n")), len(PYTHON.split("\n")), "line numbers kept")
        self.assertNotIn("Store a value", blanked)
        self.assertIn("Docstring on the def line", blanked)
        by_symbol = {d[2]: d for d in definitions}
        self.assertEqual(set(by_symbol), {"Store", "put"})
        self.assertEqual(by_symbol["put"][0], 7, "the def line")
        self.assertEqual(first_sentence(by_symbol["put"][5]), "Store a value under a key.")

    def test_jsdoc_blocks(self):
        blanked, definitions = process_file("javascript", JAVASCRIPT)
        self.assertEqual(len(blanked.split("\n")), len(JAVASCRIPT.split("\n")))
        self.assertNotIn("shallow clone", blanked)
        [(line, _, symbol, _, _, doc)] = definitions
        self.assertEqual((line, symbol), (9, "clone"))
        self.assertEqual(first_sentence(doc), "Creates a shallow clone of `value`.")

    def test_rust_doc_comments_skip_attributes(self):
        blanked, definitions = process_file("rust", RUST)
        self.assertNotIn("larger of two", blanked)
        self.assertIn("#[inline]", blanked)
        [(line, _, symbol, _, _, doc)] = definitions
        self.assertEqual((line, symbol), (5, "max_of"))
        self.assertEqual(first_sentence(doc), "Returns the larger of two numbers.")

    def test_go_comment_lines_above_a_method(self):
        blanked, definitions = process_file("go", GO)
        [(line, _, symbol, start, end, doc)] = definitions
        self.assertEqual((line, symbol, start, end), (5, "Execute", 3, 4))
        self.assertEqual(first_sentence(doc), "Execute runs the command tree.")
        self.assertIn("//go:noinline", blanked, "a directive is not a doc comment")

    def test_javadoc_skips_annotations_and_reduces_inline_tags(self):
        [(line, _, symbol, _, _, doc)] = definitions_in("java", JAVA)
        self.assertEqual((line, symbol), (7, "between"))
        self.assertEqual(first_sentence(doc), "Returns the Duration between two instants.")

    def test_c_declarations_behind_export_macros(self):
        found = {d[2]: d for d in definitions_in("c", C)}
        self.assertEqual(set(found), {"git_repository_open", "yaml_parser_initialize"})
        self.assertEqual(first_sentence(found["git_repository_open"][5]), "Open a git repository.")
        self.assertEqual(found["yaml_parser_initialize"][0], 9, "the definition starts at the macro")

    def test_cpp_triple_slash_brief_above_a_template(self):
        [(line, _, symbol, _, _, doc)] = definitions_in("cpp", CPP)
        self.assertEqual((line, symbol), (4, "parse"))
        self.assertEqual(first_sentence(doc), "parse a JSON value from a string")

    def test_ruby_php_and_typescript(self):
        [(line, _, symbol, _, _, doc)] = definitions_in("ruby", RUBY)
        self.assertEqual((line, symbol, doc.strip()), (3, "host", "Returns the request's host name."))
        [(line, _, symbol, _, _, doc)] = definitions_in("php", PHP)
        self.assertEqual((line, symbol), (7, "formatBytes"))
        self.assertEqual(first_sentence(doc), "Formats bytes into a human readable string.")
        [(line, _, symbol, _, _, _)] = definitions_in("typescript", TYPESCRIPT)
        self.assertEqual((line, symbol), (4, "createSlice"))

    def test_only_the_given_comments_are_blanked(self):
        text = "a\nb\nc\nd"
        self.assertEqual(blank(text, [(2, 3)]), "a\n\n\nd")

    def test_a_package_stays_in_its_split(self):
        self.assertIn(split_of("requests"), {"dev", "test"})
        self.assertEqual(split_of("requests"), split_of("requests"))
        splits = {split_of(f"package-{i}") for i in range(20)}
        self.assertEqual(splits, {"dev", "test"}, "both splits are used")

    def test_each_language_is_sampled_down_to_its_budget(self):
        files = {("dev", f"go/pkg/f{i}.go"): "x" * 40 for i in range(10)}
        files[("dev", "c/lib/a.h")] = "y" * 100
        kept = kept_files(files, 100)
        self.assertEqual(sum(1 for split, path in kept if path.startswith("go/")), 2)
        self.assertIn(("dev", "c/lib/a.h"), kept, "each language has its own budget")
        self.assertEqual(kept, kept_files(dict(reversed(list(files.items()))), 100), "deterministic")

    def test_short_or_tag_queries_are_dropped(self):
        self.assertFalse(usable("Clone."))
        self.assertFalse(usable("@deprecated use other things"))
        self.assertTrue(usable("Creates a shallow clone."))


if __name__ == "__main__":
    unittest.main()
