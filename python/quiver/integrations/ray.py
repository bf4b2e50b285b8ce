"""Ray Data: embed a corpus of chunk records on many workers, one ``quiver.Model`` per actor.

    import ray
    from quiver.integrations.ray import embed_dataset
    ds = ray.data.read_json("chunks.jsonl")          # records with "id" and "text"
    embed_dataset(ds, "models/all-MiniLM-L6-v2", concurrency=4).write_parquet("vectors/")

or from a shell, ``python -m quiver.integrations.ray chunks.jsonl vectors/ --model M``. On a
multi-machine cluster the same script runs unchanged after ``ray.init(address="auto")`` (or
under ``ray job submit``), provided every node has ``quiver-embed`` installed and the model at
the same path (or in its Hugging Face cache). Needs ``ray[data]``.
"""

from __future__ import annotations

import argparse
from typing import Dict, Optional

import numpy as np

from .. import DEFAULT_MODEL
from ..model import Model


class Embedder:
    """A callable class for ``Dataset.map_batches``: each actor loads the model once and adds
    a ``vector`` column (float32, one row per record) to every batch it is handed."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        text_column: str = "text",
        vector_column: str = "vector",
        prompt_name: Optional[str] = None,
        quantize: Optional[str] = None,
        threads: Optional[int] = None,
        batch_size: int = 32,
    ):
        self.model = Model(model, quantize=quantize, threads=threads)
        self.text_column = text_column
        self.vector_column = vector_column
        self.prompt_name = prompt_name
        self.batch_size = batch_size

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.text_column not in batch:
            raise ValueError(
                f"the records have no {self.text_column!r} column (they have "
                f"{sorted(batch)}): pass text_column="
            )
        texts = [str(text) for text in batch[self.text_column]]
        out = dict(batch)
        out[self.vector_column] = self.model.encode(
            texts, batch_size=self.batch_size, prompt_name=self.prompt_name
        )
        return out


def embed_dataset(
    dataset,
    model: str = DEFAULT_MODEL,
    *,
    concurrency: int = 2,
    records_per_batch: int = 256,
    threads_per_worker: int = 1,
    **embedder_options,
):
    """``dataset`` with a vector column, embedded by ``concurrency`` actors, each holding one
    model and reserving ``threads_per_worker`` cores from Ray (the threads its model uses)."""
    return dataset.map_batches(
        Embedder,
        fn_constructor_kwargs=dict(model=model, threads=threads_per_worker, **embedder_options),
        batch_size=records_per_batch,
        batch_format="numpy",
        concurrency=concurrency,
        num_cpus=threads_per_worker,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m quiver.integrations.ray",
        description="Embed JSONL chunk records on a Ray cluster and write Parquet.",
    )
    parser.add_argument("input", help="JSONL file(s) of records with a text column")
    parser.add_argument("output", help="Parquet folder to write (records with a vector column)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--concurrency", type=int, default=2, help="model actors")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--quantize", choices=["f32", "int8"], default=None)
    parser.add_argument("--address", default=None, help="Ray cluster (default: start a local one)")
    args = parser.parse_args(argv)

    import ray

    ray.init(address=args.address)
    dataset = ray.data.read_json(args.input)
    embedded = embed_dataset(
        dataset,
        args.model,
        concurrency=args.concurrency,
        threads_per_worker=args.threads_per_worker,
        text_column=args.text_column,
        quantize=args.quantize,
    )
    embedded.write_parquet(args.output)


if __name__ == "__main__":
    main()
