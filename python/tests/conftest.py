"""Shared fixtures: the real test models fetched by scripts/fetch-test-models."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = pathlib.Path(os.environ.get("QUIVER_TEST_MODELS", REPO / "models"))


def model_dir(name: str) -> str:
    path = MODELS / name
    if not (path / "model.safetensors").is_file():
        pytest.fail(f"{path} is missing: run scripts/fetch-test-models first")
    return str(path)


@pytest.fixture(scope="session")
def minilm() -> str:
    return model_dir("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def mpnet() -> str:
    return model_dir("all-mpnet-base-v2")


@pytest.fixture(scope="session")
def model(minilm):
    """all-MiniLM-L6-v2 in f32: the numbers the other formats are held against."""
    import quiver

    return quiver.Model(minilm, quantize="f32")


@pytest.fixture
def tree(tmp_path) -> pathlib.Path:
    """A small source tree: three Python files and a Markdown file."""
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "retry.py").write_text(
        'import time\n\n\ndef retry_with_backoff(call, attempts=5, first_wait=0.5):\n'
        '    """Call `call` until it succeeds, doubling the wait after each failure."""\n'
        '    wait = first_wait\n    for attempt in range(attempts):\n        try:\n'
        '            return call()\n        except OSError:\n            time.sleep(wait)\n'
        '            wait *= 2\n    raise RuntimeError("gave up")\n'
    )
    (root / "pkg" / "config.py").write_text(
        'import json\n\n\nclass Config:\n    """Settings read from a JSON file."""\n\n'
        '    def __init__(self, path):\n        self.path = path\n\n'
        '    def load(self):\n        """Parse the configuration file and return its fields."""\n'
        '        with open(self.path) as handle:\n            return json.load(handle)\n'
    )
    (root / "pkg" / "geometry.py").write_text(
        'import math\n\n\ndef circle_area(radius):\n    """Area of a circle of this radius."""\n'
        '    return math.pi * radius * radius\n'
    )
    (root / "README.md").write_text(
        "# Project\n\nA small package with a retry helper, a configuration loader and some "
        "geometry.\n\n## Installing\n\nRun pip install with the folder's path.\n"
    )
    return root
