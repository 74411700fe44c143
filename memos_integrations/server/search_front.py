"""How the fast search fronts (:mod:`.fastpath`) run a search: the query embedded on the event loop, then the
route on a few threads.

Why: at 200 searches/s on the 2-core development machine, a search's route cost its worker thread 4.9 ms
of CPU under load against 2.2-2.5 ms measured alone (``benchmarks/bench_engine_cpu.py --novel``): each of
AnyIO's ~40 worker threads blocked in the query embedding (waiting for the embedding batcher and its
child process), then all of them woke and fought for the one GIL. Here no thread waits for an embedding:

1. the key is checked on the loop (:meth:`~.auth.Authenticator.authenticate_async`: a cached key costs no
   thread hop; the rate token is the same one the route's path takes);
2. under the key's user's cache scope (:mod:`memos_integrations.textual.cache_scope`), the query is
   embedded by awaiting the shared batches (:meth:`~memos_integrations.textual.batching.BatchedEmbedder.
   embed_query_async`: the same batcher, cache and vector as the route's own ``embed_query``);
3. the route runs in a worker thread with that vector handed to it for exactly this request, user and
   text (:func:`~memos_integrations.textual.cache_scope.given`): its ``embed_query`` returns it at once.

Fairness: a search that waits (its cube's database held by a long write) holds one of the few threads
without using the GIL. So that one user cannot hold them all, each user runs at most ``threads - 1``
searches on them at once (:class:`_PerUser`); their further searches wait on the loop, behind nobody
else's. (AnyIO's pool had no such bound: one user's 40 waiting searches held every worker thread.)

The route is the same function with the same arguments, so the answer is the one the thread path gives
(same hits, same order, same errors): a query the route would not embed as it is (empty, longer than the
engine embeds whole, longer than the shared batches take) is not embedded here, and a text the embedder
refuses goes to the route, which answers its own error in its own order. Only a failed embedding process
(``whole_batch``: it died or hung) is answered here, as the route would, with its 503.

Refusals cost no embedding: a route registered with :func:`two_step` is ``prepare(...).answer()``, where
``prepare`` is the route's own checks (``k`` over the limit, acting as another user, a cube the user cannot
read or that does not exist: one path for both) and what it needs for the search. The front runs ``prepare``
on a search thread first, embeds the query only when it passed and will search, then runs ``answer`` on a
search thread. A refused search is the route's own error, raised where the route raises it.

That second hop to a search thread costs ~70 us of CPU per search (56 -> 128 us around a do-nothing route,
``benchmarks/bench_service_costs.py``), so it is paid once per principal and ``hint`` (the request's
parameters the checks read: cube, acting user, ``k``) every :data:`PASSED_SECONDS`: a combination whose checks
passed is embedded ahead at once, and the route (which runs its own checks again, as it always did) answers.
The hint is only ever a guess about cost: a stale one (access revoked meanwhile) costs one wasted embedding and
is dropped when the route refuses. A refused combination is never remembered, so another user's cube and a
cube that does not exist take the same path (the checks, no embedding) every time.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..errors import MemosError
from ..textual import cache_scope
from ..textual import retrieve as R

#: the longest query embedded on the loop: the engine's default ``query_chars``, beyond which it embeds a
#: reduced text instead of the query (``TextualMemory.search``); longer queries embed in the route as before
PREFETCH_MAX_CHARS = 2_000
#: the search fronts' own worker threads (``create_app(search_threads=...)``; 0: AnyIO's pool of ~40). Two: at 200
#: searches/s, 50 users, on the shared 2-core machine, a route cost 2.6-3.2 ms of CPU on two threads against 2.9-4.6
#: on AnyIO's (five back-to-back 10 s pairs, load 4-12; the gap widest on the quietest machine), the server's CPU
#: per search 5.2 instead of 6.3 ms; two 30 s pairs at load 12 showed no gain (docs/service.md)
SEARCH_THREADS = 2


@dataclass(frozen=True)
class Prepared:
    """A search route's checks, passed: ``answer()`` runs the rest of the route; ``searches`` is False when
    it answers without searching (the user has no cube yet), so nothing is embedded for it."""

    answer: Callable[[], Response]
    searches: bool = True


#: the attribute :func:`two_step` puts on a route: (its signature, its prepare function, its hint)
_TWO_STEP = "_memos_two_step"
#: how long a principal's passed checks (by hint) let its searches embed without running the checks first
PASSED_SECONDS = 10.0
#: the most passed hints remembered (all forgotten when full)
MAX_PASSED = 10_000


def two_step(route: Callable[..., Response], prepare: Callable[..., Prepared],
             hint: Callable[[dict[str, Any]], Hashable]) -> None:
    """Let the front run ``route`` as its two steps.

    Args:
        route: the route function; it must be exactly ``prepare(...).answer()``, so either way a request gets
            the same answer and the same errors.
        prepare: takes the route's parameters (the front binds them against the route's own signature,
            defaults included).
        hint: the front's arguments for the route -> what of them the checks read (the query text excluded);
            a wrong hint costs an embedding, never an answer (module docstring).
    """
    setattr(route, _TWO_STEP, (inspect.signature(route), prepare, hint))


class SearchFront:
    """Runs the search routes for the fast fronts.

    Args:
        authenticate: request headers -> principal, awaited on the loop (the rate token taken).
        embedder: the embedder the served cubes search with (``MOS.embedder``); queries are embedded ahead
            only when it offers ``embed_query_async`` (a batched MiniLM), else the route embeds as before.
        threads: worker threads of the searches' own pool; 0 runs them in AnyIO's pool with every other route.
    """

    def __init__(self, authenticate: Callable[[Any], Awaitable[Any]], embedder: Any, *, threads: int = 0,
                 still_valid: Callable[[Any], Any] | None = None) -> None:
        self._authenticate = authenticate
        #: headers -> the key's principal again, or raises (no rate token): run on the search thread right before each
        #: step, so a search that waited (its user's slots, a long write) past a revoke is refused, as a new request is
        self._still_valid = still_valid
        self.embedder = embedder if callable(getattr(embedder, "embed_query_async", None)) else None
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None  # started on first use, again after close (an app restarted)
        self._per_user = _PerUser(max(1, threads - 1))
        #: searches whose query was embedded ahead / not (a test and the benchmark read them)
        self.embedded_ahead = 0
        self.embedded_in_route = 0
        #: searches answered without a search (no cube yet): nothing embedded
        self.not_embedded = 0
        #: searches whose route's checks ran before the embedding (the rest had passed them lately)
        self.checked_first = 0
        self._passed: dict[tuple[Any, Hashable], float] = {}  # (principal, hint) -> until when it passed
        #: None, or a list that each search embedded ahead appends its wall time to, s by stage: (key, checks
        #: first, embedding, to a search thread, route, back on the loop) (the service benchmark sets it)
        self.timings: list[tuple[float, ...]] | None = None

    async def run(self, headers: Any, endpoint: Callable[..., Response], args: dict[str, Any], query: Any,
                  plan: str | None) -> Response:
        """``endpoint(who=<the key's principal>, **args)``, with ``query``'s vector embedded first where it can be.

        Raises:
            MemosError: the key's refusal, the embedding process's failure, or the route's own error.
        """
        start = time.perf_counter()
        who = await self._authenticate(headers)
        authenticated = time.perf_counter()
        with cache_scope.scoped(who.user_id):  # this request's query vectors are cached for this user only
            call: Callable[[], Response] = functools.partial(endpoint, who=who, **args)
            if self._still_valid is not None:
                call = functools.partial(_after, self._still_valid, headers, call)
            if not self._embeddable(query, plan):
                self.embedded_in_route += 1
                return await self._on_thread(who.user_id, call)
            steps = getattr(endpoint, _TWO_STEP, None)
            passed = None
            if steps is not None:
                signature, prepare, hint = steps
                passed = (who, hint(args))
                if self._passed.get(passed, 0.0) < time.monotonic():  # the route's checks first: a refusal is not embedded
                    bound = signature.bind(who=who, **args)
                    bound.apply_defaults()
                    prepared: Prepared = await self._on_thread(who.user_id, functools.partial(prepare, **bound.arguments))
                    call = prepared.answer
                    if self._still_valid is not None:
                        call = functools.partial(_after, self._still_valid, headers, call)
                    if not prepared.searches:
                        self.not_embedded += 1
                        return await self._on_thread(who.user_id, call)
                    self.checked_first += 1
                    if len(self._passed) >= MAX_PASSED:
                        self._passed.clear()
                    self._passed[passed] = time.monotonic() + PASSED_SECONDS
            checked = time.perf_counter()
            vector = await self._embed(query)
            with self._given(query, vector):
                try:
                    if self.timings is None:
                        return await self._on_thread(who.user_id, call)
                    embedded, marks = time.perf_counter(), [0.0, 0.0]
                    response = await self._on_thread(who.user_id, functools.partial(_timed, call, marks))
                    self.timings.append((authenticated - start, checked - authenticated, embedded - checked,
                                         marks[0] - embedded, marks[1] - marks[0], time.perf_counter() - marks[1]))
                    return response  # type: ignore[no-any-return]
                except MemosError:
                    if passed is not None:
                        self._passed.pop(passed, None)  # refused now (access revoked): check first again
                    raise

    async def _on_thread(self, user: str, call: Callable[[], Any]) -> Any:
        """``call()`` on the searches' threads (one of the user's slots held), or AnyIO's pool (``threads=0``)."""
        if self.threads <= 0:
            return await run_in_threadpool(call)
        async with self._per_user.slot(user):
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="memos-search")
            context = contextvars.copy_context()  # the cache scope and the given vector go with the call
            return await _finished(self._pool.submit(context.run, call))

    def _embeddable(self, query: Any, plan: str | None) -> bool:
        """Whether the front would embed ``query`` ahead (else the route embeds it, as it does alone)."""
        embedder = self.embedder
        if embedder is None or not isinstance(query, str) or not query.strip() or len(query) > PREFETCH_MAX_CHARS:
            return False
        chosen = R.plan_named(plan)
        # a late search embeds its query in the route, in fp32 with its token vectors (.late_embed)
        return embedder.can_embed_async(query) and chosen.dense and chosen.fusion != "late"  # type: ignore[no-any-return]

    async def _embed(self, query: str) -> Any:
        embedder = self.embedder
        assert embedder is not None
        try:
            vector = await embedder.embed_query_async(query)
        except MemosError as exc:
            if getattr(exc, "whole_batch", False):  # the embedding process failed: the route's own 503
                raise
            self.embedded_in_route += 1  # a text it refuses: the route answers its own error, in its order
            return None
        self.embedded_ahead += 1
        return vector

    @contextmanager
    def _given(self, query: Any, vector: Any) -> Iterator[None]:
        if vector is None:
            yield
            return
        with cache_scope.given(self.embedder, query, vector):
            yield

    def close(self) -> None:
        """Stop the searches' own threads (after the searches running on them); a later search starts new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _after(check: Callable[[Any], Any], headers: Any, call: Callable[[], Any]) -> Any:
    """``call()`` once ``check(headers)`` passed (the key still valid when the step starts, not only when it came)."""
    check(headers)
    return call()


def _timed(call: Callable[[], Any], marks: list[float]) -> Any:
    """``call()``, with when it started and ended in ``marks`` (on the search thread)."""
    marks[0] = time.perf_counter()
    try:
        return call()
    finally:
        marks[1] = time.perf_counter()


async def _finished(done: Future[Any]) -> Any:
    """The thread's answer. Cancelled meanwhile (a client gone, a shutdown that gave up waiting), a search not
    started is dropped, and one already running keeps its user's slot until its thread is free: a thread cannot
    be interrupted, and a slot given back early let one user's cancelled searches hold every thread."""
    waiting = asyncio.wrap_future(done)
    try:
        return await asyncio.shield(waiting)
    except asyncio.CancelledError:
        if not done.cancel():  # running: wait for it (a second cancel stops waiting)
            await asyncio.wait((waiting,))
            if not waiting.cancelled():
                waiting.exception()  # its error was answered to nobody: retrieved, not logged as lost
        raise


class _PerUser:
    """At most ``limit`` of one user's calls at once (on the event loop; a user's entry lives while in use)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def slot(self, user: str) -> AsyncIterator[None]:
        semaphore, users = self._held.get(user) or (asyncio.Semaphore(self.limit), 0)
        self._held[user] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._held[user]
            if users == 1:
                del self._held[user]
            else:
                self._held[user] = (semaphore, users - 1)
