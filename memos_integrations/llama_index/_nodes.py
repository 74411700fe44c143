"""Conversions between LlamaIndex nodes and cube items, shared by the stores and the retriever.

Where it sits: pure data mapping plus two small reads (vectors, scope listing) through the cube's
public store API. A LlamaIndex node becomes one :class:`~memos_integrations.items.MemoryItem`:
its text (no metadata) is the item text, the metadata LlamaIndex embeds is the item ``context`` (so
the keyword index and a re-embed see what LlamaIndex embedded), and the node itself travels in the
item metadata in LlamaIndex's own ``node_to_metadata_dict`` form, so it round-trips exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from ..errors import EmbedderMismatchError, InvalidInputError
from ..items import Kind, Lifecycle, MemoryItem
from ..textual.retrieve import SearchPlan

T = TypeVar("T")

#: every state but the tombstone: what delete and clear act on
NOT_DELETED = [s for s in Lifecycle if s != Lifecycle.DELETED]
#: memory fields a retrieved node carries in its metadata (hidden from the embedder and most from the LLM)
MEMORY_KEYS = ("memory_id", "kind", "user_id", "agent_id", "session_id", "created_at", "event_time",
               "version", "state", "sources", "tags", "confidence", "ranks")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The async policy in one place: the synchronous core runs in a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


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


def cosine_scores(store: Any, ids: Sequence[str], query: np.ndarray) -> dict[str, float]:
    """Cosine similarity of the stored (normalised) vectors of ``ids`` with ``query``."""
    if not ids:
        return {}
    q = np.asarray(query, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    rows = store.read(
        f"SELECT items.id, vectors.vector FROM items JOIN vectors ON vectors.rid = items.rid "
        f"WHERE items.id IN ({','.join('?' * len(ids))})", list(ids),
    )
    return {i: float(np.frombuffer(blob, dtype=np.float32) @ q) for i, blob in rows}
