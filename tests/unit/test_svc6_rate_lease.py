"""Per-process rate leases (server/limits.RateLimiter over storage/rate_limits.RateBuckets.lease): a process
spends tokens taken in batches without a mos.db write per request, and the documented bound holds across
processes: in any window of t seconds a key gets at most rate * t + burst + N * (lease - 1) requests."""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.server.errors import RateLimitedError
from memos_integrations.server.limits import Limits, RateLimiter
from memos_integrations.storage.rate_limits import RateBuckets
from memos_integrations.storage.sql import SQLiteDatabase


class Clock:
    """A settable monotonic clock for the leases' age (tests move it, also backwards)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _limiter(path: Path, clock: Clock, *, rate: float = 10.0, burst: int = 20, lease: int = 5) -> RateLimiter:
    return RateLimiter(rate, burst, RateBuckets(SQLiteDatabase(path)), lease=lease, clock=clock)


def _admitted(limiter: RateLimiter, key: str, now: float) -> bool:
    try:
        limiter.take(key, now=now)
    except RateLimitedError:
        return False
    return True


def test_one_process_allows_the_burst_then_refuses_at_once_with_an_honest_retry_after(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path / "mos.db", clock, rate=2.0, burst=20, lease=5)
    assert all(_admitted(limiter, "k", 50.0) for _ in range(20))
    with pytest.raises(RateLimitedError, match="retry after 1 s") as refused:
        limiter.take("k", now=50.0)
    assert refused.value.retry_after == 1  # type: ignore[attr-defined]  # one token at 2/s: half a second, rounded up
    assert limiter.transactions <= 20 // 5 + 2  # a lease per 5 requests, not a write each
    clock.t += 0.5
    assert _admitted(limiter, "k", 50.5)  # the token the Retry-After promised is there


def test_a_flood_of_refused_requests_costs_no_transaction_each(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path / "mos.db", clock, rate=1.0, burst=10, lease=5)
    assert sum(_admitted(limiter, "k", 20.0) for _ in range(1000)) == 10
    assert limiter.transactions <= 10 // 5 + 2
    clock.t += 0.5
    with pytest.raises(RateLimitedError) as refused:
        limiter.take("k", now=20.5)
    assert refused.value.retry_after == 1  # type: ignore[attr-defined]  # half a second left, rounded up
    clock.t += 0.5
    assert _admitted(limiter, "k", 21.0)


def test_a_key_idle_past_the_lease_sees_exactly_its_burst_again(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path / "mos.db", clock, rate=1.0, burst=20, lease=5)
    assert _admitted(limiter, "k", 10.0)  # holds 4 unspent tokens from here
    clock.t += 5.0  # the lease is stale: it goes back to the bucket (full again, never above it) with the next take
    assert sum(_admitted(limiter, "k", 3600.0) for _ in range(30)) == 20


def test_two_limiters_on_one_database_never_exceed_the_bound_in_any_window(tmp_path: Path) -> None:
    """Two RateLimiter objects on one mos.db are what two serving processes are; a random schedule of both
    (idle gaps included, so leases go stale and come back), checked over every window of the run."""
    rate, burst, lease, n = 10.0, 20, 5, 2
    clock = Clock()
    limiters = [_limiter(tmp_path / "mos.db", clock, rate=rate, burst=burst, lease=lease) for _ in range(n)]
    rng = random.Random(7)
    now, times = 100.0, []
    for _ in range(3000):
        step = rng.choice((0.0, 0.0, 0.001, 0.01, 0.05, 1.5))
        now += step
        clock.t += step
        if _admitted(limiters[rng.randrange(n)], "shared", now):
            times.append(now)
    assert len(times) > burst + rate * 10
    over = max((j - i + 1) - (rate * (times[j] - start) + burst)  # beyond what one shared bucket alone allows
               for i, start in enumerate(times) for j in range(i, len(times)))
    assert over <= n * (lease - 1) + 1e-9, over


def test_the_worst_case_of_the_bound_is_reached_and_not_passed(tmp_path: Path) -> None:
    """Both processes hold a fresh lease's unspent tokens while the bucket refills to full: at that instant a
    key gets burst + N * (lease - 1) - (what the bucket still lacks), more than one bucket alone, never more."""
    rate, burst, lease = 10.0, 20, 5
    clock = Clock()
    a, b = (_limiter(tmp_path / "mos.db", clock, rate=rate, burst=burst, lease=lease) for _ in range(2))
    assert _admitted(a, "k", 0.0) and _admitted(b, "k", 0.0)  # each holds 4; the bucket 10
    clock.t += 0.99  # leases still fresh; the bucket refilled to 19.9
    at_once = sum(_admitted(p, "k", 0.99) for p in (a, b) for _ in range(40))
    assert at_once == 4 + 4 + 19
    assert burst < at_once <= rate * 0 + burst + 2 * (lease - 1)


def test_a_lease_belongs_to_its_key_and_another_key_is_unaffected(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path / "mos.db", clock, rate=1.0, burst=20, lease=5)
    assert _admitted(limiter, "a", 10.0)
    assert not limiter.spend_local("b")  # a's unspent tokens are not b's
    while _admitted(limiter, "a", 10.0):
        pass
    assert sum(_admitted(limiter, "b", 10.0) for _ in range(25)) == 20  # b has its own full bucket
    limiter.forget("b")  # a revoked key's lease is dropped
    assert not limiter.spend_local("b")


def test_a_clock_going_backwards_makes_the_lease_stale_and_refills_nothing(tmp_path: Path) -> None:
    clock = Clock()
    limiter = _limiter(tmp_path / "mos.db", clock, rate=1.0, burst=10, lease=5)
    taken = sum(_admitted(limiter, "k", 100.0) for _ in range(12))
    assert taken == 10
    clock.t -= 3600.0  # the lease's clock jumped back: its tokens are not trusted, the bucket decides
    before = limiter.transactions
    assert not _admitted(limiter, "k", 50.0)  # the wall clock 50 s behind the bucket: no refill from it
    assert limiter.transactions == before + 1
    clock.t += 1.0
    assert _admitted(limiter, "k", 101.0)


def test_rate_zero_turns_the_limit_off_and_writes_nothing(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "mos.db")
    limiter = RateLimiter(0.0, 5, RateBuckets(db), lease=5)
    assert not limiter.active
    for _ in range(1000):
        limiter.take("k")
    assert limiter.transactions == 0
    assert db.read("SELECT COUNT(*) FROM rate_buckets") == [(0,)]


def test_the_lease_is_a_tenth_of_the_burst_at_most() -> None:
    assert Limits().lease == 10
    assert Limits(burst=5).lease == 1  # small buckets: a transaction per request, as before
    assert Limits(burst=100, rate_lease=1).lease == 1


RATE, BURST, LEASE, SECONDS = 20.0, 40, 4, 1.5


def _hammer(path: str, ready: Any, out: Any) -> None:
    limiter = RateLimiter(RATE, BURST, RateBuckets(SQLiteDatabase(path)), lease=LEASE)
    ready.wait()
    start = time.time()
    stamps: list[float] = []
    tried = 0
    while time.time() < start + SECONDS:
        tried += 1
        try:
            limiter.take("shared-key")
        except RateLimitedError:
            continue
        stamps.append(time.time())
    out.put((stamps, tried, limiter.transactions))


def test_two_processes_sharing_a_key_never_exceed_the_bound(tmp_path: Path) -> None:
    path = str(tmp_path / "mos.db")
    RateBuckets(SQLiteDatabase(path))  # migrate once, before the race
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    ready = ctx.Barrier(2)
    procs = [ctx.Process(target=_hammer, args=(path, ready, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    stamps = sorted(s for r in results for s in r[0])
    assert all(r[1] > 50 for r in results), [r[1:] for r in results]  # both really raced
    assert len(stamps) >= BURST
    span = stamps[-1] - stamps[0]
    assert len(stamps) <= RATE * span + BURST + 2 * (LEASE - 1) + 1, (len(stamps), span)
    assert sum(r[2] for r in results) < sum(r[1] for r in results) / 10  # not a transaction per request
