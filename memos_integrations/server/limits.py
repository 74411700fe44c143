"""The service's limits: per-key rate (a token bucket), request body size, page and result sizes, CORS.

A key's bucket holds ``burst`` tokens and refills at ``rate`` per second; a request takes one or is
refused with 429 and ``Retry-After`` (whole seconds until a token is there). The buckets live in the
home's ``mos.db`` (:mod:`memos_integrations.storage.rate_limits`), so every process serving the home
(``memcube serve --workers N``, or two servers started by hand) spends one bucket per key: N
processes never allow N times the rate. Taking a token is one small SQLite write transaction.
The body limit is enforced while the body streams in, so a client that lies in ``Content-Length``, or
sends none, is cut off at the limit too (413).
"""

from __future__ import annotations

import json
import math
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
    """

    rate: float = 50.0
    burst: int = 100
    max_body_bytes: int = 1 << 20
    max_k: int = 100
    max_page: int = 500
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    key_cache_seconds: float = 2.0


class RateLimiter:
    """One token bucket per key id, shared through a :class:`RateBuckets` table by every serving process."""

    def __init__(self, rate: float, burst: int, buckets: RateBuckets | None = None) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.buckets = buckets

    @property
    def active(self) -> bool:
        return self.rate > 0 and self.buckets is not None

    def take(self, key: str, now: float | None = None, cost: float = 1.0) -> None:
        """Take ``cost`` tokens for ``key`` (one per request; more for a request that does the work of
        several), or raise :class:`RateLimitedError` carrying ``retry_after`` seconds."""
        if not self.active:
            return
        assert self.buckets is not None
        wait_s = self.buckets.take(key, rate=self.rate, burst=self.burst, now=now, cost=cost)
        if wait_s <= 0:
            return
        wait = max(1, math.ceil(wait_s))
        err = RateLimitedError(f"this key is limited to {self.rate:g} requests/s (bursts of {self.burst}); "
                               f"retry after {wait} s, or ask the operator for a higher limit")
        err.retry_after = wait  # type: ignore[attr-defined]
        raise err


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
