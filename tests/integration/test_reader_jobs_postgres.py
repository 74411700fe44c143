"""The job queue and the usage ledger on a real PostgreSQL 16 (pgserver): their postgres DDL and their
portable SQL run unchanged. The ``Database`` over psycopg here is the smallest one that fits the
protocol of storage/sql.py (this branch has no PostgreSQL backend of its own yet)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.storage.jobs import JobQueue
from memos_integrations.storage.reader_usage import UsageLedger
from memos_integrations.storage.sql import Database, Row, to_pyformat

pgserver = pytest.importorskip("pgserver")
psycopg = pytest.importorskip("psycopg")


class _Tx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(to_pyformat(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(to_pyformat(sql), [tuple(r) for r in rows])

    def lock(self, key: str) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


class PgDatabase(Database):
    dialect = "postgres"

    def __init__(self, uri: str) -> None:
        self.conn = psycopg.connect(uri, autocommit=True)
        self.depth = 0

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
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
        return list(self.conn.execute(to_pyformat(sql), tuple(params)).fetchall())

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgDatabase]:
    server = pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    db = PgDatabase(server.get_uri())
    yield db
    db.close()
    server.cleanup()


def test_job_queue_on_postgres(pg: PgDatabase) -> None:
    queue = JobQueue(pg)
    job, created = queue.enqueue("read", "k1", {"ids": ["a"]}, user_id="u")
    assert created and not queue.enqueue("read", "k1", {})[1]
    claimed = queue.claim("read", lease_s=60)
    assert claimed is not None and claimed.id == job.id and claimed.attempts == 1
    assert queue.claim("read") is None
    queue.fail(job.id, "ReaderError: down", final=False, retry_after=0)
    assert queue.pending("read", user_id="u")[0].error == "ReaderError: down"
    again = queue.claim("read")
    assert again is not None and again.attempts == 2
    with pg.transaction():
        queue.finish(job.id, {"operations": [["ADD", "x", "t"]]})
    assert queue.pending("read") == [] and queue.counts("read") == {"done": 1}
    assert JobQueue(pg).counts("read") == {"done": 1}  # migrating again changes nothing


def test_usage_ledger_on_postgres(pg: PgDatabase, tmp_path: Path) -> None:
    ledger = UsageLedger(pg)
    ledger.add(["cube", "user:u"], 100, 20, 2, 0.5, 0.01)
    ledger.add(["cube"], 10, 5, 1, 0.1, 0.0)
    assert ledger.tokens("cube") == 135 and ledger.tokens("user:u") == 120
    assert ledger.totals("user:u")["calls"] == 2
