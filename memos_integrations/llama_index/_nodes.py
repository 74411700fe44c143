"""Conversions between LlamaIndex nodes and cube items, shared by the stores and the retriever.

Where it sits: pure data mapping plus two small reads (vectors, scope listing) through the cube's
public store API. A LlamaIndex node becomes one :class:`~memos_integrations.items.MemoryItem`:
its text (no metadata) is the item text, the metadata LlamaIndex embeds is the item ``context`` (so
the keyword index and a re-embed see what LlamaIndex embedded), and the node itself travels in the
item metadata in LlamaIndex's own ``node_to_metadata_dict`` form, so it round-trips exactly.

Keys are scoped (:class:`ScopedKeys`): a node id names one item per (store kind, namespace, user),
so the same node id in two namespaces or for two users is two items, and no write reaches another
scope's item. Rows written before keys were scoped (item id = node id, or ``pg:<ns>:<id>``) are still
found and updated in place by the scope that wrote them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from ..access import resolve_scope
from ..errors import AccessDeniedError, EmbedderMismatchError, InvalidInputError
from ..face_api import CubeAPI
from ..items import Kind, Lifecycle, MemoryItem
from ..textual.embed import _PROBE, probe_fingerprint, unit
from ..textual.filters import MemoryFilter
from ..textual.retrieve import SearchPlan

#: every state but the tombstone: what delete and clear act on
NOT_DELETED = [s for s in Lifecycle if s != Lifecycle.DELETED]
#: memory fields a retrieved node carries in its metadata (hidden from the embedder and most from the LLM)
MEMORY_KEYS = ("memory_id", "kind", "user_id", "agent_id", "session_id", "created_at", "event_time",
               "version", "state", "sources", "tags", "confidence", "ranks")


def run_config() -> Any:
    """The config of the LangChain / LangGraph run this call is part of, or None.

    LlamaIndex methods are not handed one; inside a LangGraph node it is in LangChain's context variable.
    Without it a run naming its user only in ``configurable`` would act for nobody (every user's rows).
    Read only when LangChain is already loaded: the LlamaIndex face does not need it.
    """
    module = sys.modules.get("langchain_core.runnables.config")
    return module.var_child_runnable_config.get() if module is not None else None


def acting_user(bound: str | None, cube: CubeAPI, what: str) -> str | None:
    """Who is acting: the object's binding, else the user a run's context or ``configurable`` names, else None.

    A run naming another user than the binding is refused (and audited) by :func:`resolve_scope`.
    """
    return resolve_scope(bound={"user_id": bound}, config=run_config(), audit=cube.audit, what=what,
                         fields=("user_id",)).user_id


@dataclass(frozen=True)
class ScopedKeys:
    """How one scope's node ids map to item ids, and where rows written before scoping are found.

    ``kind`` is ``"vector"`` or ``"graph"``. New items get id ``li:<digest>:<node id>`` and tag
    ``llama_index:<kind>:<namespace>@<digest>``, the digest covering (kind, namespace, user); the
    rows of earlier versions have id ``<node id>`` (vector) or ``pg:<namespace>:<node id>`` (graph)
    and tag ``llama_index:<kind>:<namespace>``.
    """

    kind: str
    namespace: str
    user_id: str | None
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        raw = json.dumps([self.kind, self.namespace, self.user_id]).encode()
        object.__setattr__(self, "digest", hashlib.sha256(raw).hexdigest()[:16])

    @property
    def tag(self) -> str:
        return f"llama_index:{self.kind}:{self.namespace}@{self.digest}"

    @property
    def legacy_tag(self) -> str:
        return f"llama_index:{self.kind}:{self.namespace}"

    def item_id(self, node_id: str) -> str:
        return f"li:{self.digest}:{node_id}"

    def legacy_id(self, node_id: str) -> str:
        return node_id if self.kind == "vector" else f"pg:{self.namespace}:{node_id}"

    def candidates(self, node_ids: Sequence[str]) -> list[str]:
        """Every item id a node id of this scope may be stored under (read with :meth:`filter`)."""
        return [i for n in node_ids for i in (self.item_id(n), self.legacy_id(n))]

    def filter(self, ids: Sequence[str] | None = None, **kw: Any) -> MemoryFilter:
        """This scope's items (and its earlier rows), restricted to the node ids ``ids`` if given."""
        return MemoryFilter(user_id=self.user_id, tags_any=[self.tag, self.legacy_tag],
                            ids=None if ids is None else self.candidates(ids), **kw)

    def owns(self, item: MemoryItem) -> bool:
        return item.user_id == self.user_id and (self.tag in item.tags or self.legacy_tag in item.tags)

    def resolve(self, cube: CubeAPI, node_ids: Sequence[str]) -> dict[str, str]:
        """The item id each node id is written under: this scope's item if one exists, else a new one.

        Raises:
            AccessDeniedError: a node's scoped id is held by a memory this scope does not own (written
                by another face with that id); nothing is written.
        """
        existing = cube.store.get_items(self.candidates(node_ids), include_deleted=True)
        out: dict[str, str] = {}
        for n in node_ids:
            new, old = existing.get(self.item_id(n)), existing.get(self.legacy_id(n))
            if new is not None and not self.owns(new):
                raise AccessDeniedError(
                    f"node id {n!r} maps to a memory this store does not own; nothing was written; use another node id"
                )
            out[n] = self.legacy_id(n) if new is None and old is not None and self.owns(old) else self.item_id(n)
        return out


def check_embed_model(cube: CubeAPI, embed_model: Any, what: str) -> None:
    """Refuse an embedding model that is not the cube's (by fingerprint, not only by dimension).

    Vectors of two models in one index are silent garbage; the fingerprint is a digest of what the
    model computes for a fixed probe text, the same check the cube runs on its own embedder.
    """
    if embed_model is None:
        return
    ours = cube.embedder
    theirs = getattr(embed_model, "fingerprint", None)  # MemOSEmbedding carries it
    if not isinstance(theirs, str) or not theirs:
        get = getattr(embed_model, "get_text_embedding", None)
        if get is None:
            raise EmbedderMismatchError(f"{what} got {type(embed_model).__name__}, which is not a LlamaIndex embedding "
                                        "model; pass MemOSEmbedding.from_cube(cube)")
        vector = np.asarray(get(_PROBE), dtype=np.float32)
        if vector.shape != (ours.dimension,):
            raise EmbedderMismatchError(
                f"{what}: the embed model gives {vector.size}-dim vectors, cube {cube.cube_id!r} holds "
                f"{ours.dimension}-dim ones from {ours.name!r}; pass embed_model=MemOSEmbedding.from_cube(cube)")
        theirs = probe_fingerprint("", unit(vector))
    if theirs != ours.fingerprint:
        raise EmbedderMismatchError(
            f"{what}: the embed model is not the one cube {cube.cube_id!r} was built with ({ours.name!r}, "
            f"fingerprint {ours.fingerprint}); pass embed_model=MemOSEmbedding.from_cube(cube)")


def plan_of(**fields: Any) -> SearchPlan:
    """A validated search plan (bounds such as MMR lambda in [0, 1] are checked)."""
    return SearchPlan.model_validate(fields)


def node_to_item(node: BaseNode, *, tags: list[str], user_id: str | None, kind: Kind = Kind.CHUNK) -> MemoryItem:
    if not isinstance(node, BaseNode):
        raise InvalidInputError(f"expected a LlamaIndex node, got {type(node).__name__}")
    ref = node.ref_doc_id
    return MemoryItem(
        id=node.node_id,
        text=node.get_content(metadata_mode=MetadataMode.NONE),
        kind=kind,
        user_id=user_id,
        tags=list(tags),
        metadata=node_to_metadata_dict(node, remove_text=True, flat_metadata=False),
        parent_id=ref,
        sources=[ref] if ref else [],
        method="llama_index",
        context=node.get_metadata_str(MetadataMode.EMBED),
    )


def item_to_node(item: MemoryItem) -> BaseNode:
    """The node an item was written from, or a ``TextNode`` describing any other memory."""
    if "_node_content" in item.metadata:
        return metadata_dict_to_node(item.metadata, text=item.text)
    meta = {k: v for k, v in item.metadata.items() if not k.startswith("_")}
    node = TextNode(id_=item.id, text=item.text, metadata=meta)
    return node


def with_memory_metadata(node: BaseNode, item: MemoryItem, ranks: dict[str, int] | None = None) -> BaseNode:
    """Add the memory's scope, time, version and provenance to a node's metadata."""
    extra: dict[str, Any] = {
        "memory_id": item.id, "kind": Kind(item.kind).value, "user_id": item.user_id, "agent_id": item.agent_id,
        "session_id": item.session_id, "created_at": item.created_at.isoformat(),
        "event_time": item.event_time.isoformat() if item.event_time else None, "version": item.version,
        "state": Lifecycle(item.state).value, "sources": list(item.sources), "tags": list(item.tags),
        "confidence": item.confidence, "ranks": dict(ranks or {}),
    }
    node.metadata.update(extra)
    # the time and speaker help an LLM answer; ids, ranks and bookkeeping only add noise to prompts
    hidden = [k for k in MEMORY_KEYS if k != "event_time"]
    node.excluded_llm_metadata_keys = sorted({*node.excluded_llm_metadata_keys, *hidden})
    node.excluded_embed_metadata_keys = sorted({*node.excluded_embed_metadata_keys, *MEMORY_KEYS})
    return node


def embeddings_of(nodes: Sequence[Any], dimension: int, embed_missing: bool, embed: Callable[[list[str]], np.ndarray],
                  texts: Sequence[str]) -> np.ndarray | None:
    """One row per node from the nodes' own embeddings, checked before anything is written.

    Nodes without one are embedded with the cube's embedder when ``embed_missing``, else refused.
    Returns None when no node has one and embedding is allowed (the cube embeds them all).
    """
    given = [getattr(n, "embedding", None) for n in nodes]
    missing = [i for i, e in enumerate(given) if e is None]
    if missing and not embed_missing:
        first = getattr(nodes[missing[0]], "node_id", None) or getattr(nodes[missing[0]], "id", "?")
        raise InvalidInputError(
            f"{len(missing)} of {len(nodes)} nodes carry no embedding (first: {first!r}); embed them first "
            "(VectorStoreIndex does, with embed_model=MemOSEmbedding.from_cube(cube)) or create the store "
            "with embed_missing=True to embed them with the cube's embedder"
        )
    for i, e in enumerate(given):
        if e is not None and len(e) != dimension:
            raise EmbedderMismatchError(
                f"node {i} has a {len(e)}-dim embedding but the cube's embedder gives {dimension}; "
                "embed with MemOSEmbedding.from_cube(cube)"
            )
    if len(missing) == len(nodes):
        return None
    matrix = np.zeros((len(nodes), dimension), dtype=np.float32)
    for i, e in enumerate(given):
        if e is not None:
            matrix[i] = np.asarray(e, dtype=np.float32)
    if missing:
        matrix[missing] = embed([texts[i] for i in missing])
    return matrix


def cosine_scores(cube: CubeAPI, ids: Sequence[str], query: np.ndarray) -> dict[str, float]:
    """Cosine similarity of the stored (unit-length) vectors of ``ids`` with ``query``."""
    if not ids:
        return {}
    q = unit(query)
    return {i: float(v @ q) for i, v in cube.store.vectors_by_id(list(ids)).items()}


def query_vector(cube: CubeAPI, embedding: Any, what: str) -> np.ndarray:
    """A query embedding checked against the cube's dimension, as a unit vector."""
    q = np.asarray(embedding, dtype=np.float32)
    if q.shape != (cube.embedder.dimension,):
        raise EmbedderMismatchError(
            f"{what}: the query embedding has shape {q.shape} but the cube's embedder gives "
            f"{cube.embedder.dimension} dims; embed queries with MemOSEmbedding.from_cube(cube)"
        )
    return unit(q)
