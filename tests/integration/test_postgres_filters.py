# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""Metadata filters in PostgreSQL's dialect select what the Python reference (and SQLite) select.

The generated rows and conditions, the reference evaluator and the worked examples are those of
``tests/unit/test_filters_extended.py``; here the compiled SQL runs on a real PostgreSQL through
:class:`PostgresFilterDialect` (jsonb at bound paths, through the functions the store's migration made).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from memos_integrations.storage.filter_sql import compile_filter
from memos_integrations.storage.postgres import PostgresDatabase
from memos_integrations.storage.postgres_store import POSTGRES_FILTERS, PostgresStore
from memos_integrations.textual.filters import MemoryFilter
from tests.pg_server import drop_schema, postgres_dsn  # noqa: F401
from tests.unit.test_filters_extended import ROWS, ref, rows_st, tree_st


@pytest.fixture(scope="module")
def store(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresStore]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    s = PostgresStore(PostgresDatabase(postgres_dsn, schema=schema), Path(tmp_path_factory.mktemp("f")) / "x")
    with s.db.transaction() as tx:
        tx.execute("CREATE TABLE f (rid INTEGER PRIMARY KEY, metadata TEXT NOT NULL, tags TEXT NOT NULL)")
    yield s
    s.close()
    drop_schema(postgres_dsn, schema)


def pg_select(store: PostgresStore, rows: list[Any], flt: MemoryFilter) -> set[int]:
    where, params = compile_filter(flt, "f", POSTGRES_FILTERS)
    with store.db.transaction() as tx:
        tx.execute("DELETE FROM f")
        tx.executemany("INSERT INTO f (rid, metadata, tags) VALUES (?, ?, ?)",
                       [(i, json.dumps(m), json.dumps(m.get("l", []))) for i, m in enumerate(rows)])
        return {int(r[0]) for r in tx.execute(f"SELECT rid FROM f WHERE {where}", params).fetchall()}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(rows=rows_st, tree=tree_st)
def test_sql_matches_the_reference(store: PostgresStore, rows: list[dict[str, Any]], tree: dict[str, Any]) -> None:
    assert pg_select(store, rows, MemoryFilter(states=None, metadata=tree)) == \
        {i for i, m in enumerate(rows) if ref(m, tree)}


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ({"tags": {"$contains": "red"}}, {0, 1}),
        ({"tags": {"$all": ["red", "blue"]}}, {0}),
        ({"tags": {"$all": []}}, {0, 1, 2}),
        ({"tags": {"$any": ["blue", "green"]}}, {0}),
        ({"title": {"$text_match": "Tea"}}, {0}),
        ({"title": {"$text_match_insensitive": "TEA"}}, {0, 1}),
        ({"tags": {"$is_empty": True}}, {2, 3}),
        ({"year": {"$is_empty": False}}, {0, 1}),
        ({"$not": {"year": {"$gt": 2019}}}, {1, 2, 3}),
        ({"$or": [{"year": 2018}, {"title": "Oolong"}]}, {1, 3}),
        ({"$and": [{"tags": {"$contains": "red"}}, {"$not": {"year": 2018}}]}, {0}),
        ({"title": {"$contains": "Tea"}}, {0}),
        ({"year": {"$in": [2018, 2020.0]}}, {0, 1}),
        ({"year": None}, {2, 3}),
        ({"flag": True}, set()),
    ],
)
def test_examples(store: PostgresStore, tree: dict[str, Any], expected: set[int]) -> None:
    assert pg_select(store, ROWS, MemoryFilter(states=None, metadata=tree)) == expected


def test_item_tags_any_and_all(store: PostgresStore) -> None:
    """The ``tags`` column filters (``tags_any`` / ``tags_all``), with the rows' ``l`` lists as tags."""
    rows = [{"l": ["a", "b"]}, {"l": ["b"]}, {"l": []}, {}]
    assert pg_select(store, rows, MemoryFilter(states=None, tags_any=["a", "c"])) == {0}
    assert pg_select(store, rows, MemoryFilter(states=None, tags_any=["b"])) == {0, 1}
    assert pg_select(store, rows, MemoryFilter(states=None, tags_all=["a", "b"])) == {0}
