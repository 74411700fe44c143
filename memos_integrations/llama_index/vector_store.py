"""``MemOSVectorStore``: a LlamaIndex vector store whose nodes are memories of a cube.

Where it sits: a ``BasePydanticVectorStore`` over the cube's plaintext memory. Each node is one item
(kind ``chunk``, tagged with the store's namespace, ``parent_id`` = its ref doc), written with the
node's own embedding in one SQLite transaction (item, version, FTS row, vector) and mirrored to the
cube's ANN index. Queries run the cube's search: dense for ``default``, dense + FTS5/BM25 fused for
``hybrid`` (``alpha`` weights the legs), BM25 alone for ``sparse`` / ``text_search``, and MMR re-ranking
for ``mmr``. Metadata filters compile to SQL (see :mod:`memos_integrations.llama_index.filters`).
Deletes are tombstones: ``cube.history(node_id)`` still shows what was there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from ..errors import InvalidInputError
from ..items import Kind
from ..textual.filters import MemoryFilter
from ..textual.retrieve import SearchPlan
from ._nodes import NOT_DELETED, cosine_scores, embeddings_of, in_thread, item_to_node, node_to_item, plan_of
from .filters import combine, to_memory_metadata

_DENSE = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR)
_KEYWORD = (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.TEXT_SEARCH)
_HYBRID = (VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.SEMANTIC_HYBRID)


class MemOSVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store in a memory cube (``stores_text=True``: the cube keeps the nodes).

    Example:
        >>> import tempfile
        >>> from llama_index.core import Document, StorageContext, VectorStoreIndex
        >>> from memos_integrations import MemCube
        >>> from memos_integrations.llama_index import MemOSEmbedding
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> store = MemOSVectorStore.from_defaults(cube=cube)
        >>> index = VectorStoreIndex.from_documents(
        ...     [Document(text="Genmaicha is green tea with roasted rice.")],
        ...     storage_context=StorageContext.from_defaults(vector_store=store),
        ...     embed_model=MemOSEmbedding.from_cube(cube))
        >>> index.as_retriever(similarity_top_k=1).retrieve("roasted rice tea")[0].node.text[:9]
        'Genmaicha'
        >>> cube.close()
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    namespace: str = Field(default="default", description="Separates several stores (and indexes) in one cube.")
    user_id: str | None = Field(default=None, description="Scope: nodes are written for and read from this user only.")
    embed_missing: bool = Field(
        default=False,
        description="Embed nodes that carry no embedding with the cube's embedder instead of refusing them.",
    )
    default_mmr_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="MMR relevance weight when a query gives none (1.0: relevance only)."
    )

    _cube: Any = PrivateAttr()

    def __init__(self, cube: Any, **data: Any) -> None:
        super().__init__(**data)
        self._cube = cube

    @classmethod
    def from_defaults(
        cls,
        cube: Any = None,
        *,
        path: str | Path | None = None,
        namespace: str = "default",
        user_id: str | None = None,
        embed_missing: bool = False,
        embedder: Any = None,
    ) -> MemOSVectorStore:
        """From an open ``cube``, or the cube at ``path`` (created there if absent)."""
        if cube is None:
            if path is None:
                raise InvalidInputError("pass cube=MemCube(...) or path='./my_cube'")
            from ..cube import MemCube

            cube = MemCube.init_from_dir(path, embedder=embedder)
        return cls(cube, namespace=namespace, user_id=user_id, embed_missing=embed_missing)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSVectorStore"

    @property
    def client(self) -> Any:
        """The cube."""
        return self._cube

    @property
    def tag(self) -> str:
        return f"llama_index:vector:{self.namespace}"

    def _filter(
        self, filters: MetadataFilters | None = None, node_ids: list[str] | None = None,
        doc_ids: list[str] | None = None, states: Any = "live",
    ) -> MemoryFilter:
        docs = {"ref_doc_id": {"$in": list(doc_ids)}} if doc_ids is not None else None
        kw: dict[str, Any] = {} if states == "live" else {"states": states}
        return MemoryFilter(
            user_id=self.user_id, tags_all=[self.tag], kinds=[Kind.CHUNK], ids=node_ids,
            metadata=combine(to_memory_metadata(filters), docs), **kw,
        )

    # -- writes -------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Write ``nodes`` with their embeddings; a node id seen before gets a new version."""
        if not nodes:
            return []
        texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        cube = self._cube
        # everything is checked (embeddings, dimensions, text, JSON) before the one write
        vectors = embeddings_of(nodes, cube.embedder.dimension, self.embed_missing, cube.embedder.embed_documents, texts)
        items = [node_to_item(n, tags=[self.tag], user_id=self.user_id) for n in nodes]
        cube.add_items(items, vectors=vectors)
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Tombstone every node of the document ``ref_doc_id``."""
        flt = self._filter(states=NOT_DELETED)
        flt.parent_id = ref_doc_id
        self._delete_where(flt)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        self._delete_where(self._filter(filters, node_ids, states=NOT_DELETED))

    def clear(self) -> None:
        """Tombstone every node of this store (other namespaces and memories stay)."""
        self._delete_where(self._filter(states=NOT_DELETED))

    def _delete_where(self, flt: MemoryFilter) -> None:
        ids = [it.id for it in self._cube.text_mem.list_items(flt)]
        if ids:
            self._cube.delete(ids)

    # -- reads --------------------------------------------------------------------------------
    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes with their embeddings, by id and/or filter; all of them with neither.

        Embeddings come back unit-length: the cube stores normalised vectors (cosine is unchanged).
        """
        items = self._cube.text_mem.list_items(self._filter(filters, node_ids))
        if node_ids is not None:  # in the order asked for
            order = {i: n for n, i in enumerate(node_ids)}
            items.sort(key=lambda it: order.get(it.id, len(order)))
        vectors = self._cube.store.vectors_by_id([it.id for it in items])
        nodes = []
        for it in items:
            node = item_to_node(it)
            if it.id in vectors:
                node.embedding = vectors[it.id].tolist()
            nodes.append(node)
        return nodes

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Run ``query`` in its mode; see the module docstring for what each mode does."""
        mode = VectorStoreQueryMode(query.mode)
        top_k = query.similarity_top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInputError(f"similarity_top_k must be a positive integer, got {top_k!r}")
        qvec = None if query.query_embedding is None else np.asarray(query.query_embedding, dtype=np.float32)
        text = query.query_str or ""
        plan = self._plan(mode, query, qvec is not None, bool(text.strip()), kwargs)
        if qvec is not None and qvec.shape != (self._cube.embedder.dimension,):
            from ..errors import EmbedderMismatchError

            raise EmbedderMismatchError(
                f"the query embedding has shape {qvec.shape} but the cube's embedder gives "
                f"{self._cube.embedder.dimension} dims; embed queries with MemOSEmbedding.from_cube(cube)"
            )
        # VectorIndexRetriever sends node_ids=[] for stores that keep text: an empty list restricts nothing
        flt = self._filter(query.filters, query.node_ids or None, query.doc_ids or None)
        if qvec is not None:
            qvec = qvec / max(float(np.linalg.norm(qvec)), 1e-12)
        hits = self._cube.search(text if plan.keyword else "", filter=flt, top_k=top_k, plan=plan,
                                 query_vector=qvec if plan.dense else None)
        ids = [h.item.id for h in hits]
        if plan.keyword or qvec is None:
            scores = [h.score for h in hits]  # fused (RRF) or BM25 rank scores: comparable within one query
        else:
            sims = cosine_scores(self._cube.store, ids, qvec)
            scores = [sims.get(i, 0.0) for i in ids]
        return VectorStoreQueryResult(nodes=[item_to_node(h.item) for h in hits], similarities=scores, ids=ids)

    def _plan(self, mode: VectorStoreQueryMode, query: VectorStoreQuery, has_vec: bool, has_text: bool,
              kwargs: dict[str, Any]) -> SearchPlan:
        k = query.similarity_top_k
        base = {"time_aware": False, "graph_hops": 0}
        if mode in _DENSE:
            if not has_vec:
                raise InvalidInputError(f"{mode.value} mode needs query_embedding; embed the query first")
            if mode == VectorStoreQueryMode.MMR:
                lam = kwargs.get("mmr_threshold", query.mmr_threshold)
                lam = self.default_mmr_threshold if lam is None else float(lam)
                pool = max(4 * k, 20)
                return plan_of(name="llama_index.mmr", keyword=False, candidates=pool, mmr_lambda=lam,
                                  mmr_pool=pool, **base)
            return plan_of(name="llama_index.default", keyword=False, candidates=k, **base)
        if mode in _KEYWORD or (mode in _HYBRID and not has_vec):
            if not has_text:
                raise InvalidInputError(f"{mode.value} mode needs query_str (the keyword leg searches text)")
            pool = max(k, query.sparse_top_k or 0)
            return plan_of(name="llama_index.sparse", dense=False, candidates=pool, **base)
        if mode in _HYBRID:
            if not has_text:  # no words to match: the dense leg alone
                return plan_of(name="llama_index.default", keyword=False, candidates=k, **base)
            alpha = 0.5 if query.alpha is None else float(query.alpha)
            if not 0.0 <= alpha <= 1.0:
                raise InvalidInputError(f"alpha must be within [0, 1] (1: dense only, 0: keyword only), got {alpha}")
            pool = max(k, query.sparse_top_k or 0, query.hybrid_top_k or 0, 60)
            return plan_of(name="llama_index.hybrid", candidates=pool, dense_weight=alpha,
                              keyword_weight=1.0 - alpha, **base)
        raise InvalidInputError(
            f"query mode {mode.value!r} is not supported by MemOSVectorStore; use default, hybrid, "
            "semantic_hybrid, sparse, text_search or mmr"
        )

    # -- async: the same work in a worker thread ----------------------------------------------
    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await in_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await in_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        await in_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await in_thread(self.clear)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await in_thread(self.get_nodes, node_ids, filters)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await in_thread(self.query, query, **kwargs)
