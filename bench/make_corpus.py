"""Builds the benchmark corpus: chunks of real source code, as JSONL lines {"text": ...}.

    python bench/make_corpus.py OUT.jsonl [--chunks 2000] [--lines 40] [--source DIR]

Default source: the Python standard library of the interpreter running this script (real code
no one here wrote, the same corpus ../shared/MEASURED.md used). Files are read in sorted order,
so the corpus is the same on every run with the same Python.
"""

import argparse
import json
import pathlib
import sysconfig


def chunks_of(path, lines_per_chunk):
    """Windows of `lines_per_chunk` lines of a source file: (first line from 1, text), blank
    windows left out; nothing for a file that is not UTF-8."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError):
        return
    for start in range(0, len(lines), lines_per_chunk):
        text = "\n".join(lines[start:start + lines_per_chunk]).strip()
        if text:
            yield start + 1, text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--source", default=sysconfig.get_paths()["stdlib"])
    args = parser.parse_args()
    files = sorted(p for p in pathlib.Path(args.source).rglob("*.py") if "test" not in p.parts)
    written = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for path in files:
            for _, text in chunks_of(path, args.lines):
                out.write(json.dumps({"text": text}) + "\n")
                written += 1
                if written == args.chunks:
                    return


if __name__ == "__main__":
    main()
