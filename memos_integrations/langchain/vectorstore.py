"""``MemOSVectorStore``: LangChain's ``VectorStore`` over a MemCube.

Documents become cube items (kind ``document`` by default) whose id is the document id and whose
metadata is the document metadata, so they get versions, tombstones, audit and provenance like any
memory, and the cube's other faces (retriever, tools, LangGraph, LlamaIndex) see them too. The store
reads only the kinds it writes (``kinds=`` widens that), so chat messages, facts and LlamaIndex chunks
in the same cube never come back as documents, nor can ``delete()`` reach them.

Who is acting: the store's binding (``user_id`` / ``agent_id`` / ``session_id``), else the user the run
names (:func:`memos_integrations.access.resolve_scope`); a run for another user than the binding is
refused. Writes and deletes only touch ids whose scope and kind are exactly the store's: an id held in
another scope (or by another kind) is refused as "not available" without saying by whom, so an unscoped
store can never move a user's document out of her scope. Search is
the cube's dense leg only (exact cosine over the filter's candidates, the ANN index when they are
many); scores are cosine similarities. Sync/async: sync core; the ``a*`` twins inherited from
``VectorStore`` run the sync methods in a worker thread (``run_in_executor``), never on the loop.

On a :class:`~memos_integrations.remote.RemoteCube` the store is a :class:`RemoteVectorStore`: the same
calls, each one run by this class on the service (``/v1/vector-stores/langchain/...``) bound to the API
key's user, so the checks above hold there, where the client cannot skip them.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ..access import deny, normalize_id
from ..cube import MemCube
from ..errors import EmbedderMismatchError, InvalidFilterError, InvalidInputError, InvalidTypeError
from ..face_api import CubeAPI, as_cube
from ..items import Kind, MemoryItem, SearchHit, new_id
from ..textual.embed import LangChainEmbedder, as_embedder
from ..textual.filters import MemoryFilter
from ..textual.memory import ids_of
from ..textual.retrieve import BALANCED
from ._common import acting, item_to_document, search_query
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
    and only ever reads, overwrites or deletes documents inside it; an unbound store used inside an agent
    run acts for the run's user. It reads only its own ``kind`` unless ``kinds=[...]`` (or ``"all"``) widens
    that. ``delete()`` returns True only when it deleted something.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> MemOSVectorStore:
        """Over a ``RemoteCube``, the store is a :class:`RemoteVectorStore` (as ``Path()`` is a ``PosixPath``):
        the same API, each operation run by this class on the service, for the key's user."""
        cube = args[0] if args else kwargs.get("cube")
        if cls is MemOSVectorStore and getattr(cube, "is_remote", False) is True:
            cls = RemoteVectorStore
        return super().__new__(cls)

    def __init__(
        self,
        cube: CubeAPI,
        embedding: Embeddings | None = None,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        kind: Kind | str = Kind.DOCUMENT,
        kinds: Sequence[Kind | str] | str | None = None,
        tags: Sequence[str] = (),
        principal: str | None = None,
    ) -> None:
        """A store over ``cube``.

        Args:
            cube: the cube the documents live in.
            embedding: the cube's own embedder as LangChain ``Embeddings`` (checked by fingerprint); None uses it.
            user_id / agent_id / session_id: the scope written on every document and the only one read.
            kind: the kind documents are written as.
            kinds: the kinds read; None reads only ``kind``, ``"all"`` reads every kind.
            tags: tags written on every document.
            principal: who the audit log names for writes (default: the acting user).

        Raises:
            InvalidTypeError: ``cube`` is not a cube.
            EmbedderMismatchError: ``embedding`` is not the model the cube's vectors were made with.
            InvalidInputError: an unknown kind.
        """
        cube = as_cube(cube, "MemOSVectorStore")
        self.cube = cube
        if embedding is not None:
            _check_same_embedder(cube, embedding)
        elif isinstance(cube.embedder, LangChainEmbedder):
            embedding = cube.embedder.embeddings
        else:
            embedding = MemOSEmbeddings(cube.embedder)
        self._embedding: Embeddings = embedding
        self.user_id, self.agent_id = normalize_id(user_id), normalize_id(agent_id, "agent_id")
        self.session_id = normalize_id(session_id, "session_id")
        try:
            self.kind = Kind(kind)
        except ValueError:
            raise InvalidInputError(f"unknown kind {kind!r}; use one of {[k.value for k in Kind]}") from None
        if kinds == "all":
            self.kinds: list[Kind | str] | None = None
        elif isinstance(kinds, str):
            raise InvalidInputError(f"kinds must be a list of kinds or 'all', got {kinds!r}")
        else:
            self.kinds = list(kinds) if kinds is not None else [self.kind]
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
        """Embed and store ``texts``; an id already present gets a new version (never a duplicate).

        An id that exists in another scope, or as another kind, is refused (``AccessDeniedError``, nothing
        written): the store never takes over what it cannot read.
        """
        scope = self._scope()
        items = self._items(texts, metadatas, ids, scope)
        self._check_writable([it.id for it in items], scope)
        self.cube.add_items(items)
        return [it.id for it in items]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Tombstone ``ids``; True when at least one was deleted (absent and out-of-scope ids are skipped)."""
        if ids is None:
            # LangChain lets None mean "everything"; over a shared cube that is too easy to do by accident
            raise InvalidInputError("pass the ids to delete; MemOSVectorStore.delete never deletes everything")
        scope = self._scope()
        found = self.cube.text_mem.get_many(_id_list(ids))
        mine = [it.id for it in found if self._owns(it, scope)]
        if len(mine) < len(found):  # skipped as if absent, but audited like every refusal
            deny(self.cube.audit, "langchain.vectorstore:delete", self._principal(scope),
                 ",".join(sorted(it.id for it in found if it.id not in mine)), "", {"scope": scope})
        deleted = self.cube.delete(mine, principal=self._principal(scope)) if mine else 0
        return deleted > 0

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
        vector = self._embed_query(query)
        return [] if vector is None else self.similarity_search_with_score_by_vector(vector, k, filter=filter)

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
        vector = self._embed_query(query)
        if vector is None:
            return []
        return self.max_marginal_relevance_search_by_vector(vector.tolist(), k, fetch_k, lambda_mult, filter=filter)

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
        store = cls(as_cube(cube, "MemOSVectorStore.from_texts"), embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # -- internals ----------------------------------------------------------------------------
    def _scope(self) -> dict[str, str | None]:
        """The scope this call acts in: the binding, the run's user where the store binds none."""
        scope = acting(self.cube, "this vector store", {"user_id": self.user_id, "agent_id": self.agent_id})
        return {"user_id": scope.user_id, "agent_id": self.agent_id, "session_id": self.session_id}

    def _principal(self, scope: dict[str, str | None]) -> str | None:
        """Who writes: the given principal, else the bound agent (``agent:<id>``, as the other faces and an agent
        key on the service record it), else the user."""
        return self.principal or (f"agent:{scope['agent_id']}" if scope["agent_id"] else scope["user_id"])

    def _reads(self, item: MemoryItem, scope: dict[str, str | None]) -> bool:
        in_scope = all(getattr(item, k) == v for k, v in scope.items() if v is not None)
        return in_scope and (self.kinds is None or item.kind.value in {Kind(k).value for k in self.kinds})

    def _owns(self, item: MemoryItem, scope: dict[str, str | None]) -> bool:
        """Exactly this store's scope and kind: what it may overwrite or delete."""
        return all(getattr(item, k) == v for k, v in scope.items()) and item.kind == self.kind

    def _visible(self, ids: list[str]) -> list[MemoryItem]:
        scope = self._scope()
        return [it for it in self.cube.text_mem.get_many(ids) if self._reads(it, scope)]

    def _check_writable(self, ids: list[str], scope: dict[str, str | None]) -> None:
        """An id held by another scope or kind must not be overwritten (nor moved) through this store."""
        _check_own_ids(ids)
        existing = self.cube.store.get_items(ids, include_deleted=True)
        taken = sorted(i for i, it in existing.items() if not self._owns(it, scope))
        if taken:
            # the audit keeps the details; the message does not say whose the ids are
            raise deny(self.cube.audit, "langchain.vectorstore:write", self._principal(scope), ",".join(taken),
                       f"ids {taken} are not available to this store; nothing was written; choose other ids",
                       {"scope": scope})

    def _items(
        self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None, ids: list[str] | None,
        scope: dict[str, str | None],
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
                    user_id=scope["user_id"], agent_id=scope["agent_id"], session_id=scope["session_id"],
                    tags=list(self.tags), metadata=dict(meta), created_by=self._principal(scope),
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
        scope = self._scope()
        return MemoryFilter(user_id=scope["user_id"], agent_id=scope["agent_id"], session_id=scope["session_id"],
                            kinds=self.kinds, metadata=dict(filter) if filter else None)

    def _embed_query(self, query: str) -> np.ndarray | None:
        """The query's vector; None for a query without words (it matches nothing)."""
        text = search_query(query)
        return None if text is None else self.cube.embedder.embed_query(text)

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


#: item ids other faces derive for their users' keys (LlamaIndex ``li:<digest>:<node id>``, LangGraph
#: ``lg-<digest>``): a document written under one would squat another user's future node or store item
_FACE_KEYS = re.compile(r"li:[0-9a-f]{16}:|lg-[0-9a-f]{32}$")


def _check_own_ids(ids: Sequence[Any]) -> None:
    """Refuse ids in the shapes other faces derive (whether or not such an item exists, so the answer
    says nothing of what the cube holds)."""
    taken = [i for i in ids if isinstance(i, str) and _FACE_KEYS.match(i)]
    if taken:
        raise InvalidInputError(f"ids {taken[:3]} have the form the LlamaIndex and LangGraph faces give their items "
                                "(li:<16 hex>:..., lg-<32 hex>); nothing was written: choose document ids of another form")


def _id_list(ids: Any) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidTypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    return ids_of(ids)


def _check_same_embedder(cube: CubeAPI, embedding: Any) -> None:
    """Vectors from two models in one index are silent garbage: refuse any other model up front.

    Identity, not size: two models with the same dimension differ in their fingerprint (the digest of
    what they compute for a fixed probe, :func:`~memos_integrations.textual.embed.probe_fingerprint`),
    which is compared with the one the cube recorded in ``cube.json`` when it was made.
    """
    given = unwrap(embedding)
    if given is cube.embedder or (isinstance(cube.embedder, LangChainEmbedder) and given is cube.embedder.embeddings):
        return
    emb = as_embedder(given)
    recorded = cube.embedder.fingerprint
    if emb.fingerprint != recorded:
        raise EmbedderMismatchError(
            f"cube {cube.cube_id!r} was built with {cube.embedder.name!r} (fingerprint {recorded}, "
            f"{cube.embedder.dimension} dims) but the vector store was given {emb.name!r} (fingerprint "
            f"{emb.fingerprint}, {emb.dimension} dims); pass the cube's own embedder or leave embedding unset"
        )


class RemoteVectorStore(MemOSVectorStore):
    """``MemOSVectorStore`` over a ``RemoteCube``: what you get from ``MemOSVectorStore(remote_cube)``.

    Each write, delete, read and search is one request (a write over the service's body limit, several:
    see :func:`memos_integrations.remote_vectors.post_rows`) that the service runs with the same class,
    bound to the key's user; the binding given here (``user_id`` etc.) is sent and checked there. Scores,
    filters, MMR and errors are the local store's. ``embedding``, when given, must be the service cube's
    model (checked by fingerprint); queries are embedded on the service otherwise.
    """

    def __init__(self, cube: CubeAPI, embedding: Embeddings | None = None, **kwargs: Any) -> None:
        from ..remote_vectors import check_embedder

        check_embedder(cube)  # type: ignore[arg-type]
        super().__init__(cube, embedding, **kwargs)

    def _body(self, **fields: Any) -> dict[str, Any]:
        scope = self._scope()
        kinds = None if self.kinds is None else [Kind(k).value for k in self.kinds]
        return {"user_id": scope["user_id"], "agent_id": scope["agent_id"], "session_id": scope["session_id"],
                "kind": self.kind.value, "kinds": "all" if kinds is None else kinds, "tags": self.tags, **fields}

    def _post(self, op: str, **fields: Any) -> Any:
        from ..remote_vectors import post

        return post(self.cube, f"/v1/vector-stores/langchain/{op}", self._body(**fields))  # type: ignore[arg-type]

    def add_texts(
        self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
        ids: list[str] | None = None, **kwargs: Any,
    ) -> list[str]:
        from ..remote_vectors import post_rows

        if isinstance(texts, (str, bytes)):
            raise InvalidTypeError("texts must be a list of strings, not one string; wrap it in a list")
        texts = list(texts)
        if not all(isinstance(c, (list, tuple)) and len(c) == len(texts) for c in (ids, metadatas) if c is not None):
            return list(self._post("add", texts=texts, metadatas=metadatas, ids=ids)["ids"])  # the face says what is wrong
        # new ids are made here, so that a write sent as several requests has them all before the first
        ids = [new_id() if i is None else i for i in (ids if ids is not None else [None] * len(texts))]
        columns = {"texts": texts, "metadatas": None if metadatas is None else list(metadatas), "ids": ids}

        def check_whole_write() -> None:  # several requests: refuse here what a later one would be refused
            from ..remote_vectors import check_unique, service_info
            from ..textual.item_checks import check_item

            limit = int(service_info(self.cube)["max_text_chars"])  # type: ignore[arg-type]
            items = self._items(texts, metadatas, ids, self._scope())
            for item in items:
                check_item(item, limit)
            check_unique([it.id for it in items])
            self._post("check", ids=ids)

        return post_rows(self.cube, "/v1/vector-stores/langchain/add", self._body(), columns,  # type: ignore[arg-type]
                         lambda answers: [i for a in answers for i in a["ids"]], before=check_whole_write)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        return bool(self._post("delete", ids=ids)["deleted"])

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        from ..remote import _to_item

        return [item_to_document(_to_item(row)) for row in self._post("get", ids=_id_list(ids))["items"]]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        text = search_query(query)  # the service embeds the query: one request
        return [] if text is None else [(item_to_document(it), s) for it, s, _ in self._remote_nearest(k, filter, query=text)]

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float] | np.ndarray, k: int = 4, filter: Mapping[str, Any] | None = None
    ) -> list[tuple[Document, float]]:
        return [(item_to_document(it), s) for it, s, _ in self._remote_nearest(k, filter, vector=embedding)]

    def _nearest(
        self, embedding: Sequence[float] | np.ndarray, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[MemoryItem, float, np.ndarray]]:
        return self._remote_nearest(k, filter, vector=embedding, with_vectors=True)

    def _remote_nearest(
        self, k: int, filter: Mapping[str, Any] | None, *, vector: Any = None, query: str | None = None,
        with_vectors: bool = False,
    ) -> list[tuple[MemoryItem, float, np.ndarray]]:
        from ..remote import _to_item

        if filter is not None and not isinstance(filter, Mapping):
            self._filter(filter)  # the local store's error, without a request
        if vector is not None:
            array = np.asarray(vector, dtype=np.float64)
            if array.ndim != 1:  # the local store's error; a wrong length is the service's to find
                raise EmbedderMismatchError(f"query vector has shape {array.shape} but this cube's embedder makes "
                                            f"{self.cube.embedder.dimension}-dim vectors; embed with store.embeddings")
            vector = array.tolist()
        data = self._post("nearest", vector=vector, query=query, k=k, filter=dict(filter) if filter else None,
                          with_vectors=with_vectors)
        return [(_to_item(h["item"]), float(h["score"]),
                 np.asarray(h.get("vector", ()), dtype=np.float32)) for h in data["hits"]]
