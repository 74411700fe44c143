"""Parts of one write staged until its last part arrives, so a write split over several requests commits once.

Why: a vector-store write over the service's body limit travels as several requests. Written one by one,
a failure in request 3 (a refusal, a dropped connection) left requests 1 and 2 in the cube. Instead the
client names the write (a random ``stage`` id) and sends each part; every part but the last is kept here,
and the last one takes them all (in one transaction: read, then delete) and the route writes the whole
write in the cube's one transaction. A write whose last part never comes writes nothing.

Abandoned writes: a client that drops a write (its connection died, it gave up after a 429 on a middle
part) leaves parts that count against the bounds below. They are released ``idle`` seconds (2 minutes)
after the write's newest part (each part moves every part's expiry; swept by later calls through an
index on ``expires``), or at once by :meth:`StagedWrites.abort` (the service's ``DELETE
/v1/vector-stores/stages/{stage}``). A new write with the same key does not supersede an unfinished one:
one key may send several writes at once (an async client), and dropping one would fail it silently.

Retries: when the last part is taken, a *record* of the write (part ``-1``) takes the parts' place; once
the cube has the write, the record keeps the write's answer for ``ttl`` seconds. A last part sent again
(a client whose connection dropped after the service committed) gets that answer back instead of
"nothing was written", and writes nothing twice; a one-part staged write is retry-safe the same way. A
last part that arrives while its write is being applied (or after a process died applying it) is a
:class:`ConflictError`: the write's outcome is unknown there, so the caller reads it back.

Bounds: the parts and records held count against three limits, checked in the transaction that adds a
part: ``max_bytes`` per API key, ``max_user_bytes`` per user (a user with many keys), and
``max_total_bytes`` for the whole service (many users); the last is :class:`StagingFullError`, which the
service answers as a 429 (retry later). Records are never refused (the write already happened).

Where: the home's ``mos.db`` (the key store's database), so every ``memcube serve --workers N`` process
sees the parts whichever process took them. A stage belongs to the API key that opened it: another key
naming the same stage id sees nothing of it.

The table (``staged_parts``) evolves through :func:`memos_integrations.storage.migrations.migrate` as
component ``staged_writes``; all its SQL is in this module, in the portable dialect of :mod:`.sql`.

Example:
    >>> import tempfile, os
    >>> from memos_integrations.storage.sql import SQLiteDatabase
    >>> parts = StagedWrites(SQLiteDatabase(os.path.join(tempfile.mkdtemp(), "mos.db")))
    >>> parts.put("s1", "key1", 0, '{"texts": ["a"]}', user_id="alice")
    >>> parts.take("s1", "key1", 1, user_id="alice").parts
    ['{"texts": ["a"]}']
    >>> parts.done("s1", "key1", '{"ids": ["x"]}')
    >>> parts.take("s1", "key1", 1, user_id="alice").answer    # the last part, sent again
    '{"ids": ["x"]}'
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import ConflictError, InvalidInputError, OversizedInputError
from .migrations import migrate
from .sql import Database, Tx

# step 2: the user who staged (per-user bound), and indexes for the sweep and the bounds; each carries
# ``bytes`` so a bound's SUM reads the narrow index, never the bodies
_STEP2 = ("ALTER TABLE staged_parts ADD COLUMN user_id TEXT NOT NULL DEFAULT '';"
          "CREATE INDEX IF NOT EXISTS staged_parts_expires ON staged_parts (expires, bytes);"
          "CREATE INDEX IF NOT EXISTS staged_parts_user ON staged_parts (user_id, bytes);"
          "CREATE INDEX IF NOT EXISTS staged_parts_key ON staged_parts (key_id, bytes)")
STEPS: dict[str, list[str]] = {
    "sqlite": ["CREATE TABLE IF NOT EXISTS staged_parts (stage TEXT NOT NULL, key_id TEXT NOT NULL, part INTEGER NOT NULL,"
               " body TEXT NOT NULL, bytes INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (key_id, stage, part))",
               _STEP2],
    "postgres": ["CREATE TABLE IF NOT EXISTS staged_parts (stage TEXT NOT NULL, key_id TEXT NOT NULL, part INTEGER NOT NULL,"
                 " body TEXT NOT NULL, bytes BIGINT NOT NULL, expires DOUBLE PRECISION NOT NULL,"
                 " PRIMARY KEY (key_id, stage, part))",
                 _STEP2],
}

#: how long a written write's answer is kept here (seconds; the cube keeps its own record a day:
#: :mod:`.idempotency`), and the longest a write's record waits for its answer
TTL = 600.0
#: a write none of whose parts came for this long is abandoned: its parts are released (seconds). A write
#: that keeps sending parts stays staged as long as it does, within the bounds on bytes held
IDLE = 120.0
#: the most bytes of staged parts one key may hold at once
MAX_BYTES = 64 * 1024 * 1024
#: the most bytes one user may hold at once, over all their keys
MAX_USER_BYTES = 128 * 1024 * 1024
#: the most bytes the whole service may hold at once, over all users
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
#: the part number of a write's record (parts are numbered from 0)
RECORD = -1


class StagingFullError(OversizedInputError):
    """Every user's unfinished split writes together reached the service's bound; retry in a few minutes."""


@dataclass(frozen=True)
class Taken:
    """What the last part of a write finds: the earlier parts to write, or the answer of the write when a
    request before this one wrote it already (this is a retry: write nothing, answer that)."""

    parts: list[str]
    answer: str | None = None


class StagedWrites:
    """Staged parts of split writes, keyed by (API key id, stage id, part number)."""

    def __init__(self, db: Database, *, ttl: float = TTL, max_bytes: int = MAX_BYTES,
                 max_user_bytes: int = MAX_USER_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES, idle: float = IDLE) -> None:
        self.db, self.ttl, self.max_bytes, self.idle = db, ttl, max_bytes, min(idle, ttl)
        self.max_user_bytes, self.max_total_bytes = max_user_bytes, max_total_bytes
        migrate(db, "staged_writes", STEPS)

    def put(self, stage: str, key_id: str, part: int, body: str, *, user_id: str = "", now: float | None = None) -> None:
        """Keep ``body`` (JSON text) as part ``part`` of ``stage``, staged by ``user_id`` through ``key_id``.

        Raises:
            InvalidInputError: this part of this stage was sent already, or the write was written already.
            OversizedInputError: the key's or the user's staged bytes would pass their bound.
            StagingFullError: the service's staged bytes (every user's) would pass its bound.
        """
        now = time.time() if now is None else now
        size = len(body.encode("utf-8"))
        with self.db.transaction() as tx:
            self._begin(tx, now)
            rows = tx.execute("SELECT part FROM staged_parts WHERE key_id = ? AND stage = ? AND part IN (?, ?)",
                              (key_id, stage, part, RECORD)).fetchall()
            if any(int(r[0]) == RECORD for r in rows):
                raise InvalidInputError(f"write {stage!r} was written already; a new write needs a new stage id")
            if rows:
                raise InvalidInputError(f"part {part} of write {stage!r} was sent already; start the write again "
                                        "with a new stage id")
            # after those: a bound's refusal ends the write (the route drops its parts), never a written one's record
            self._check_bounds(tx, key_id, user_id, size)
            # every part of the write lives ``idle`` seconds past its newest part: a write that goes on stays,
            # one its client dropped (a lost connection, a 429 it gave up on) is released soon after
            tx.execute("UPDATE staged_parts SET expires = ? WHERE key_id = ? AND stage = ? AND part >= 0",
                       (now + self.idle, key_id, stage))
            tx.execute("INSERT INTO staged_parts (stage, key_id, part, body, bytes, expires, user_id)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", (stage, key_id, part, body, size, now + self.idle, user_id))

    def take(self, stage: str, key_id: str, parts: int, *, user_id: str = "", request: str = "",
             now: float | None = None) -> Taken:
        """Remove and return parts ``0 .. parts - 1`` of ``stage``, in order, all of them or none, and leave
        the write's record in their place (finish it with :meth:`done`, or :meth:`drop` when the write
        failed). When the record holds an answer already, return that answer and touch nothing. ``request``
        (a digest of the last part, no newline) is kept in the record: a later last part of the stage must be
        the same request, so a stage id used again for another write is refused, never answered with the
        first write's answer.

        Raises:
            ConflictError: the write is being applied by an earlier request (or a process died applying
                it): its outcome is unknown here.
            OversizedInputError: a new write while the key's or the user's other staged parts and kept
                answers already pass their bound (its parts stay staged: retry later).
            StagingFullError: the same for the whole service.
            InvalidInputError: a part is missing (expired, never sent) or one past ``parts`` is there (the
                stage is dropped either way, so nothing of it can be committed later); or the stage id was
                used for another write already.
        """
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            self._begin(tx, now)
            record = self._record(tx, stage, key_id)
            if record is None:
                # a new write: refused while other writes' parts and kept answers already pass a bound (so
                # answers kept for retries cannot pile up past the bounds either); its own parts do not count
                mine = self._held(tx, "key_id = ? AND stage = ?", (key_id, stage))
                self._check_bounds(tx, key_id, user_id, -mine)
                found = tx.execute("SELECT part, body FROM staged_parts WHERE key_id = ? AND stage = ? AND part >= 0"
                                   " ORDER BY part", (key_id, stage)).fetchall()
                tx.execute("DELETE FROM staged_parts WHERE key_id = ? AND stage = ?", (key_id, stage))
                complete = [int(r[0]) for r in found] == list(range(parts))
                if complete:
                    tx.execute("INSERT INTO staged_parts (stage, key_id, part, body, bytes, expires, user_id)"
                               " VALUES (?, ?, ?, ?, 0, ?, ?)",
                               (stage, key_id, RECORD, request + "\n", now + self.ttl, user_id))
        if record is not None:
            asked, _, answer = record.partition("\n")
            if asked != request:
                raise InvalidInputError(f"write {stage!r} is another write, written already (or being written) with "
                                        "this stage id; nothing was written: use a new stage id for every write")
            if answer:
                return Taken([], answer)
            raise ConflictError(
                f"write {stage!r} is being written by an earlier request with this stage id (or the service stopped "
                "while writing it); its outcome is unknown here: read the write back before sending it again "
                "with a new stage id")
        if not complete:
            raise InvalidInputError(
                f"write {stage!r} has parts {[int(r[0]) for r in found]} staged, not 0..{parts - 1} (a part was lost or "
                f"expired after {int(self.ttl)} s); nothing was written: send the whole write again")
        return Taken([str(r[1]) for r in found])

    def done(self, stage: str, key_id: str, answer: str, *, now: float | None = None) -> None:
        """The write taken by :meth:`take` is in the cube: keep ``answer`` (JSON text) for its retries."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            asked = (self._record(tx, stage, key_id) or "").partition("\n")[0]
            body = f"{asked}\n{answer}"
            tx.execute("UPDATE staged_parts SET body = ?, bytes = ?, expires = ? WHERE key_id = ? AND stage = ?"
                       " AND part = ?", (body, len(body.encode("utf-8")), now + self.ttl, key_id, stage, RECORD))

    def abort(self, stage: str, key_id: str) -> int:
        """Release the staged parts of ``stage`` now (a client giving a write up); a written write's record
        stays, so its retries are still answered. Returns how many parts were released."""
        with self.db.transaction() as tx:
            row = tx.execute("SELECT COUNT(*) FROM staged_parts WHERE key_id = ? AND stage = ? AND part >= 0",
                             (key_id, stage)).fetchone()
            tx.execute("DELETE FROM staged_parts WHERE key_id = ? AND stage = ? AND part >= 0", (key_id, stage))
        return int(row[0]) if row is not None else 0

    def drop(self, stage: str, key_id: str) -> None:
        """Forget ``stage``, its parts and its record (a write that will not be finished, or that failed)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM staged_parts WHERE key_id = ? AND stage = ?", (key_id, stage))

    def _check_bounds(self, tx: Tx, key_id: str, user_id: str, size: int) -> None:
        """Refuse when ``size`` more bytes would pass the key's, the user's or the service's bound."""
        wait = f"finish or abandon them (they expire after {int(self.ttl)} s), or write less at once"
        for held, bound, whose, error in (
                (self._held(tx, "key_id = ?", (key_id,)), self.max_bytes, "this key", OversizedInputError),
                (self._held(tx, "user_id = ?", (user_id,)), self.max_user_bytes, "this user's keys", OversizedInputError),
                (self._held(tx, "1 = 1", ()), self.max_total_bytes, "every user of this service", StagingFullError)):
            if held + size > bound:
                tail = "retry in a few minutes, or write in one request" if error is StagingFullError else wait
                raise error(f"{whose} already hold {held} bytes of unfinished split writes and of recent writes' "
                            f"answers (at most {bound}); {tail}")

    @staticmethod
    def _held(tx: Tx, where: str, params: tuple[str, ...]) -> int:
        row = tx.execute(f"SELECT COALESCE(SUM(bytes), 0) FROM staged_parts WHERE {where}", params).fetchone()
        return int(row[0]) if row is not None else 0

    @staticmethod
    def _record(tx: Tx, stage: str, key_id: str) -> str | None:
        row = tx.execute("SELECT body FROM staged_parts WHERE key_id = ? AND stage = ? AND part = ?",
                         (key_id, stage, RECORD)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _begin(tx: Tx, now: float) -> None:
        """Serialise with the other writers (PostgreSQL runs them in parallel) and sweep what expired."""
        tx.lock("staged_writes")
        tx.execute("DELETE FROM staged_parts WHERE expires < ?", (now,))
