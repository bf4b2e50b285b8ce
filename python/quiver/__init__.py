"""Quiver in Python: embed, index and search code and documentation in-process.

``quiver.Model`` takes the calls of ``sentence_transformers.SentenceTransformer`` (``encode``,
``encode_query``, ``encode_document``, ``similarity``, ...) and runs them on Quiver's Rust
engine; ``quiver.Index`` updates, searches and exports a Quiver index as the ``quiver`` command
does. Both are thin layers over the same library calls as the command line.
"""

from ._quiver import DEFAULT_MODEL, QuiverError, keyword_vector
from .index import Chunk, Hit, Index
from .model import Model

__all__ = ["DEFAULT_MODEL", "Chunk", "Hit", "Index", "Model", "QuiverError", "keyword_vector"]
__version__ = "0.1.0"
