"""``quiver.Index``: a Quiver index updated, searched and exported from Python."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _progress
from ._quiver import Index as _Index
from .model import Model


@dataclass(frozen=True)
class Chunk:
    """A chunk of a file as the index holds it."""

    id: str
    """The chunk id (``prefix:repository:path#n``)."""
    uid: int
    """The chunk id's numeric form: the row ids of ``Index.vectors()`` and exported points."""
    path: str
    start_line: int
    end_line: int
    language: str
    symbol: Optional[str]
    kind: Optional[str]
    parent: Optional[str]
    text: str

    @staticmethod
    def _fields(chunk: dict) -> dict:
        return dict(
            id=chunk["chunk_id"],
            uid=chunk["uid"],
            path=chunk["path"],
            start_line=chunk["start_line"],
            end_line=chunk["end_line"],
            language=chunk["language"],
            symbol=chunk.get("symbol"),
            kind=chunk.get("kind"),
            parent=chunk.get("parent"),
            text=chunk["text"],
        )


@dataclass(frozen=True)
class Hit(Chunk):
    """One search result: a chunk and its score (higher is better)."""

    score: float = 0.0

    @classmethod
    def _from_json(cls, hit: dict) -> "Hit":
        return cls(score=hit["score"], **Chunk._fields(hit["chunk"]))


Progress = Union[bool, None, Callable[[str, int], None]]


class Index:
    """A Quiver index folder (what ``quiver index --index DIR`` writes).

    ``model`` is the model runs embed with: a ``quiver.Model`` (used as it is, also for
    searches when it is the index's), or a model name or path. Without it a run uses the
    index's own model, or the default model for a new index; searches always embed the query
    with the index's own model and number format.
    """

    def __init__(self, path: Union[str, os.PathLike], *, model: Union[Model, str, None] = None):
        given = model._model if isinstance(model, Model) else model
        if given is not None and not isinstance(given, str) and not isinstance(model, Model):
            raise ValueError("model= takes a quiver.Model or a model name or path")
        self._index = _Index(os.fspath(path), model=given)

    @property
    def path(self) -> str:
        return self._index.path

    def update(
        self,
        root: Union[str, os.PathLike],
        progress: Progress = None,
        *,
        reembed: bool = False,
        dimensions: Optional[int] = None,
        quantize: Optional[str] = None,
        id_prefix: Optional[str] = None,
        chunk_tokens: Optional[int] = None,
        adapt: bool = True,
        keyword_weight: Optional[float] = None,
    ) -> dict:
        """Brings the index up to date with the tree at ``root`` (only changed files are
        read, only new texts embedded; removed files are dropped) and returns the run's
        counts. ``progress``: ``True`` for a bar on a terminal, or a callable
        ``progress(event, count)`` with event ``files_found``, ``files_done`` or
        ``chunks_embedded``. Ctrl-C stops the run; what it committed stays, and the next
        ``update`` finishes it. ``adapt=False`` keeps no query adapter (by default the index
        fits one on the tree's own doc comments, as ``quiver index`` does, and keeps it where
        comments held out of a trial fit find their code better with it: the counts'
        ``adapter_held_out``). ``keyword_weight`` sets the weight of hybrid search's keyword
        ranking that the index records (as ``quiver index --keyword-weight``)."""
        callback = progress if callable(progress) else None
        bar = None
        if progress is True:
            bar = _progress.bar(0, "files", True)
            if bar:
                def callback(event, count):
                    if event == "files_found":
                        bar.set_total(count)
                    elif event == "files_done":
                        bar.update(count)
        try:
            report = self._index.update(
                os.fspath(root),
                progress=callback,
                reembed=reembed,
                dimensions=dimensions,
                quantize=quantize,
                id_prefix=id_prefix,
                chunk_tokens=chunk_tokens,
                adapt=adapt,
                keyword_weight=keyword_weight,
            )
        finally:
            if bar:
                bar.close()
        return json.loads(report)

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        languages: Optional[Sequence[str]] = None,
        path: Optional[str] = None,
        keyword_weight: Optional[float] = None,
    ) -> List[Hit]:
        """The ``k`` best chunks for ``query``: ``mode`` is ``hybrid``, ``vector`` or
        ``keyword``; ``languages`` and the ``path`` glob filter them. ``keyword_weight``:
        hybrid search's keyword weight for this search (default: the index's)."""
        if not isinstance(query, str):
            raise ValueError(f"query must be a str, not {type(query).__name__}")
        if isinstance(languages, str):
            languages = [languages]
        hits = self._index.search(
            query,
            k=k,
            mode=mode,
            languages=list(languages) if languages else None,
            path=path,
            keyword_weight=keyword_weight,
        )
        return [Hit._from_json(hit) for hit in json.loads(hits)]

    def status(self) -> dict:
        """What the index holds and how it was made (``quiver status --json``)."""
        return json.loads(self._index.status())

    def export(self, format: str, destination: str, **options) -> dict:
        """Sends the index where ``quiver export --to FORMAT DEST`` would: ``jsonl`` (a file),
        ``npy`` (a folder), ``qdrant`` (a URL, with ``collection=``) or ``postgres`` (a URL,
        with ``table=``); further options: ``api_key``, ``points_per_request``,
        ``vector_index``. Returns what it did."""
        return json.loads(self._index.export(format, os.fspath(destination), **options))

    def chunks(self, uids: Sequence[int]) -> List[Optional[Chunk]]:
        """The chunks with these numeric ids (``Hit.uid``, the ids ``vectors()`` returns), in
        the order asked; ``None`` for an id the index does not hold."""
        found = json.loads(self._index.chunks([int(uid) for uid in uids]))
        return [Chunk(**Chunk._fields(chunk)) if chunk else None for chunk in found]

    def vectors(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(uids, matrix)``: every chunk's numeric id (``Hit.uid``, int64) and its stored
        vector (float32, one row per chunk), read in one pass."""
        return self._index.vectors()

    def __repr__(self):
        return f"quiver.Index({self.path!r})"
