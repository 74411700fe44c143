# ruff: noqa: F811, F401  (fixtures and test functions are imported so pytest collects them here)
"""The engine's own tests, run on both stores through ONE parametrised fixture (``store_backend``).

Every test below is imported from the module that owns it and runs twice here: on the embedded cube
(SQLite + persistent Chroma) and on a PostgreSQL cube (PostgresStore + pgvector, one fresh schema per
cube, on the session's server: pgserver or ``MEMOS_TEST_POSTGRES_DSN``). The ``cube`` and
``make_cube`` fixtures defined here replace the embedded-only ones for these tests. Tests that
cannot hold for PostgreSQL are left out with the reason:

- ``test_dump_and_clone_are_independent_copies``: a PostgreSQL cube is copied with ``pg_dump`` of
  its schema, not into a folder (``PostgresStore.snapshot`` refuses, saying so);
- Chroma-specific fault tests (they patch the Chroma client);
- ``test_stats``: it expects ``vector_backend == "persistent"`` (the stat reports the vector *mode*; a
  pgvector cube's is ``"http"``, on a server).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_concurrency import (
    test_expected_version_is_compare_and_set,
    test_four_threads_updating_one_memory_lose_nothing,
    test_full_reconcile_removes_vectors_of_deleted_items_whose_queue_was_lost,
    test_search_never_returns_a_memory_deleted_by_another_thread,
)
from tests.integration.test_crash import (
    test_a_failing_embedder_writes_nothing,
    test_an_exception_inside_a_batch_rolls_the_whole_batch_back,
    test_reindex_rebuilds_an_emptied_index,
)
from tests.pg_server import drop_schema, postgres_dsn
from tests.unit.test_core_cube import (
    test_audit_log,
    test_delete_all_for_a_user,
    test_delete_is_a_tombstone_and_readding_revives_as_a_new_version,
    test_export_import_jsonl_round_trip_is_lossless,
    test_import_never_rewrites_a_different_history,
    test_import_rejects_a_broken_file_without_writing,
    test_kinds_are_all_storable,
    test_lifecycle_states_and_archived_items,
    test_merge_copies_live_items_and_edges,
    test_merge_refuses_another_embedder,
    test_relations_and_neighbors,
    test_update_keeps_every_version_and_history_returns_them,
    test_update_reembeds_only_when_the_text_changes,
)
from tests.unit.test_filters import test_a_day_as_time_to_includes_that_day


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest, postgres_dsn: str) -> Iterator[Callable[..., Any]]:
    """THE parametrised fixture: a function making a CubeConfig for this run's store (keyword args
    are CubeConfig fields). PostgreSQL cubes get a fresh schema each, dropped after the test."""
    from memos_integrations.config import CubeConfig, postgres_store

    schemas: list[str] = []

    def config(**fields: Any) -> Any:
        if request.param == "sqlite":
            return CubeConfig(**fields)
        schemas.append(f"t_{uuid.uuid4().hex[:12]}")
        return CubeConfig(store=postgres_store(postgres_dsn, schema=schemas[-1]), **fields)

    config.backend = request.param  # type: ignore[attr-defined]
    yield config
    for schema in schemas:
        drop_schema(postgres_dsn, schema)


@pytest.fixture
def make_cube(tmp_path: Path, embedder: Any, store_backend: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    from memos_integrations import MemCube

    opened: list[Any] = []

    def make(name: str = "extra", config: Any = None, **kw: Any) -> Any:
        kw.setdefault("embedder", embedder)
        if config is None:
            config = store_backend()
        c = MemCube.init_from_dir(tmp_path / name, config, **kw)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def cube(make_cube: Callable[..., Any]) -> Any:
    return make_cube("cube")
