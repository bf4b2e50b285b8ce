//! Which language a file is written in, decided by its name alone.

use std::path::Path;

/// Languages the chunker knows. Code languages are split along their syntax tree; Markdown by
/// headings; everything else ([`Language::Text`]) by paragraphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    Rust,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
    C,
    Cpp,
    CSharp,
    Ruby,
    Php,
    Markdown,
    Text,
}

impl Language {
    pub const ALL: [Language; 14] = [
        Language::Python,
        Language::Rust,
        Language::JavaScript,
        Language::TypeScript,
        Language::Tsx,
        Language::Go,
        Language::Java,
        Language::C,
        Language::Cpp,
        Language::CSharp,
        Language::Ruby,
        Language::Php,
        Language::Markdown,
        Language::Text,
    ];

    pub fn from_path(path: &Path) -> Language {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match extension.as_str() {
            "py" | "pyi" | "pyw" => Language::Python,
            "rs" => Language::Rust,
            "js" | "mjs" | "cjs" | "jsx" => Language::JavaScript,
            "ts" | "mts" | "cts" => Language::TypeScript,
            "tsx" => Language::Tsx,
            "go" => Language::Go,
            "java" => Language::Java,
            "c" | "h" => Language::C,
            "cc" | "cpp" | "cxx" | "c++" | "hh" | "hpp" | "hxx" | "h++" | "ipp" | "tpp" => {
                Language::Cpp
            }
            "cs" => Language::CSharp,
            "rb" | "rake" | "gemspec" => Language::Ruby,
            "php" => Language::Php,
            "md" | "markdown" | "mdx" => Language::Markdown,
            _ => Language::Text,
        }
    }

    /// The name stored in the index and accepted by `--lang`.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Rust => "rust",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Tsx => "tsx",
            Language::Go => "go",
            Language::Java => "java",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::CSharp => "csharp",
            Language::Ruby => "ruby",
            Language::Php => "php",
            Language::Markdown => "markdown",
            Language::Text => "text",
        }
    }

    pub fn from_name(name: &str) -> Option<Language> {
        let name = name.to_ascii_lowercase();
        let alias = match name.as_str() {
            "py" => "python",
            "rs" => "rust",
            "js" => "javascript",
            "ts" => "typescript",
            "c++" => "cpp",
            "c#" | "cs" => "csharp",
            "rb" => "ruby",
            "md" => "markdown",
            other => other,
        };
        Language::ALL.into_iter().find(|l| l.name() == alias)
    }

    /// The tree-sitter grammar, for languages chunked along their syntax.
    pub fn grammar(self) -> Option<tree_sitter::Language> {
        let grammar = match self {
            Language::Python => tree_sitter_python::LANGUAGE,
            Language::Rust => tree_sitter_rust::LANGUAGE,
            Language::JavaScript => tree_sitter_javascript::LANGUAGE,
            Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT,
            Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX,
            Language::Go => tree_sitter_go::LANGUAGE,
            Language::Java => tree_sitter_java::LANGUAGE,
            Language::C => tree_sitter_c::LANGUAGE,
            Language::Cpp => tree_sitter_cpp::LANGUAGE,
            Language::CSharp => tree_sitter_c_sharp::LANGUAGE,
            Language::Ruby => tree_sitter_ruby::LANGUAGE,
            Language::Php => tree_sitter_php::LANGUAGE_PHP,
            Language::Markdown | Language::Text => return None,
        };
        Some(grammar.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_extensions_map() {
        for language in Language::ALL {
            assert_eq!(Language::from_name(language.name()), Some(language));
        }
        assert_eq!(Language::from_path(Path::new("a/b.PY")), Language::Python);
        assert_eq!(Language::from_path(Path::new("x.hpp")), Language::Cpp);
        assert_eq!(Language::from_path(Path::new("Makefile")), Language::Text);
        assert_eq!(Language::from_name("C#"), Some(Language::CSharp));
    }

    #[test]
    fn every_code_grammar_loads() {
        for language in Language::ALL {
            if let Some(grammar) = language.grammar() {
                let mut parser = tree_sitter::Parser::new();
                assert!(parser.set_language(&grammar).is_ok(), "{}", language.name());
            }
        }
    }
}

/// Whether a path is a test file by the conventions of its language's ecosystem: a `test`,
/// `tests`, `spec` or `__tests__` folder, or a file named `test_*`, `*_test`, `*.test.*`,
/// `*.spec.*`, `*_spec`, `*Test(s)` or `*Spec` (pytest, Go, Jest, RSpec, JUnit, PHPUnit).
pub fn is_test_path(path: &str) -> bool {
    let mut parts = path.split(['/', '\\']).rev();
    let file = parts.next().unwrap_or_default();
    if parts.any(|folder| {
        matches!(
            folder.to_ascii_lowercase().as_str(),
            "test" | "tests" | "spec" | "specs" | "__tests__" | "testing" | "testdata"
        )
    }) {
        return true;
    }
    let stem = file.split('.').next().unwrap_or_default();
    let dotted = file.contains(".test.") || file.contains(".spec.");
    let lower = stem.to_ascii_lowercase();
    dotted
        || lower.starts_with("test_")
        || lower.ends_with("_test")
        || lower.ends_with("_tests")
        || lower.ends_with("_spec")
        || (stem.len() > 4 && (stem.ends_with("Test") || stem.ends_with("Tests")))
        || (stem.len() > 4 && stem.ends_with("Spec"))
}

#[cfg(test)]
mod test_path_tests {
    use super::is_test_path;

    #[test]
    fn test_files_by_their_ecosystems_conventions() {
        for path in [
            "tests/test_api.py",
            "pkg/test_utils.py",
            "cobra/command_test.go",
            "src/query/core.test.ts",
            "lib/button.spec.js",
            "src/__tests__/store.ts",
            "spec/rack/request_spec.rb",
            "src/Monolog/LoggerTest.php",
            "java/util/HashMapTests.java",
        ] {
            assert!(is_test_path(path), "{path}");
        }
        for path in [
            "src/testament.rs",
            "src/contest.py",
            "lib/attest.js",
            "src/Test.java",
            "src/latest_version.go",
            "include/git2/stash.h",
        ] {
            assert!(!is_test_path(path), "{path}");
        }
    }
}
