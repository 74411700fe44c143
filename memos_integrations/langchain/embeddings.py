"""Any cube embedder as LangChain ``Embeddings``, so LangChain components share the cube's model.

The LangChain face's vector store reports this as its ``embeddings``; the benchmark gives it to
``InMemoryVectorStore`` and ``Chroma`` so every store embeds with the same offline MiniLM.
Embedding is CPU-bound and synchronous; the async twins run it in a worker thread.
"""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings

from ..aio import in_thread
from ..textual.embed import Embedder, MiniLMEmbedder


class MemOSEmbeddings(Embeddings):
    """LangChain ``Embeddings`` backed by a memos-integrations embedder (default: offline MiniLM).

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            from memos_integrations.langchain import MemOSEmbeddings

            embeddings = MemOSEmbeddings()          # all-MiniLM-L6-v2, 384 dims, no network

    Embed:
        .. code-block:: python

            vector = embeddings.embed_query("What tea does Alice like?")
            len(vector)                             # 384

    Async:
        .. code-block:: python

            vectors = await embeddings.aembed_documents(["genmaicha", "sencha"])

    Vectors are L2-normalised, so cosine similarity is a dot product.
    """

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder: Embedder = embedder or MiniLMEmbedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed_documents(list(texts)).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text).tolist()  # type: ignore[no-any-return]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await in_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await in_thread(self.embed_query, text)

    def __repr__(self) -> str:
        return f"MemOSEmbeddings({self.embedder.name!r}, dimension={self.embedder.dimension})"


def unwrap(embedding: Any) -> Any:
    """What the cube should be given for ``embedding``: our own embedder unwrapped, anything else as is."""
    return embedding.embedder if isinstance(embedding, MemOSEmbeddings) else embedding
