"""Written writes remembered in the cube they wrote, for a day: a retried write is answered, never written twice.

Why: the service's staged writes (:mod:`.staged_writes`) keep a written write's answer in the home's
``mos.db`` for 10 minutes, written *after* the cube's commit. Two gaps followed (issue 13): a client that
retried a one-part write after those 10 minutes wrote it again (a double write), and a service killed
between the cube's commit and that answer left the retry a :class:`ConflictError` ("outcome unknown").

How: a record ``(user, write key, digest of the request, answer)`` is inserted into the *cube's own
database in the same transaction as the write* (:meth:`WriteRecords.once`), so the write and its record
commit together or not at all, whatever process dies when. A later request with the same user and key
finds the record inside its own transaction (serialised with the first: SQLite's one writer, a
PostgreSQL advisory lock per key) and is answered with the first answer, writing nothing; the same key
with another request body is a :class:`ConflictError` (409). Records are kept ``keep`` seconds (24 h)
and swept, through an index on ``expires``, by every write that records one.

Where: the table ``idempotent_writes`` in each cube's database (SQLite file or PostgreSQL schema),
evolved through :func:`memos_integrations.storage.migrations.migrate` as component ``idempotent_writes``;
all its SQL is here, in the portable dialect of :mod:`.sql`.

Example:
    >>> import tempfile, os
    >>> from memos_integrations.storage.sql import SQLiteDatabase
    >>> db = SQLiteDatabase(os.path.join(tempfile.mkdtemp(), "cube.db"))
    >>> records = WriteRecords(db)
    >>> records.once(db.transaction, "alice", "w-1", "d1", lambda: '{"ids": ["a"]}')
    '{"ids": ["a"]}'
    >>> records.once(db.transaction, "alice", "w-1", "d1", lambda: '{"ids": ["b"]}')   # a retry: not written
    '{"ids": ["a"]}'
    >>> records.find("alice", "w-1")
    ('d1', '{"ids": ["a"]}')
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ..errors import ConflictError, MemosError
from .migrations import migrate
from .sql import Database, Tx

STEPS: dict[str, list[str]] = {
    "sqlite": ["CREATE TABLE IF NOT EXISTS idempotent_writes (user_id TEXT NOT NULL, write_key TEXT NOT NULL,"
               " digest TEXT NOT NULL, answer TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (user_id, write_key));"
               "CREATE INDEX IF NOT EXISTS idempotent_writes_expires ON idempotent_writes (expires)"],
    "postgres": ["CREATE TABLE IF NOT EXISTS idempotent_writes (user_id TEXT NOT NULL, write_key TEXT NOT NULL,"
                 " digest TEXT NOT NULL, answer TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL,"
                 " PRIMARY KEY (user_id, write_key));"
                 "CREATE INDEX IF NOT EXISTS idempotent_writes_expires ON idempotent_writes (expires)"],
}

#: how long a written write's record answers its retries (seconds)
KEEP = 24 * 3600.0


class WriteRecords:
    """The records of one cube database's written writes, keyed by (user, write key)."""

    def __init__(self, db: Database, *, keep: float = KEEP) -> None:
        self.db, self.keep = db, keep
        migrate(db, "idempotent_writes", STEPS)

    def find(self, user_id: str, key: str) -> tuple[str, str] | None:
        """The (digest, answer) recorded for ``key``, if a write with it was written and is still kept."""
        row = self.db.read_one("SELECT digest, answer FROM idempotent_writes WHERE user_id = ? AND write_key = ?"
                               " AND expires >= ?", (user_id, key, time.time()))
        return None if row is None else (str(row[0]), str(row[1]))

    def once(self, transaction: Callable[[], AbstractContextManager[Any]], user_id: str, key: str, digest: str,
             write: Callable[[], str], *, now: float | None = None) -> str:
        """Run ``write`` (it returns its answer as JSON text) unless ``key`` was written already; return the answer.

        Args:
            transaction: the cube's transaction (``store.transaction``); ``write`` must write through the
                same database, so its rows join this transaction and commit with the record.
            user_id: whose write (keys of one user share their records).
            key: the client's name for the write (a staged write's ``stage``).
            digest: the request's digest: the same key with another request is refused, never answered.
            write: does the write; nothing is recorded when it raises (the transaction rolls back).

        Returns:
            The answer of the write: this call's, or the first one's when ``key`` was written already.

        Raises:
            ConflictError: ``key`` was written with another request (digest) within :attr:`keep` seconds.
        """
        now = time.time() if now is None else now
        started = False  # the write ran (a refusal before it, the record's or a busy database's, is not run again)
        try:
            with transaction() as tx:
                self._begin(tx, user_id, key, now)
                row = tx.execute("SELECT digest, answer FROM idempotent_writes WHERE user_id = ? AND write_key = ?",
                                 (user_id, key)).fetchone()
                if row is not None:
                    if str(row[0]) != digest:
                        raise ConflictError(
                            f"write {key!r} was written already with another request (within "
                            f"{int(self.keep // 3600)} h); nothing was written: use a new key for every write (a new "
                            "Idempotency-Key for an add, a new stage id for a split write)")
                    return str(row[1])
                started = True
                answer = write()
                self._insert(tx, user_id, key, digest, answer, now)
                return answer
        except MemosError:
            if not started:
                raise
            # the write refused itself and everything it wrote rolled back, its audit rows of a denial with it:
            # run it once more on its own so the refusal is recorded (it refuses again: nothing to record)
            answer = write()
            with transaction() as tx:  # it went through this time (what refused it changed meanwhile)
                self._begin(tx, user_id, key, now)
                self._insert(tx, user_id, key, digest, answer, now)
            return answer

    def _insert(self, tx: Tx, user_id: str, key: str, digest: str, answer: str, now: float) -> None:
        # a concurrent request's record of the same key may have come first (the fallback path): it stays
        tx.execute("INSERT INTO idempotent_writes (user_id, write_key, digest, answer, expires) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (user_id, write_key) DO NOTHING", (user_id, key, digest, answer, now + self.keep))

    @staticmethod
    def _begin(tx: Tx, user_id: str, key: str, now: float) -> None:
        """Serialise with another request for the same key (PostgreSQL runs writers in parallel) and sweep."""
        tx.lock(f"idempotent_writes:{user_id}:{key}")
        tx.execute("DELETE FROM idempotent_writes WHERE expires < ?", (now,))
