"""Who is calling: API keys to a :class:`Principal`, for the REST routes and the MCP endpoint alike.

A request names its key as ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). Every failure
(no key, malformed, unknown, revoked, expired) is the same 401 with the same message, so a caller
learns nothing about which keys or users exist; the refusal is written to the key store's audit log
with the key id it claimed. A key that passes then takes a token from its rate bucket (429 when empty). A verified key is
cached for a few seconds (:class:`Authenticator`), which bounds how long a revocation takes to reach a process.
What a principal may do is decided by MOS (:mod:`memos_integrations.access`), never here.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..errors import InvalidInputError
from ..storage.keys import PREFIX, KeyInfo, KeyStore, digest
from .errors import AuthenticationError
from .limits import RateLimiter

UNAUTHORIZED = ("a valid API key is required: send 'Authorization: Bearer <key>'; "
                "create one with `memcube keys create --home <home> --user <you>`")


@dataclass(frozen=True)
class Principal:
    """The caller: the key's user, its agent (None for a user-wide key) and the key's public id."""

    user_id: str
    agent_id: str | None
    key_id: str


def _header(headers: Mapping[str, str] | Iterable[tuple[Any, Any]], name: str) -> str | None:
    """One header from a Starlette ``Headers``, a plain dict (any case) or raw ASGI ``(bytes, bytes)`` pairs."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        k = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if k.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def token_of(headers: Mapping[str, str] | Iterable[tuple[Any, Any]]) -> str | None:
    """The API key a request carries: ``Authorization: Bearer <key>``, else ``X-API-Key``. An Authorization
    header of another scheme (a proxy's ``Basic``) does not hide an ``X-API-Key``; a Bearer one always wins."""
    auth = _header(headers, "authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() or None
    given = _header(headers, "x-api-key")
    return given.strip() if given else None


class Authenticator:
    """Checks keys against a :class:`KeyStore` and applies the per-key rate limit.

    A key that verified is remembered for ``cache_seconds`` (by key id, with the digest of the key that
    proved it), so a busy key costs no database read per request. What the cache cannot see: a key
    revoked in the database (``memcube keys revoke``, another worker) keeps working in this process
    until its entry is ``cache_seconds`` old: that is the bounded staleness of revocation (2 s by
    default; 0 turns the cache off). Expiry is exact (checked on every request), a revocation through
    :meth:`forget` is immediate here, and a key that does not match its cached digest is always
    checked against the database (and audited when refused), never refused from the cache.
    """

    #: how many verified keys one process remembers (the cache is cleared when it fills)
    MAX_CACHED = 10_000

    def __init__(self, keys: KeyStore, limiter: RateLimiter | None = None, *, cache_seconds: float = 2.0) -> None:
        self.keys = keys
        self.limiter = limiter
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[str, KeyInfo, float]] = {}
        self._denials: dict[str, tuple[int, int, int]] = {}  # claimed key id -> (second, audited, skipped)
        self._audit_lock = threading.Lock()
        self._second, self._written, self._folded = 0, 0, 0  # rows written this second; counts folded
        self._owed = False  # some skipped refusal is not written yet (flush_suppressed)
        self._flushed = -1  # the second of the last flush

    def authenticate(self, request_headers: Mapping[str, str] | Iterable[tuple[Any, Any]]) -> Principal:
        """The principal behind the request's key (the rate limit taken): the synchronous path, for the MCP endpoint.

        Raises:
            AuthenticationError: no key, or not an active one (always the same message; audited).
            RateLimitedError: the key's rate bucket is empty (``retry_after`` says for how long).
        """
        token = token_of(request_headers)
        who = self.cached(token) or self.verify(token)
        self.take(who)
        return who

    async def authenticate_async(self, request_headers: Mapping[str, str] | Iterable[tuple[Any, Any]]) -> Principal:
        """:meth:`authenticate` for the event loop: a cached key costs no thread hop; database work runs in a thread."""
        token = token_of(request_headers)
        who = self.cached(token)
        if who is None:
            who = await run_in_threadpool(self.verify, token)
        if self.limiter is not None and self.limiter.active and not self.limiter.spend_local(who.key_id):
            await run_in_threadpool(self.take, who)  # the lease is spent: a transaction on the shared bucket
        return who

    def cached(self, token: str | None) -> Principal | None:
        """The principal of a key verified less than ``cache_seconds`` ago, if ``token`` is that key and still unexpired."""
        if token is None or self.cache_seconds <= 0 or not token.startswith(PREFIX):
            return None
        key_id = token[len(PREFIX):].split("_", 1)[0]
        entry = self._cache.get(key_id)
        if entry is None:
            return None
        proof, info, at = entry
        if time.monotonic() - at > self.cache_seconds or not hmac.compare_digest(proof, digest(token)) or not info.active():
            return None
        return Principal(info.user_id, info.agent_id, info.key_id)

    def verify(self, token: str | None) -> Principal:
        """Check ``token`` against the key store (audit a refusal) and remember it when it passes."""
        if self._owed and int(time.monotonic()) != self._flushed:  # a scan of the table at most once a second
            self.flush_suppressed()
        info = self.keys.verify(token)
        if info is None:
            claimed = token[len(PREFIX):].split("_", 1)[0][:16] if token and token.startswith(PREFIX) else None
            reason = "no key" if token is None else "not an active key"
            counts = self._audit_budget(claimed)
            if counts is not None:
                detail: dict[str, Any] = {"reason": reason}
                if counts[0]:
                    detail["suppressed_before"] = counts[0]
                if counts[1]:
                    detail["suppressed_other_ids"] = counts[1]
                self.keys.audit("authenticate", None, claimed, detail, allowed=False)
            raise AuthenticationError(UNAUTHORIZED)
        if self.cache_seconds > 0 and token is not None:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            self._cache[info.key_id] = (digest(token), info, time.monotonic())
        return Principal(info.user_id, info.agent_id, info.key_id)

    #: refused authentications audited per second and claimed key id (a keyless flood would otherwise
    #: grow mos.db without bound and hold its write lock); the rest are counted into the next row written
    AUDIT_PER_SECOND = 5
    #: and per second in all: a flood that claims a new key id per request is bounded too
    AUDIT_TOTAL_PER_SECOND = 20

    def _audit_budget(self, claimed: str | None) -> tuple[int, int] | None:
        """None: do not write this refusal (over a budget, counted); else how many refusals were
        skipped before it (of this claimed id, and of ids whose counts had to be folded together).

        Every refusal is either a row or a count in a later row: when the table of claimed ids fills,
        its counts are folded into ``suppressed_other_ids`` of the next row written, never dropped (a
        flood of made-up ids must not wash out the count of a victim's key id).
        """
        now = int(time.monotonic())
        key = claimed or ""
        with self._audit_lock:
            if self._second != now:
                self._second, self._written = now, 0
            second, written, skipped = self._denials.get(key, (now, 0, 0))
            if second != now:
                second, written = now, 0
            if written >= self.AUDIT_PER_SECOND or self._written >= self.AUDIT_TOTAL_PER_SECOND:
                if key not in self._denials and len(self._denials) >= self.MAX_CACHED:
                    self._folded += 1
                else:
                    self._denials[key] = (second, written, skipped + 1)
                self._owed = True
                return None
            if key not in self._denials and len(self._denials) >= self.MAX_CACHED:
                self._folded += sum(n for _, _, n in self._denials.values())
                self._denials.clear()
            self._denials[key] = (second, written + 1, 0)
            self._written += 1
            folded, self._folded = self._folded, 0
            return skipped, folded

    def flush_suppressed(self, *, force: bool = False) -> None:
        """Write the counts of refusals skipped in seconds that are over (action
        ``authenticate.suppressed``, one row per claimed key id, detail ``suppressed``); ``force``: the
        current second's too (the app does so when it shuts down).

        Called on every key check that reaches the database: an attack that stops is still counted
        in full once the service checks any key again, not only if its key id is refused once more.
        """
        now = int(time.monotonic())
        with self._audit_lock:
            self._flushed = now
            due = {k: n for k, (sec, _, n) in self._denials.items() if n and (force or sec != now)}
            for k in due:
                sec, written, _ = self._denials[k]
                self._denials[k] = (sec, written, 0)
            folded, self._folded = self._folded, 0
            self._owed = any(n for _, _, n in self._denials.values())
        for claimed, skipped in due.items():
            self.keys.audit("authenticate.suppressed", None, claimed or None, {"suppressed": skipped}, allowed=False)
        if folded:
            self.keys.audit("authenticate.suppressed", None, None, {"suppressed_other_ids": folded}, allowed=False)

    def take(self, who: Principal, cost: float = 1.0) -> None:
        """Spend ``cost`` of the key's rate tokens (the request itself costs one, taken when it was authenticated)."""
        if self.limiter is not None:
            self.limiter.take(who.key_id, cost=cost)

    def charge(self, who: Principal, extra: float) -> None:
        """Spend ``extra`` rate tokens on top of the one the request paid (a request doing the work of several).

        Raises:
            InvalidInputError: the request and its ``extra`` cost more than the key's bucket holds: no
                wait would let it through (a 429 would send the client retrying for ever); split it.
            RateLimitedError: the bucket has not refilled enough yet (``retry_after`` says for how long).
        """
        if self.limiter is None or not self.limiter.active:
            return
        if extra + 1 > self.limiter.burst:
            raise InvalidInputError(
                f"this request does the work of {extra + 1:g} requests, more than this key's burst of "
                f"{self.limiter.burst}: no wait lets it through; split it into requests of at most {self.limiter.burst}")
        self.limiter.take(who.key_id, cost=extra)

    def forget(self, key_id: str) -> None:
        """Drop a key from this process's cache and rate lease (call it after revoking the key here)."""
        self._cache.pop(key_id, None)
        if self.limiter is not None:
            self.limiter.forget(key_id)

    __call__ = authenticate


def authenticate(request_headers: Mapping[str, str] | Iterable[tuple[Any, Any]], keys: KeyStore) -> Principal:
    """:meth:`Authenticator.authenticate` without a rate limit, for callers that hold only a key store."""
    return Authenticator(keys, cache_seconds=0).authenticate(request_headers)
