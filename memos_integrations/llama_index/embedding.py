"""``MemOSEmbedding``: the cube's embedder as a LlamaIndex ``BaseEmbedding``.

Where it sits: lets ``VectorStoreIndex``, ingestion pipelines and retrievers embed with exactly the
model the cube records in ``cube.json`` (offline MiniLM by default), so the vectors LlamaIndex writes
are the ones the cube's own search, re-index and fingerprint check expect.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from ..aio import in_thread
from ..textual.embed import Embedder, as_embedder


class MemOSEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model backed by a cube embedder.

    Example:
        >>> emb = MemOSEmbedding.from_defaults()          # the offline MiniLM
        >>> len(emb.get_query_embedding("hello")), emb.model_name
        (384, 'all-MiniLM-L6-v2')
    """

    model_name: str = Field(default="all-MiniLM-L6-v2", description="The wrapped embedder's name.")
    dimension: int = Field(default=384, description="Length of every embedding this model returns.")
    fingerprint: str = Field(default="", description="The embedder fingerprint a cube records and checks.")

    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Any = None, **kwargs: Any) -> None:
        emb = as_embedder(embedder)
        kwargs.setdefault("embed_batch_size", 64)
        # pydantic fields of this subclass: mypy (no pydantic plugin here) sees only BaseEmbedding's signature
        super().__init__(model_name=emb.name, dimension=emb.dimension, fingerprint=emb.fingerprint, **kwargs)  # type: ignore[call-arg]
        self._embedder = emb

    @classmethod
    def from_defaults(cls, embedder: Any = None, **kwargs: Any) -> MemOSEmbedding:
        """Wrap ``embedder`` (an ``Embedder``, a LangChain ``Embeddings``, an ``EmbedderConfig``; default MiniLM)."""
        return cls(embedder, **kwargs)

    @classmethod
    def from_cube(cls, cube: Any, **kwargs: Any) -> MemOSEmbedding:
        """The embedder ``cube`` was built with."""
        return cls(cube.embedder, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return list(map(float, self._embedder.embed_query(query).tolist()))

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        rows: list[list[float]] = self._embedder.embed_documents(list(texts)).astype(float).tolist()
        return rows

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await in_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await in_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await in_thread(self._get_text_embeddings, texts)
