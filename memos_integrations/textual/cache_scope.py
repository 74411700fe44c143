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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

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


# -- views embedded just before a write's transaction ----------------------------------------------------
_FRESH: ContextVar[tuple[int, dict[str, Any], dict[Any, Any]] | None] = ContextVar("memos_fresh_views", default=None)


@contextmanager
def fresh_views(embedder: Any, texts: Sequence[str]) -> Iterator[None]:
    """Embed ``texts`` now (documents, with ``embedder``) and let the writes of the block use those vectors
    for views with exactly these texts (:func:`fresh_view_vectors`).

    Why: a write recorded with its answer (``memos_integrations.server.idempotent``) runs inside the cube's
    transaction, which holds the cube's other readers and writers of this process; embedding first, outside
    it, keeps that hold to the database work. The vectors are the embedder's for the text, computed in this
    request: what the write would compute (a view with another text is embedded in the write as before).
    """
    from . import late

    unique = list(dict.fromkeys(t for t in texts if isinstance(t, str)))
    with late.capture() as rows:  # the pass's token vectors too, kept with the vectors (late_embed's LRU may drop them)
        vectors = embedder.embed_documents(unique) if unique else []
    token = _FRESH.set((id(embedder), dict(zip(unique, vectors)), rows))
    try:
        yield
    finally:
        _FRESH.reset(token)


def fresh_view_vectors(embedder: Any, texts: Sequence[str]) -> dict[str, Any]:
    """The vectors :func:`fresh_views` embedded with ``embedder`` for any of ``texts`` (empty outside one)."""
    found = _FRESH.get()
    if found is None or found[0] != id(embedder):
        return {}
    return {t: found[1][t] for t in texts if t in found[1]}


def fresh_view_tokens(embedder: Any) -> dict[Any, Any]:
    """The token rows (by token ids) of the pass :func:`fresh_views` ran with ``embedder`` (empty outside one)."""
    found = _FRESH.get()
    return dict(found[2]) if found is not None and found[0] == id(embedder) else {}


# -- a query vector embedded for this request before its route ran ----------------------------------------
_GIVEN: ContextVar[tuple[Any, str, str, Any] | None] = ContextVar("memos_given_query", default=None)


@contextmanager
def given(embedder: Any, text: str, vector: Any) -> Iterator[None]:
    """Let ``embedder.embed_query(text)`` answer ``vector`` in this block, for the current scope only.

    Why: the service embeds a search's query on its event loop (awaiting the shared batches, no worker thread
    blocked meanwhile) and only then runs the route in a thread; the route's own ``embed_query`` must find
    that vector even when the shared query cache has since evicted it. A context variable: the block's
    request alone sees it (its worker thread gets a copy of the context), never another request or user.
    """
    token = _GIVEN.set((embedder, current(), text, vector))  # the object, not its id: ids are reused
    try:
        yield
    finally:
        _GIVEN.reset(token)


def given_query(embedder: Any, text: str) -> Any:
    """The vector :func:`given` holds for ``embedder``, the current scope and exactly ``text``; else None."""
    found = _GIVEN.get()
    if found is None or found[0] is not embedder or found[1] != current() or found[2] != text:
        return None
    return found[3]
