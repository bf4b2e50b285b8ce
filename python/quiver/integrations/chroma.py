"""A Chroma embedding function on a ``quiver.Model`` (needs ``chromadb``).

Chroma records an embedding function's ``name()`` and ``get_config()`` with a persistent
collection and rebuilds it from them when the collection is opened again, so the function
is registered under ``quiver``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

from ..model import Model


@register_embedding_function
class QuiverEmbeddingFunction(EmbeddingFunction[Documents]):
    """Embeds documents with the model's document prompt and queries with its query prompt
    (when it defines them)."""

    def __init__(
        self,
        model_name_or_path: Optional[str] = None,
        *,
        model: Optional[Model] = None,
        quantize: Optional[str] = None,
        batch_size: int = 32,
    ):
        if model is None:
            model = Model(model_name_or_path, quantize=quantize) if model_name_or_path else Model(quantize=quantize)
        self.model = model
        self.batch_size = batch_size

    def __call__(self, input: Documents) -> Embeddings:
        vectors = self.model.encode_document(list(input), batch_size=self.batch_size)
        return list(vectors)

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self.model.encode_query(list(input), batch_size=self.batch_size))

    @staticmethod
    def name() -> str:
        return "quiver"

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> List[str]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> Dict[str, Any]:
        return {
            "model": self.model.model_id,
            "quantize": self.model.quantization,
            "batch_size": self.batch_size,
        }

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "QuiverEmbeddingFunction":
        return QuiverEmbeddingFunction(
            config["model"],
            quantize=config.get("quantize"),
            batch_size=config.get("batch_size", 32),
        )
