"""The write records (storage/idempotency.py) on PostgreSQL, where writers run in parallel: two requests
with one key, at once, write once and both get that write's answer."""

# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("psycopg")

from memos_integrations.errors import ConflictError  # noqa: E402
from memos_integrations.storage.idempotency import WriteRecords  # noqa: E402
from memos_integrations.storage.postgres import PostgresDatabase  # noqa: E402
from tests.pg_server import pg_db, pg_schema, postgres_dsn  # noqa: E402, F401


def test_two_requests_with_one_key_at_once_write_once(pg_db: PostgresDatabase) -> None:
    records = WriteRecords(pg_db)
    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS written (n INTEGER)")
    answers: list[str] = []

    def write() -> str:
        with pg_db.transaction() as tx:  # the write's own rows join the record's transaction
            tx.execute("INSERT INTO written (n) VALUES (1)")
        time.sleep(0.2)  # long enough for the other request to arrive meanwhile
        return '{"ids": ["a"]}'

    threads = [threading.Thread(target=lambda: answers.append(records.once(pg_db.transaction, "u", "k", "d", write)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == ['{"ids": ["a"]}'] * 2
    assert pg_db.scalar("SELECT COUNT(*) FROM written") == 1
    with pytest.raises(ConflictError):
        records.once(pg_db.transaction, "u", "k", "other", write)
    assert records.find("u", "k") == ("d", '{"ids": ["a"]}')
