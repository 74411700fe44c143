# ruff: noqa: F811, F401  (fixtures and test functions are imported so pytest collects them here)
"""The LangGraph saver and store on a PostgreSQL cube: the checkpoint conformance suite at FULL, and
the store's own tests (side by side with LangGraph's InMemoryStore, TTL, namespaces, async twins),
imported from their modules and run here with the ``cube`` / ``shared`` fixtures on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES  # noqa: E402

from tests.pg_server import drop_schema, postgres_dsn  # noqa: E402
from tests.unit.test_langgraph_saver import (  # noqa: E402
    test_async_graph_and_history,
    test_bad_configs_and_unknown_threads,
    test_graph_state_persists_across_savers,
    test_other_users_thread_is_refused_and_audited,
    test_prune_keeps_what_delta_channels_replay_from,
)
from tests.unit.test_langgraph_store import (  # noqa: E402
    test_async_twins_run_off_the_loop,
    test_bad_values_filters_and_ops,
    test_same_observable_results_as_inmemorystore,
    test_semantic_search_uses_fields_and_per_item_index,
    test_ttl_expires_refreshes_and_sweeps,
)


def pg_cube(path: Path, dsn: str, embedder: Any, schemas: list[str]) -> Any:
    from memos_integrations import MemCube
    from memos_integrations.config import CubeConfig, postgres_store

    schemas.append(f"t_{uuid.uuid4().hex[:12]}")
    return MemCube.init_from_dir(path, CubeConfig(store=postgres_store(dsn, schema=schemas[-1])), embedder=embedder)


@pytest.fixture
def cube(tmp_path: Path, postgres_dsn: str, embedder: Any) -> Iterator[Any]:
    schemas: list[str] = []
    c = pg_cube(tmp_path / "cube", postgres_dsn, embedder, schemas)
    yield c
    c.close()
    drop_schema(postgres_dsn, schemas[0])


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str, embedder: Any) -> Iterator[Any]:
    schemas: list[str] = []
    c = pg_cube(tmp_path_factory.mktemp("lgstore") / "cube", postgres_dsn, embedder, schemas)
    yield c, embedder
    c.close()
    drop_schema(postgres_dsn, schemas[0])


async def test_memos_saver_on_postgres_passes_full_conformance(tmp_path: Path, postgres_dsn: str, embedder: Any) -> None:
    from memos_integrations.langgraph import MemOSSaver

    counter = iter(range(100))
    schemas: list[str] = []

    @checkpointer_test(name="MemOSSaver[postgres]")
    async def memos_saver() -> AsyncIterator[MemOSSaver]:
        cube = pg_cube(tmp_path / f"cube{next(counter)}", postgres_dsn, embedder, schemas)
        try:
            yield MemOSSaver(cube)
        finally:
            cube.close()

    try:
        report = await validate(memos_saver)
    finally:
        for schema in schemas:
            drop_schema(postgres_dsn, schema)
    failures = {cap: r.failures for cap, r in report.results.items() if r.passed is not True}
    assert not failures, failures
    assert {c.value for c in ALL_CAPABILITIES} == {cap for cap, r in report.results.items() if r.detected}
    assert report.conformance_level() == "FULL"
