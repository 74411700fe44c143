"""Which backends a :class:`~memos_integrations.cube.MemCube` opens: its store, vector index and graph.

Split out of :mod:`.cube`: each is looked up by name in :mod:`.storage.registry` from the cube's
config, so a backend added to the registry is opened here without a change to the cube.
"""

from __future__ import annotations

from pathlib import Path

from .config import CubeConfig
from .storage import registry
from .storage.base import GraphStore, VectorIndex
from .storage.sqlstore import SQLStore


def _check_backends(config: CubeConfig) -> None:
    registry.check("store", config.store.backend)
    registry.check("vector", config.vector.backend)
    registry.check("graph", config.graph.backend)


def _open_store(path: Path, config: CubeConfig, *, create: bool) -> SQLStore:
    return registry.factory("store", config.store.backend)(config.store, path, create=create)  # type: ignore[no-any-return]


def _open_index(path: Path, config: CubeConfig, store: SQLStore | None = None) -> VectorIndex:
    factory = registry.factory("vector", config.vector.backend)
    return factory(config.vector, path, cube_id=config.cube_id, store=store)  # type: ignore[no-any-return]


def _open_graph(config: CubeConfig, store: SQLStore) -> GraphStore:
    return registry.factory("graph", config.graph.backend)(config.graph, store=store)  # type: ignore[no-any-return]
