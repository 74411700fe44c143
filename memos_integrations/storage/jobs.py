"""The durable job queue in a cube's database: background work that must survive a crash.

The LLM reader's async mode queues one job per window of messages here (``kind="read"``); other
background work (an organise pass) can share the table under its own ``kind``. What holds:

- **idempotent**: a job's ``(kind, key)`` is unique; enqueueing a key that exists does nothing, so
  the same window is never queued (or read) twice;
- **leases**: a worker claims a job for ``lease_s`` seconds; a worker that dies (kill -9) leaves the
  lease to expire and the next claim takes the job again (``attempts`` counts claims). A process that
  holds the cube exclusively calls :meth:`JobQueue.requeue_running` on open: nobody else can be
  running those jobs;
- **exactly-once effect**: :meth:`JobQueue.finish` runs inside the caller's transaction (nested
  transactions join), so a job is marked done in the same commit as what it wrote, or not at all;
- **errors kept**: a failed attempt keeps its error text; after the last attempt the job is
  ``failed`` and stays listed by :meth:`JobQueue.pending` until retried or dropped.

SQL follows the portable rules of :mod:`memos_integrations.storage.sql`; DDL per dialect is below.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ConflictError
from .base import Job
from .migrations import migrate
from .sql import Database, Row

COMPONENT = "jobs"

_COLUMNS = ("id, kind, key, payload, state, user_id, attempts, error, result, created_at, updated_at, "
            "lease_until, not_before, extra")

MIGRATIONS: dict[str, list[str]] = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL, "
        "payload TEXT NOT NULL, state TEXT NOT NULL, user_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, "
        "result TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, lease_until REAL, not_before REAL, "
        "extra TEXT NOT NULL DEFAULT '{}', UNIQUE (kind, key));"
        "CREATE INDEX IF NOT EXISTS jobs_kind_state ON jobs (kind, state, id)",
    ],
    "postgres": [
        "CREATE TABLE IF NOT EXISTS jobs (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL, "
        "key TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL, user_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
        "error TEXT, result TEXT, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, "
        "lease_until DOUBLE PRECISION, not_before DOUBLE PRECISION, extra TEXT NOT NULL DEFAULT '{}', UNIQUE (kind, key));"
        "CREATE INDEX IF NOT EXISTS jobs_kind_state ON jobs (kind, state, id)",
    ],
}

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


def _job(row: Row) -> Job:
    return Job(
        id=int(row[0]), kind=row[1], key=row[2], payload=json.loads(row[3]), state=row[4], user_id=row[5],
        attempts=int(row[6]), error=row[7], result=None if row[8] is None else json.loads(row[8]),
        created_at=float(row[9]), updated_at=float(row[10]), lease_until=row[11], not_before=row[12],
        extra=json.loads(row[13] or "{}"),
    )


_FENCE = " AND state = ? AND attempts = ?"


def _fence_args(attempt: int | None) -> tuple[Any, ...]:
    return () if attempt is None else (RUNNING, attempt)


def _check_fence(rowcount: int, job_id: int, attempt: int | None) -> None:
    if attempt is not None and rowcount != 1:
        raise ConflictError(
            f"job {job_id} was claimed again after this worker's lease ran out (attempt {attempt} is stale): "
            "its result is discarded; the worker that holds it now records the outcome")


class JobQueue:
    """Jobs of one cube's database (see the module docstring for what holds)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db, COMPONENT, MIGRATIONS)

    def enqueue(self, kind: str, key: str, payload: dict[str, Any], *, user_id: str | None = None) -> tuple[Job, bool]:
        """Queue a job unless ``(kind, key)`` exists; returns the job and whether it is new."""
        now = time.time()
        with self.db.transaction() as tx:
            cur = tx.execute(
                "INSERT INTO jobs (kind, key, payload, state, user_id, attempts, created_at, updated_at, extra) "
                "VALUES (?, ?, ?, ?, ?, 0, ?, ?, '{}') ON CONFLICT (kind, key) DO NOTHING",
                (kind, key, json.dumps(payload), QUEUED, user_id, now, now))
            created = cur.rowcount == 1
            row = tx.execute(f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        assert row is not None
        return _job(row), created

    def get(self, kind: str, key: str) -> Job | None:
        row = self.db.read_one(f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND key = ?", (kind, key))
        return None if row is None else _job(row)

    def claim(self, kind: str, *, lease_s: float = 120.0, ids: Sequence[int] | None = None) -> Job | None:
        """Take the oldest runnable job of ``kind`` (queued and due, or running with an expired lease).

        ``ids`` restricts the claim to those jobs (a fine-mode add reads its own windows first).
        """
        now = time.time()
        only = ""
        params: list[Any] = [kind, QUEUED, now, RUNNING, now]
        if ids is not None:
            if not ids:
                return None
            only = f" AND id IN ({', '.join('?' * len(ids))})"
            params.extend(ids)
        with self.db.transaction() as tx:
            tx.lock(f"jobs:{kind}")
            row = tx.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND ((state = ? AND (not_before IS NULL OR not_before <= ?)) "
                f"OR (state = ? AND lease_until < ?)){only} ORDER BY id LIMIT 1", params).fetchone()
            if row is None:
                return None
            job = _job(row)
            tx.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, lease_until = ?, updated_at = ? WHERE id = ?",
                       (RUNNING, now + lease_s, now, job.id))
        job.state, job.attempts, job.lease_until, job.updated_at = RUNNING, job.attempts + 1, now + lease_s, now
        return job

    def finish(self, job_id: int, result: dict[str, Any], *, attempt: int | None = None) -> None:
        """Mark a job done; call it inside the transaction that writes the job's effect.

        ``attempt`` (the claimed job's ``attempts``) fences a worker whose lease ran out: if another
        worker claimed the job since, this raises :class:`ConflictError` and the caller's transaction,
        with the effect it wrote, rolls back, so a window is never applied twice.
        """
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE jobs SET state = ?, result = ?, error = NULL, lease_until = NULL, updated_at = ? WHERE id = ?"
                + _FENCE * (attempt is not None),
                (DONE, json.dumps(result, default=str), time.time(), job_id) + _fence_args(attempt))
            _check_fence(cur.rowcount, job_id, attempt)

    def fail(self, job_id: int, error: str, *, final: bool, retry_after: float = 0.0, attempt: int | None = None) -> None:
        """Record a failed attempt: queued again after ``retry_after`` seconds, or ``failed`` if ``final``.

        ``attempt`` fences a stale worker as in :meth:`finish` (ConflictError, nothing recorded).
        """
        now = time.time()
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE jobs SET state = ?, error = ?, lease_until = NULL, not_before = ?, updated_at = ? WHERE id = ?"
                + _FENCE * (attempt is not None),
                (FAILED if final else QUEUED, error[:2000], now + retry_after, now, job_id) + _fence_args(attempt))
            _check_fence(cur.rowcount, job_id, attempt)

    def retry(self, kind: str, ids: Sequence[int] | None = None) -> int:
        """Queue ``failed`` jobs again (all of ``kind``, or ``ids``); returns how many."""
        sql, params = "UPDATE jobs SET state = ?, not_before = NULL, updated_at = ? WHERE kind = ? AND state = ?", \
            [QUEUED, time.time(), kind, FAILED]
        if ids is not None:
            if not ids:
                return 0
            sql += f" AND id IN ({', '.join('?' * len(ids))})"
            params.extend(ids)
        with self.db.transaction() as tx:
            return int(tx.execute(sql, params).rowcount)

    def requeue_running(self, kind: str) -> int:
        """Give back jobs left ``running`` by a process that died (call only while holding the cube alone)."""
        with self.db.transaction() as tx:
            return int(tx.execute("UPDATE jobs SET state = ?, lease_until = NULL WHERE kind = ? AND state = ?",
                                  (QUEUED, kind, RUNNING)).rowcount)

    def pending(self, kind: str, user_id: str | None = None) -> list[Job]:
        """Jobs not done (queued, running or failed), oldest first."""
        sql, params = f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND state <> ?", [kind, DONE]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        return [_job(r) for r in self.db.read(sql + " ORDER BY id", params)]

    def counts(self, kind: str) -> dict[str, int]:
        rows = self.db.read("SELECT state, COUNT(*) FROM jobs WHERE kind = ? GROUP BY state", (kind,))
        return {str(r[0]): int(r[1]) for r in rows}
