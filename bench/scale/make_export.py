"""Writes a synthetic `quiver export --to npy` folder of N chunks, for bench/scale/run.

    python bench/scale/make_export.py OUT N --model MODEL [--dimension 384] [--queries 200]

Vectors: unit vectors around 1,000 random centres (clustered, as embeddings are). Texts: real
code, three-line windows of the Python standard library in sorted order, eight chunks a path,
so keyword search meets a real vocabulary. One path in ten is labelled Rust (`.rs`), so a
language filter keeps a tenth of the rows. Also writes OUT/queries.f32: query vectors near
indexed rows (raw little-endian f32), for bench's recall measurement.
"""

import argparse
import json
import pathlib
import sys
import sysconfig

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from make_corpus import chunks_of  # noqa: E402  (bench/make_corpus.py)


def windows(lines_per_chunk=3):
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.rglob("*.py"))
    while True:
        for path in files:
            for start, text in chunks_of(path, lines_per_chunk):
                yield str(path.relative_to(root)), start, text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("chunks", type=int)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n, d = args.chunks, args.dimension
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.lib.format.open_memmap(out / "embeddings.npy", mode="w+", dtype="<f4", shape=(n, d))
    step = 100_000
    for start in range(0, n, step):
        rows = min(step, n - start)
        block = centres[rng.integers(0, 1000, rows)] + 0.035 * rng.standard_normal((rows, d)).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start:start + rows] = block
    vectors.flush()
    picks = rng.integers(0, n, args.queries)
    queries = vectors[picks] + 0.02 * rng.standard_normal((args.queries, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    queries.astype("<f4").tofile(out / "queries.f32")
    del vectors

    texts = windows()
    with open(out / "metadata.json", "w", encoding="utf-8") as metadata:
        metadata.write("[")
        for i in range(n):
            source, line, text = next(texts)
            group = i // 8
            rust = group % 10 == 9
            path = f"{group // 1000}/{group % 1000}/{source}".removesuffix(".py") + (".rs" if rust else ".py")
            payload = {
                "chunk_id": f"{path}:{i % 8}",
                "path": path,
                "text": text,
                "language": "rust" if rust else "python",
                "start_line": line,
                "end_line": line + 2,
            }
            metadata.write(("," if i else "") + json.dumps(payload))
        metadata.write("]")
    info = {"model": args.model, "dimension": d, "normalized": True, "chunks": n}
    (out / "model_info.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
