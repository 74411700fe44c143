"""The embedded graph: typed relations between items in the store's own ``edges`` table.

Edges live in the same database as the items, so they join the same transactions (an item and its
relations commit together). Retrieval uses :meth:`EmbeddedGraph.neighbors` to expand a hit to the
items around it (the turn before and after, the document a chunk came from). It runs no Cypher:
``supports_cypher`` is False and :meth:`EmbeddedGraph.cypher` says to configure the Neo4j backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..items import Edge
from .base import CypherUnsupportedError

if TYPE_CHECKING:
    from .sqlstore import SQLStore

#: Relation types the engine itself writes.
NEXT = "next"  # a turn to the turn that follows it in the same session
PARENT = "parent"  # a child (chunk, turn) to its parent (document, session)
DERIVED_FROM = "derived_from"  # a fact or summary to the items it was read from
SUMMARIZED_BY = "summarized_by"  # a memory to the summary (topic cluster or session episode) over it
SUPERSEDED_BY = "superseded_by"  # an old version of a fact to the memory that replaced it (the LLM reader)
SAME_ENTITY = "same_entity"  # a memory to the previous memory naming the same entity (metadata: entity)
BEFORE = "before"  # an earlier session's episode to the next one of the same user
CONFLICT = "conflict"  # a memory to an older one it contradicts (metadata: entity, attribute, values, status)


class EmbeddedGraph:
    """The graph in the cube's own store (any :class:`~memos_integrations.storage.sqlstore.SQLStore`)."""

    supports_cypher = False

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    def add_edges(self, edges: Sequence[Edge]) -> None:
        self.store.add_edges(edges)

    def remove_edges(self, src: str | None = None, dst: str | None = None, type: str | None = None) -> int:
        return self.store.remove_edges(src, dst, type)

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]:
        return self.store.edges(ids, direction, types)

    def cypher(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        raise CypherUnsupportedError(
            "this cube's graph is the embedded one (edges in its own database), which runs no Cypher; "
            "configure the Neo4j graph backend (CubeConfig(graph=GraphConfig(backend='neo4j', uri=...))) for "
            "cube.graph.cypher, or use cube.neighbors / graph.edges")

    def neighbors(
        self, ids: Sequence[str], depth: int = 1, types: Sequence[str] | None = None
    ) -> dict[str, tuple[str, int, float]]:
        """Items within ``depth`` hops of ``ids`` (either direction): id -> (seed it came from, hops, weight)."""
        seen = set(ids)
        found: dict[str, tuple[str, int, float]] = {}
        frontier = {i: (i, 1.0) for i in ids}
        for hop in range(1, depth + 1):
            nxt: dict[str, tuple[str, float]] = {}
            for src, dst, w in self.store.edge_links(list(frontier), types):  # as edges(..., "both"), no JSON
                for here, there in ((src, dst), (dst, src)):
                    if here in frontier and there not in seen:
                        seed, weight = frontier[here]
                        if there not in nxt or nxt[there][1] < weight * w:
                            nxt[there] = (seed, weight * w)
            for node, (seed, weight) in nxt.items():
                seen.add(node)
                found[node] = (seed, hop, weight)
            frontier = nxt
            if not frontier:
                break
        return found


#: The name this class had when the embedded store was SQLite only.
SQLiteGraph = EmbeddedGraph


def open_embedded_graph(config: Any, *, store: SQLStore) -> EmbeddedGraph:
    """The registry's ``graph.sqlite`` factory: edges in the cube's own store."""
    return EmbeddedGraph(store)
