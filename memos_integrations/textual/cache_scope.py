"""Whose request this is, for the caches that hold something per query text (query vectors).

Why: a query vector cached by text and shared by every caller of one embedder answers a repeated text a
few milliseconds sooner. In the service every user shares the home's embedder, so a user timing their own
searches could learn that *someone* searched that exact text recently (issue 13). The caches key each
entry by :func:`current` as well as by the text: the service sets the scope to the key's user for the
request (the REST ``principal`` dependency, the MCP tool call), so one user's entries never answer
another's query. Library callers that set nothing share the scope ``""`` (one process, one user).

A context variable, not an argument: the embedders' ``embed_query(text)`` is a public protocol that the
faces and third-party embedders implement; the scope follows the request into its worker thread
(FastAPI's thread pool and :func:`memos_integrations.aio.in_thread` copy the context).

Example:
    >>> with scoped("alice"):
    ...     current()
    'alice'
    >>> current()
    ''
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_SCOPE: ContextVar[str] = ContextVar("memos_cache_scope", default="")


def current() -> str:
    """The scope cached query vectors are kept under now (``""`` when nobody set one)."""
    return _SCOPE.get()


def enter(scope: str) -> None:
    """Set the scope for the rest of this context (a request's own task: it ends with the request)."""
    _SCOPE.set(scope)


@contextmanager
def scoped(scope: str) -> Iterator[None]:
    """Run the block under ``scope``, then restore the one before."""
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)
