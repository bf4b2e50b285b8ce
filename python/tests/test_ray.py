"""Ray Data: a local cluster with two worker actors embeds every record exactly once, with the
vectors one process gives."""

import os
import sys

import numpy as np
import pytest

import quiver

ray = pytest.importorskip("ray")

from quiver.integrations.ray import Embedder, embed_dataset  # noqa: E402


class PidEmbedder(Embedder):
    """Adds the worker's pid, so the test sees how many processes did the work."""

    def __call__(self, batch):
        out = super().__call__(batch)
        out["pid"] = np.full(len(out["id"]), os.getpid())
        return out


@pytest.fixture(scope="module")
def cluster():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def records(n):
    return [{"id": i, "text": f"function number {i} parses file {i % 7}"} for i in range(n)]


def test_every_record_once_and_equal_to_one_process(cluster, minilm, tmp_path):
    data = records(300)
    dataset = ray.data.from_items(data, override_num_blocks=6)
    embedded = embed_dataset(dataset, minilm, concurrency=2, records_per_batch=40)
    out = tmp_path / "vectors"
    embedded.write_parquet(str(out))
    rows = ray.data.read_parquet(str(out)).take_all()
    ids = [row["id"] for row in rows]
    assert sorted(ids) == list(range(300))
    by_id = {row["id"]: np.asarray(row["vector"], dtype=np.float32) for row in rows}
    expected = quiver.Model(minilm).encode([r["text"] for r in data])
    got = np.stack([by_id[i] for i in range(300)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_two_worker_processes(cluster, minilm):
    dataset = ray.data.from_items(records(200), override_num_blocks=10)
    embedded = dataset.map_batches(
        PidEmbedder,
        fn_constructor_kwargs={"model": minilm, "threads": 1},
        batch_size=10,
        batch_format="numpy",
        concurrency=2,
        num_cpus=1,
    )
    pids = {row["pid"] for row in embedded.take_all()}
    assert len(pids) == 2 and os.getpid() not in pids
