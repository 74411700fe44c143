"""Which code builds each configured backend: one lazy table, ``"kind.name"`` -> ``"module:attr"``.

The cube never branches on a backend's name: it looks up ``store.<config.store.backend>``,
``vector.<config.vector.backend>`` and ``graph.<config.graph.backend>`` here and calls what it finds.
Modules are imported only when a cube uses them, so the PostgreSQL or Neo4j drivers are never
imported by an embedded cube. Adding a backend is one entry here plus its config model in
:mod:`memos_integrations.config`.

Factory signatures, by kind (``cube_path`` is the cube's directory, ``create`` is True while the
cube is being created):

- ``store``: ``(config, cube_path, *, create) -> SQLStore``
- ``vector``: ``(config, cube_path, *, cube_id, store) -> VectorIndex``
- ``graph``: ``(config, *, store) -> GraphStore``

Example:
    >>> factory("graph", "sqlite").__name__
    'open_embedded_graph'
    >>> factory("graph", "cassandra")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    memos_integrations.storage.registry.UnknownBackendError: no graph backend 'cassandra' ...
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from ..errors import MemosError

BACKENDS: dict[str, str] = {
    "store.sqlite": "memos_integrations.storage.sqlite:open_sqlite_store",
    "store.postgres": "memos_integrations.storage.postgres_store:open_postgres_store",
    "vector.chroma": "memos_integrations.storage.chroma:open_chroma_index",
    "vector.pgvector": "memos_integrations.storage.pgvector:open_pgvector_index",
    "graph.sqlite": "memos_integrations.storage.graph:open_embedded_graph",
    "graph.neo4j": "memos_integrations.storage.neo4j:open_neo4j_graph",
}

#: Backends the configuration accepts before their code exists, with what to do meanwhile.
PLANNED: dict[str, str] = {}


class UnknownBackendError(MemosError, ValueError):
    """A configuration names a backend this installation does not have."""


def factory(kind: str, name: str) -> Callable[..., Any]:
    """The callable that builds backend ``name`` of ``kind`` (imported on first use).

    Raises:
        UnknownBackendError: no such backend (the message lists those there are).
    """
    key = f"{kind}.{name}"
    target = BACKENDS.get(key)
    if target is None:
        known = sorted(k.split(".", 1)[1] for k in BACKENDS if k.startswith(kind + "."))
        hint = PLANNED.get(key, f"use one of {known}")
        raise UnknownBackendError(f"no {kind} backend {name!r} is available: {hint}")
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)  # type: ignore[no-any-return]


def check(kind: str, name: str) -> None:
    """Raise :class:`UnknownBackendError` now (before any file is written) if ``name`` is unknown."""
    factory(kind, name)
