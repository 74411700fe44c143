"""Who is calling: API keys to a :class:`Principal`, for the REST routes and the MCP endpoint alike.

A request names its key as ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). Every failure
(no key, malformed, unknown, revoked, expired) is the same 401 with the same message, so a caller
learns nothing about which keys or users exist; the refusal is written to the key store's audit log
with the key id it claimed. A key that passes then takes a token from its rate bucket (429 when empty).
What a principal may do is decided by MOS (:mod:`memos_integrations.access`), never here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..storage.keys import PREFIX, KeyStore
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
    auth = _header(headers, "authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    given = _header(headers, "x-api-key")
    return given.strip() if given else None


class Authenticator:
    """Checks keys against a :class:`KeyStore` and applies the per-key rate limit."""

    def __init__(self, keys: KeyStore, limiter: RateLimiter | None = None) -> None:
        self.keys = keys
        self.limiter = limiter

    def authenticate(self, request_headers: Mapping[str, str] | Iterable[tuple[Any, Any]]) -> Principal:
        """The principal behind the request's key.

        Raises:
            AuthenticationError: no key, or not an active one (always the same message; audited).
            RateLimitedError: the key's rate bucket is empty (``retry_after`` says for how long).
        """
        token = token_of(request_headers)
        info = self.keys.verify(token)
        if info is None:
            claimed = token[len(PREFIX):].split("_", 1)[0][:16] if token and token.startswith(PREFIX) else None
            self.keys.audit("authenticate", None, claimed, {"reason": "no key" if token is None else "not an active key"},
                            allowed=False)
            raise AuthenticationError(UNAUTHORIZED)
        if self.limiter is not None:
            self.limiter.take(info.key_id)
        return Principal(info.user_id, info.agent_id, info.key_id)

    __call__ = authenticate


def authenticate(request_headers: Mapping[str, str] | Iterable[tuple[Any, Any]], keys: KeyStore) -> Principal:
    """:meth:`Authenticator.authenticate` without a rate limit, for callers that hold only a key store."""
    return Authenticator(keys).authenticate(request_headers)
