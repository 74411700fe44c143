"""The storage protocols: what the engine asks of a backend, and the plain types they exchange.

- the **Store** is the truth (items, versions, keyword search, edges, audit, kv, outboxes, jobs, and
  the faces' tables), over a :class:`~memos_integrations.storage.sql.Database`;
- a **VectorIndex** is derived from it (Chroma, pgvector) and takes a :class:`VectorFilter`, a neutral
  filter each adapter translates in its own module (the engine never writes Chroma or SQL syntax);
- a **GraphStore** answers neighbourhood questions (the embedded edges, or a Neo4j projection);
  ``supports_cypher`` says whether :meth:`GraphStore.cypher` runs (callers read the flag, never the
  backend's name).

Implementations: :class:`~memos_integrations.storage.sqlstore.SQLStore` (the SQL store, written once in
the portable dialect) and its :class:`~memos_integrations.storage.sqlite.SQLiteStore`;
:class:`~memos_integrations.storage.chroma.ChromaIndex`; :class:`~memos_integrations.storage.graph.EmbeddedGraph`.
Backends are chosen by name through :mod:`memos_integrations.storage.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import MemosError
from ..items import Edge


@dataclass(frozen=True)
class VectorFilter:
    """The scope part of a search that an ANN index evaluates itself; ``None`` means any.

    Every field is a tuple of allowed values (OR within a field, AND across fields). Anything richer
    (metadata, tags, time) is checked against the truth after the index answers.
    """

    user_id: tuple[str, ...] | None = None
    agent_id: tuple[str, ...] | None = None
    session_id: tuple[str, ...] | None = None
    kind: tuple[str, ...] | None = None
    state: tuple[str, ...] | None = None

    FIELDS = ("user_id", "agent_id", "session_id", "kind", "state")

    def conditions(self) -> list[tuple[str, tuple[str, ...]]]:
        """(field, allowed values) for each field that narrows."""
        return [(f, v) for f in self.FIELDS if (v := getattr(self, f)) is not None]


@dataclass(frozen=True)
class IndexRow:
    """What a vector index stores beside each vector: the id and the fields a VectorFilter reads."""

    id: str
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    kind: str | None = None
    state: str | None = None


class VectorIndex(Protocol):
    """A derived ANN index over item vectors; rebuildable from the Store at any time."""

    def upsert(self, rows: Sequence[IndexRow], vectors: np.ndarray) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def query(self, vector: np.ndarray, k: int, where: VectorFilter | None = None) -> list[tuple[str, float]]:
        """The ``k`` nearest ids within ``where`` with their cosine similarity (1 - cosine distance),
        most similar first (the engine ranks and thresholds on similarity)."""

    def ids(self) -> set[str]: ...

    def count(self) -> int: ...

    def reset(self) -> None: ...


class CypherUnsupportedError(MemosError, NotImplementedError):
    """The cube's graph backend runs no Cypher (the embedded graph); configure the Neo4j backend."""


class GraphStore(Protocol):
    """What the engine needs from a graph backend: typed edges between item ids.

    ``supports_cypher`` is a capability flag: True only where :meth:`cypher` runs queries (a Neo4j
    projection); elsewhere ``cypher`` raises :class:`CypherUnsupportedError`.
    """

    supports_cypher: bool

    def add_edges(self, edges: Sequence[Edge]) -> None: ...

    def remove_edges(self, src: str | None = None, dst: str | None = None, type: str | None = None) -> int: ...

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]:
        """Edges touching ``ids``: ``out`` (leaving them), ``in`` (entering them) or ``both``."""

    def neighbors(
        self, ids: Sequence[str], depth: int = 1, types: Sequence[str] | None = None
    ) -> dict[str, tuple[str, int, float]]:
        """Items within ``depth`` hops of ``ids`` (either direction): id -> (seed it came from, hops, weight)."""

    def cypher(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only Cypher query; rows as dicts. Raises CypherUnsupportedError where unsupported."""


@dataclass
class Job:
    """One unit of durable background work in a cube's store (a reader window, an organise pass).

    ``key`` makes a job idempotent: enqueueing a key that exists already does nothing, so the same
    window is never read twice. A claimed job carries a lease; a worker that dies lets it expire and
    another claims it again (``attempts`` counts the claims).
    """

    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    state: str  # queued | running | done | failed
    user_id: str | None = None
    attempts: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    lease_until: float | None = None
    not_before: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
