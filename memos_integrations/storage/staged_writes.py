"""Parts of one write staged until its last part arrives, so a write split over several requests commits once.

Why: a vector-store write over the service's body limit travels as several requests. Written one by one,
a failure in request 3 (a refusal, a dropped connection) left requests 1 and 2 in the cube. Instead the
client names the write (a random ``stage`` id) and sends each part; every part but the last is kept here,
and the last one takes them all (in one transaction: read, then delete) and the route writes the whole
write in the cube's one transaction. A write whose last part never comes writes nothing; its parts
expire after ``ttl`` seconds and are swept by later calls.

Where: the home's ``mos.db`` (the key store's database), so every ``memcube serve --workers N`` process
sees the parts whichever process took them. A stage belongs to the API key that opened it: another key
naming the same stage id sees nothing of it. Each key may hold at most ``max_bytes`` of staged parts.

The table (``staged_parts``) evolves through :func:`memos_integrations.storage.migrations.migrate` as
component ``staged_writes``; all its SQL is in this module, in the portable dialect of :mod:`.sql`.

Example:
    >>> import tempfile, os
    >>> from memos_integrations.storage.sql import SQLiteDatabase
    >>> parts = StagedWrites(SQLiteDatabase(os.path.join(tempfile.mkdtemp(), "mos.db")))
    >>> parts.put("s1", "key1", 0, '{"texts": ["a"]}')
    >>> parts.take("s1", "key1", 1)
    ['{"texts": ["a"]}']
    >>> parts.take("s1", "key1", 0)
    []
"""

from __future__ import annotations

import time

from ..errors import InvalidInputError, OversizedInputError
from .migrations import migrate
from .sql import Database

STEPS: dict[str, list[str]] = {
    "sqlite": ["CREATE TABLE IF NOT EXISTS staged_parts (stage TEXT NOT NULL, key_id TEXT NOT NULL, part INTEGER NOT NULL,"
               " body TEXT NOT NULL, bytes INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (key_id, stage, part))"],
    "postgres": ["CREATE TABLE IF NOT EXISTS staged_parts (stage TEXT NOT NULL, key_id TEXT NOT NULL, part INTEGER NOT NULL,"
                 " body TEXT NOT NULL, bytes BIGINT NOT NULL, expires DOUBLE PRECISION NOT NULL,"
                 " PRIMARY KEY (key_id, stage, part))"],
}

#: how long a part waits for its write's last part (seconds)
TTL = 600.0
#: the most bytes of staged parts one key may hold at once
MAX_BYTES = 64 * 1024 * 1024


class StagedWrites:
    """Staged parts of split writes, keyed by (API key id, stage id, part number)."""

    def __init__(self, db: Database, *, ttl: float = TTL, max_bytes: int = MAX_BYTES) -> None:
        self.db, self.ttl, self.max_bytes = db, ttl, max_bytes
        migrate(db, "staged_writes", STEPS)

    def put(self, stage: str, key_id: str, part: int, body: str, *, now: float | None = None) -> None:
        """Keep ``body`` (JSON text) as part ``part`` of ``stage``.

        Raises:
            InvalidInputError: this part of this stage was sent already.
            OversizedInputError: the key's staged parts would pass ``max_bytes``.
        """
        now = time.time() if now is None else now
        size = len(body.encode("utf-8"))
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM staged_parts WHERE expires < ?", (now,))
            row = tx.execute("SELECT COALESCE(SUM(bytes), 0) FROM staged_parts WHERE key_id = ?", (key_id,)).fetchone()
            held = int(row[0]) if row is not None else 0
            if held + size > self.max_bytes:
                raise OversizedInputError(
                    f"this key already has {held} bytes of unfinished split writes staged (at most "
                    f"{self.max_bytes}); finish or abandon them (they expire after {int(self.ttl)} s), or write less at once")
            taken = tx.execute("SELECT 1 FROM staged_parts WHERE key_id = ? AND stage = ? AND part = ?",
                               (key_id, stage, part)).fetchone()
            if taken is not None:
                raise InvalidInputError(f"part {part} of write {stage!r} was sent already; start the write again "
                                        "with a new stage id")
            tx.execute("INSERT INTO staged_parts (stage, key_id, part, body, bytes, expires) VALUES (?, ?, ?, ?, ?, ?)",
                       (stage, key_id, part, body, size, now + self.ttl))

    def take(self, stage: str, key_id: str, parts: int, *, now: float | None = None) -> list[str]:
        """Remove and return parts ``0 .. parts - 1`` of ``stage``, in order; all of them or none.

        Raises:
            InvalidInputError: a part is missing (expired, never sent) or one past ``parts`` is there; the
                stage is dropped either way, so nothing of it can be committed later.
        """
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            found = tx.execute("SELECT part, body, expires FROM staged_parts WHERE key_id = ? AND stage = ?"
                               " ORDER BY part", (key_id, stage)).fetchall()
            # two last parts racing (a client's retry): on PostgreSQL both may read the rows; only the one whose
            # DELETE removes them all takes them, the other sees fewer rows deleted and takes nothing
            deleted = tx.execute("DELETE FROM staged_parts WHERE key_id = ? AND stage = ?", (key_id, stage)).rowcount
        rows = [r for r in found if float(r[2]) >= now] if deleted == len(found) else []
        if [int(r[0]) for r in rows] != list(range(parts)):
            raise InvalidInputError(
                f"write {stage!r} has parts {[int(r[0]) for r in rows]} staged, not 0..{parts - 1} (a part was lost or "
                f"expired after {int(self.ttl)} s); nothing was written: send the whole write again")
        return [str(r[1]) for r in rows]

    def drop(self, stage: str, key_id: str) -> None:
        """Forget ``stage`` (a write that will not be finished)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM staged_parts WHERE key_id = ? AND stage = ?", (key_id, stage))
