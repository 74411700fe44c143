"""Per-key token buckets in a shared database, so every process serving a MOS home enforces one limit.

``memcube serve --workers N`` runs N processes; a bucket in each one's memory would let a key send N
times its rate. Here a key's bucket is one row (``tokens`` left, ``at`` when last refilled) in the
home's ``mos.db`` (or any :class:`Database`), and taking a token is one conditional ``UPDATE`` inside
one transaction: the refill and the take happen in the database, against the row as it is now, so two
processes can never both spend the last token. On SQLite the transaction holds the write lock
(``BEGIN IMMEDIATE``); on PostgreSQL the ``UPDATE`` locks the row and re-checks its ``WHERE`` against
the committed row before writing. A refused take writes nothing.

Slack: none from concurrency. The refill uses the wall clock of the process that takes the token
(``time.time()``), so processes on machines whose clocks disagree by ``d`` seconds can admit up to
``rate * d`` extra requests; a clock that runs behind the row's ``at`` refills nothing (never a
negative refill). Processes on one machine share one clock.

The table (``rate_buckets``) evolves through :func:`memos_integrations.storage.migrations.migrate` as
component ``rate_limits``; all its SQL is in this module, in the portable dialect of :mod:`.sql`.

Example:
    >>> import tempfile, os
    >>> from memos_integrations.storage.sql import SQLiteDatabase
    >>> buckets = RateBuckets(SQLiteDatabase(os.path.join(tempfile.mkdtemp(), "mos.db")))
    >>> [buckets.take("k1", rate=1.0, burst=2, now=100.0) for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> buckets.take("k1", rate=1.0, burst=2, now=101.0)
    0.0
"""

from __future__ import annotations

import time

from .migrations import migrate
from .sql import Database

STEPS: dict[str, list[str]] = {
    "sqlite": ["CREATE TABLE IF NOT EXISTS rate_buckets (key_id TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL)"],
    "postgres": ["CREATE TABLE IF NOT EXISTS rate_buckets (key_id TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL,"
                 " at DOUBLE PRECISION NOT NULL)"],
}

# tokens after refilling to ``now``: min(burst, tokens + max(0, now - at) * rate), written without
# MIN/LEAST (which differ between SQLite and PostgreSQL); parameters: now, now, rate, burst, burst
_REFILLED = ("(CASE WHEN tokens + (CASE WHEN ? > at THEN ? - at ELSE 0 END) * ? > ? THEN ?"
             " ELSE tokens + (CASE WHEN ? > at THEN ? - at ELSE 0 END) * ? END)")


def _refilled_params(now: float, rate: float, burst: float) -> tuple[float, ...]:
    return (now, now, rate, burst, burst, now, now, rate)


class RateBuckets:
    """Token buckets keyed by API key id, in one :class:`Database` shared by every serving process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db, "rate_limits", STEPS)

    def take(self, key_id: str, *, rate: float, burst: int, now: float | None = None, cost: float = 1.0) -> float:
        """Take ``cost`` tokens (one request's worth by default) from ``key_id``'s bucket (``burst`` tokens,
        refilled at ``rate`` per second). A cost over ``burst`` takes the whole bucket.

        Returns:
            0.0 when the tokens were taken; otherwise the seconds until they will be there (nothing written).
        """
        now = time.time() if now is None else now
        size = float(max(1, burst))
        cost = min(max(float(cost), 0.0), size)
        refill = _refilled_params(now, rate, size)
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO rate_buckets (key_id, tokens, at) VALUES (?, ?, ?) ON CONFLICT (key_id) DO NOTHING",
                       (key_id, size, now))
            taken = tx.execute(
                f"UPDATE rate_buckets SET tokens = {_REFILLED} - ?, at = CASE WHEN ? > at THEN ? ELSE at END"
                f" WHERE key_id = ? AND {_REFILLED} >= ?",
                (*refill, cost, now, now, key_id, *refill, cost)).rowcount
            if taken:
                return 0.0
            row = tx.execute(f"SELECT {_REFILLED} FROM rate_buckets WHERE key_id = ?", (*refill, key_id)).fetchone()
        have = float(row[0]) if row is not None else 0.0
        return max(1e-3, (cost - have) / rate) if rate > 0 else float("inf")

    def lease(self, key_id: str, *, rate: float, burst: int, want: float, need: float = 1.0, give_back: float = 0.0,
              now: float | None = None) -> tuple[float, float]:
        """Take a batch of tokens for one process to spend locally (:class:`~memos_integrations.server.limits.
        RateLimiter`'s lease), in one transaction: first ``give_back`` (an unspent lease returned; the bucket
        never exceeds ``burst``), then ``want`` tokens if the bucket holds them, else ``need`` (the request
        itself) if it holds those, else nothing.

        Args:
            key_id: the API key's id.
            rate: tokens per second the bucket refills.
            burst: the bucket's size (``want`` and ``need`` are capped to it).
            want: tokens asked for (the request's ``need`` and a lease to spend later).
            need: the fewest tokens worth taking (what the request that asks costs).
            give_back: tokens this process took earlier and did not spend.
            now: the wall clock (default ``time.time()``).

        Returns:
            ``(taken, wait_s)``: tokens taken (``want``, ``need`` or 0) and, when 0, the seconds until ``need``
            will be there (the given-back tokens are in the bucket either way).
        """
        now = time.time() if now is None else now
        size = float(max(1, burst))
        need = min(max(float(need), 0.0), size)
        want = min(max(float(want), need), size)
        refill = _refilled_params(now, rate, size)
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO rate_buckets (key_id, tokens, at) VALUES (?, ?, ?) ON CONFLICT (key_id) DO NOTHING",
                       (key_id, size, now))
            if give_back > 0:  # refilled to now plus what comes back, never above the bucket's size
                tx.execute(f"UPDATE rate_buckets SET tokens = CASE WHEN {_REFILLED} + ? > ? THEN ? ELSE {_REFILLED} + ? END,"
                           " at = CASE WHEN ? > at THEN ? ELSE at END WHERE key_id = ?",
                           (*refill, give_back, size, size, *refill, give_back, now, now, key_id))
            for asked in (want, need) if want > need else (need,):
                taken = tx.execute(
                    f"UPDATE rate_buckets SET tokens = {_REFILLED} - ?, at = CASE WHEN ? > at THEN ? ELSE at END"
                    f" WHERE key_id = ? AND {_REFILLED} >= ?",
                    (*refill, asked, now, now, key_id, *refill, asked)).rowcount
                if taken:
                    return asked, 0.0
            row = tx.execute(f"SELECT {_REFILLED} FROM rate_buckets WHERE key_id = ?", (*refill, key_id)).fetchone()
        have = float(row[0]) if row is not None else 0.0
        return 0.0, (max(1e-3, (need - have) / rate) if rate > 0 else float("inf"))

    def forget(self, key_id: str) -> None:
        """Drop a key's bucket (a revoked key's; a bucket comes back full on the next take)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM rate_buckets WHERE key_id = ?", (key_id,))
