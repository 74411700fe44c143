"""Rate buckets shared through the home's database: exact arithmetic, no negative refill, and two
processes hammering one key never get more than the bucket allows (the limit ``memcube serve
--workers N`` relies on)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.storage.rate_limits import RateBuckets
from memos_integrations.storage.sql import SQLiteDatabase


def _buckets(path: Path) -> RateBuckets:
    return RateBuckets(SQLiteDatabase(path))


def test_burst_then_refill_then_retry_after(tmp_path: Path) -> None:
    b = _buckets(tmp_path / "mos.db")
    assert [b.take("k", rate=2.0, burst=3, now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k", rate=2.0, burst=3, now=10.0) == 0.5  # one token at 2/s: half a second away
    assert b.take("k", rate=2.0, burst=3, now=10.5) == 0.0
    assert b.take("other", rate=2.0, burst=3, now=10.5) == 0.0  # per key
    # idle for an hour: back to the burst, never above it
    assert [b.take("k", rate=2.0, burst=3, now=3610.0) for _ in range(4)][-1] > 0


def test_a_clock_behind_the_bucket_refills_nothing(tmp_path: Path) -> None:
    b = _buckets(tmp_path / "mos.db")
    assert b.take("k", rate=1.0, burst=1, now=100.0) == 0.0
    assert b.take("k", rate=1.0, burst=1, now=50.0) > 0  # another process's clock, 50 s behind: no tokens from it
    assert b.take("k", rate=1.0, burst=1, now=101.0) == 0.0


def test_a_refused_take_writes_nothing_and_forget_refills(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "mos.db")
    b = RateBuckets(db)
    b.take("k", rate=1.0, burst=1, now=5.0)
    before = db.read("SELECT tokens, at FROM rate_buckets")
    assert b.take("k", rate=1.0, burst=1, now=5.2) > 0
    assert db.read("SELECT tokens, at FROM rate_buckets") == before
    b.forget("k")
    assert b.take("k", rate=1.0, burst=1, now=5.2) == 0.0


RATE, BURST, SECONDS = 20.0, 10, 1.5


def _hammer(path: str, ready: Any, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    b = RateBuckets(SQLiteDatabase(path))
    ready.wait()  # both opened: race from here (a fixed start time lost one process on a loaded machine)
    start = time.time()
    taken = tried = 0
    while time.time() < start + SECONDS:
        tried += 1
        taken += b.take("shared-key", rate=RATE, burst=BURST) == 0.0
    out.put((taken, tried))


def test_two_processes_never_exceed_one_bucket(tmp_path: Path) -> None:
    path = str(tmp_path / "mos.db")
    _buckets(Path(path))  # migrate once, before the race
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    ready = ctx.Barrier(2)
    procs = [ctx.Process(target=_hammer, args=(path, ready, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    taken = sum(r[0] for r in results)
    tried = sum(r[1] for r in results)
    allowed = BURST + RATE * SECONDS  # the documented limit; the slack is zero (one clock)
    assert all(r[1] > 50 for r in results), results  # both really raced
    assert tried > 2 * allowed
    assert BURST <= taken <= allowed + 1, (taken, allowed, results)


def test_a_database_held_by_another_writer_is_a_clear_error_not_an_operational_error(tmp_path: Path) -> None:
    """Past the busy timeout, a write is refused with CubeLockedError (the service's 409 'retry'), never the
    raw sqlite3.OperationalError that the service answered as a 500; nothing is written."""
    import sqlite3

    from memos_integrations.errors import CubeLockedError

    db = SQLiteDatabase(tmp_path / "mos.db", timeout=0.2)
    buckets = RateBuckets(db)
    other = sqlite3.connect(str(tmp_path / "mos.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    try:
        with pytest.raises(CubeLockedError, match="retry"):
            buckets.take("k", rate=1.0, burst=2)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert buckets.take("k", rate=1.0, burst=2) == 0.0  # the lock gone, the bucket is whole
    db.close()
