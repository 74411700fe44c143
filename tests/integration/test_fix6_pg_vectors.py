# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""PostgreSQL stores check vectors as SQLite's do (storage/vector_check, through ``encode_vector``), including
a batch of ``write_items``, which is encoded whole before its rows are sent (so no stored row can refuse it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations.errors import InvalidInputError
from memos_integrations.items import MemoryItem
from tests.pg_server import pg_db, pg_schema, postgres_dsn  # noqa: F401


def test_postgres_refuses_malformed_vectors_and_a_mixed_batch(pg_db: Any, tmp_path: Path) -> None:
    from memos_integrations.storage.postgres_store import PostgresStore

    store = PostgresStore(pg_db, tmp_path / "postgres.store")
    items = [MemoryItem(text=f"fact {n}", user_id="ana") for n in range(3)]
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.ones(4, np.float32), np.ones(6, np.float32)
    with pytest.raises(InvalidInputError, match="first vector has 4"):
        store.write_items(items[:2], ragged)
    assert store.get_items([i.id for i in items]) == {}
    store.write_items(items[:2], np.eye(2, 6, dtype=np.float32))  # the refused batch left no dimension behind
    store.write_items(items[2:], None)
    bads: list[Any] = [None, np.ones(4, np.float32), np.array([np.nan] * 6)]
    for bad in bads:
        with pytest.raises(InvalidInputError, match="vector"):
            store.put_vectors({items[2].id: (items[2].embed_text, bad)})
    assert store.put_vectors({items[2].id: (items[2].embed_text, np.ones(6))}) == 1
    assert {v.shape for v in store.vectors_by_id([i.id for i in items]).values()} == {(6,)}


def test_postgres_a_commit_refused_by_a_deferred_constraint_is_a_memos_error_and_nothing_is_written(pg_db: Any) -> None:
    """A deferred foreign key is checked at COMMIT: the refusal is a ``StorageUnavailableError`` saying nothing was
    written (was a raw psycopg ``ForeignKeyViolation``), and the next write commits on its own."""
    from memos_integrations.errors import StorageUnavailableError

    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        tx.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent (id) "
                   "DEFERRABLE INITIALLY DEFERRED)")
        tx.execute("CREATE TABLE note (x TEXT)")
    with pytest.raises(StorageUnavailableError, match="nothing of it was written"):
        with pg_db.transaction() as tx:
            tx.execute("INSERT INTO note VALUES ('lost')")
            tx.execute("INSERT INTO child VALUES (1, 99)")  # no parent 99: the COMMIT itself fails
    with pg_db.transaction() as tx:
        tx.execute("INSERT INTO note VALUES ('kept')")
    assert [tuple(r) for r in pg_db.read("SELECT x FROM note")] == [("kept",)]
    assert [tuple(r) for r in pg_db.read("SELECT count(*) FROM child")] == [(0,)]
