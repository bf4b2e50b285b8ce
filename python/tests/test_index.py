"""quiver.Index: incremental updates, search, status, exports, vectors and Ctrl-C."""

import hashlib
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import quiver

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_update_follows_edits_and_deletions(tree, tmp_path, model):
    index = quiver.Index(tmp_path / "index", model=model)
    first = index.update(tree)
    assert first["files_indexed"] == 4 and first["files_changed"] == 4
    assert first["chunks_embedded"] > 0
    again = index.update(tree)
    assert again["files_unchanged"] == 4 and again["chunks_embedded"] == 0
    (tree / "pkg" / "geometry.py").write_text(
        'def square_area(side):\n    """Area of a square."""\n    return side * side\n'
    )
    (tree / "pkg" / "config.py").unlink()
    third = index.update(tree)
    assert third["files_changed"] == 1 and third["files_removed"] == 1
    assert third["files_indexed"] == 3
    paths = {hit.path for hit in index.search("area", k=20, mode="keyword")}
    assert "pkg/config.py" not in paths
    top = index.search("area of a square", k=1)[0]
    assert top.path == "pkg/geometry.py" and top.symbol == "square_area"


def test_update_fits_a_query_adapter_unless_told_not_to(tmp_path, model):
    root = tmp_path / "documented"
    root.mkdir()
    # Each verb said in other words, so a map learnt from the pairs has something to add.
    said = {"parse": "Read", "render": "Draw", "compress": "Shrink", "validate": "Check",
            "sort": "Order"}
    functions = [
        f'def {verb}_{noun}(value):\n'
        f'    """{said[verb]} the given {noun} record before it is stored."""\n'
        f'    return {verb}_step(value, kind="{noun}")\n\n\n'
        for verb in ("parse", "render", "compress", "validate", "sort")
        for noun in ("invoice", "shipment", "customer", "ledger", "token", "sensor", "route",
                     "ticket", "profile", "payment", "cache", "report", "session", "image")
    ]
    (root / "records.py").write_text("".join(functions))
    index = quiver.Index(tmp_path / "index", model=model)
    report = index.update(root)
    assert report["adapter_pairs"] == 70, report
    # Kept because a trial fit on four comments in five brought the fifth nearer their code.
    trial = report["adapter_held_out"]
    assert trial["pairs"] == 14 and trial["with"] > trial["without"], trial
    adapted = index.search("check a payment record", k=1, mode="vector")[0].score
    assert index.update(root, adapt=False)["adapter_pairs"] is None
    plain = index.search("check a payment record", k=1, mode="vector")[0].score
    assert plain != adapted, "the adapter changes the query vector"


def test_hits_modes_and_filters(tree, tmp_path, model):
    index = quiver.Index(tmp_path / "index", model=model)
    index.update(tree)
    for mode in ("hybrid", "vector", "keyword"):
        hits = index.search("retry a call with exponential backoff", k=3, mode=mode)
        assert hits, mode
        top = hits[0]
        assert top.path == "pkg/retry.py", (mode, top)
        assert top.language == "python" and top.symbol == "retry_with_backoff"
        assert top.kind == "function" and top.start_line >= 1 and top.end_line >= top.start_line
        assert "def retry_with_backoff" in top.text and isinstance(top.score, float)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    markdown = index.search("how to install", languages=["markdown"])
    assert markdown and {h.language for h in markdown} == {"markdown"}
    only = index.search("configuration", path="pkg/config*")
    assert only and {h.path for h in only} == {"pkg/config.py"}


def test_search_uses_the_index_model_without_one_given(tree, tmp_path, model):
    quiver.Index(tmp_path / "index", model=model).update(tree)
    plain = quiver.Index(tmp_path / "index")
    assert plain.search("area of a circle", k=1)[0].symbol == "circle_area"


def test_bad_arguments(tree, tmp_path, model):
    index = quiver.Index(tmp_path / "index", model=model)
    index.update(tree)
    with pytest.raises(ValueError, match="fuzzy"):
        index.search("x", mode="fuzzy")
    with pytest.raises(ValueError, match="klingon"):
        index.search("x", languages=["klingon"])
    with pytest.raises(ValueError, match="parquet"):
        index.export("parquet", str(tmp_path / "out"))
    with pytest.raises(ValueError, match="collection"):
        index.export("qdrant", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="model="):
        quiver.Index(tmp_path / "index", model=3)


def test_the_keyword_weight_is_recorded_and_searched_with(tree, tmp_path, model):
    index = quiver.Index(tmp_path / "index", model=model)
    index.update(tree)
    assert index.status()["keyword_weight"] == 0.75
    index.update(tree, keyword_weight=0.25)
    assert index.status()["keyword_weight"] == 0.25

    def score(**options):
        hits = index.search("circle_area radius", **options)
        return next(hit.score for hit in hits if hit.symbol == "circle_area")

    assert score() == score(keyword_weight=0.25) < score(keyword_weight=1.0)
    with pytest.raises(ValueError, match="keyword_weight"):
        index.search("x", keyword_weight=-1)


def test_missing_index_and_root(tmp_path, model):
    with pytest.raises(FileNotFoundError):
        quiver.Index(tmp_path / "nothing").search("x")
    with pytest.raises(FileNotFoundError):
        quiver.Index(tmp_path / "index", model=model).update(tmp_path / "no-such-tree")


def test_status_vectors_and_exports(tree, tmp_path, model):
    index = quiver.Index(tmp_path / "index", model=model)
    report = index.update(tree)
    status = index.status()
    assert status["model"] == model.model_id and status["dimension"] == 384
    assert status["stats"]["chunks"] == report["chunks_written"]
    uids, matrix = index.vectors()
    assert uids.dtype == np.int64 and matrix.dtype == np.float32
    assert matrix.shape == (status["stats"]["chunks"], 384) and len(set(uids)) == len(uids)
    hits = index.search("README installing", k=3, mode="vector")
    assert {h.uid for h in hits} <= set(uids.tolist())
    # A chunk without a signature vector scores its text vector's cosine with the query.
    query = model.encode("README installing")
    readme = next(h for h in hits if h.language == "markdown")
    row = matrix[list(uids).index(readme.uid)]
    assert abs(float(row @ query) - readme.score) < 1e-4

    done = index.export("jsonl", str(tmp_path / "chunks.jsonl"))
    assert done["written"] == status["stats"]["chunks"]
    lines = (tmp_path / "chunks.jsonl").read_text().splitlines()
    assert len(lines) == done["written"] and "vector" in json.loads(lines[0])
    done = index.export("npy", str(tmp_path / "npy"))
    assert np.load(tmp_path / "npy" / "embeddings.npy").shape == matrix.shape


def test_ctrl_c_during_update_keeps_the_index_consistent(tmp_path, minilm):
    tree = tmp_path / "tree"
    for crate in ("quiver-index", "quiver-chunk", "quiver-export"):
        shutil.copytree(REPO / "crates" / crate / "src", tree / crate)
    sources = sorted(tree.rglob("*.rs"))
    index_dir = tmp_path / "index"
    script = textwrap.dedent(
        f"""
        import sys, quiver
        index = quiver.Index({str(index_dir)!r}, model=quiver.Model({minilm!r}))
        def progress(event, count):
            if event == "chunks_embedded":
                print("embedding", flush=True)
        try:
            index.update({str(tree)!r}, progress=progress)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        print("finished", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "embedding"
    child.send_signal(signal.SIGINT)
    rest, _ = child.communicate(timeout=120)
    assert child.returncode == 3 and "interrupted" in rest
    # Nothing half-written: the next run finishes the job and every file is there.
    index = quiver.Index(index_dir, model=quiver.Model(minilm))
    report = index.update(tree)
    assert report["files_indexed"] == len(sources)
    assert index.status()["stats"]["files"] == len(sources)
    hits = index.search("the caller asked the run to stop", k=5, mode="keyword")
    assert any(h.path.endswith("error.rs") for h in hits)


def test_keyword_vector_is_the_qdrant_query_of_an_export():
    # Porter stems as the index's FTS5 tokenizer makes them, ids from the first four bytes of
    # the stem's SHA-256 (docs/exports.md): computable without Quiver, checked here.
    vector = quiver.keyword_vector("connections parseHttp")
    stems = ["connect", "parsehttp", "pars", "http"]
    expected = sorted(int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "little") for s in stems)
    assert vector["indices"] == expected
    assert vector["values"] == [1.0] * 4
    assert quiver.keyword_vector("+-*") == {"indices": [], "values": []}
