"""``MemOSVectorStore``: LangChain's ``VectorStore`` over a MemCube.

Documents become cube items (kind ``document`` by default) whose id is the document id and whose
metadata is the document metadata, so they get versions, tombstones, audit and provenance like any
memory, and the cube's other faces (retriever, tools, LangGraph, LlamaIndex) see them too. Search is
the cube's dense leg only (exact cosine over the filter's candidates, the ANN index when they are
many); scores are cosine similarities. Sync/async: sync core; the ``a*`` twins inherited from
``VectorStore`` run the sync methods in a worker thread (``run_in_executor``), never on the loop.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ..cube import MemCube
from ..errors import AccessDeniedError, EmbedderMismatchError, InvalidFilterError, InvalidInputError, InvalidTypeError
from ..items import Kind, MemoryItem, SearchHit, new_id
from ..textual.embed import LangChainEmbedder, as_embedder
from ..textual.filters import MemoryFilter
from ..textual.memory import ids_of
from ..textual.read import check_text
from ..textual.retrieve import BALANCED
from ._common import item_to_document
from .embeddings import MemOSEmbeddings, unwrap

# Dense only and no time boost: a vector store ranks by similarity alone, as callers expect.
_VECTOR_PLAN = BALANCED.model_copy(update={"name": "vector", "keyword": False, "time_aware": False, "candidates": 1})


class MemOSVectorStore(VectorStore):
    """A LangChain vector store whose documents live in a MemCube.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            import tempfile
            from memos_integrations import MemCube
            from memos_integrations.langchain import MemOSVectorStore

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")   # offline MiniLM embedder
            store = MemOSVectorStore(cube, user_id="alice")              # optional scope

    Add and delete:
        .. code-block:: python

            from langchain_core.documents import Document

            store.add_documents([Document("Alice drinks genmaicha.", metadata={"topic": "tea"}),
                                 Document("Alice runs on Sundays.", metadata={"topic": "sport"})],
                                ids=["tea", "run"])
            store.delete(["run"])          # a tombstone: cube.history("run") still has it

    Search:
        .. code-block:: python

            store.similarity_search("what tea?", k=1, filter={"topic": {"$in": ["tea", "food"]}})
            store.similarity_search_with_relevance_scores("what tea?", k=1)   # [(Document, 0.0..1.0)]
            store.max_marginal_relevance_search("what tea?", k=2, fetch_k=10)
            store.as_retriever(search_kwargs={"k": 2}).invoke("what tea?")

    Async:
        .. code-block:: python

            await store.aadd_documents([Document("Alice likes sencha too.")])
            await store.asimilarity_search("what tea?", k=1)

    Filters are the cube's metadata conditions: ``{key: value}`` or ``{key: {"$eq" | "$ne" | "$gt" |
    "$gte" | "$lt" | "$lte" | "$in" | "$nin" | "$exists": value}}``; dotted keys reach nested JSON.
    A scoped store (``user_id`` / ``agent_id`` / ``session_id``) writes that scope on every document
    and only ever reads, overwrites or deletes documents inside it.
    """

    def __init__(
        self,
        cube: MemCube,
        embedding: Embeddings | None = None,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        kind: Kind | str = Kind.DOCUMENT,
        kinds: Sequence[Kind | str] | None = None,
        tags: Sequence[str] = (),
        principal: str | None = None,
    ) -> None:
        if not isinstance(cube, MemCube):
            raise InvalidTypeError(f"cube must be a MemCube, got {type(cube).__name__}")
        self.cube = cube
        if embedding is not None:
            _check_same_embedder(cube, embedding)
        elif isinstance(cube.embedder, LangChainEmbedder):
            embedding = cube.embedder.embeddings
        else:
            embedding = MemOSEmbeddings(cube.embedder)
        self._embedding: Embeddings = embedding
        self.user_id, self.agent_id, self.session_id = user_id, agent_id, session_id
        try:
            self.kind = Kind(kind)
        except ValueError:
            raise InvalidInputError(f"unknown kind {kind!r}; use one of {[k.value for k in Kind]}") from None
        self.kinds = list(kinds) if kinds is not None else None
        self.tags = list(tags)
        self.principal = principal
        MemoryFilter(kinds=self.kinds)  # reject an unknown kind now, not at the first search

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # -- writes -------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store ``texts``; an id already present gets a new version (never a duplicate)."""
        items = self._items(texts, metadatas, ids)
        self._check_writable([it.id for it in items])
        self.cube.add_items(items)
        return [it.id for it in items]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Tombstone ``ids`` (ids that are absent or outside this store's scope are skipped)."""
        if ids is None:
            # LangChain lets None mean "everything"; over a shared cube that is too easy to do by accident
            raise InvalidInputError("pass the ids to delete; MemOSVectorStore.delete never deletes everything")
        visible = [it.id for it in self._visible(_id_list(ids))]
        if visible:
            self.cube.delete(visible, principal=self.principal)
        return True

    # -- reads --------------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [item_to_document(it) for it in self._visible(_id_list(ids))]

    def similarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with their cosine similarity to ``query`` (-1..1, higher is closer)."""
        return self.similarity_search_with_score_by_vector(self._embed_query(query), k, filter=filter)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter=filter)]

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float] | np.ndarray, k: int = 4, filter: Mapping[str, Any] | None = None
    ) -> list[tuple[Document, float]]:
        return [(item_to_document(it), score) for it, score, _ in self._nearest(embedding, k, filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # Cosine clipped to [0, 1]: 0 means unrelated (or opposite), so score_threshold keeps its
        # plain meaning (0.7 is 0.7 cosine) instead of the (1 + cos) / 2 squeeze into [0.5, 1].
        return _clip_unit

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._embed_query(query).tolist(), k, fetch_k, lambda_mult, filter=filter
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Fetch ``fetch_k`` nearest documents, then pick ``k`` by LangChain's own MMR."""
        if not 0.0 <= lambda_mult <= 1.0:
            raise InvalidInputError(f"lambda_mult must be between 0 and 1, got {lambda_mult!r}")
        found = self._nearest(embedding, max(fetch_k, k), filter)
        if not found:
            return []
        query = np.asarray(embedding, dtype=np.float32)
        chosen = maximal_marginal_relevance(query, [v.tolist() for _, _, v in found], lambda_mult=lambda_mult, k=k)
        return [item_to_document(found[i][0]) for i in chosen]

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        cube: MemCube | None = None,
        path: str | Path | None = None,
        **kwargs: Any,
    ) -> MemOSVectorStore:
        """A store over ``cube``, or over the cube at ``path`` (created with ``embedding`` if absent),
        or else over a new cube in a temporary directory; then ``texts`` are added."""
        if cube is None:
            path = path if path is not None else Path(tempfile.mkdtemp(prefix="memcube-")) / "cube"
            cube = MemCube.init_from_dir(path, embedder=unwrap(embedding))
        store = cls(cube, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # -- internals ----------------------------------------------------------------------------
    def _scope(self) -> dict[str, Any]:
        scope = {"user_id": self.user_id, "agent_id": self.agent_id, "session_id": self.session_id}
        return {k: v for k, v in scope.items() if v is not None}

    def _in_scope(self, item: MemoryItem) -> bool:
        return all(getattr(item, k) == v for k, v in self._scope().items())

    def _visible(self, ids: list[str]) -> list[MemoryItem]:
        return [it for it in self.cube.text_mem.get_many(ids) if self._in_scope(it)]

    def _check_writable(self, ids: list[str]) -> None:
        """An id owned by another scope must not be overwritten through this store."""
        existing = self.cube.store.get_items(ids, include_deleted=True)
        foreign = sorted(i for i, it in existing.items() if not self._in_scope(it))
        if foreign:
            raise AccessDeniedError(
                f"ids {foreign} belong to memories outside this store's scope {self._scope()}; "
                "nothing was written; choose other ids"
            )

    def _items(
        self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None, ids: list[str] | None
    ) -> list[MemoryItem]:
        if isinstance(texts, (str, bytes)):
            raise InvalidTypeError("texts must be a list of strings, not one string; wrap it in a list")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInputError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None:
            if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
                raise InvalidTypeError(f"ids must be a list of strings, got {type(ids).__name__}")
            if len(ids) != len(texts):
                raise InvalidInputError(f"got {len(ids)} ids for {len(texts)} texts")
            for n, i in enumerate(ids):
                if i is not None and (not isinstance(i, str) or not i):
                    raise InvalidTypeError(f"ids must be non-empty strings; ids[{n}] is {i!r}")
        items = []
        for n, text in enumerate(texts):
            meta = metadatas[n] if metadatas is not None else {}
            if not isinstance(meta, Mapping):
                raise InvalidTypeError(f"metadatas[{n}] must be a dict, got {type(meta).__name__}")
            items.append(
                MemoryItem(
                    text=text, id=(ids[n] if ids is not None else None) or new_id(), kind=self.kind,
                    user_id=self.user_id, agent_id=self.agent_id, session_id=self.session_id,
                    tags=list(self.tags), metadata=dict(meta), created_by=self.principal or self.user_id,
                    method="langchain.vectorstore",
                )
            )
        return items

    def _filter(self, filter: Mapping[str, Any] | None) -> MemoryFilter:
        if filter is not None and not isinstance(filter, Mapping):
            raise InvalidFilterError(
                f"filter must be a dict of metadata conditions, got {type(filter).__name__}; "
                "e.g. {'topic': 'tea'} or {'year': {'$gte': 2023}}"
            )
        return MemoryFilter(**self._scope(), kinds=self.kinds, metadata=dict(filter) if filter else None)

    def _embed_query(self, query: str) -> np.ndarray:
        check_text(query, self.cube.config.max_text_chars, "query")
        return self.cube.embedder.embed_query(query)

    def _nearest(
        self, embedding: Sequence[float] | np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[MemoryItem, float, np.ndarray]]:
        """The ``k`` nearest items in scope with their cosine similarity and stored vector, best first."""
        query = np.asarray(embedding, dtype=np.float32)
        dim = self.cube.embedder.dimension
        if query.ndim != 1 or query.shape[0] != dim:
            raise EmbedderMismatchError(
                f"query vector has shape {query.shape} but this cube's embedder makes {dim}-dim vectors; "
                f"embed with store.embeddings ({self.cube.embedder.name})"
            )
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        hits: list[SearchHit] = self.cube.text_mem.search(  # type: ignore[valid-type]
            "", self._filter(filter), top_k=k, plan=_VECTOR_PLAN, query_vector=query
        )
        if not hits:
            return []
        rid_of = self.cube.store.rid_ids([h.item.id for h in hits], MemoryFilter(states=None))
        rids, matrix = self.cube.store.vectors_for([rid_of[h.item.id] for h in hits if h.item.id in rid_of])
        vector_of = dict(zip(rids, matrix, strict=True))
        found = []
        for hit in hits:
            vector = vector_of.get(rid_of.get(hit.item.id, -1))
            if vector is not None:
                found.append((hit.item, float(vector @ query), vector))
        found.sort(key=lambda t: -t[1])
        return found


def _clip_unit(score: float) -> float:
    return min(1.0, max(0.0, score))


def _id_list(ids: Any) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidTypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    return ids_of(ids)


def _check_same_embedder(cube: MemCube, embedding: Any) -> None:
    """Vectors from two models in one index are silent garbage: refuse another embedder up front."""
    given = unwrap(embedding)
    if given is cube.embedder or (isinstance(cube.embedder, LangChainEmbedder) and given is cube.embedder.embeddings):
        return
    emb = as_embedder(given)
    ours = cube.embedder
    if emb.dimension != ours.dimension or emb.fingerprint != ours.fingerprint:
        raise EmbedderMismatchError(
            f"cube {cube.cube_id!r} was built with {ours.name!r} ({ours.dimension} dims) but the vector store "
            f"was given {emb.name!r} ({emb.dimension} dims); pass the cube's own embedder or leave embedding unset"
        )
