"""PostgresDatabase on a real PostgreSQL: transactions, advisory locks, migrations, schemas, faults.

The fault tests drop connections with ``pg_terminate_backend`` (any server) and stop or restart a
second, private pgserver instance (skipped when only a user's server is configured).
"""

# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.errors import (
    ConflictError,
    CubeCorruptedError,
    StorageBusyError,
    StorageUnavailableError,
)
from memos_integrations.storage.migrations import Step, current_version, migrate
from memos_integrations.storage.postgres import PostgresDatabase, has_password, lock_key, redact, schema_name
from memos_integrations.storage.sql import Tx
from tests.pg_server import ENV, increment_worker, pg_db, pg_schema, postgres_dsn, start_pgserver  # noqa: F401


def _counter(db: PostgresDatabase) -> None:
    with db.transaction() as tx:
        tx.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        tx.execute("INSERT INTO counter (id, n) VALUES (1, 0)")


def _kill_pool(dsn: str, db: PostgresDatabase) -> None:
    """Terminate every server backend of ``db``'s pool (as a DBA or a failover would)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                              (db.application_name,)).fetchall()
    assert killed
    time.sleep(0.1)


def _terminate(dsn: str, pids: set[int]) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)


# -- transactions -----------------------------------------------------------------------------------------

def test_nested_transactions_commit_as_one(pg_db: PostgresDatabase) -> None:
    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER)")
    with pg_db.transaction() as outer:
        outer.execute("INSERT INTO t (id, v) VALUES (?, ?)", ("a", 1))
        with pg_db.transaction() as inner:
            assert inner is outer  # joined, not a second connection
            inner.execute("INSERT INTO t (id, v) VALUES (?, ?)", ("b", 2))
        assert pg_db.read("SELECT count(*) FROM t") == [(2,)]  # a read on this thread sees its own writes
        seen: list[Any] = []
        other = threading.Thread(target=lambda: seen.append(pg_db.scalar("SELECT count(*) FROM t")))
        other.start()
        other.join()
        assert seen == [0]  # another thread sees nothing before the commit
    assert pg_db.read("SELECT id, v FROM t ORDER BY id") == [("a", 1), ("b", 2)]


def test_an_error_in_a_nested_transaction_rolls_back_the_outer_one(pg_db: PostgresDatabase) -> None:
    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE t (id TEXT PRIMARY KEY)")
    with pytest.raises(RuntimeError, match="boom"):
        with pg_db.transaction() as outer:
            outer.execute("INSERT INTO t (id) VALUES (?)", ("a",))
            with pg_db.transaction() as inner:
                inner.execute("INSERT INTO t (id) VALUES (?)", ("b",))
                raise RuntimeError("boom")
    assert pg_db.read("SELECT count(*) FROM t") == [(0,)]
    with pg_db.transaction() as tx:  # the connection went back to the pool clean
        tx.execute("INSERT INTO t (id) VALUES (?)", ("c",))
    assert pg_db.scalar("SELECT count(*) FROM t") == 1


def test_a_caught_sql_error_does_not_commit_silently(pg_db: PostgresDatabase) -> None:
    """PostgreSQL aborts a transaction at its first failed statement; committing it would silently roll
    everything back, so the database says so instead."""
    import psycopg

    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE t (id TEXT PRIMARY KEY)")
    with pytest.raises(StorageUnavailableError, match="rolled the whole transaction back"):
        with pg_db.transaction() as tx:
            tx.execute("INSERT INTO t (id) VALUES (?)", ("a",))
            try:
                tx.execute("INSERT INTO t (id) VALUES (?)", ("a",))
            except psycopg.errors.UniqueViolation:
                pass
    assert pg_db.scalar("SELECT count(*) FROM t") == 0


def test_portable_placeholders_and_literals(pg_db: PostgresDatabase) -> None:
    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT, n INTEGER)")
        tx.executemany("INSERT INTO t (id, body, n) VALUES (?, ?, ?)", [("a", "50% off?", 1), ("b", "what?", 2)])
        tx.execute("INSERT INTO t (id, body, n) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET n = excluded.n",
                   ("a", "ignored", 5))
        assert tx.execute("UPDATE t SET n = n + 1 WHERE id = ?", ("b",)).rowcount == 1
        assert tx.execute("UPDATE t SET n = 0 WHERE id = 'zz'").fetchall() == []  # no rows: [] as on sqlite
    rows = pg_db.read("SELECT id, n, '?' FROM t WHERE body LIKE '%?' AND body IS NOT DISTINCT FROM ? ORDER BY id",
                      ("50% off?",))
    assert rows == [("a", 5, "?")]


# -- locks -----------------------------------------------------------------------------------------------

def test_lock_serialises_threads(pg_db: PostgresDatabase) -> None:
    _counter(pg_db)

    def bump(times: int, locked: bool) -> None:
        for _ in range(times):
            with pg_db.transaction() as tx:
                if locked:
                    tx.lock("counter")
                n = tx.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]  # type: ignore[index]
                time.sleep(0.002)
                tx.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))

    for locked, check in ((False, lambda n: n < 40), (True, lambda n: n == 40)):
        with pg_db.transaction() as tx:
            tx.execute("UPDATE counter SET n = 0")
        threads = [threading.Thread(target=bump, args=(10, locked)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n = pg_db.scalar("SELECT n FROM counter")
        assert check(n), (locked, n)  # without the lock updates are lost; with it none is


def test_lock_serialises_processes(pg_db: PostgresDatabase, postgres_dsn: str, pg_schema: str) -> None:
    _counter(pg_db)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=increment_worker, args=(postgres_dsn, pg_schema, 15, True)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert pg_db.scalar("SELECT n FROM counter") == 45


def test_lock_keys_are_per_schema_and_stable() -> None:
    assert lock_key("a", "k") == lock_key("a", "k")
    assert lock_key("a", "k") != lock_key("b", "k")
    assert -(2**63) <= lock_key("a", "k") < 2**63


# -- migrations and schemas ------------------------------------------------------------------------------

def test_migrations_on_postgres(pg_db: PostgresDatabase) -> None:
    def seed(tx: Tx) -> None:
        tx.execute("INSERT INTO notes (id, body) VALUES (?, ?)", ("seed", "x"))

    steps: dict[str, list[Step]] = {"sqlite": ["CREATE TABLE notes (id TEXT PRIMARY KEY)"],
             "postgres": ["CREATE TABLE notes (id TEXT PRIMARY KEY)",
                          "ALTER TABLE notes ADD COLUMN body TEXT; CREATE INDEX notes_body ON notes (body)",
                          seed]}
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(migrate(pg_db, "notes", steps))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [3, 3, 3]
    assert pg_db.read("SELECT id, body FROM notes") == [("seed", "x")]  # the data step ran exactly once
    assert migrate(pg_db, "notes", steps) == 3
    with pg_db.transaction() as tx:
        tx.execute("UPDATE schema_migrations SET version = 9 WHERE component = 'notes'")
    with pytest.raises(CubeCorruptedError, match="newer than this package"):
        migrate(pg_db, "notes", steps)
    assert current_version(pg_db, "notes") == 9


def test_one_database_holds_many_schemas(postgres_dsn: str, pg_schema: str) -> None:
    from tests.pg_server import drop_schema

    other = pg_schema + "_b"
    a, b = PostgresDatabase(postgres_dsn, schema=pg_schema), PostgresDatabase(postgres_dsn, schema=other)
    try:
        for db, value in ((a, "in a"), (b, "in b")):
            with db.transaction() as tx:
                tx.execute("CREATE TABLE t (v TEXT)")
                tx.execute("INSERT INTO t (v) VALUES (?)", (value,))
        assert a.read("SELECT v FROM t") == [("in a",)]
        assert b.read("SELECT v FROM t") == [("in b",)]
    finally:
        a.close()
        b.close()
        drop_schema(postgres_dsn, other)


def test_schema_names_are_checked_and_derived() -> None:
    with pytest.raises(ValueError, match="schema name"):
        PostgresDatabase("postgresql://nobody@127.0.0.1:1/x", schema="Robert'); DROP")
    assert schema_name("maya") == "maya"
    derived = schema_name("Maya's Cube")
    assert derived.startswith("maya_s_cube_") and derived != schema_name("maya_s_cube")


# -- credentials -----------------------------------------------------------------------------------------

def test_redact_never_keeps_a_password() -> None:
    assert redact("postgresql://app:s3cret@db:5432/memory") == "postgresql://app@db:5432/memory"
    assert redact("postgres://:s3cret@db/memory") == "postgres://db/memory"
    assert redact("postgresql://app@db/memory?password=s3cret&sslmode=require") == \
        "postgresql://app@db/memory?sslmode=require"
    assert "s3cret" not in redact("host=db user=app password=s3cret dbname=memory")
    assert redact("postgresql://app@db/memory") == "postgresql://app@db/memory"
    assert has_password("postgresql://app:x@db/m") and not has_password("postgresql://app@db/m")


def test_an_unreachable_server_says_what_to_do_without_the_password() -> None:
    with pytest.raises(StorageUnavailableError) as info:
        PostgresDatabase("postgresql://app:s3cret@127.0.0.1:1/memory", schema="x", connect_timeout=2)
    message = str(info.value)
    assert "s3cret" not in message and "PGPASSWORD" in message and "127.0.0.1" in message
    assert isinstance(info.value, ConnectionError)


# -- faults ----------------------------------------------------------------------------------------------

def test_a_read_survives_dropped_connections(pg_db: PostgresDatabase, postgres_dsn: str) -> None:
    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE t (v INTEGER)")
        tx.execute("INSERT INTO t (v) VALUES (1)")
    assert pg_db.scalar("SELECT v FROM t") == 1
    _kill_pool(postgres_dsn, pg_db)
    assert pg_db.scalar("SELECT v FROM t") == 1  # retried once on a fresh connection
    _kill_pool(postgres_dsn, pg_db)
    with pg_db.transaction() as tx:  # a transaction that had not started is retried too
        tx.execute("INSERT INTO t (v) VALUES (2)")
    assert pg_db.scalar("SELECT count(*) FROM t") == 2


def test_a_connection_dropped_mid_transaction_writes_nothing(pg_db: PostgresDatabase, postgres_dsn: str) -> None:
    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE t (v INTEGER)")
    with pytest.raises(StorageUnavailableError, match="nothing of it was written"):
        with pg_db.transaction() as tx:
            tx.execute("INSERT INTO t (v) VALUES (1)")
            pid = tx.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            _terminate(postgres_dsn, {pid})
            tx.execute("INSERT INTO t (v) VALUES (2)")  # never retried on another connection
    assert pg_db.scalar("SELECT count(*) FROM t") == 0


def test_an_exhausted_pool_times_out_clearly(postgres_dsn: str, pg_schema: str) -> None:
    db = PostgresDatabase(postgres_dsn, schema=pg_schema, max_size=1, pool_timeout=0.5)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with pytest.raises(StorageBusyError, match="stayed busy") as info:
            db.read("SELECT 1")
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, StorageUnavailableError)
    finally:
        release.set()
        holder.join()
    assert db.scalar("SELECT 1") == 1
    db.close()


def test_deadlocks_are_conflicts(pg_db: PostgresDatabase) -> None:
    with pg_db.transaction() as tx:
        tx.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        tx.execute("INSERT INTO t (id, v) VALUES (1, 0), (2, 0)")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def cross(first: int, second: int) -> None:
        try:
            with pg_db.transaction() as tx:
                tx.execute("UPDATE t SET v = v + 1 WHERE id = ?", (first,))
                barrier.wait(10)
                tx.execute("UPDATE t SET v = v + 1 WHERE id = ?", (second,))
        except ConflictError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cross, args=ab) for ab in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1 and "retry" in str(errors[0])
    assert pg_db.scalar("SELECT sum(v) FROM t") == 2  # the survivor committed both of its updates


@pytest.fixture
def private_server() -> Iterator[Any]:
    import os
    import shutil
    import tempfile

    if os.environ.get(ENV):
        pytest.skip(f"stopping a server needs a private pgserver instance (unset {ENV} to run it)")
    home = Path(tempfile.mkdtemp(prefix="memos-pg-"))
    server = start_pgserver(home / "data")
    yield server
    server.cleanup()
    shutil.rmtree(home, ignore_errors=True)


def test_a_stopped_then_restarted_server(private_server: Any) -> None:
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    db = PostgresDatabase(private_server.get_uri(), schema="s", pool_timeout=3, connect_timeout=2)
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE t (v INTEGER)")
            tx.execute("INSERT INTO t (v) VALUES (1)")
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=private_server.pgdata, user=private_server.system_user)
        assert db.scalar("SELECT count(*) FROM t") == 1  # every pooled connection died; the read recovers
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=private_server.pgdata, user=private_server.system_user)
        with pytest.raises(StorageUnavailableError, match="start the server|lost") as info:
            with db.transaction() as tx:
                tx.execute("INSERT INTO t (v) VALUES (2)")
        assert "retry" in str(info.value)
        private_server.ensure_postgres_running()
        deadline = time.monotonic() + 20
        while True:
            try:
                assert db.scalar("SELECT count(*) FROM t") == 1  # the failed write left nothing
                break
            except StorageUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with db.transaction() as tx:
            tx.execute("INSERT INTO t (v) VALUES (3)")
        assert db.scalar("SELECT count(*) FROM t") == 2
    finally:
        db.close()
