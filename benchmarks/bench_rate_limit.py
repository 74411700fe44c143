"""CPU per request of the per-key rate limit: a ``mos.db`` transaction per request (``lease 1``, the old
behaviour) against a per-process lease (``memcube serve``'s default: 10 tokens per transaction).

Two figures per lease size, both CPU time (not wall clock), so other work on the machine moves them little:

- ``take``: ``RateLimiter.take`` alone, ``time.thread_time`` (and wall time: the commit) over ``--n`` takes of one key;
- ``authenticate``: what a search costs the event loop and the thread pool for its key and token
  (``Authenticator.authenticate_async`` with a cached key, run on an asyncio loop; ``time.process_time``,
  every thread of the process): with a lease the token is spent on the loop, without a thread hop.

Run: ``OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_rate_limit [--n 20000]`` (a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from memos_integrations.server.auth import Authenticator
from memos_integrations.server.limits import RateLimiter
from memos_integrations.storage.keys import KeyStore
from memos_integrations.storage.rate_limits import RateBuckets
from memos_integrations.storage.sql import SQLiteDatabase


def _take_us(path: Path, lease: int, n: int) -> tuple[float, float, int]:
    limiter = RateLimiter(1e9, 1_000_000, RateBuckets(SQLiteDatabase(path)), lease=lease)  # never refuses
    limiter.take("warm")
    start, wall = time.thread_time(), time.perf_counter()
    for _ in range(n):
        limiter.take("k")
    return ((time.thread_time() - start) / n * 1e6, (time.perf_counter() - wall) / n * 1e6, limiter.transactions)


def _authenticate_us(home: Path, lease: int, n: int) -> float:
    keys = KeyStore.open(home / "mos.db")
    token, _ = keys.create("alice")
    limiter = RateLimiter(1e9, 1_000_000, RateBuckets(keys.db), lease=lease)
    auth = Authenticator(keys, limiter)
    headers = {"authorization": f"Bearer {token}"}

    async def run() -> float:
        await auth.authenticate_async(headers)  # verified once: cached from here, as a busy key is
        start = time.process_time()
        for _ in range(n):
            await auth.authenticate_async(headers)
        return (time.process_time() - start) / n * 1e6

    try:
        return asyncio.run(run())
    finally:
        keys.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="takes per figure")
    ap.add_argument("--leases", default="1,10", help="lease sizes to compare (1: a transaction per request)")
    a = ap.parse_args()
    print("| lease | take, CPU us/request | take, wall us/request | transactions | authenticate_async, process CPU us/request |")
    print("|---|---|---|---|---|")
    for lease in (int(x) for x in a.leases.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
            home = Path(tmp)
            take_us, take_wall, tx = _take_us(home / "buckets.db", lease, a.n)
            auth_us = _authenticate_us(home, lease, a.n)
        print(f"| {lease} | {take_us:.1f} | {take_wall:.1f} | {tx} | {auth_us:.1f} |")


if __name__ == "__main__":
    main()
