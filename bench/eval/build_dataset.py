#!/usr/bin/env python3
"""Builds Quiver's code-search evaluation dataset from real packages fetched from registries.

    python3 bench/eval/build_dataset.py OUT_DIR [--per-language N]

Sources (pinned, fetched with each registry's own client): Python sdists from PyPI (pip
download), JavaScript from npm (npm pack), Rust crates from crates.io (cargo fetch). For every
function, method, class or item with a doc comment (Python docstring, JSDoc block, Rust `///`),
the query is the doc comment's first sentence; the corpus is the package's source files with
those doc comments replaced by blank lines (so line numbers do not move). A search result is a
hit when it is in the same file and its line range holds the definition's first line.

Writes OUT_DIR/corpus/<language>/<package>-<version>/... and OUT_DIR/queries.jsonl with
{"id", "query", "language", "path", "line", "end_line", "symbol"} per line. Standard library
only; needs pip, npm and cargo on PATH and the registries reachable.
"""

import argparse
import ast
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SOURCES = [
    ("python", "pypi", "requests", "2.32.3"),
    ("python", "pypi", "flask", "3.0.3"),
    ("python", "pypi", "click", "8.1.7"),
    ("python", "pypi", "rich", "13.9.2"),
    ("javascript", "npm", "lodash-es", "4.17.21"),
    ("javascript", "npm", "express", "4.21.1"),
    ("rust", "crates", "semver", "1.0.23"),
    ("rust", "crates", "itertools", "0.13.0"),
]
EXTENSIONS = {"python": (".py",), "javascript": (".js", ".mjs"), "rust": (".rs",)}


def fetch(kind, name, version, cache):
    """Returns the bytes of the package archive (a .tar.gz in every case)."""
    cache.mkdir(parents=True, exist_ok=True)
    if kind == "pypi":
        subprocess.run(["pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"{name}=={version}", "-d", str(cache)], check=True)
        matches = [p for p in cache.iterdir()
                   if p.name.lower().replace("_", "-").startswith(f"{name}-{version}".lower())
                   and p.name.endswith(".tar.gz")]
    elif kind == "npm":
        subprocess.run(["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", str(cache)],
                       check=True, stdout=subprocess.DEVNULL)
        matches = [p for p in cache.iterdir() if p.name == f"{name}-{version}.tgz"]
    else:
        project = Path(tempfile.mkdtemp())
        (project / "src").mkdir()
        (project / "src" / "lib.rs").write_text("")
        (project / "Cargo.toml").write_text(
            f'[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n\n'
            f'[dependencies]\n{name} = "={version}"\n')
        subprocess.run(["cargo", "fetch", "--quiet", "--manifest-path", str(project / "Cargo.toml")], check=True)
        cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
        matches = list(cargo_home.glob(f"registry/cache/*/{name}-{version}.crate"))
        shutil.rmtree(project)
    if not matches:
        sys.exit(f"build_dataset: could not find the archive of {name} {version}")
    return matches[0].read_bytes()


def first_sentence(text):
    paragraph = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    paragraph = " ".join(paragraph.split())
    match = re.search(r"(.+?[.!?])(\s|$)", paragraph)
    sentence = match.group(1) if match else paragraph
    return sentence[:300]


def usable(query):
    words = query.split()
    return 3 <= len(words) <= 60 and not query.startswith(("@", ":", "..", "#", "TODO"))


def python_definitions(source):
    """(definition line, end line, symbol, doc first line, doc last line, doc text)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        doc = ast.get_docstring(node, clean=True)
        first = node.body[0] if node.body else None
        if not doc or not isinstance(first, ast.Expr) or first.lineno == node.lineno:
            continue
        found.append((node.lineno, node.end_lineno, node.name, first.lineno, first.end_lineno, doc))
    return found


JS_DEFINITION = re.compile(
    r"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?(?:function\s*\*?\s*(\w+)|class\s+(\w+)"
    r"|(?:const|let|var)\s+(\w+)\s*=|(\w+)\s*:\s*function\b|(?:\w+\.)+(\w+)\s*=\s*function\b)")


def block_definitions(lines, language):
    """Doc blocks (JSDoc or `///`) directly above a definition line."""
    found = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if language == "javascript" and stripped.startswith("/**") and not stripped.startswith("/***"):
            start = i
            while i < len(lines) and "*/" not in lines[i]:
                i += 1
            end = i
            body = "\n".join(lines[start:end + 1])
            body = re.sub(r"^\s*/\*\*|\*/\s*$", "", body)
            text = "\n".join(re.sub(r"^\s*\*\s?", "", l) for l in body.split("\n"))
            text = text.split("\n@")[0] if not text.lstrip().startswith("@") else ""
        elif language == "rust" and stripped.startswith("///") and not stripped.startswith("////"):
            start = i
            while i + 1 < len(lines) and lines[i + 1].strip().startswith("///"):
                i += 1
            end = i
            text = "\n".join(l.strip()[3:].strip() for l in lines[start:end + 1])
        else:
            i += 1
            continue
        j = end + 1
        while j < len(lines) and (lines[j].strip().startswith("#[") or not lines[j].strip()):
            j += 1
        if j < len(lines) and text.strip():
            symbol = definition_symbol(lines[j], language)
            if symbol:
                found.append((j + 1, j + 1, symbol, start + 1, end + 1, text))
        i = end + 1
    return found


RUST_ITEM = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:default\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"C\"\s+)?"
    r"(?:fn|struct|enum|trait|type|mod|union|const|static|macro_rules!)\s+(\w+)")


def definition_symbol(line, language):
    match = (JS_DEFINITION if language == "javascript" else RUST_ITEM).match(line)
    if not match:
        return None
    return next(g for g in match.groups() if g)


def process_file(language, text):
    lines = text.split("\n")
    if language == "python":
        definitions = python_definitions(text)
    else:
        definitions = block_definitions(lines, language)
    for (_, _, _, doc_start, doc_end, _) in definitions:
        for n in range(doc_start - 1, doc_end):
            lines[n] = ""
    return "\n".join(lines), definitions


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-language", type=int, default=250,
                        help="queries kept per language (a deterministic sample)")
    args = parser.parse_args()
    cache = args.out / "archives"
    corpus = args.out / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    candidates = []
    for language, kind, name, version in SOURCES:
        archive = tarfile.open(fileobj=io.BytesIO(fetch(kind, name, version, cache)), mode="r:gz")
        package_dir = f"{language}/{name}-{version}"
        for member in archive.getmembers():
            if not member.isfile() or not member.name.endswith(EXTENSIONS[language]):
                continue
            relative = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if language == "javascript" and (relative.endswith(".min.js") or "/dist/" in f"/{relative}"):
                continue
            raw = archive.extractfile(member).read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            blanked, definitions = process_file(language, text)
            path = f"{package_dir}/{relative}"
            target = corpus / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(blanked, encoding="utf-8")
            for line, end_line, symbol, _, _, doc in definitions:
                query = first_sentence(doc)
                if usable(query):
                    candidates.append({"query": query, "language": language, "path": path,
                                       "line": line, "end_line": end_line, "symbol": symbol})
    counts = {}
    for c in candidates:
        counts[c["query"].lower()] = counts.get(c["query"].lower(), 0) + 1
    unique = [c for c in candidates if counts[c["query"].lower()] == 1]
    queries = []
    for language in sorted({c["language"] for c in unique}):
        pool = [c for c in unique if c["language"] == language]
        pool.sort(key=lambda c: hashlib.sha256(f"{c['path']}:{c['line']}".encode()).hexdigest())
        queries.extend(pool[: args.per_language])
    queries.sort(key=lambda c: (c["path"], c["line"]))
    with open(args.out / "queries.jsonl", "w", encoding="utf-8") as out:
        for q in queries:
            q["id"] = f"{q['path']}:{q['line']}"
            out.write(json.dumps(q, ensure_ascii=False) + "\n")
    by_language = {}
    for q in queries:
        by_language[q["language"]] = by_language.get(q["language"], 0) + 1
    files = sum(1 for _ in corpus.rglob("*") if _.is_file())
    print(f"build_dataset: {len(queries)} queries {by_language} over {files} files in {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
