"""A LangChain ``Embeddings`` on a ``quiver.Model`` (needs ``langchain-core``)."""

from __future__ import annotations

from typing import List, Optional, Union

from langchain_core.embeddings import Embeddings

from ..model import Model


class QuiverEmbeddings(Embeddings):
    """``embed_documents`` with the model's document prompt, ``embed_query`` with its query
    prompt (when it defines them), as lists of floats."""

    def __init__(
        self,
        model: Union[Model, str, None] = None,
        *,
        batch_size: int = 32,
        normalize_embeddings: Optional[bool] = None,
        **model_options,
    ):
        if isinstance(model, Model):
            if model_options:
                raise ValueError("model options go to quiver.Model when a model name is given")
            self.model = model
        else:
            self.model = Model(model, **model_options) if model else Model(**model_options)
        self.batch_size = batch_size
        self.normalize_embeddings = normalize_embeddings

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        vectors = self.model.encode_document(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize_embeddings,
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> List[float]:
        vector = self.model.encode_query(
            text, normalize_embeddings=self.normalize_embeddings
        )
        return vector.tolist()
