"""A real PostgreSQL (with pgvector) for the tests, and a fresh schema per test.

Import the fixtures into a test module (``from tests.pg_server import postgres_dsn, pg_schema, pg_db``).
The server is the one ``MEMOS_TEST_POSTGRES_DSN`` names (it must have the ``vector`` extension
available, and the user must be allowed to create schemas), or else a throwaway PostgreSQL 16 from the
``pgserver`` package (dev extra), started once per session in a temporary directory on a unix socket
(so it also runs where tests may not open network sockets) and stopped at exit.

Each test gets its own schema (dropped afterwards), which is also how one database holds many cubes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ENV = "MEMOS_TEST_POSTGRES_DSN"


def start_pgserver(directory: Path) -> Any:
    """A pgserver PostgreSQL in ``directory`` (stopped when this process exits)."""
    try:
        import pgserver
    except ImportError:
        pytest.fail("the PostgreSQL tests need the `pgserver` package (dev extra: pip install -e '.[dev]') "
                    f"or a server named by {ENV}=postgresql://user@host/db")
    return pgserver.get_server(str(directory), cleanup_mode="stop")


#: the one pgserver of this process: [dsn, server, home, users]. Every test module imports ``postgres_dsn``,
#: which gives each module a session-scoped fixture of its own; without this, each started (and at the
#: end stopped, with a shutdown checkpoint) a PostgreSQL of its own: ~5 s per module.
_SHARED: list[Any] = []


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of the session's PostgreSQL (the user's, or one pgserver shared by every module)."""
    dsn = os.environ.get(ENV)
    if dsn:
        yield dsn
        return
    if not _SHARED:
        # not under pytest's basetemp: another pytest run may reset its parent to 0700, locking out the
        # unprivileged user pgserver runs PostgreSQL as when the tests run as root
        home = Path(tempfile.mkdtemp(prefix="memos-pg-"))
        server = start_pgserver(home / "data")
        server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        _SHARED.extend([server.get_uri(), server, home, 0])
    _SHARED[3] += 1
    try:
        yield _SHARED[0]
    finally:
        _SHARED[3] -= 1
        if _SHARED[3] == 0:  # the last module's fixture (all end with the session)
            _, server, home, _ = _SHARED
            _SHARED.clear()
            server.cleanup()  # stops it (cleanup_mode="stop"), then the files go
            shutil.rmtree(home, ignore_errors=True)


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no other test uses; dropped (with everything in it) after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    drop_schema(postgres_dsn, schema)


@pytest.fixture
def schemas(postgres_dsn: str) -> Iterator[Callable[[], str]]:
    """A maker of fresh schema names, for a test that needs several; each is dropped after the test."""
    made: list[str] = []

    def new() -> str:
        made.append(f"t_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield new
    for name in made:
        drop_schema(postgres_dsn, name)


@pytest.fixture
def pg_db(postgres_dsn: str, pg_schema: str) -> Iterator[Any]:
    """A :class:`PostgresDatabase` on a fresh schema."""
    from memos_integrations.storage.postgres import PostgresDatabase

    db = PostgresDatabase(postgres_dsn, schema=pg_schema)
    yield db
    db.close()


def increment_worker(dsn: str, schema: str, times: int, locked: bool) -> None:
    """A read-modify-write loop on ``counter`` (run in a child process by the lock tests)."""
    import time

    from memos_integrations.storage.postgres import PostgresDatabase

    db = PostgresDatabase(dsn, schema=schema)
    try:
        for _ in range(times):
            with db.transaction() as tx:
                if locked:
                    tx.lock("counter")
                row = tx.execute("SELECT n FROM counter WHERE id = 1").fetchone()
                assert row is not None
                time.sleep(0.002)  # widen the race window
                tx.execute("UPDATE counter SET n = ? WHERE id = 1", (int(row[0]) + 1,))
    finally:
        db.close()
