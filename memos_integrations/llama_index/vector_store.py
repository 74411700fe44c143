"""``MemOSVectorStore``: a LlamaIndex vector store whose nodes are memories of a cube.

Where it sits: a ``BasePydanticVectorStore`` over the cube's plaintext memory. Each node is one item
(kind ``chunk``, tagged with the store's namespace, ``parent_id`` = its ref doc), written with the
node's own embedding in one SQLite transaction (item, version, FTS row, vector) and mirrored to the
cube's ANN index. Queries run the cube's search: dense for ``default``, dense + FTS5/BM25 fused for
``hybrid`` (``alpha`` weights the legs), BM25 alone for ``sparse`` / ``text_search``, and MMR re-ranking
for ``mmr``. Metadata filters compile to SQL (see :mod:`memos_integrations.llama_index.filters`).
Deletes are tombstones: ``cube.history(store.item_id(node_id))`` still shows what was there.

Who is acting: the store's ``user_id`` binding, else the user a LangGraph run's context names
(:func:`~memos_integrations.access.resolve_scope`). Node ids are keys within (namespace, user): the
same node id in another namespace or for another user is another item (see ``_nodes.ScopedKeys``).
Sync/async: the core is synchronous; every ``a*`` method runs it in a worker thread
(:func:`~memos_integrations.aio.in_thread`).

On a :class:`~memos_integrations.remote.RemoteCube` the store is a :class:`RemoteVectorStore`: the same
calls, each one run by this class on the service (``/v1/vector-stores/llama-index/...``) bound to the
API key's user; nodes travel as JSON (:mod:`memos_integrations.llama_index.wire`).
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

from ..aio import in_thread
from ..errors import InvalidInputError
from ..face_api import CubeAPI, as_cube
from ..items import Kind
from ..textual.filters import MemoryFilter
from ..textual.retrieve import SearchPlan
from ._nodes import (
    NOT_DELETED,
    ScopedKeys,
    acting_user,
    check_embed_model,
    cosine_scores,
    embeddings_of,
    item_to_node,
    node_to_item,
    plan_of,
    query_vector,
)
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
    agent_id: str | None = Field(
        default=None, description="The agent writes are filed under (item agent_id, 'agent:<id>' in version rows); "
        "reads stay the user's: node ids are keys per (namespace, user).")
    embed_missing: bool = Field(
        default=False,
        description="Embed nodes that carry no embedding with the cube's embedder instead of refusing them.",
    )
    default_mmr_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="MMR relevance weight when a query gives none (1.0: relevance only)."
    )

    _cube: CubeAPI = PrivateAttr()

    def __new__(cls, *args: Any, **kwargs: Any) -> MemOSVectorStore:
        """Over a ``RemoteCube``, the store is a :class:`RemoteVectorStore` (as ``Path()`` is a ``PosixPath``):
        the same API, each operation run by this class on the service, for the key's user."""
        cube = args[0] if args else kwargs.get("cube")
        if cls is MemOSVectorStore and getattr(cube, "is_remote", False) is True:
            cls = RemoteVectorStore
        return super().__new__(cls)

    def __init__(self, cube: Any, embed_model: Any = None, **data: Any) -> None:
        super().__init__(**data)
        self._cube = as_cube(cube, "MemOSVectorStore")
        check_embed_model(self._cube, embed_model, "MemOSVectorStore")

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
        embed_model: Any = None,
    ) -> MemOSVectorStore:
        """From an open ``cube``, or the cube at ``path`` (created there if absent).

        Args:
            cube: an open cube; or leave it out and give ``path``.
            path: where to open (or create) a cube when ``cube`` is not given.
            namespace: separates several stores in one cube; node ids are keys within it.
            user_id: whose nodes these are (None: nodes of no user; a LangGraph run's context may name one).
            embed_missing: embed nodes without an embedding with the cube's embedder instead of refusing them.
            embedder: the embedder for a cube created at ``path``.
            embed_model: the LlamaIndex embed model the index uses, checked against the cube's embedder.

        Raises:
            EmbedderMismatchError: ``embed_model`` is not the model the cube was built with.
        """
        if cube is None:
            if path is None:
                raise InvalidInputError("pass cube=MemCube(...) or path='./my_cube'")
            from ..cube import MemCube

            cube = MemCube.init_from_dir(path, embedder=embedder)
        return cls(cube, embed_model=embed_model, namespace=namespace, user_id=user_id, embed_missing=embed_missing)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSVectorStore"

    @property
    def client(self) -> Any:
        """The cube."""
        return self._cube

    def scope_keys(self) -> ScopedKeys:
        """The keys of whoever is acting now (the binding, else a run's context)."""
        return ScopedKeys("vector", self.namespace, acting_user(self.user_id, self._cube, "MemOSVectorStore"))

    def item_id(self, node_id: str) -> str:
        """The cube item a node id of this store is kept as (for ``cube.history`` and ``cube.get``)."""
        keys = self.scope_keys()
        return keys.resolve(self._cube, [node_id])[node_id]

    def _filter(
        self, filters: MetadataFilters | None = None, node_ids: list[str] | None = None,
        doc_ids: list[str] | None = None, states: Any = "live",
    ) -> MemoryFilter:
        docs = {"ref_doc_id": {"$in": list(doc_ids)}} if doc_ids is not None else None
        kw: dict[str, Any] = {} if states == "live" else {"states": states}
        return self.scope_keys().filter(node_ids, kinds=[Kind.CHUNK], metadata=combine(to_memory_metadata(filters), docs), **kw)

    # -- writes -------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Write ``nodes`` with their embeddings; a node id seen before gets a new version."""
        if not nodes:
            return []
        texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        cube = self._cube
        # everything is checked (embeddings, dimensions, text, JSON) before the one write
        vectors = embeddings_of(nodes, cube.embedder.dimension, self.embed_missing, cube.embedder.embed_documents, texts)
        keys = self.scope_keys()
        items = [node_to_item(n, tags=[keys.tag], user_id=keys.user_id) for n in nodes]
        ids = keys.resolve(cube, [it.id for it in items])
        for it in items:
            it.agent_id, it.created_by = self.agent_id, self._principal()
            if ids[it.id] != keys.item_id(it.id):  # a row written before keys were scoped: keep its tag
                it.tags = [keys.legacy_tag]
            it.id = ids[it.id]
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
            self._cube.delete(ids, principal=self._principal())

    def _principal(self) -> str | None:
        """Who version rows name: ``agent:<id>`` for a store bound to an agent, else the cube's default."""
        return None if self.agent_id is None else f"agent:{self.agent_id}"

    # -- reads --------------------------------------------------------------------------------
    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes with their embeddings, by id and/or filter; all of them with neither.

        Embeddings come back unit-length: the cube stores normalised vectors (cosine is unchanged).
        """
        items = self._cube.text_mem.list_items(self._filter(filters, node_ids))
        vectors = self._cube.store.vectors_by_id([it.id for it in items])
        nodes = []
        for it in items:
            node = item_to_node(it)
            if it.id in vectors:
                node.embedding = vectors[it.id].tolist()
            nodes.append(node)
        if node_ids is not None:  # in the order asked for
            order = {i: n for n, i in enumerate(node_ids)}
            nodes.sort(key=lambda n: order.get(n.node_id, len(order)))
        return nodes

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Run ``query`` in its mode; see the module docstring for what each mode does."""
        mode = VectorStoreQueryMode(query.mode)
        top_k = query.similarity_top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInputError(f"similarity_top_k must be a positive integer, got {top_k!r}")
        qvec = None if query.query_embedding is None else query_vector(self._cube, query.query_embedding, "MemOSVectorStore")
        text = query.query_str or ""
        if mode in _KEYWORD and query.query_str is not None and not text.strip():
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])  # no words: nothing matches them
        plan = self._plan(mode, query, qvec is not None, bool(text.strip()), kwargs)
        # VectorIndexRetriever sends node_ids=[] for stores that keep text: an empty list restricts nothing
        flt = self._filter(query.filters, query.node_ids or None, query.doc_ids or None)
        hits = self._cube.search(text if plan.keyword else "", filter=flt, top_k=top_k, plan=plan,
                                 query_vector=qvec if plan.dense else None)
        if plan.keyword or qvec is None:
            scores = [h.score for h in hits]  # fused (RRF) or BM25 rank scores: comparable within one query
        else:
            sims = cosine_scores(self._cube, [h.item.id for h in hits], qvec)
            scores = [sims.get(h.item.id, 0.0) for h in hits]
        nodes = [item_to_node(h.item) for h in hits]
        return VectorStoreQueryResult(nodes=nodes, similarities=scores, ids=[n.node_id for n in nodes])

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
                if not 0.0 <= lam <= 1.0:  # NaN too
                    raise InvalidInputError(f"mmr_threshold must be within [0, 1] (1: relevance only), got {lam}")
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


class RemoteVectorStore(MemOSVectorStore):
    """``MemOSVectorStore`` over a ``RemoteCube``: what you get from ``MemOSVectorStore(remote_cube)``.

    Each operation is one request (an ``add`` over the service's body limit, the parts of one staged write,
    all written or none: see :func:`memos_integrations.remote_vectors.post_rows`) that the service runs with
    the same class, bound to the key's user (and agent) and this store's namespace. Results, scores and errors are the local store's.
    """

    def __init__(self, cube: Any, embed_model: Any = None, **data: Any) -> None:
        from ..remote_vectors import check_embedder

        check_embedder(cube)
        super().__init__(cube, embed_model=embed_model, **data)

    def _body(self, **fields: Any) -> dict[str, Any]:
        return {"namespace": self.namespace, "user_id": self.scope_keys().user_id, "agent_id": self.agent_id,
                "embed_missing": self.embed_missing, **fields}

    def _post(self, op: str, **fields: Any) -> Any:
        from ..remote_vectors import post

        return post(self._cube, f"/v1/vector-stores/llama-index/{op}", self._body(**fields))  # type: ignore[arg-type]

    def item_id(self, node_id: str) -> str:
        return str(self._post("item-ids", node_ids=[node_id])["item_ids"][node_id])

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        from ..remote_vectors import post_rows
        from .wire import nodes_to_json

        if not nodes:
            return []

        def check_whole_write() -> None:  # several requests: refuse here what a later one would be refused
            from ..remote_vectors import check_unique, service_info
            from ..textual.item_checks import check_item

            dim = self._cube.embedder.dimension
            embeddings_of(nodes, dim, self.embed_missing, lambda texts: np.zeros((len(texts), dim)), [""] * len(nodes))
            limit = int(service_info(self._cube)["max_text_chars"])  # type: ignore[arg-type]
            for node in nodes:
                check_item(node_to_item(node, tags=[], user_id=None), limit)
            check_unique([node.node_id for node in nodes])

        return post_rows(self._cube, "/v1/vector-stores/llama-index/add", self._body(),  # type: ignore[arg-type]
                         {"nodes": nodes_to_json(nodes)}, lambda answers: [i for a in answers for i in a["ids"]],
                         before=check_whole_write)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        self._post("delete", ref_doc_id=ref_doc_id)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        from .wire import filters_to_json

        self._post("delete-nodes", node_ids=node_ids, filters=filters_to_json(filters))

    def clear(self) -> None:
        self._post("clear")

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        from .wire import filters_to_json, nodes_from_json

        return nodes_from_json(self._post("get-nodes", node_ids=node_ids, filters=filters_to_json(filters))["nodes"])

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        from .wire import nodes_from_json, query_to_json

        lam = kwargs.get("mmr_threshold")
        data = self._post("query", query=query_to_json(query), mmr_threshold=None if lam is None else float(lam))
        return VectorStoreQueryResult(nodes=nodes_from_json(data["nodes"]), similarities=list(data["similarities"]),
                                      ids=list(data["ids"]))
