"""The cube's graph: typed relations between items and the parent tree, behind one protocol.

The embedded backend keeps edges in the cube's SQLite (the ``edges`` table), so the graph is part of
the same transactions as the items. Retrieval uses :meth:`GraphStore.neighbors` to expand a hit to
the items around it (the turn before and after, the document a chunk came from).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..items import Edge
from .store import SQLiteStore

#: Relation types the engine itself writes.
NEXT = "next"  # a turn to the turn that follows it in the same session
PARENT = "parent"  # a child (chunk, turn) to its parent (document, session)
DERIVED_FROM = "derived_from"  # a fact or summary to the items it was read from


class GraphStore(Protocol):
    """What the engine needs from a graph backend."""

    supports_cypher: bool

    def add_edges(self, edges: Sequence[Edge]) -> None: ...

    def remove_edges(self, src: str | None = None, dst: str | None = None, type: str | None = None) -> int: ...

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]: ...

    def neighbors(
        self, ids: Sequence[str], depth: int = 1, types: Sequence[str] | None = None
    ) -> dict[str, tuple[str, int, float]]: ...


class SQLiteGraph:
    """The embedded graph in the cube's own database."""

    supports_cypher = False

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def add_edges(self, edges: Sequence[Edge]) -> None:
        self.store.add_edges(edges)

    def remove_edges(self, src: str | None = None, dst: str | None = None, type: str | None = None) -> int:
        return self.store.remove_edges(src, dst, type)

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]:
        return self.store.edges(ids, direction, types)

    def neighbors(
        self, ids: Sequence[str], depth: int = 1, types: Sequence[str] | None = None
    ) -> dict[str, tuple[str, int, float]]:
        """Items within ``depth`` hops of ``ids`` (either direction): id -> (seed it came from, hops, weight)."""
        seen = set(ids)
        found: dict[str, tuple[str, int, float]] = {}
        frontier = {i: (i, 1.0) for i in ids}
        for hop in range(1, depth + 1):
            nxt: dict[str, tuple[str, float]] = {}
            for edge in self.edges(list(frontier), "both", types):
                for here, there in ((edge.src, edge.dst), (edge.dst, edge.src)):
                    if here in frontier and there not in seen:
                        seed, weight = frontier[here]
                        if there not in nxt or nxt[there][1] < weight * edge.weight:
                            nxt[there] = (seed, weight * edge.weight)
            for node, (seed, weight) in nxt.items():
                seen.add(node)
                found[node] = (seed, hop, weight)
            frontier = nxt
            if not frontier:
                break
        return found
