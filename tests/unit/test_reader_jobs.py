"""The durable job queue (storage/jobs.py): idempotent keys, leases, attempts, errors, exactly-once finish."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from memos_integrations.errors import InvalidInputError
from memos_integrations.storage.jobs import JobQueue
from memos_integrations.storage.migrations import current_version
from memos_integrations.storage.sql import SQLiteDatabase


@pytest.fixture
def queue(tmp_path: Path) -> JobQueue:
    return JobQueue(SQLiteDatabase(tmp_path / "jobs.db"))


def test_same_key_is_queued_once(queue: JobQueue) -> None:
    job, created = queue.enqueue("read", "k1", {"ids": ["a"]}, user_id="u")
    again, created_again = queue.enqueue("read", "k1", {"ids": ["b"]}, user_id="u")
    assert created and not created_again and again.id == job.id and again.payload == {"ids": ["a"]}
    assert queue.enqueue("organise", "k1", {})[1]  # keys are per kind
    assert current_version(queue.db, "jobs") == 1


def test_claim_lease_and_expiry(queue: JobQueue) -> None:
    job, _ = queue.enqueue("read", "k", {})
    first = queue.claim("read", lease_s=0.05)
    assert first is not None and first.id == job.id and first.attempts == 1 and first.state == "running"
    assert queue.claim("read") is None  # leased
    time.sleep(0.06)
    second = queue.claim("read")  # the first worker died: its lease ran out
    assert second is not None and second.attempts == 2


def test_finish_commits_with_the_callers_transaction(queue: JobQueue) -> None:
    job, _ = queue.enqueue("read", "k", {})
    queue.claim("read")
    with pytest.raises(InvalidInputError):
        with queue.db.transaction():
            queue.finish(job.id, {"ok": True})
            raise InvalidInputError("the write that goes with it failed")
    assert queue.pending("read")[0].state == "running"  # not done: its effect was rolled back too
    with queue.db.transaction():
        queue.finish(job.id, {"ok": True})
    assert queue.pending("read") == [] and queue.get("read", "k").result == {"ok": True}  # type: ignore[union-attr]


def test_fail_retry_and_requeue(queue: JobQueue) -> None:
    job, _ = queue.enqueue("read", "k", {}, user_id="u")
    queue.claim("read")
    queue.fail(job.id, "ReaderError: endpoint down", final=False, retry_after=60)
    [pending] = queue.pending("read", user_id="u")
    assert pending.state == "queued" and pending.error == "ReaderError: endpoint down"
    assert queue.claim("read") is None  # not due yet
    queue.fail(job.id, "BudgetExceededError: spent", final=True)
    assert queue.pending("read")[0].state == "failed" and queue.counts("read") == {"failed": 1}
    assert queue.retry("read") == 1 and queue.claim("read") is not None
    assert queue.requeue_running("read") == 1 and queue.counts("read") == {"queued": 1}
    assert queue.claim("read", ids=[]) is None and queue.claim("read", ids=[job.id + 1]) is None
