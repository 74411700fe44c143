"""The cube's ``GraphStore`` when its graph is projected onto a Bolt server: :class:`ProjectedGraph`.

Split out of :mod:`memos_integrations.storage.neo4j` (which keeps the Bolt adapter, :class:`Neo4jGraph`,
and re-exports these names): this module is the wiring between the cube's truth (the store's ``edges``
and ``items`` tables, via the outbox target ``"graph"``) and the projection, and the registry's
``graph.neo4j`` factory, :func:`open_neo4j_graph`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import GraphUnavailableError, InvalidInputError
from ..items import Edge
from .neo4j import BATCH, TEXT_CHARS, GraphNode, Neo4jGraph, check_read_only
from .sqlstore_aux import GRAPH

_log = logging.getLogger("memos_integrations.storage.neo4j")

__all__ = ["GRAPH_TARGET", "ProjectedGraph", "open_neo4j_graph"]

GRAPH_TARGET = GRAPH  # the outbox target this projection drains
_Q_TRUTH_IDS = "SELECT id FROM items"
_Q_TRUTH_EDGE_ENDS = "SELECT src, dst FROM edges"


class ProjectedGraph:
    """The cube's ``GraphStore`` when its graph is projected onto a Bolt server.

    The truth stays the store's ``edges`` table (the embedded graph): a write commits the edges and,
    in the same transaction, queues their endpoints in the outbox (target ``"graph"``); the
    projection is brought up to date after the commit (:meth:`sync`) and on open. Item writes reach
    it through :meth:`follow_items`, which the vector-outbox drain calls with the ids it drains, so an
    item's node follows its kind, state and text. Reads (:meth:`neighbors`, :meth:`edges`,
    :meth:`cypher`) go to the projection after applying what is queued; when the server does not
    answer, ``neighbors`` and ``edges`` answer from the truth (logged), ``cypher`` raises.

    One drain at a time, across processes, under ``<cube>/graph.lock``: a drain reads the truth and
    writes it out, so two overlapping drains could otherwise write an older read last.
    """

    supports_cypher = True
    #: after the server failed to answer, writes and reads skip it for this many seconds (reads answer
    #: from the truth, writes stay queued), so a search never waits on a server that is down
    cooldown = 5.0

    def __init__(self, store: Any, projection: Neo4jGraph) -> None:
        from ..cubelock import IndexWriteLock
        from .graph import EmbeddedGraph

        self.store = store
        self.truth = EmbeddedGraph(store)
        self.projection = projection
        path = getattr(store, "path", None)
        self.lock = IndexWriteLock(path.with_name("graph.lock") if path is not None else None)
        self._down_until = 0.0

    # -- writes: the truth first, the projection after the commit ----------------------------------
    def add_edges(self, edges: Sequence[Edge]) -> None:
        if not edges:
            return
        with self.store.transaction():
            self.truth.add_edges(edges)
            self.store.queue_index(sorted({e.src for e in edges} | {e.dst for e in edges}), target=GRAPH_TARGET)
        self.sync_quietly()

    def remove_edges(self, src: str | None = None, dst: str | None = None, type: str | None = None) -> int:
        with self.store.transaction():
            ends = self._edge_ends(src, dst, type)
            removed = self.truth.remove_edges(src, dst, type)
            if ends:
                self.store.queue_index(sorted(ends), target=GRAPH_TARGET)
        self.sync_quietly()
        return removed

    def follow_items(self, ids: Sequence[str]) -> None:
        """Queue item writes for the projection (called by the vector drain before it clears its rows)."""
        if ids:
            self.store.queue_index(list(ids), target=GRAPH_TARGET)
            self.sync_quietly()

    def _edge_ends(self, src: str | None, dst: str | None, type: str | None) -> set[str]:
        clauses, params = [], []
        for col, val in (("src", src), ("dst", dst), ("type", type)):
            if val is not None:
                clauses.append(f"{col} = ?")
                params.append(val)
        if not clauses:
            raise InvalidInputError("remove_edges needs at least one of src, dst, type")
        rows = self.store.db.read(f"{_Q_TRUTH_EDGE_ENDS} WHERE {' AND '.join(clauses)}", params)
        return {r[0] for r in rows} | {r[1] for r in rows}

    # -- the drain ---------------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self.store.outbox_entries(GRAPH_TARGET))

    def sync(self) -> int:
        """Apply the queued graph writes; returns how many ids were applied.

        Raises:
            GraphUnavailableError: the server does not answer (the rows stay queued).
        """
        applied = 0
        with self.lock.hold():
            pending = self.store.outbox_entries(GRAPH_TARGET)
            try:
                for start in range(0, len(pending), BATCH):
                    batch = pending[start : start + BATCH]
                    ids = [i for i, _ in batch]
                    items = self.store.get_items(ids, include_deleted=True)
                    nodes = [GraphNode(i, it.user_id, _value(it.kind), _value(it.state), it.text[:TEXT_CHARS])
                             for i, it in items.items()]
                    self.projection.sync(ids, nodes, self.truth.edges(ids, "both"))
                    self.store.clear_outbox(batch, GRAPH_TARGET)
                    applied += len(batch)
            except GraphUnavailableError:
                self._down_until = time.monotonic() + self.cooldown
                raise
        self._down_until = 0.0
        return applied

    def sync_quietly(self) -> bool:
        """:meth:`sync` after a committed write: a server that does not answer is logged, not raised
        (the write is stored; its graph rows stay queued for the next write, read or open)."""
        if time.monotonic() < self._down_until:
            return False
        try:
            self.sync()
            return True
        except GraphUnavailableError as exc:
            _log.warning("the graph write is stored in the cube and queued, but the graph server did not take it: %s", exc)
            return False

    def rebuild(self) -> int:
        """Replace this cube's projection with one built from the truth (``memcube reindex --graph``)."""
        with self.lock.hold():
            ids = {r[0] for r in self.store.db.read(_Q_TRUTH_IDS)}
            for src, dst in self.store.db.read(_Q_TRUTH_EDGE_ENDS):
                ids.update((src, dst))
            self.projection.clear()
            self.store.queue_index(sorted(ids), target=GRAPH_TARGET)
            return self.sync()

    def reconcile(self) -> dict[str, int]:
        """Replay what the outbox holds (after a crash or while the server was down)."""
        try:
            return {"graph_replayed": self.sync()}
        except GraphUnavailableError as exc:
            _log.warning("the cube opened, but its graph projection is behind: %s", exc)
            return {"graph_replayed": 0}

    # -- reads: the projection, up to date ---------------------------------------------------------
    def _fresh(self) -> bool:
        """Apply queued writes before a read; False when the server does not answer (or did not lately)."""
        if time.monotonic() < self._down_until:
            return False
        return self.sync_quietly() if self.store.outbox_entries(GRAPH_TARGET) else True

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]:
        if self._fresh():
            try:
                return self.projection.edges(ids, direction, types)
            except GraphUnavailableError as exc:
                self._down_until = time.monotonic() + self.cooldown
                _log.warning("graph server unavailable, edges read from the cube itself: %s", exc)
        return self.truth.edges(ids, direction, types)

    def neighbors(
        self, ids: Sequence[str], depth: int = 1, types: Sequence[str] | None = None
    ) -> dict[str, tuple[str, int, float]]:
        """The projection's answer (a walk stays within its seed's user); the truth's when the server
        does not answer, so retrieval keeps working."""
        if self._fresh():
            try:
                return self.projection.neighbors(ids, depth, types)
            except GraphUnavailableError as exc:
                self._down_until = time.monotonic() + self.cooldown
                _log.warning("graph server unavailable, neighbours read from the cube itself: %s", exc)
        return self.truth.neighbors(ids, depth, types)

    def cypher(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """See :meth:`Neo4jGraph.cypher`; queued writes are applied first, so a query sees them.

        Raises:
            CypherNotAllowedError: the query would write.
            GraphUnavailableError: the server does not answer (retry once it is up).
        """
        check_read_only(query)
        self.sync()
        return self.projection.cypher(query, params)

    def close(self) -> None:
        self.projection.close()


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def open_neo4j_graph(config: Any, *, store: Any) -> ProjectedGraph:
    """The registry's ``graph.neo4j`` factory: the cube's graph projected onto ``config.uri``.

    The password comes from the config object it was given in this process (``neo4j_graph(auth=...)``)
    or from the environment variable ``config.password_env`` (default :data:`PASSWORD_ENV`); a driver
    passed to ``neo4j_graph(driver=...)`` is used as it is.

    Raises:
        InvalidInputError: no uri and no driver.
    """
    import os

    driver = getattr(config, "_driver", None)
    password = getattr(config, "_password", None)
    if password is None:
        password = os.environ.get(config.password_env)
    auth = (config.user, password) if password is not None else None
    if driver is None and not config.uri:
        raise InvalidInputError("a neo4j graph needs a uri: neo4j_graph('bolt://host:7687', auth=(user, password))")
    projection = Neo4jGraph(
        driver, uri=config.uri, auth=auth, database=config.database, namespace=config.namespace or "default",
        message_bytes=config.message_bytes,
    )
    return ProjectedGraph(store, projection)
