"""The same script on sentence-transformers and on Quiver: every output equal in shape and
close in value: at f32, cosine >= 0.9999 and similarity scores within 1e-3; in the default
format (bf16 where the CPU multiplies it natively), cosine 0.9999 on average (the bar bf16 was
chosen by), 0.999 at worst, and scores within 5e-3."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).with_name("st_script.py")
VECTOR_OUTPUTS = [
    "single",
    "batch",
    "normalized",
    "prompt",
    "truncated",
    "truncated_normalized",
    "query",
    "document",
    "as_list",
    "tensor",
]


def run(which, model_dir, tmp_path):
    out = tmp_path / f"{which}.npz"
    subprocess.run(
        [sys.executable, str(SCRIPT), which, model_dir, str(out)], check=True, timeout=600
    )
    return dict(np.load(out))


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
def test_one_script_on_both(name, tmp_path, request):
    model_dir = request.getfixturevalue("minilm" if "MiniLM" in name else "mpnet")
    st = run("st", model_dir, tmp_path)
    check(st, run("quiver-f32", model_dir, tmp_path), mean=0.9999, worst=0.9999, scores=1e-3)
    check(st, run("quiver", model_dir, tmp_path), mean=0.9999, worst=0.999, scores=5e-3)


def check(st, qv, mean, worst, scores):
    assert sorted(st) == sorted(qv)
    for key in st:
        assert st[key].shape == qv[key].shape, key
    # Containers: numpy array, list, tensor where sentence-transformers gives one. (Its
    # `similarity` and `tokenize` always give torch tensors; Quiver's give NumPy arrays unless
    # handed tensors: docs/python.md says so.)
    for key in VECTOR_OUTPUTS + ["dimension", "max_seq_length"]:
        assert str(st[key + ".type"]) == str(qv[key + ".type"]), key
    assert int(st["dimension"]) == int(qv["dimension"])
    assert int(st["max_seq_length"]) == int(qv["max_seq_length"])
    np.testing.assert_array_equal(st["token_ids"], qv["token_ids"])
    for key in VECTOR_OUTPUTS:
        a, b = np.atleast_2d(st[key]), np.atleast_2d(qv[key])
        assert a.dtype == b.dtype == np.float32, key
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.min() >= worst and cosine.mean() >= mean, (key, cosine.min(), cosine.mean())
        # Norms too: a Matryoshka cut without normalisation is shorter than 1.
        np.testing.assert_allclose(
            np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1), atol=1e-3, err_msg=key
        )
    np.testing.assert_allclose(st["similarity"], qv["similarity"], atol=scores)
