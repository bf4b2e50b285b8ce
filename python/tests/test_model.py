"""quiver.Model: shapes, order, number formats, errors, threads and Ctrl-C."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import quiver

TEXTS = [
    "def add(a, b): return a + b",
    "a much longer text about reading configuration files " * 12,
    "x",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)",
    "retry with exponential backoff",
]


def test_shapes_and_types(model):
    one = model.encode("hello world")
    assert one.shape == (384,) and one.dtype == np.float32
    many = model.encode(TEXTS)
    assert many.shape == (len(TEXTS), 384) and many.dtype == np.float32
    assert many.flags["C_CONTIGUOUS"]
    assert model.encode([]).shape == (0, 384)
    rows = model.encode(TEXTS, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == len(TEXTS) and rows[0].shape == (384,)
    assert model.get_sentence_embedding_dimension() == 384
    assert model.max_seq_length == 256


def test_order_survives_length_sorted_batches(model):
    together = model.encode(TEXTS, batch_size=2)
    alone = np.stack([model.encode(text) for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # The model's Normalize module: unit vectors without normalize_embeddings.
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_int8_stays_close_to_f32(minilm, model):
    int8 = quiver.Model(minilm, quantize="int8")
    assert int8.quantization == "int8"
    a, b = model.encode(TEXTS), int8.encode(TEXTS)
    cosine = (a * b).sum(1)
    assert cosine.min() > 0.98 and cosine.mean() > 0.99


def test_the_default_format_is_bf16_or_f32(minilm, model):
    default = quiver.Model(minilm)
    assert default.quantization in ("bf16", "none")
    named = quiver.Model(minilm, quantize=default.quantization)
    np.testing.assert_array_equal(default.encode(TEXTS), named.encode(TEXTS))
    if default.quantization == "none":
        np.testing.assert_array_equal(default.encode(TEXTS), model.encode(TEXTS))


def test_bf16_stays_closer_to_f32_than_int8(minilm, model):
    bf16 = quiver.Model(minilm, quantize="bf16")
    assert bf16.quantization == "bf16"
    a, b = model.encode(TEXTS), bf16.encode(TEXTS)
    cosine = (a * b).sum(1)
    assert cosine.min() > 0.999 and cosine.mean() > 0.9999
    assert not np.array_equal(a, b), "bf16 vectors equal f32: the bf16 path did not run"


def test_truncate_dim(minilm, model):
    short = quiver.Model(minilm, truncate_dim=128, quantize="f32")
    assert short.get_sentence_embedding_dimension() == 128
    vectors = short.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(vectors, model.encode(TEXTS)[:, :128], atol=1e-5)
    unit = model.encode(TEXTS, truncate_dim=64, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)


def test_tensor_output(model):
    torch = pytest.importorskip("torch")
    tensor = model.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (len(TEXTS), 384)
    scores = model.similarity(tensor, tensor)
    assert isinstance(scores, torch.Tensor)
    assert abs(float(scores[0][0]) - 1.0) < 1e-5


def test_tensor_output_without_torch_is_a_clear_error(minilm):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        import quiver
        model = quiver.Model({minilm!r})
        try:
            model.encode("x", convert_to_tensor=True)
        except ImportError as error:
            print("ImportError:", error)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "ImportError:" in out.stdout and "pip install torch" in out.stdout, out.stderr


def test_tokenize_pads_with_the_pad_id(model):
    batch = model.tokenize(["hello", "a longer sentence here"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.dtype == np.int64
    assert ids[0, 0] == 101 and mask[0].sum() == 3 and ids[0, 3] == 0  # [CLS] hello [SEP] [PAD]


def test_missing_model_folder_and_file(tmp_path, minilm):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        quiver.Model(str(tmp_path / "nowhere"))
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(minilm, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        quiver.Model(str(broken))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.encode(["a"], batch_size=0), "batch_size"),
        (lambda m: m.encode(["a"], prompt_name="nope"), "nope"),
        (lambda m: m.encode(["a"], truncate_dim=0), "truncate_dim"),
        (lambda m: m.encode(["a"], truncate_dim=1000), "truncate_dim"),
        (lambda m: m.encode(["a", 3]), r"sentences\[1\]"),
        (lambda m: m.encode(["a"], precision="int8"), "precision"),
    ],
)
def test_bad_arguments_are_value_errors(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_model_options(minilm):
    with pytest.raises(ValueError, match="quantize"):
        quiver.Model(minilm, quantize="fp4")
    with pytest.raises(ValueError, match="threads"):
        quiver.Model(minilm, threads=0)
    with pytest.raises(quiver.QuiverError, match="cuda"):
        quiver.Model(minilm, device="cuda")
    with pytest.raises(ValueError, match="auto"):
        quiver.Model(minilm, device="tpu")


def test_two_threads_both_make_progress(model):
    """The GIL is released while Rust works: the second thread's forward passes run while the
    first one's call is still going."""
    texts = [f"text number {i} about parsing and retrying " * 6 for i in range(600)]
    events = []
    lock = threading.Lock()

    def work(name):
        def progress(done):
            with lock:
                events.append((name, "pass"))

        model._model.embed(texts, batch_size=16, progress=progress)
        with lock:
            events.append((name, "end"))

    threads = [threading.Thread(target=work, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first_end = min(events.index(("a", "end")), events.index(("b", "end")))
    before = {name for name, what in events[:first_end] if what == "pass"}
    assert before == {"a", "b"}, events[: first_end + 1]


def test_ctrl_c_stops_a_long_encode(minilm):
    script = textwrap.dedent(
        f"""
        import sys, quiver
        model = quiver.Model({minilm!r})
        texts = ["a text of some length about reading files " * 8] * 200_000
        def progress(done):
            print("running", flush=True)
        try:
            model._model.embed(texts, batch_size=32, progress=progress)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "running"
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    rest, _ = child.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert child.returncode == 3 and "interrupted" in rest
    # One forward pass of 32 such texts takes a few tenths of a second here; the bound
    # leaves room for a loaded CI machine.
    assert waited < 3.0, waited
