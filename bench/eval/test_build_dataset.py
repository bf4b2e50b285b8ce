"""Tests of the dataset builder's extraction, on inline sources (no network).

    python3 -m unittest discover -s bench/eval -p 'test_*.py'
"""

import unittest

from build_dataset import first_sentence, process_file, usable

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

    def test_short_or_tag_queries_are_dropped(self):
        self.assertFalse(usable("Clone."))
        self.assertFalse(usable("@deprecated use other things"))
        self.assertTrue(usable("Creates a shallow clone."))


if __name__ == "__main__":
    unittest.main()
