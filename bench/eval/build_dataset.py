#!/usr/bin/env python3
"""Builds Quiver's code-search evaluation dataset from real packages fetched from registries.

    python3 bench/eval/build_dataset.py OUT_DIR [--per-split N] [--language L ...]

Sources (pinned, fetched with each registry's own client): Python sdists from PyPI (pip
download), JavaScript and TypeScript from npm (npm pack), Rust crates from crates.io (cargo
fetch), and Go, C, C++, Ruby, PHP and Java from Debian packages (apt-get download; Go, Ruby and
PHP packages carry their sources, C and C++ `-dev` packages their documented headers, and
openjdk-17-source the Java class library, whose Java packages count as packages here).

Every package belongs wholly to the dev split or the test split, fixed by a hash of its name
(`split_of`): choices are made on dev, results reported on test.

For every function, method, class or type with a doc comment (Python docstring, JSDoc/Javadoc/
PHPDoc/Doxygen block, Rust `///`, Go and Ruby comment lines), the doc comment's first sentence is
a candidate query. Each language's files in each split are sampled (by a hash of the path) down
to 500 kB, and up to N queries per language and split are kept (a deterministic sample by hash);
the doc comments of the kept queries are replaced by blank lines in the corpus (line numbers do
not move), so a query's words are not next to its answer. Every other doc comment
stays, as it would in a real repository. A search result is a hit when it is in the same file
and its line range holds the definition's first line.

Writes OUT_DIR/corpus/<split>/<language>/<package>-<version>/... and OUT_DIR/queries.jsonl with
{"id", "query", "language", "split", "package", "path", "line", "end_line", "symbol"} per line,
`path` relative to corpus/<split>/. Standard library only; needs pip, npm, cargo, apt-get and
dpkg-deb on PATH and the registries reachable. Archives are kept in OUT_DIR/archives.
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
import zipfile
from urllib.parse import unquote
from pathlib import Path

# (language, registry, name, version, path prefix kept inside the package or None for all).
SOURCES = [
    ("python", "pypi", "requests", "2.32.3", None),
    ("python", "pypi", "flask", "3.0.3", None),
    ("python", "pypi", "more-itertools", "10.5.0", None),
    ("python", "pypi", "click", "8.1.7", None),
    ("python", "pypi", "rich", "13.9.2", None),
    ("python", "pypi", "httpx", "0.27.2", None),
    ("javascript", "npm", "lodash-es", "4.17.21", None),
    ("javascript", "npm", "express", "4.21.1", None),
    ("javascript", "npm", "ramda", "0.30.1", "src/"),
    ("javascript", "npm", "axios", "1.7.7", "lib/"),
    ("typescript", "npm", "rxjs", "7.8.1", "src/"),
    ("typescript", "npm", "fp-ts", "2.16.9", "src/"),
    ("typescript", "npm", "immer", "10.1.1", "src/"),
    ("typescript", "npm", "mobx", "6.13.5", "src/"),
    ("typescript", "npm", "@reduxjs/toolkit", "2.3.0", "src/"),
    ("typescript", "npm", "redux", "5.0.1", "src/"),
    ("typescript", "npm", "reselect", "5.3.0", "src/"),
    ("typescript", "npm", "@trpc/client", "11.25.2", "src/"),
    ("typescript", "npm", "@tanstack/pacer", "0.22.0", "src/"),
    ("typescript", "npm", "@tanstack/form-core", "1.33.5", "src/"),
    ("typescript", "npm", "@tanstack/query-core", "5.108.4", "src/"),
    ("rust", "crates", "semver", "1.0.23", None),
    ("rust", "crates", "itertools", "0.13.0", None),
    ("rust", "crates", "bytes", "1.12.2", None),
    ("rust", "crates", "anyhow", "1.0.104", None),
    ("rust", "crates", "serde_json", "1.0.154", None),
    ("go", "debian", "golang-github-spf13-cobra-dev", "1.6.1-1", None),
    ("go", "debian", "golang-github-sirupsen-logrus-dev", "1.9.0-1", None),
    ("go", "debian", "golang-github-google-go-cmp-dev", "0.5.9-1", None),
    ("go", "debian", "golang-github-burntsushi-toml-dev", "1.2.0-2", None),
    ("go", "debian", "golang-github-google-uuid-dev", "1.3.0-1", None),
    ("go", "debian", "golang-github-pelletier-go-toml-dev", "1.9.4-1", None),
    ("java", "jdk", "java.util.concurrent", "17", None),
    ("java", "jdk", "java.time", "17", None),
    ("java", "jdk", "java.util.stream", "17", None),
    ("java", "jdk", "java.util", "17", None),
    ("java", "jdk", "java.net", "17", None),
    ("java", "jdk", "java.text", "17", None),
    ("c", "debian", "libgit2-dev", "1.5.1+ds-1+deb12u1", None),
    ("c", "debian", "libyaml-dev", "0.2.5-1", None),
    ("c", "debian", "libzstd-dev", "1.5.4+dfsg2-5", None),
    ("c", "debian", "liblz4-dev", "1.9.4-1", None),
    ("c", "debian", "libsodium-dev", "1.0.18-1+deb12u1", None),
    ("c", "debian", "libcurl4-openssl-dev", "7.88.1-10+deb12u5", None),
    ("c", "debian", "libevent-dev", "2.1.12-stable-8", None),
    ("c", "debian", "libwebsockets-dev", "4.1.6-3", None),
    ("cpp", "debian", "nlohmann-json3-dev", "3.11.2-2", None),
    ("cpp", "debian", "libxsimd-dev", "8.1.0-7", None),
    ("cpp", "debian", "libglm-dev", "0.9.9.8+ds-6", None),
    ("cpp", "debian", "libcli11-dev", "2.1.2+ds-1", None),
    ("cpp", "debian", "libcxxopts-dev", "3.1.1-1", None),
    ("ruby", "debian", "ruby-activesupport", "2:6.1.7.10+dfsg-1~deb12u2", None),
    ("ruby", "debian", "ruby-tzinfo", "2.0.5-1", None),
    ("ruby", "debian", "ruby-rack", "2.2.22-0+deb12u1", None),
    ("ruby", "debian", "ruby-thor", "1.2.1-2", None),
    ("ruby", "debian", "ruby-sinatra", "3.0.5-3+deb12u1", None),
    ("php", "debian", "php-twig", "3.5.1-1+deb12u1", None),
    ("php", "debian", "php-symfony-string", "5.4.23+dfsg-1+deb12u5", None),
    ("php", "debian", "php-symfony-yaml", "5.4.23+dfsg-1+deb12u5", None),
    ("php", "debian", "php-monolog", "2.9.1-1", None),
    ("php", "debian", "php-league-commonmark", "2.3.9-1+deb12u1", None),
    ("php", "debian", "php-guzzlehttp-psr7", "2.4.5-1", None),
]
JDK_SOURCE = ("openjdk-17-source", "17.0.19+10-1~deb12u2")
EXTENSIONS = {
    "python": (".py",),
    "javascript": (".js", ".mjs"),
    "typescript": (".ts",),
    "rust": (".rs",),
    "go": (".go",),
    "java": (".java",),
    "c": (".h", ".c"),
    "cpp": (".hpp", ".cpp", ".cc"),
    "ruby": (".rb",),
    "php": (".php",),
}


def split_of(package):
    """The split a package belongs to, for good: odd hashes are test, even ones dev."""
    return "test" if int(hashlib.sha256(package.encode()).hexdigest()[:8], 16) % 2 else "dev"


def folder_name(package):
    """A package's name as a file name (npm's own rule for scoped packages: `@a/b` is `a-b`)."""
    return package.lstrip("@").replace("/", "-")


def run(command):
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def fetch(kind, name, version, cache):
    """The version fetched, and the package's files as (path inside the package, bytes)."""
    cache.mkdir(parents=True, exist_ok=True)
    if kind == "pypi":
        run(["pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"{name}=={version}", "-d", str(cache)])
        wanted = f"{name}-{version}".lower().replace("_", "-")
        matches = [p for p in cache.iterdir() if p.name.endswith(".tar.gz")
                   and p.name.lower().replace("_", "-").startswith(wanted)]
        return version, tar_members(matches, name, strip=1)
    if kind == "npm":
        run(["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", str(cache)])
        return version, tar_members([cache / f"{folder_name(name)}-{version}.tgz"], name, strip=1)
    if kind == "crates":
        project = Path(tempfile.mkdtemp())
        (project / "src").mkdir()
        (project / "src" / "lib.rs").write_text("")
        (project / "Cargo.toml").write_text(
            f'[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n\n'
            f'[dependencies]\n{name} = "={version}"\n')
        run(["cargo", "fetch", "--quiet", "--manifest-path", str(project / "Cargo.toml")])
        shutil.rmtree(project)
        cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
        crates = list(cargo_home.glob(f"registry/cache/*/{name}-{version}.crate"))
        return version, tar_members(crates, name, strip=1)
    if kind == "debian":
        deb = debian_archive(name, version, cache)
        return deb_version(deb), tar_members([deb], name, strip=2, tar_of_deb=True)
    if kind == "jdk":
        deb = debian_archive(*JDK_SOURCE, cache)
        return deb_version(deb).split(".")[0], jdk_members(name, deb)
    raise ValueError(f"unknown registry {kind}")


def debian_archive(name, version, cache):
    found = list(cache.glob(f"{name}_*.deb"))
    # A security update can take a pinned version off the mirror: then the current one is
    # taken, and its version names the package's folder.
    for wanted in (f"{name}={version}", name):
        if found:
            break
        fetched = subprocess.run(["apt-get", "download", "--quiet", wanted], cwd=cache,
                                 capture_output=True, text=True)
        found = list(cache.glob(f"{name}_*.deb"))
        if not found:
            print(f"build_dataset: apt-get download {wanted} failed: {fetched.stderr.strip()}",
                  file=sys.stderr)
    if not found:
        sys.exit(f"build_dataset: could not download the Debian package {name}")
    return found[0]


def deb_version(deb):
    """The upstream version in a .deb's name (`name_EPOCH%3aVERSION_arch.deb`), without the epoch."""
    return unquote(deb.name.split("_")[1]).split(":")[-1]


def tar_members(matches, name, strip, tar_of_deb=False):
    if not matches or not matches[0].exists():
        sys.exit(f"build_dataset: could not find the archive of {name}")
    if tar_of_deb:
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(matches[0])], check=True,
                              capture_output=True).stdout
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    else:
        archive = tarfile.open(matches[0], mode="r:gz")
    for member in archive.getmembers():
        parts = member.name.split("/")
        if not member.isfile() or len(parts) <= strip or "doc" in parts[:4]:
            continue
        yield "/".join(parts[strip:]), archive.extractfile(member).read()


def jdk_members(package, deb):
    """The files directly in one Java package of the JDK's src.zip (not its subpackages)."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                          capture_output=True).stdout
    archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    member = next(m for m in archive.getmembers() if m.name.endswith("/src.zip"))
    zipped = zipfile.ZipFile(io.BytesIO(archive.extractfile(member).read()))
    folder = package.replace(".", "/")
    for name in zipped.namelist():
        module, _, rest = name.partition("/")
        if rest.rsplit("/", 1)[0] == folder and rest.endswith(".java"):
            yield rest, zipped.read(name)


def first_sentence(text):
    paragraph = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    paragraph = " ".join(paragraph.split())
    match = re.search(r"(.+?[.!?])(\s|$)", paragraph)
    sentence = match.group(1) if match else paragraph
    return sentence[:300]


def usable(query):
    words = query.split()
    return 3 <= len(words) <= 60 and not query.startswith(("@", ":", "..", "#", "TODO", "\\", "{@inheritDoc"))


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


def clean_block(body):
    """The prose of a /** */ block: no delimiters, no leading stars, no tags; inline tags and
    HTML reduced to their words."""
    body = re.sub(r"^\s*/\*[*!]<?|\*/\s*$", "", body)
    lines = [re.sub(r"^\s*\*\s?", "", line) for line in body.split("\n")]
    kept = []
    for line in lines:
        stripped = line.strip()
        brief = re.match(r"^[@\\]brief\s+(.*)", stripped)
        if brief:
            stripped = brief.group(1)
        elif re.match(r"^[@\\]\w", stripped):
            break
        kept.append(stripped)
    return inline_markup("\n".join(kept))


def inline_markup(text):
    text = re.sub(r"\{@\w+\s+(?:[\w.]*#)?([^}\s]+)(?:\s+([^}]*))?\}", lambda m: m.group(2) or m.group(1), text)
    text = re.sub(r"</?\w+[^>]*>", "", text)
    return re.sub(r"[@\\](?:ref|c|p|a|b|e)\s+", "", text)


def line_comment_text(lines, marker):
    return "\n".join(re.sub(r"^\s*" + re.escape(marker) + r"\s?", "", line) for line in lines)


# The markers of each language's doc comments: a block opener, or a line prefix.
BLOCK_LANGUAGES = {"javascript", "typescript", "java", "php", "c", "cpp"}
LINE_MARKERS = {"rust": "///", "cpp": "///", "go": "//", "ruby": "#"}
# Lines allowed between a doc comment and its definition.
BETWEEN = {
    "rust": re.compile(r"^\s*(#\[|$)"),
    "java": re.compile(r"^\s*(@\w|$)"),
    "php": re.compile(r"^\s*(#\[|$)"),
    "typescript": re.compile(r"^\s*(@\w|$)"),
    "cpp": re.compile(r"^\s*(template\s*<|$)"),
    "go": re.compile(r"^$"),
    "ruby": re.compile(r"^$"),
}
MODIFIERS = (r"(?:(?:public|private|protected|static|final|abstract|async|readonly|override|declare|"
             r"export|default|synchronized|native|sealed|get|set|inline|constexpr|virtual|explicit|"
             r"extern|friend)\s+)*")
NOT_NAMES = {"if", "for", "while", "switch", "catch", "return", "function", "typeof", "new", "sizeof",
             "defined", "do", "else", "throw", "await", "yield", "super", "this", "decltype", "operator"}
DEFINITIONS = {
    "javascript": [
        r"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?(?:function\s*\*?\s*(\w+)|class\s+(\w+)"
        r"|(?:const|let|var)\s+(\w+)\s*=|(\w+)\s*:\s*function\b|(?:\w+\.)+(\w+)\s*=\s*function\b)",
        r"^\s*" + MODIFIERS + r"\*?\s*(#?\w+)\s*\(",
    ],
    "typescript": [
        r"^\s*" + MODIFIERS + r"(?:function\s*\*?\s*|class\s+|interface\s+|type\s+|enum\s+|namespace\s+"
        r"|(?:const|let|var)\s+)(\w+)",
        r"^\s*" + MODIFIERS + r"\*?\s*(#?\w+)\s*(?:<[^>]*>)?\s*\(",
    ],
    "rust": [
        r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:default\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?"
        r"(?:extern\s+\"C\"\s+)?(?:fn|struct|enum|trait|type|mod|union|const|static|macro_rules!)\s+(\w+)",
    ],
    "go": [r"^func\s+(?:\([^)]*\)\s*)?(\w+)", r"^type\s+(\w+)", r"^(?:var|const)\s+(\w+)"],
    "java": [
        r"^\s*" + MODIFIERS + r"(?:class|interface|enum|record|@interface)\s+(\w+)",
        r"^\s*" + MODIFIERS + r"(?:<[^>]+>\s+)?(?:[\w.<>\[\]?,]+(?:<[^;{]*>)?\s+)?(\w+)\s*\(",
    ],
    "php": [
        r"^\s*" + MODIFIERS + r"function\s+&?(\w+)",
        r"^\s*" + MODIFIERS + r"(?:class|interface|trait|enum)\s+(\w+)",
    ],
    "ruby": [r"^\s*def\s+(?:self\.)?(\w+[?!=]?)", r"^\s*(?:class|module)\s+([\w:]+)"],
}


def c_symbol(line, language):
    """The declared name on a C or C++ line: a function (the last name before a parenthesis
    that is not a macro), or a struct, class, enum, namespace or alias."""
    named = re.match(r"^\s*(?:typedef\s+)?(?:struct|union|enum(?:\s+class)?|class|namespace)\s+(\w+)", line)
    if named:
        return named.group(1)
    if language == "cpp":
        alias = re.match(r"^\s*using\s+(\w+)\s*=", line)
        if alias:
            return alias.group(1)
    if line.lstrip().startswith(("#", "return ", "}")):
        return None
    names = [n for n in re.findall(r"(~?\w+)\s*\(", line)
             if n not in NOT_NAMES and not re.fullmatch(r"[A-Z0-9_]+", n)]
    return names[0] if names else None


def definition_symbol(line, language):
    if language in ("c", "cpp"):
        return c_symbol(line, language)
    for pattern in DEFINITIONS[language]:
        match = re.match(pattern, line)
        if match:
            name = next((g for g in match.groups() if g), None)
            if name and name not in NOT_NAMES:
                return name
    return None


def comment_definitions(lines, language):
    """Doc comments directly above a definition line, in a language's own styles."""
    found = []
    marker = LINE_MARKERS.get(language)
    between = BETWEEN.get(language, re.compile(r"^\s*$"))
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if (language in BLOCK_LANGUAGES and stripped.startswith(("/**", "/*!"))
                and not stripped.startswith("/***")):
            start = i
            while i < len(lines) and "*/" not in lines[i]:
                i += 1
            end = min(i, len(lines) - 1)
            text = clean_block("\n".join(lines[start:end + 1]))
        elif marker and stripped.startswith(marker) and not is_directive(stripped, language):
            start = i
            while (i + 1 < len(lines) and lines[i + 1].strip().startswith(marker)
                   and not is_directive(lines[i + 1].strip(), language)):
                i += 1
            end = i
            text = line_comment_text(lines[start:end + 1], marker)
            if language == "cpp":
                text = clean_block(text)
        else:
            i += 1
            continue
        j = end + 1
        while j < len(lines) and between.match(lines[j]) and j - end <= 3:
            j += 1
        if j < len(lines) and text.strip():
            symbol = definition_symbol(lines[j], language)
            if not symbol and language in ("c", "cpp", "java") and j + 1 < len(lines):
                # A declaration's return type or export macro on a line of its own.
                symbol = definition_symbol(lines[j + 1], language)
            if symbol:
                found.append((j + 1, j + 1, symbol, start + 1, end + 1, text))
        i = end + 1
    return found


def is_directive(line, language):
    if language == "rust":
        return line.startswith("////")
    if language == "go":
        return line.startswith(("//go:", "// +build", "//nolint"))
    if language == "ruby":
        return line.startswith(("#!", "# frozen_string_literal", "# -*-", "# :nodoc:", "# typed:"))
    return False


def definitions_in(language, text):
    """(definition line, end line, symbol, doc first line, doc last line, doc text) for every
    documented definition of a file."""
    if language == "python":
        return python_definitions(text)
    return comment_definitions(text.split("\n"), language)


def blank(text, ranges):
    """The text with the given 1-based inclusive line ranges replaced by empty lines."""
    lines = text.split("\n")
    for first, last in ranges:
        for n in range(first - 1, last):
            lines[n] = ""
    return "\n".join(lines)


def kept_files(files, budget):
    """The files kept of each language in each split: a deterministic sample (by a hash of the
    path) of at most `budget` bytes, so that an evaluation indexes a bounded corpus (the JDK's
    packages alone hold several MB)."""
    by_group = {}
    for (split, path), text in files.items():
        by_group.setdefault((split, path.split("/", 1)[0]), []).append((split, path))
    kept = {}
    for group in by_group.values():
        group.sort(key=lambda key: hashlib.sha256(key[1].encode()).hexdigest())
        used = 0
        for key in group:
            size = len(files[key].encode("utf-8"))
            if used + size <= budget:
                used += size
                kept[key] = files[key]
    return kept


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-split", type=int, default=200,
                        help="queries kept per language and split (a deterministic sample)")
    parser.add_argument("--bytes-per-language", type=int, default=500_000,
                        help="corpus bytes kept per language and split (a deterministic sample of files)")
    parser.add_argument("--language", action="append",
                        help="build only these languages (repeatable; default: all)")
    args = parser.parse_args()
    cache = args.out / "archives"
    corpus = args.out / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    files = {}
    candidates = []
    for language, kind, name, version, prefix in SOURCES:
        if args.language and language not in args.language:
            continue
        split = split_of(name)
        fetched, members = fetch(kind, name, version, cache)
        package = f"{folder_name(name)}-{fetched}"
        print(f"build_dataset: {language} {package} ({split})", file=sys.stderr)
        for relative, raw in members:
            if not relative.endswith(EXTENSIONS[language]) or (prefix and not relative.startswith(prefix)):
                continue
            if language == "javascript" and (relative.endswith(".min.js") or "/dist/" in f"/{relative}"):
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            path = f"{language}/{package}/{relative}"
            files[(split, path)] = text
            for line, end_line, symbol, doc_start, doc_end, doc in definitions_in(language, text):
                query = first_sentence(doc)
                if usable(query):
                    candidates.append({"query": query, "language": language, "split": split,
                                       "package": name, "path": path, "line": line,
                                       "end_line": end_line, "symbol": symbol,
                                       "doc": (doc_start, doc_end)})
    files = kept_files(files, args.bytes_per_language)
    candidates = [c for c in candidates if (c["split"], c["path"]) in files]
    counts = {}
    for c in candidates:
        counts[c["query"].lower()] = counts.get(c["query"].lower(), 0) + 1
    unique = [c for c in candidates if counts[c["query"].lower()] == 1]
    queries = []
    for key in sorted({(c["language"], c["split"]) for c in unique}):
        pool = [c for c in unique if (c["language"], c["split"]) == key]
        pool.sort(key=lambda c: hashlib.sha256(f"{c['path']}:{c['line']}".encode()).hexdigest())
        queries.extend(pool[: args.per_split])
    queries.sort(key=lambda c: (c["split"], c["path"], c["line"]))
    blanked = {}
    for q in queries:
        blanked.setdefault((q["split"], q["path"]), []).append(q.pop("doc"))
    for (split, path), text in files.items():
        target = corpus / split / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(blank(text, blanked.get((split, path), [])), encoding="utf-8")
    with open(args.out / "queries.jsonl", "w", encoding="utf-8") as out:
        for q in queries:
            q["id"] = f"{q['split']}/{q['path']}:{q['line']}"
            out.write(json.dumps(q, ensure_ascii=False) + "\n")
    summary = {}
    for q in queries:
        summary.setdefault(q["split"], {}).setdefault(q["language"], 0)
        summary[q["split"]][q["language"]] += 1
    packages = {(split_of(name), name) for language, _, name, _, _ in SOURCES
                if not args.language or language in args.language}
    print(f"build_dataset: {len(queries)} queries over {len(files)} files and {len(packages)} packages "
          f"in {args.out}", file=sys.stderr)
    for split, by_language in sorted(summary.items()):
        in_split = sum(1 for s, _ in packages if s == split)
        print(f"  {split}: {sum(by_language.values())} queries, {in_split} packages, {by_language}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
