"""The service's limits: per-key rate (a token bucket), request body size, page and result sizes, CORS.

A key's bucket holds ``burst`` tokens and refills at ``rate`` per second; a request takes one or is
refused with 429 and ``Retry-After`` (whole seconds until a token is there). The buckets live in the
home's ``mos.db`` (:mod:`memos_integrations.storage.rate_limits`), so every process serving the home
(``memcube serve --workers N``, or two servers started by hand) spends one bucket per key: N
processes never allow N times the rate.

Leases: a write transaction on ``mos.db`` per request cost the serving process ~0.3 ms of its GIL (and a
hop to a worker thread), so a process takes up to ``lease`` tokens in one transaction and spends them
locally (:class:`RateLimiter`). The bound across processes: in any window of ``t`` seconds, a key gets at
most ``rate * t + burst + N * (lease - 1)`` requests through N processes (each can hold at most
``lease - 1`` unspent tokens taken before the window). A lease unspent for ``lease_seconds`` goes back to
the bucket with the process's next request for that key, so a key idle that long sees exactly ``burst``
again; a process takes only the request's own token when the bucket holds less than a lease, so one
process alone allows ``burst`` at once and then refuses, as without leases. ``lease=1`` is the old
token-per-transaction behaviour.
The body limit is enforced while the body streams in, so a client that lies in ``Content-Length``, or
sends none, is cut off at the limit too (413).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..storage.rate_limits import RateBuckets
from .errors import REQUEST_ID, RateLimitedError


@dataclass(frozen=True)
class Limits:
    """What one key may send. Defaults suit one user's agent; raise them for a busy shared key.

    Attributes:
        rate: requests per second per key (the bucket's refill); 0 turns rate limiting off.
        burst: requests a key may send at once after being idle (the bucket's size).
        max_body_bytes: the largest request body accepted (413 above it).
        max_k: the most search results one request may ask for.
        max_page: the most items one listing page may hold.
        cors_origins: origins allowed to call from a browser; empty (the default) sends no CORS headers.
        key_cache_seconds: how long a process trusts a key it verified without reading the key store again;
            a revoked key stops working in every process within this time (0: read the store on every request).
        rate_lease: the most tokens a process takes from a key's shared bucket at once and spends without
            writing ``mos.db`` (capped at a tenth of ``burst``; 1: a write per request). Each serving process
            can let a key through ``rate_lease - 1`` times beyond ``rate * t + burst`` (module docstring).
    """

    rate: float = 50.0
    burst: int = 100
    max_body_bytes: int = 1 << 20
    max_k: int = 100
    max_page: int = 500
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    key_cache_seconds: float = 2.0
    rate_lease: int = 10

    @property
    def lease(self) -> int:
        """The lease a process takes: ``rate_lease``, at most a tenth of ``burst``, at least one token."""
        return max(1, min(self.rate_lease, self.burst // 10))


class RateLimiter:
    """One token bucket per key id, shared through a :class:`RateBuckets` table by every serving process, spent
    through a per-process lease of up to ``lease`` tokens (module docstring: the bound that holds).

    Thread-safe: each key's lease has its own lock, held across the transaction that refills it, so two
    threads of one process never both take a lease for one key (the per-process bound of ``lease - 1``
    unspent tokens holds). :meth:`spend_local` never waits, for the event loop.

    Args:
        rate: tokens per second (0: no limit).
        burst: the bucket's size.
        buckets: the shared buckets (None: no limit).
        lease: the most tokens taken at once (1: one transaction per request).
        lease_seconds: a lease unspent this long goes back to the bucket with the key's next request here.
        clock: the lease's clock (monotonic; a clock that goes back makes the lease stale, never fresher).
    """

    #: keys whose lease one process remembers (all dropped when it fills: unspent tokens are lost, never reused)
    MAX_LEASES = 10_000

    def __init__(self, rate: float, burst: int, buckets: RateBuckets | None = None, *, lease: int = 1,
                 lease_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.buckets = buckets
        self.lease = max(1, min(int(lease), self.burst))
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._leases: dict[str, _Lease] = {}
        self._leases_lock = threading.Lock()
        #: transactions on the shared bucket (the benchmark and tests read it)
        self.transactions = 0

    @property
    def active(self) -> bool:
        return self.rate > 0 and self.buckets is not None

    def take(self, key: str, now: float | None = None, cost: float = 1.0) -> None:
        """Take ``cost`` tokens for ``key`` (one per request; more for a request that does the work of
        several), or raise :class:`RateLimitedError` carrying ``retry_after`` seconds.

        ``now`` is the shared bucket's wall clock (default ``time.time()``); the lease's age is read from ``clock``.
        """
        if not self.active or self.spend_local(key, cost):
            return
        assert self.buckets is not None
        lease = self._lease_of(key)
        with lease.lock:
            if self._spend(lease, cost):  # another thread refilled it meanwhile
                return
            at = self.clock()
            wait_s = lease.refused_until - at
            if not (cost >= lease.refused_cost and 0 < wait_s <= lease.refused_until - lease.at):
                self.transactions += 1
                taken, wait_s = self.buckets.lease(key, rate=self.rate, burst=self.burst, want=cost + self.lease - 1,
                                                   need=cost, give_back=lease.tokens, now=now)
                lease.tokens, lease.at = max(0.0, taken - cost), at  # the old lease went back in that transaction
                if taken > 0:
                    lease.refused_until = 0.0
                    return
                # refused: the bucket's refill will not bring ``cost`` before then, so until then this key's requests
                # are refused here without a transaction each (a lease another process gives back meanwhile waits)
                lease.refused_until, lease.refused_cost = at + wait_s, cost
        wait = max(1, math.ceil(wait_s))
        err = RateLimitedError(f"this key is limited to {self.rate:g} requests/s (bursts of {self.burst}); "
                               f"retry after {wait} s, or ask the operator for a higher limit")
        err.retry_after = wait  # type: ignore[attr-defined]
        raise err

    def spend_local(self, key: str, cost: float = 1.0) -> bool:
        """Spend ``cost`` from this process's fresh lease for ``key`` without touching the database or waiting
        (a lock held by a refilling thread answers False); False: call :meth:`take` (in a worker thread)."""
        if not self.active:
            return True
        lease = self._leases.get(key)
        if lease is None or not lease.lock.acquire(blocking=False):
            return False
        try:
            return self._spend(lease, cost)
        finally:
            lease.lock.release()

    def forget(self, key: str) -> None:
        """Drop this process's lease for ``key`` (a revoked key's; its unspent tokens are lost, never reused)."""
        with self._leases_lock:
            self._leases.pop(key, None)

    def _spend(self, lease: _Lease, cost: float) -> bool:
        age = self.clock() - lease.at
        if lease.tokens >= cost and 0 <= age < self.lease_seconds:
            lease.tokens -= cost
            return True
        return False

    def _lease_of(self, key: str) -> _Lease:
        with self._leases_lock:
            lease = self._leases.get(key)
            if lease is None:
                if len(self._leases) >= self.MAX_LEASES:
                    self._leases.clear()
                lease = self._leases[key] = _Lease()
            return lease


class _Lease:
    """Tokens one process took from a key's shared bucket and has not spent, and when it took them."""

    __slots__ = ("at", "lock", "refused_cost", "refused_until", "tokens")

    def __init__(self) -> None:
        self.tokens = 0.0
        self.at = 0.0
        self.lock = threading.Lock()
        self.refused_until = 0.0  # the bucket refused ``refused_cost`` tokens until then (the lease's clock)
        self.refused_cost = 0.0


class BodyLimitMiddleware:
    """Refuse a request body over ``max_bytes`` with 413, by ``Content-Length`` or while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0 or declared > self.max_bytes:
                await self._refuse(scope, send)
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI turns an error while reading the body into a 400; the flag makes it a 413
                    scope.setdefault("state", {})["body_too_big"] = self.max_bytes
                    raise _TooBig
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooBig:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        rid = str(scope.get("state", {}).get("request_id", ""))
        payload = json.dumps({"error": {
            "type": "OversizedInputError", "message": too_big_message(self.max_bytes), "request_id": rid}}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (REQUEST_ID.lower().encode(), rid.encode("latin-1")), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def too_big_message(max_bytes: int) -> str:
    return (f"the request body is over {max_bytes} bytes; send less per request (split a batch), "
            "or ask the operator to raise max_body_bytes")


class _TooBig(Exception):
    """Raised inside the app's receive() to stop reading a body over the limit."""
