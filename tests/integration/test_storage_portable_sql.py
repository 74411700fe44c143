"""The engine's shared SQL runs unchanged on a real PostgreSQL (pgserver, loopback/socket only).

This is not the PostgreSQL store (that backend adds a pool, ``tsvector`` keyword search and jsonb filters):
it is the seam's proof that everything :class:`SQLStore` writes outside its dialect hooks, and the
engine's PostgreSQL DDL steps, are accepted by PostgreSQL 16 as they are written.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations.items import Edge, Lifecycle, MemoryItem
from memos_integrations.storage.sql import Cursor, Database, Row, Tx, to_pyformat
from memos_integrations.storage.sqlstore import POSTGRES_ENGINE_STEPS, SQLStore
from memos_integrations.textual.filters import MemoryFilter

pgserver = pytest.importorskip("pgserver")
psycopg = pytest.importorskip("psycopg")


class _Tx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(to_pyformat(sql), list(params))  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(to_pyformat(sql), [list(r) for r in rows])

    def lock(self, key: str) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


class _OneConnection(Database):
    """The smallest PostgreSQL Database: one connection, one transaction at a time (test only)."""

    dialect = "postgres"

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.lock = threading.RLock()
        self.depth = 0

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.lock:
            if self.depth:
                yield _Tx(self.conn)
                return
            self.depth += 1
            try:
                with self.conn.transaction():
                    yield _Tx(self.conn)
            finally:
                self.depth -= 1

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.lock:
            return [tuple(r) for r in self.conn.execute(to_pyformat(sql), list(params)).fetchall()]

    def close(self) -> None:
        self.conn.close()


class _PortableOnly(SQLStore):
    """SQLStore with the PostgreSQL DDL and no keyword index (its hooks write nothing)."""

    migrations = {"postgres": POSTGRES_ENGINE_STEPS}
    NO_LIMIT = None

    def _index_text(self, tx: Tx, rid: int, text: str) -> None:
        pass

    def _unindex_text(self, tx: Tx, rid: int) -> None:
        pass

    def decode_vectors(self, blobs: Sequence[Any]) -> np.ndarray:
        return super().decode_vectors([bytes(b) for b in blobs])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    # a folder of its own, not pytest's basetemp: concurrent pytest runs prune old basetemp folders,
    # which removed a running server's data directory once
    folder = tempfile.mkdtemp(prefix="memos-seam-pg-")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_shared_engine_sql_runs_on_postgresql(postgres: str, tmp_path: Path) -> None:
    store = _PortableOnly(_OneConnection(postgres), tmp_path / "memory.db")
    try:
        assert store.schema_version == len(POSTGRES_ENGINE_STEPS)
        items = [MemoryItem(id=f"m{i}", text=f"note {i}", user_id="ana" if i else None) for i in range(3)]
        store.write_items(items, np.eye(3, 4, dtype=np.float32))
        assert sorted(store.get_items(["m0", "m1", "m2"])) == ["m0", "m1", "m2"]
        assert [it.id for it in store.list_items(MemoryFilter(user_id="ana"))] == ["m1", "m2"]
        assert store.count() == 3 and len(store.candidate_rids(MemoryFilter(), None)) == 3
        rids, matrix = store.vectors_for(store.candidate_rids(MemoryFilter(), None))
        assert matrix.shape == (3, 4)
        store.write_items([items[1].evolve(version=2, text="note one")], None)
        assert [v.version for v in store.history("m1")] == [1, 2]
        assert [i for i, _ in store.outbox()] == ["m0", "m2", "m1"]
        store.clear_outbox(store.outbox_entries())
        store.queue_index(["m0"], target="graph")
        assert store.outbox("graph") == [("m0", "upsert")] and store.outbox() == []
        store.add_edges([Edge("m1", "m2", "about"), Edge("m1", "m2", "about", 0.5)])
        assert store.edges(["m2"], "in")[0].weight == 0.5 and [e.dst for e in store.iter_edges()] == ["m2"]
        assert store.edges_from_prefixes(["m"]) and store.remove_edges(src="m1") == 1
        store.audit("add", "ana", "m1", {"n": 1}, True)
        assert store.audit_log()[0]["detail"] == {"n": 1}
        store.kv_put("c", {"k": [1]})
        assert store.kv_get("c", ["k"]) == {"k": [1]} and store.kv_delete("c", ["k"]) == 1
        store.touch(["m1"])
        store.flush_usage()
        assert store.ids_used_at_least(Lifecycle.GENERATED, 1) == ["m1"]
        assert store.user_ids() == [None, "ana"] and len(store.rids_of_user(None, [Lifecycle.GENERATED], 5)) == 1
        assert store.most_used([Lifecycle.GENERATED], None, 1, last=Lifecycle.ACTIVATED) == ["m1"]
        assert [row.id for row, _ in store.indexable()] == ["m0", "m1", "m2"]
        assert list(store.iter_ids()) == ["m0", "m1", "m2"]
        assert store.state_kind_counts() == [("generated", "fact", 3)]
        assert store.table_counts() == {"versions": 4, "edges": 0}
    finally:
        store.close()
