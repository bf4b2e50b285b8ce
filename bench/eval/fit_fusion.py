"""Fits hybrid search's fusion and priors to a split's queries by a ranking loss, as the
defaults of 2026-12-06 were fitted on dev (docs/evaluation.md, "The fusion fitted on dev's
candidates").

For each query, its candidates are the vector and keyword rankings' best 100 (what fusion
sees), each described by a few features; a linear score is fitted with a softmax loss over
each query's candidates, the definition the target. Packages are cut in two halves by a hash
of their names: fitted on one half, scored on the other, so a feature that only fits the
queries it was fitted on shows no gain. Then one fit on all of the split gives the weights.

    python bench/eval/fit_fusion.py bench/work/eval-dataset --split dev

Needs the `quiver` Python package (python/) and numpy, and the split's Quiver index as
`quiver eval` leaves it (run `quiver eval DATASET --split dev --model models/all-MiniLM-L6-v2`
first). The rankings are cached beside the index (`fusion-candidates.pkl`).
"""

import argparse
import collections
import hashlib
import json
import math
import os
import pickle
import sqlite3

import numpy as np

import quiver

FEATURES = ["v", "k", "definition", "test", "code_length", "v*k"]


def code_length(text):
    """quiver_chunk::code_length: characters of code, less indentation, blank lines, comment
    lines and block comments or docstrings that open a line."""
    length, open_block = 0, None
    for line in text.splitlines():
        code = line.strip()
        if open_block is not None:
            at = code.find(open_block)
            if at < 0:
                continue
            code = code[at + len(open_block):].strip()
            open_block = None
        for opener, closer in (("/*", "*/"), ('"""', '"""'), ("'''", "'''")):
            if code.startswith(opener):
                rest = code[len(opener):]
                at = rest.find(closer)
                if at >= 0:
                    code = rest[at + len(closer):].strip()
                else:
                    open_block, code = closer, ""
                break
        if code.startswith(("//", "#", "*")):
            continue
        length += len(code.encode())
    return length


def is_test_path(path):
    """Near enough quiver_chunk::is_test_path for this dataset (its test files are under
    tests/ or named *_test, test_*, *.test.*, *.spec.*): used to take vector search's test
    penalty back off, and as a feature."""
    lower = path.lower()
    return any(p in lower for p in ("/test", "test_", "_test", ".test.", "spec"))


def rescaled(ranking):
    if not ranking:
        return {}
    best, worst = ranking[0][2], ranking[-1][2]
    span = (best - worst) or 1.0
    return {(p, s): (score - worst) / span for p, s, score in ranking}


def candidates(dataset, split, model_dir):
    index_dir = os.path.join(dataset, "indexes", split, model_dir, "quiver__syntax__header__default_budget_")
    queries = [json.loads(line) for line in open(os.path.join(dataset, "queries.jsonl"))]
    queries = [q for q in queries if q["split"] == split]
    cache = os.path.join(index_dir, "fusion-candidates.pkl")
    if os.path.exists(cache):
        rankings = pickle.load(open(cache, "rb"))
    else:
        index = quiver.Index(index_dir)
        rankings = []
        for q in queries:
            vector = [(h.path, h.start_line, h.score) for h in index.search(q["query"], k=100, mode="vector")]
            keyword = [(h.path, h.start_line, h.score) for h in index.search(q["query"], k=100, mode="keyword")]
            rankings.append((vector, keyword))
        pickle.dump(rankings, open(cache, "wb"))
    db = sqlite3.connect(os.path.join(index_dir, "index.sqlite"))
    chunks = {
        (path, start): (signature is not None, end, code_length(text))
        for path, start, end, signature, text in db.execute(
            "SELECT path, start_line, end_line, signature_hash, text FROM chunks"
        )
    }
    data = []
    for q, (vector, keyword) in zip(queries, rankings):
        # Vector search adds its priors (+0.1 definition, -0.1 test file): taken off again.
        raw = []
        for p, s, score in vector:
            definition = chunks.get((p, s), (False,))[0]
            raw.append((p, s, score - 0.1 * definition + 0.1 * is_test_path(p)))
        raw.sort(key=lambda t: -t[2])
        v_of, k_of = rescaled(raw), rescaled(keyword)
        keys = list(dict.fromkeys([(p, s) for p, s, _ in raw] + [(p, s) for p, s, _ in keyword]))
        rows, hits = [], []
        for p, s in keys:
            definition, end, length = chunks.get((p, s), (False, s, 0))
            v, k = v_of.get((p, s), 0.0), k_of.get((p, s), 0.0)
            rows.append([v, k, float(definition), float(is_test_path(p)), math.log1p(length), v * k])
            hits.append(p.endswith(q["path"]) and s <= q["line"] <= end)
        data.append((q, np.array(rows), np.array(hits)))
    return data


def ndcg(weights, data):
    by_language = collections.defaultdict(list)
    for q, x, hits in data:
        order = np.argsort(-(x @ weights), kind="stable")
        gain = next((1 / math.log2(r + 2) for r, i in enumerate(order[:10]) if hits[i]), 0.0)
        by_language[q["language"]].append(gain)
    every = [g for gains in by_language.values() for g in gains]
    return sum(every) / len(every), {l: sum(g) / len(g) for l, g in sorted(by_language.items())}


def fit(data, start, steps=300, learning_rate=0.05, l2=1e-3, temperature=0.1):
    """Adam on the mean softmax cross-entropy of each query's candidates."""
    w = np.array(start, dtype=float)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        gradient, n = np.zeros_like(w), 0
        for _, x, hits in data:
            if not hits.any():
                continue
            scores = x @ w / temperature
            p = np.exp(scores - scores.max())
            p /= p.sum()
            gradient += x.T @ (p - hits / hits.sum()) / temperature
            n += 1
        gradient = gradient / max(n, 1) + l2 * w
        m = 0.9 * m + 0.1 * gradient
        v = 0.999 * v + 0.001 * gradient**2
        w -= learning_rate * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--model-dir", default="models_all-MiniLM-L6-v2__bf16_",
                        help="the index folder quiver eval named after the model")
    args = parser.parse_args()
    data = candidates(args.dataset, args.split, args.model_dir)
    # The fusion before 2026-12-06: v + 0.5 k, definition +0.1, test file -0.1.
    before = np.array([1, 0.5, 0.1, -0.1, 0, 0])
    half = lambda q: int(hashlib.sha256(q["package"].encode()).hexdigest(), 16) % 2
    print("fusion before, all queries: %.3f" % ndcg(before, data)[0])
    for used in (FEATURES[:4], FEATURES):
        mask = np.array([f in used for f in FEATURES], dtype=float)
        masked = [(q, x * mask, hits) for q, x, hits in data]
        scores = []
        for held in (0, 1):
            train = [d for d in masked if half(d[0]) != held]
            test = [d for d in masked if half(d[0]) == held]
            scores.append((ndcg(fit(train, before * mask), test)[0], ndcg(before, test)[0]))
        weights = fit(masked, before * mask)
        print(", ".join(used))
        print("  fitted on one half, scored on the other: %.3f, %.3f (the fusion before: %.3f, %.3f)"
              % (scores[0][0], scores[1][0], scores[0][1], scores[1][1]))
        print("  fitted on all, weights relative to v:",
              {f: round(float(w / weights[0]), 3) for f, w in zip(FEATURES, weights) if f in used})


if __name__ == "__main__":
    main()
