"""Micro-batching of query embeddings: concurrent searches share one forward pass.

Why: a search's largest cost is embedding its query, and a forward pass of MiniLM over one short text
is mostly fixed overhead (per-layer calls, small matrix products). Measured on the 2-core development
machine (CPU per query, MiniLM on torch, ``OMP_NUM_THREADS=1``): 8.2 ms alone, 4.6 ms in a batch of 4,
3.8 ms in a batch of 8. A service under load has many searches waiting at once, so embedding them
together roughly halves a search's CPU and raises the rate one process can serve.

How: :class:`QueryBatcher` keeps one worker thread. A caller queues its text and waits; the worker takes
every text queued by the time it is free (at most ``max_batch``; while several users' texts wait, none
takes more than its share of a full batch), embeds them in one call, and hands
each caller the row computed from its own text. Nothing waits on a timer: one request alone is
embedded at once (one thread hand-off, tens of microseconds), and batches grow only when requests
queue up while the worker is busy. Texts of very different lengths are embedded in separate calls, so
one long query cannot make a batch of short ones pay for its padding; a very long one (over
``_SHARED_MAX_CHARS``) is embedded in its caller's thread, so it cannot hold up anyone else's.

Failure: when a shared call fails, each of its texts is embedded again alone, so only a caller whose own
text fails gets an error (a :class:`MemosError`, the cause chained), never another user's, and never a
hang; an error marked ``whole_batch`` (the embedding process died: ``textual/embed_process.py``) fails
every caller of the call at once instead, as retrying each text would first restart the process; :meth:`QueryBatcher.close` fails whatever is still queued and refuses new texts. :class:`BatchedEmbedder` wraps an embedder with a batcher and a thread-safe LRU of query
vectors; :func:`batched` wraps only embedders whose one-text and many-text paths compute the same
vectors, and returns any other embedder unchanged.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import BackendError, InvalidInputError, MemosError
from . import cache_scope

#: texts at most this many times longer (in characters, plus a little slack) than the shortest of
#: their group share one call; padding a batch to its longest text costs every text in it that much
_LENGTH_RATIO = 2
_LENGTH_SLACK = 32
#: a query longer than this is embedded in its caller's own thread, not the shared worker: its cost grows
#: with its length (tokenising 1 MiB took MiniLM about 1 s) while the model reads only its first 256
#: tokens, so it gains nothing from a batch and would hold every other user's search behind it
_SHARED_MAX_CHARS = 4096


class _Pending:
    """One caller's text and, once the worker is done, its vector or its error (and, for a caller on an event
    loop, its future settled on that loop)."""

    __slots__ = ("done", "error", "finished", "future", "loop", "scope", "started", "submitted", "text", "vector")

    def __init__(self, text: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.text = text
        self.submitted = self.started = self.finished = time.perf_counter()  # when queued, its call began, it ended
        self.scope = cache_scope.current()  # whose request (the service's user): batches are shared fairly
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.loop = loop
        self.future: asyncio.Future[np.ndarray] | None = loop.create_future() if loop is not None else None

    def finish(self, vector: np.ndarray | None = None, error: BaseException | None = None) -> None:
        self.vector, self.error = vector, error
        self.finished = time.perf_counter()
        self.done.set()
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._settle)
            except RuntimeError:  # the loop is closed (the service stopped): nobody awaits the future any more
                pass

    def _settle(self) -> None:
        """On the caller's loop: hand the future what the worker computed (unless the caller gave up)."""
        future = self.future
        if future is None or future.done():  # cancelled: the client went away while its query was embedded
            return
        if self.error is not None:
            future.set_exception(self.error)
        else:
            assert self.vector is not None
            future.set_result(self.vector)


class QueryBatcher:
    """Embed texts from many threads with as few calls to ``embed_many`` as the load allows.

    Args:
        embed_many: embeds a list of texts into one row per text, in order (e.g. ``embed_documents``).
        max_batch: the most texts in one call.
        name: the worker thread's name (it shows in profiles).
    """

    def __init__(self, embed_many: Callable[[list[str]], np.ndarray], *, max_batch: int = 32,
                 name: str = "query-batcher") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._embed_many = embed_many
        self.max_batch = max_batch
        self._name = name
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        #: how many calls and texts the worker made, and its wall time in them (a benchmark reports them)
        self.calls = 0
        self.texts = 0
        self.busy_s = 0.0
        #: None, or a list that :meth:`embed_async` appends to per text: (queued s, in its call s, until the
        #: awaiting coroutine ran again s) (the service benchmark sets it to see where a search's wall time goes)
        self.timings: list[tuple[float, float, float]] | None = None

    def embed(self, text: str) -> np.ndarray:
        """The vector of ``text``, computed in whatever batch the worker forms next.

        Raises:
            MemosError: the embedding call failed (the embedder's own error, or a :class:`BackendError`
                carrying its cause), or the batcher is closed.
        """
        pending = self._submit(_Pending(text))
        while not pending.done.wait(1.0):
            worker = self._thread
            if worker is None or not worker.is_alive():  # a worker that died cannot answer: fail, never hang
                self._withdraw(pending)
                if not pending.done.is_set():
                    raise BackendError("the query batcher's worker stopped; retry the request")
        if pending.error is not None:
            raise pending.error
        assert pending.vector is not None
        return pending.vector

    async def embed_async(self, text: str) -> np.ndarray:
        """:meth:`embed` for a caller on an event loop: the text joins the same batches, and the loop awaits
        its vector instead of a worker thread blocking on it (so no thread waits, then fights for the GIL,
        per search in flight). A caller cancelled meanwhile (its client went away) leaves the queue, or, when
        its text is already in a call, lets the call finish for the others.

        Raises:
            MemosError: as :meth:`embed` (the embedding process died: its :class:`BackendError`, never a hang).
        """
        pending = self._submit(_Pending(text, asyncio.get_running_loop()))
        future = pending.future
        assert future is not None
        try:
            while True:
                done, _ = await asyncio.wait((future,), timeout=1.0)
                if done:
                    if self.timings is not None:
                        self.timings.append((pending.started - pending.submitted, pending.finished - pending.started,
                                             time.perf_counter() - pending.finished))
                    return future.result()
                worker = self._thread
                if worker is None or not worker.is_alive():  # as in embed: a worker that died cannot answer
                    self._withdraw(pending)
                    if not pending.done.is_set():
                        raise BackendError("the query batcher's worker stopped; retry the request")
        except asyncio.CancelledError:
            self._withdraw(pending)
            future.cancel()
            raise

    def _submit(self, pending: _Pending) -> _Pending:
        with self._cond:
            if self._closed:
                raise BackendError("the query batcher is closed (the service is shutting down); retry the request")
            if self._thread is None or not self._thread.is_alive():
                # started on first use, so a process that forks before serving starts its own
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.append(pending)
            self._cond.notify()
        return pending

    def _withdraw(self, pending: _Pending) -> None:
        with self._cond:
            if pending in self._queue:
                self._queue.remove(pending)

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new texts, fail the queued ones, and let the worker finish its current call and stop
        (waiting for it at most ``timeout`` s: an embedding call cannot be interrupted)."""
        with self._cond:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for pending in waiting:
            pending.finish(error=BackendError("the service is shutting down; this search was not run, retry it"))
        worker = self._thread
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                batch = self._take()
            try:
                for group in _by_length(batch):
                    self._compute(group)
            finally:  # the worker dies (a BaseException): its batch's callers must not wait on the next worker
                for pending in batch:
                    if not pending.done.is_set():
                        pending.finish(error=BackendError("the query batcher's worker stopped; retry the request"))

    def _take(self) -> list[_Pending]:
        """The next batch (under ``_cond``): the queue in order, except that while several users' texts wait,
        none takes more than its share of a full batch. Why: first come first served, one user's flood of
        queries (hundreds at once) put every other user's search behind all of it (300 queued: 0.5 s)."""
        queue, most = self._queue, self.max_batch
        if len(queue) <= most:
            batch = list(queue)
            queue.clear()
            return batch
        share = max(1, most // len({p.scope for p in queue}))
        counts: dict[str, int] = {}
        batch, rest = [], deque[_Pending]()
        for pending in queue:
            if len(batch) < most and counts.get(pending.scope, 0) < share:
                counts[pending.scope] = counts.get(pending.scope, 0) + 1
                batch.append(pending)
            else:
                rest.append(pending)
        while len(batch) < most and rest:  # room left by users with less than their share: in order
            batch.append(rest.popleft())
        self._queue = rest
        return batch

    def _compute(self, group: list[_Pending]) -> None:
        start = time.perf_counter()
        for pending in group:
            pending.started = start
        try:
            vectors = np.asarray(self._embed_many([p.text for p in group]))
            if vectors.ndim != 2 or vectors.shape[0] != len(group):
                raise BackendError(f"the embedder returned {vectors.shape} for {len(group)} texts; expected one row each")
        except Exception as exc:
            if getattr(exc, "whole_batch", False):  # the embedder failed, not a text (a dead embedding process)
                for pending in group:
                    pending.finish(error=exc)
                return
            if len(group) > 1:  # one caller's text must not fail the others: each alone, and only its own fails
                for pending in group:
                    self._compute([pending])
                return
            if isinstance(exc, MemosError):
                group[0].finish(error=exc)
            else:  # the embedder's own failure reaches its caller, chained, as a MemosError
                failure = BackendError(f"embedding the query failed ({type(exc).__name__}: {exc}); retry, and "
                                       "check the embedder if it persists")
                failure.__cause__ = exc
                group[0].finish(error=failure)
            return
        self.calls += 1
        self.texts += len(group)
        self.busy_s += time.perf_counter() - start
        for pending, vector in zip(group, vectors, strict=True):
            pending.finish(vector=vector)


def _by_length(batch: list[_Pending]) -> list[list[_Pending]]:
    """Split a batch into groups of similar text length (shortest first)."""
    groups: list[list[_Pending]] = []
    for pending in sorted(batch, key=lambda p: len(p.text)):
        if groups and len(pending.text) <= _LENGTH_RATIO * len(groups[-1][0].text) + _LENGTH_SLACK:
            groups[-1].append(pending)
        else:
            groups.append([pending])
    return groups


class _LRU:
    """A small thread-safe LRU of query vectors (agents repeat a query within a turn)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return None if found is None else found.copy()

    def put(self, key: tuple[str, str], vector: np.ndarray) -> None:
        with self._lock:
            self._data[key] = vector.copy()  # its own: a caller's change never reaches it, nor pins a batch
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class BatchedEmbedder:
    """An embedder whose :meth:`embed_query` goes through a :class:`QueryBatcher`; the rest is ``inner``'s.

    ``embed_many`` must compute, for each text, what ``inner.embed_query`` computes for it alone.
    """

    def __init__(self, inner: Any, embed_many: Callable[[list[str]], np.ndarray], *, max_batch: int = 32,
                 cache_size: int = 256, embed_docs: Callable[[list[str]], np.ndarray] | None = None,
                 process: Any = None) -> None:
        self.inner = inner
        #: the embedding process ``embed_many`` and ``embed_docs`` call (textual/embed_process.py), closed with this
        self.process = process
        self.batcher = QueryBatcher(embed_many, max_batch=max_batch)
        # concurrent one-text document embeddings (a fast add each) share a pass too, when ``embed_docs``
        # gives each row what it gives the text alone; documents keep their own precision (fp32)
        self.doc_batcher = QueryBatcher(embed_docs, max_batch=max_batch) if embed_docs is not None else None
        self._closed = False
        self._cache = _LRU(cache_size)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    @property
    def fingerprint(self) -> str:
        return str(self.inner.fingerprint)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if (self.doc_batcher is not None and not self._closed and len(texts) == 1
                and len(texts[0]) <= _SHARED_MAX_CHARS):
            return self.doc_batcher.embed(texts[0])[None, :]
        return self.inner.embed_documents(texts)  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> np.ndarray:
        given = cache_scope.given_query(self, text)  # embedded for this very request, on its event loop
        if given is not None:
            return given
        key = (cache_scope.current(), text)  # per user: another user's search never answers sooner (timing)
        found = self._cache.get(key)
        if found is not None:
            return found
        vector = self.inner.embed_query(text) if len(text) > _SHARED_MAX_CHARS else self.batcher.embed(text)
        self._cache.put(key, vector)
        return vector

    def can_embed_async(self, text: str) -> bool:
        """Whether :meth:`embed_query_async` computes ``text``'s vector in the shared batches (a long text is
        embedded in its caller's thread instead: see ``_SHARED_MAX_CHARS``)."""
        return not self._closed and len(text) <= _SHARED_MAX_CHARS

    async def embed_query_async(self, text: str) -> np.ndarray:
        """:meth:`embed_query` awaited on an event loop (the same cache, scope and vector; the same batches).

        Raises:
            InvalidInputError: ``text`` is longer than the shared batches take (:meth:`can_embed_async`).
            MemosError: as :meth:`embed_query`.
        """
        if len(text) > _SHARED_MAX_CHARS:
            raise InvalidInputError("a query this long is embedded in a worker thread: call embed_query there")
        key = (cache_scope.current(), text)
        found = self._cache.get(key)
        if found is not None:
            return found
        vector = await self.batcher.embed_async(text)
        self._cache.put(key, vector)
        return vector

    def clear_query_cache(self) -> None:
        self._cache.clear()
        clear = getattr(self.inner, "clear_query_cache", None)
        if clear is not None:
            clear()

    def close(self) -> None:
        """Stop the batcher (queued queries fail with a :class:`BackendError`); the embedder stays usable
        for documents."""
        self._closed = True
        self.batcher.close()
        if self.doc_batcher is not None:
            self.doc_batcher.close()
        if self.process is not None:
            self.process.close()

    def __getattr__(self, attr: str) -> Any:  # anything else an embedder offers (batch_size, model_dir, ...)
        if attr in ("inner", "process"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)


def batched(embedder: Any, *, max_batch: int = 32, process: Any = None) -> Any:
    """``embedder`` with batched query embeddings where that computes the same vectors; else ``embedder``.

    An embedder with ``embed_queries(texts)`` is batched through it: MiniLM's embeds in its query
    precision (int8 or fp32) and gives each row what ``embed_query`` gives that text alone. An embedder
    of MiniLM's exact type without it would be batched through ``embed_documents`` (one model, no
    prefix). Any other embedder (an API, a model with a query prefix) is returned as it is.

    ``process``: an :class:`~memos_integrations.textual.embed_process.EmbedProcess` computing what a MiniLM
    ``embedder`` computes; the batched calls (queries, one-text documents) then run in it, off this
    process's GIL, and closing the batched embedder stops it. Long texts and several-text document calls
    stay here (they gain nothing from a batch, and an add's many texts would hold every search behind them).
    """
    if isinstance(embedder, BatchedEmbedder):
        return embedder
    from .embed import MiniLMEmbedder

    minilm = type(embedder) is MiniLMEmbedder
    many = getattr(embedder, "embed_queries", None)
    if many is None:
        if not minilm:
            return embedder
        many = embedder.embed_documents
    docs = embedder.embed_documents if minilm else None  # MiniLM: a document row does not depend on its batch
    if process is not None and minilm:
        many, docs = process.embed_queries, process.embed_documents
    return BatchedEmbedder(embedder, many, max_batch=max_batch, embed_docs=docs, process=process if minilm else None)
