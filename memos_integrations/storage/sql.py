"""The SQL connection layer every SQL backend shares: one :class:`Database` per cube.

SQL in this package is written once, in a small portable dialect, and runs on SQLite and on
PostgreSQL unchanged. The rules of that dialect (keep to them in every ``storage/`` module):

- placeholders are ``?`` only (no ``?1``, no ``%s``, no named ones); PostgreSQL's adapter rewrites them;
- upserts are ``INSERT ... ON CONFLICT (cols) DO UPDATE SET c = excluded.c`` or ``DO NOTHING``
  (never ``INSERT OR REPLACE`` / ``INSERT OR IGNORE``);
- NULL-safe equality is ``IS NOT DISTINCT FROM`` (SQLite >= 3.39 and PostgreSQL both have it);
- no ``rowid``: order by a real column; booleans are integers 0/1; JSON is stored as TEXT;
- DDL differs between backends (``REAL`` is 4 bytes in PostgreSQL, ``BLOB`` is ``BYTEA``, identity
  columns), so it lives in :mod:`memos_integrations.storage.migrations`, one list of steps per backend;
- what is truly dialect-specific (full-text search, JSON paths in filters) is a method of the backend.

Concurrency: :meth:`Database.transaction` is one atomic write. On SQLite it is ``BEGIN IMMEDIATE``
(writers queue for the one write lock, so a read-modify-write inside it sees the latest commit). On
PostgreSQL writers run in parallel, so a read-modify-write of a shared row takes :meth:`Tx.lock` on a
key first (a transaction-scoped advisory lock); on SQLite that call costs nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..errors import CubeCorruptedError, CubeLockedError, InvalidInputError, StorageUnavailableError

Row = tuple[Any, ...]


class Cursor(Protocol):
    """What :meth:`Tx.execute` returns (sqlite3 and psycopg cursors both fit)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row | None: ...

    def fetchall(self) -> list[Row]: ...


class Tx(Protocol):
    """One open transaction: statements in the portable dialect, then commit or rollback together."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def lock(self, key: str) -> None:
        """Serialise with every other transaction that locks ``key``, until this one ends."""


class Database(ABC):
    """A connection (or pool) to one cube's tables. ``dialect`` is ``"sqlite"`` or ``"postgres"``."""

    dialect: str

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """One atomic write; nested calls join the outer transaction."""

    @abstractmethod
    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one read-only statement and return every row."""

    @abstractmethod
    def close(self) -> None: ...

    def read_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.read(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.read_one(sql, params)
        return None if row is None else row[0]


def marks(n: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` of ``n`` values (callers chunk: SQLite binds at most 32,766)."""
    if n <= 0:
        raise ValueError("an IN list needs at least one value")
    return ", ".join("?" * n)


CHUNK = 900  # values per IN list: under every backend's bind limit, and small enough to plan well


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def to_pyformat(sql: str) -> str:
    """Rewrite the portable dialect's ``?`` placeholders as psycopg's ``%s`` (``%`` becomes ``%%``).

    Quoted strings and identifiers are left alone, so ``'?'`` in a literal stays a question mark.
    """
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class _SQLiteTx:
    """A :class:`Tx` over one sqlite3 connection inside ``BEGIN IMMEDIATE``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def lock(self, key: str) -> None:
        """``BEGIN IMMEDIATE`` already holds the database's one write lock."""


class SQLiteDatabase(Database):
    """One sqlite3 connection in WAL mode, shared by the process's threads under a re-entrant lock.

    Several processes may open the same file: WAL lets readers run beside the one writer, and the
    busy timeout makes a writer wait for another process's transaction instead of failing.
    """

    dialect = "sqlite"

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        try:
            self.conn: sqlite3.Connection = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=timeout)
            self._enter_wal(timeout)
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
        except CubeLockedError:
            self.conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            raise CubeCorruptedError(
                f"{self.path} is not a readable SQLite database ({exc}); restore it from a dump or export") from exc

    def _enter_wal(self, timeout: float) -> None:
        """Switch to WAL, waiting out other openers. Leaving a rollback journal (a file an older release or
        another tool wrote) needs the file to itself, and SQLite answers "database is locked" at once,
        without its busy timeout, while another process is opening it too: that is contention, not damage."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise CubeLockedError(
                        f"{self.path} stayed locked by another process for {timeout:.0f} s while switching it to WAL; "
                        "retry when the other process has opened it (or close it there)") from exc
                time.sleep(0.01)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.lock:
            conn = self._conn()
            if conn.in_transaction:  # nested: join the outer transaction
                yield _SQLiteTx(conn)
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # the busy timeout ran out: another process is writing
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                raise CubeLockedError(
                    f"{self.path} stayed locked by another process's write past the busy timeout; nothing was "
                    "written: retry, or use a server backend (PostgreSQL) for many concurrent writers") from exc
            try:
                yield _SQLiteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                self._commit(conn)

    def _commit(self, conn: sqlite3.Connection) -> None:
        """COMMIT, or roll back and say so. SQLite keeps the transaction open when its COMMIT fails (busy,
        disk I/O, a deferred foreign key): left open, the next :meth:`transaction` would join it as a nested
        one and its write would be acknowledged yet never committed."""
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if "locked" in str(exc) or "busy" in str(exc):
                raise CubeLockedError(f"{self.path}: the COMMIT found the database locked ({exc}); the write was not "
                                      "applied (rolled back): retry it") from exc
            raise StorageUnavailableError(f"{self.path}: the COMMIT failed ({exc}); the write was not applied "
                                          "(rolled back): retry it, and check the disk if it fails again") from exc

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.lock:
            return self._conn().execute(sql, params).fetchall()

    def executescript(self, ddl: str) -> None:
        """Run DDL (migrations only: it commits any open transaction)."""
        with self.lock:
            self._conn().executescript(ddl)

    def _conn(self) -> sqlite3.Connection:
        if self.conn is None:
            raise InvalidInputError(
                f"the database {self.path} is closed; open the cube again (MemCube.open) to use it, and close "
                "it only when no thread uses it any more")
        return self.conn

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None  # type: ignore[assignment]
