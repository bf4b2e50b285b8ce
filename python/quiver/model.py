"""``quiver.Model``: sentence-transformers' ``SentenceTransformer`` calls on Quiver's engine."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

import numpy as np

from . import _progress
from ._quiver import DEFAULT_MODEL
from ._quiver import Model as _Model


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "convert_to_tensor=True returns a torch.Tensor and needs PyTorch: pip install torch "
            "(or leave it False for NumPy arrays)"
        ) from error
    return torch


class Model:
    """A loaded embedding model, called as ``SentenceTransformer`` is.

    ``model_name_or_path`` is a model folder, a Hugging Face id in the local cache, or a hub id
    to download (as the ``quiver`` command resolves it). ``quantize``: the dense layers'
    number format, ``"f32"``, ``"int8"`` or ``"bf16"`` (default: ``"bf16"`` where the CPU
    multiplies bf16 natively, AMX or AVX-512 BF16, else f32; ``quantization`` says which);
    ``threads`` bounds the cores a call uses (default: all);
    ``max_seq_length`` cuts inputs shorter than the model's own limit; ``truncate_dim`` keeps
    that many leading dimensions of every vector (Matryoshka).
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        *,
        quantize: Optional[str] = None,
        threads: Optional[int] = None,
        device: Optional[str] = None,
        max_seq_length: Optional[int] = None,
        truncate_dim: Optional[int] = None,
    ):
        if not isinstance(model_name_or_path, str):
            model_name_or_path = str(model_name_or_path)
        self._model = _Model(
            model_name_or_path,
            quantize=quantize,
            threads=threads,
            device=device,
            max_seq_length=max_seq_length,
        )
        self.truncate_dim = self._check_dim(truncate_dim)

    # --- what the model is -------------------------------------------------------------

    @property
    def max_seq_length(self) -> int:
        """Inputs are cut at this many tokens (read-only: pass ``max_seq_length=`` to load)."""
        return self._model.max_seq_length

    @property
    def prompts(self) -> dict:
        return dict(self._model.prompts)

    @property
    def default_prompt_name(self) -> Optional[str]:
        return self._model.default_prompt_name

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def model_id(self) -> str:
        """How an index records this model: a folder's absolute path, or the hub id."""
        return self._model.model_id

    @property
    def quantization(self) -> str:
        return self._model.quantization

    def get_sentence_embedding_dimension(self) -> int:
        return self.truncate_dim or self._model.dimension

    # --- embedding -----------------------------------------------------------------------

    def encode(
        self,
        sentences: Union[str, Sequence[str]],
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: Optional[bool] = None,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        truncate_dim: Optional[int] = None,
        **unsupported,
    ):
        """Vectors of ``sentences``: a 1-D float32 array for one string, 2-D for a list.

        As sentence-transformers: the model's own pipeline (pooling, its ``Normalize``
        module), then the Matryoshka cut (``truncate_dim``), then unit length when
        ``normalize_embeddings``. ``convert_to_tensor`` gives a torch tensor;
        ``convert_to_numpy=False`` a list of 1-D arrays.
        """
        for name in unsupported:
            if name not in ("device", "precision", "output_value", "pool", "chunk_size"):
                raise TypeError(f"encode() got an unexpected keyword argument {name!r}")
        if unsupported.get("precision", "float32") != "float32":
            raise ValueError("quiver: only precision='float32' is supported")
        if unsupported.get("output_value", "sentence_embedding") != "sentence_embedding":
            raise ValueError("quiver: only output_value='sentence_embedding' is supported")
        one = isinstance(sentences, str)
        texts = [sentences] if one else list(sentences)
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"sentences[{position}] is {type(text).__name__}, not str"
                )
        if prompt is None and prompt_name is not None and prompt_name not in self.prompts:
            raise ValueError(
                f"prompt name {prompt_name!r} is not one of this model's prompts: "
                f"{sorted(self.prompts) or 'it defines none'}"
            )
        if prompt is not None:
            prompt_name = None
        bar = _progress.bar(len(texts), "texts", show_progress_bar)
        try:
            vectors = self._model.embed(
                texts,
                batch_size=batch_size,
                prompt_name=prompt_name,
                prompt=prompt,
                progress=bar.update if bar else None,
            )
        finally:
            if bar:
                bar.close()
        dim = self._check_dim(truncate_dim) or self.truncate_dim
        if dim:
            vectors = np.ascontiguousarray(vectors[:, :dim])
        if normalize_embeddings:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        vectors = vectors.astype(np.float32, copy=False)
        if convert_to_tensor:
            torch = _torch()
            tensor = torch.from_numpy(vectors)
            return tensor[0] if one else tensor
        if not convert_to_numpy:
            rows = list(vectors)
            return rows[0] if one else rows
        return vectors[0] if one else vectors

    def encode_query(self, sentences, **kwargs):
        """``encode`` with the model's ``query`` prompt, if it has one."""
        return self._encode_as(("query",), sentences, kwargs)

    def encode_document(self, sentences, **kwargs):
        """``encode`` with the model's document prompt (``document``, ``passage`` or
        ``corpus``), if it has one."""
        return self._encode_as(("document", "passage", "corpus"), sentences, kwargs)

    def _encode_as(self, names, sentences, kwargs):
        if kwargs.get("prompt_name") is None and kwargs.get("prompt") is None:
            for name in names:
                if name in self.prompts:
                    kwargs["prompt_name"] = name
                    break
        return self.encode(sentences, **kwargs)

    def similarity(self, embeddings1, embeddings2):
        """Cosine similarity of every row of ``embeddings1`` with every row of
        ``embeddings2``: a torch tensor when given tensors, else a float32 array."""
        as_tensor = type(embeddings1).__module__.startswith("torch")
        a = _as_matrix(embeddings1)
        b = _as_matrix(embeddings2)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        scores = (a @ b.T).astype(np.float32)
        if as_tensor:
            return _torch().from_numpy(scores)
        return scores

    def tokenize(self, texts: Iterable[str]) -> dict:
        """Token ids as the model sees them (no prompt), padded with the tokenizer's pad id:
        ``{"input_ids", "attention_mask"}`` as int64 arrays."""
        ids = self._model.token_ids([str(t) for t in texts])
        width = max((len(row) for row in ids), default=0)
        input_ids = np.full((len(ids), width), self._model.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def __repr__(self):
        return (
            f"quiver.Model({self.model_id!r}, quantize={self.quantization!r}, "
            f"dimension={self.get_sentence_embedding_dimension()})"
        )

    def _check_dim(self, dim):
        if dim is None:
            return None
        if not isinstance(dim, int) or dim < 1 or dim > self._model.dimension:
            raise ValueError(
                f"truncate_dim must be between 1 and the model's {self._model.dimension} "
                f"dimensions (got {dim!r})"
            )
        return dim


def _as_matrix(values) -> np.ndarray:
    if type(values).__module__.startswith("torch"):
        values = values.detach().cpu().numpy()
    matrix = np.asarray(values, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2:
        raise ValueError(f"similarity takes vectors or matrices, not {matrix.ndim}-D arrays")
    return matrix
