"""The job queue and the usage ledger on a real PostgreSQL 16 (pgserver, or MEMOS_TEST_POSTGRES_DSN): their
postgres DDL and their portable SQL run unchanged through the project's PostgresDatabase."""

# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
from __future__ import annotations

from pathlib import Path
from typing import Any

from memos_integrations.storage.jobs import JobQueue
from memos_integrations.storage.reader_usage import UsageLedger
from tests.pg_server import pg_db, pg_schema, postgres_dsn  # noqa: F401  (fixtures)


def test_job_queue_on_postgres(pg_db: Any) -> None:
    pg = pg_db
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


def test_usage_ledger_on_postgres(pg_db: Any, tmp_path: Path) -> None:
    pg = pg_db
    ledger = UsageLedger(pg)
    ledger.add(["cube", "user:u"], 100, 20, 2, 0.5, 0.01)
    ledger.add(["cube"], 10, 5, 1, 0.1, 0.0)
    assert ledger.tokens("cube") == 135 and ledger.tokens("user:u") == 120
    assert ledger.totals("user:u")["calls"] == 2
