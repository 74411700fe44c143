"""CPU per request of two production defaults that ``benchmarks/bench_service.py`` leaves out: the per-key
rate limit and the access log at level info. Both in CPU time (not wall clock), so other work on the
machine moves them little; a few seconds in all.

Rate limit: a ``mos.db`` transaction per request (``lease 1``, the old behaviour) against a per-process lease
(``memcube serve``'s default: 10 tokens per transaction):

- ``take``: ``RateLimiter.take`` alone, ``time.thread_time`` (and wall time: the commit) over ``--n`` takes of one key;
- ``authenticate``: what a search costs the event loop and the thread pool for its key and token
  (``Authenticator.authenticate_async`` with a cached key, run on an asyncio loop; ``time.process_time``,
  every thread of the process): with a lease the token is spent on the loop, without a thread hop.

Access log: one line per request to a file, ``time.thread_time`` per request: uvicorn's own access line (its
logging config at info, the line it writes for a search) against ``server/access_log.AccessLogMiddleware``
around a do-nothing ASGI app (the middleware's own cost included), less the same app without it.

Search front: what :mod:`memos_integrations.server.search_front` costs a search around a do-nothing route (a
stand-in embedder that answers at once), ``time.process_time`` per search: the route alone (one hop to a
search thread), the route's checks run first (a second hop), and checks that passed lately (one hop again).

Run: ``OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_service_costs [--n 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import logging.config
import tempfile
import time
from pathlib import Path
from typing import Any

from memos_integrations.server.access_log import AccessLogMiddleware
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


def _uvicorn_line_us(path: Path, n: int) -> float:
    """uvicorn's access line for a search, through its own logging config at info, written to ``path``."""
    import uvicorn.config

    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"] = {"formatter": "access", "class": "logging.FileHandler", "filename": str(path)}
    logging.config.dictConfig(config)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)
    target = "/v1/memories/search?q=When%20did%20Caroline%20go%20to%20the%20support%20group%3F&k=10"
    start = time.thread_time()
    for _ in range(n):  # the call uvicorn's HTTP protocol makes once per request
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50312", "GET", target, "1.1", 200)
    used = (time.thread_time() - start) / n * 1e6
    for handler in access.handlers:
        handler.close()
    access.handlers.clear()
    return used


def _middleware_us(path: Path, n: int) -> tuple[float, float]:
    """(the do-nothing app alone, the app behind AccessLogMiddleware logging to ``path``), CPU us per request."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    logger = logging.getLogger("bench.access")
    handler = logging.FileHandler(path)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logged = AccessLogMiddleware(app, logger)

    async def run(target: Any) -> float:
        start = time.thread_time()
        for _ in range(n):
            scope = {"type": "http", "method": "GET", "path": "/v1/memories/search",
                     "query_string": b"q=When+did+Caroline+go", "state": {"request_id": "3f2a9c1b7e0d4c55"}}
            await target(scope, receive, send)
        return (time.thread_time() - start) / n * 1e6

    try:
        return asyncio.run(run(app)), asyncio.run(run(logged))
    finally:
        handler.close()
        logger.removeHandler(handler)


def _front_us(n: int) -> tuple[float, float, float]:
    """CPU us per search through SearchFront: (the route alone, checks first every time, checks passed lately)."""
    from starlette.responses import Response

    from memos_integrations.server import search_front
    from memos_integrations.server.auth import Principal
    from memos_integrations.server.search_front import Prepared, SearchFront, two_step

    who = Principal("alice", None, "k1")

    async def authenticate(headers: Any) -> Principal:
        return who

    class Embedder:  # answers at once: only the front's own cost is measured
        def can_embed_async(self, query: str) -> bool:
            return True

        async def embed_query_async(self, query: str) -> list[float]:
            return [0.0]

    def prepare(who: Principal, q: str) -> Prepared:
        return Prepared(lambda: Response(b"{}"))

    def alone(who: Principal, q: str) -> Response:
        return Response(b"{}")

    def checked(who: Principal, q: str) -> Response:
        return prepare(who, q).answer()

    two_step(checked, prepare, lambda a: None)

    async def run(endpoint: Any) -> float:
        front = SearchFront(authenticate, Embedder(), threads=2)
        try:
            await front.run({}, endpoint, {"q": "tea"}, "tea", None)
            start = time.process_time()
            for _ in range(n):
                await front.run({}, endpoint, {"q": "tea"}, "tea", None)
            return (time.process_time() - start) / n * 1e6
        finally:
            front.close()

    lately = search_front.PASSED_SECONDS
    try:
        search_front.PASSED_SECONDS = -1.0  # nothing passed lately: the checks run first every time
        every_time = asyncio.run(run(checked))
    finally:
        search_front.PASSED_SECONDS = lately
    return asyncio.run(run(alone)), every_time, asyncio.run(run(checked))


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
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        uvicorn_us = _uvicorn_line_us(Path(tmp) / "uvicorn.log", a.n)
        bare, logged = _middleware_us(Path(tmp) / "ours.log", a.n)
    print("\n| access log, one line per request | CPU us/request |")
    print("|---|---|")
    print(f"| uvicorn's access line (query string included) | {uvicorn_us:.1f} |")
    print(f"| AccessLogMiddleware and its line (no query string) | {logged - bare:.1f} |")
    alone, every_time, lately = _front_us(max(1000, a.n // 4))
    print("\n| search front around a do-nothing route | process CPU us/search |")
    print("|---|---|")
    print(f"| the route alone (one hop to a search thread) | {alone:.1f} |")
    print(f"| the route's checks first, then the route (two hops) | {every_time:.1f} |")
    print(f"| checks passed lately (the hint): one hop | {lately:.1f} |")


if __name__ == "__main__":
    main()
