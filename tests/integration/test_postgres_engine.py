# ruff: noqa: F811, F401  (fixtures and test functions are imported so pytest collects them here)
"""The engine's own tests, run on both stores through ONE parametrised fixture (``store_backend``).

Every test below is imported from the module that owns it and runs twice here: on the embedded cube
(SQLite + persistent Chroma) and on a PostgreSQL cube (PostgresStore + pgvector, one fresh schema per
cube, on the session's server: pgserver or ``MEMOS_TEST_POSTGRES_DSN``). The ``cube``, ``make_cube``
and ``db`` fixtures defined here (all from ``store_backend``) replace the embedded-only ones: the core
cube tests, the crash and concurrency tests that take a cube, and the faces' table tests
(tests/unit/test_storage_tables.py, on a bare database). Tests that
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

from memos_integrations.storage.sql import Database, SQLiteDatabase
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
from tests.unit.test_late_tokens import test_late_ranks_exactly_as_learned_without_token_vectors_on_any_store, weights
from tests.unit.test_storage_tables import (
    test_a_newer_component_version_is_refused,
    test_checkpoints_copy_prune_and_delete_in_groups,
    test_checkpoints_put_get_and_list,
    test_langchain_messages,
    test_llama_index_chat,
    test_registry,
    test_store_order_is_first_write_and_survives_updates,
    test_store_ttl_rows,
)


class Backend:
    """One run's store: ``config(**fields)`` makes a CubeConfig on it; ``database()`` a bare Database."""

    def __init__(self, name: str, dsn: str, tmp_path: Path) -> None:
        self.name, self.dsn, self.tmp_path = name, dsn, tmp_path
        self.schemas: list[str] = []
        self.opened: list[Any] = []

    def _schema(self) -> str:
        self.schemas.append(f"t_{uuid.uuid4().hex[:12]}")
        return self.schemas[-1]

    def config(self, **fields: Any) -> Any:
        from memos_integrations.config import CubeConfig, postgres_store

        if self.name == "sqlite":
            return CubeConfig(**fields)
        return CubeConfig(store=postgres_store(self.dsn, schema=self._schema()), **fields)

    def database(self) -> Database:
        from memos_integrations.storage.postgres import PostgresDatabase

        db: Database = (SQLiteDatabase(self.tmp_path / f"tables{len(self.opened)}.db") if self.name == "sqlite"
                        else PostgresDatabase(self.dsn, schema=self._schema()))
        self.opened.append(db)
        return db

    def close(self) -> None:
        for db in self.opened:
            db.close()
        for schema in self.schemas:
            drop_schema(self.dsn, schema)


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest, postgres_dsn: str, tmp_path: Path) -> Iterator[Backend]:
    """THE parametrised fixture: every test here runs once per store; PostgreSQL gets fresh schemas,
    dropped after the test."""
    backend = Backend(request.param, postgres_dsn, tmp_path)
    yield backend
    backend.close()


@pytest.fixture
def db(store_backend: Backend) -> Database:
    """A bare database of this run's kind (the faces' table tests)."""
    return store_backend.database()


@pytest.fixture
def make_cube(tmp_path: Path, embedder: Any, store_backend: Backend) -> Iterator[Callable[..., Any]]:
    from memos_integrations import MemCube

    opened: list[Any] = []

    def make(name: str = "extra", config: Any = None, **kw: Any) -> Any:
        kw.setdefault("embedder", embedder)
        if config is None:
            config = store_backend.config()
        c = MemCube.init_from_dir(tmp_path / name, config, **kw)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def cube(make_cube: Callable[..., Any]) -> Any:
    return make_cube("cube")
