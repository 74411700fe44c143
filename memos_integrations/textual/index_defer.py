"""Deferred vector-index writes: a write acknowledges on its SQLite commit; the ANN index catches up later.

Why: an embedded Chroma upsert costs 6-11 ms of CPU and 25-60 ms of wall time whatever its size (its
own log commit and the HNSW persist), about 0.4 ms more per vector (benchmarks.bench_add_path). Paid
once per add it is half of what a fast add costs; paid once per hundred adds it is noise. A service
that takes many small adds (``memcube serve``) therefore turns this on for the cubes it writes
(:func:`defer_writes`); a library caller keeps the synchronous drain after every write.

Why it is safe: SQLite is the truth and every write queues its index row in the outbox *in the same
transaction* (:mod:`.index_sync`). Deferring only changes *when* the outbox is drained:

- durability: an acknowledged write is committed in SQLite (WAL); a ``kill -9`` before the drain leaves
  its outbox row, which the next open replays (``MemCube._recover``), exactly like a crash between the
  commit and the vector write always did. A clean close drains first (:func:`flush`).
- never doubled: the drain upserts by id and clears only the outbox rows it read, so replaying it twice
  writes the same vector twice into one slot.
- read-your-writes: search scores the filter's candidates exactly from SQLite while they are at most
  ``exact_search_max`` (4096 by default; a LoCoMo-sized cube per user never reaches the index). Above
  that, the index is wrapped (:class:`PendingOverlay`): the items still queued are scored exactly from
  their stored vectors and merged with the index's answer, so a search sees every acknowledged write,
  its own and other writers' (the outbox is in the shared database).

When the outbox drains: in a background thread once :data:`DRAIN_AT` writes are queued or the oldest
has waited :data:`MAX_AGE` seconds, one cube at a time with a rest between drains (:data:`PACE`); on
``reconcile`` / ``reindex``; when the cube closes; when it opens after a crash. A failed drain keeps its rows queued (the overlay still serves them) and is
retried :data:`MAX_AGE` seconds later, with a warning that names the cause.

What lags: the index itself (``MemCube.index.count()``, ``stats()["vectors_indexed"]``) trails the
truth by up to :data:`MAX_AGE` seconds or :data:`DRAIN_AT` writes; searches do not.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendError
from ..storage.base import VectorFilter

if TYPE_CHECKING:
    from .memory import TextualMemory

_log = logging.getLogger("memos_integrations.textual.memory")

#: queued writes that start a drain: an upsert of this many costs ~0.5 ms of CPU per vector, against
#: 6-11 ms for an upsert of one (round: the cost per vector is flat from ~100 up)
DRAIN_AT = 256
#: seconds a queued write may wait before a drain. Why a minute: the index only serves searches over more
#: than ``exact_search_max`` candidates (the overlay scores the queued rows exactly meanwhile, at most
#: DRAIN_AT of them), and each drain's upsert is a fixed cost that holds the GIL (below): with 50 cubes
#: taking one add a second, 10 s meant 5 upserts a second (1.8 ms of CPU per add); a minute, under one
MAX_AGE = 60.0
#: the background drainer rests this many times a drain's wall time before the next one (at most
#: ``PAUSE_MAX`` s). Why: an embedded Chroma upsert holds the GIL for its whole wall time (25-70 ms
#: measured: a 0.5 ms ticker thread stalled as long), so the serving threads stop meanwhile; cubes that
#: fell due together (a service's cubes all take their first add in the same second) drained back to
#: back stopped every request for seconds. Paced, the drains take at most a third of the GIL.
PACE = 2.0
PAUSE_MAX = 1.0


@dataclass
class _State:
    queued: int = 0  # commits since the last drain (each queued at least one row)
    since: float | None = None  # monotonic time of the oldest commit not drained yet
    closed: bool = False
    retry_at: float = 0.0  # after a failed drain: not before this
    drained: int = 0  # rows applied by background drains (for tests and benchmarks)
    lock: threading.Lock = field(default_factory=threading.Lock)


class PendingOverlay:
    """A :class:`~memos_integrations.storage.base.VectorIndex` over ``inner`` that also answers with the
    items queued in the outbox and not written to ``inner`` yet (scored exactly from SQLite)."""

    def __init__(self, inner: Any, mem: TextualMemory) -> None:
        self.inner = inner
        self._mem = weakref.ref(mem)  # the memory holds this overlay: no cycle that outlives it

    def __getattr__(self, name: str) -> Any:  # upsert, delete, ids, count, reset, ...: the index's own
        return getattr(self.inner, name)

    def query(self, vector: np.ndarray, k: int, where: VectorFilter | None = None) -> list[tuple[str, float]]:
        mem = self._mem()
        if mem is None or k <= 0:
            return list(self.inner.query(vector, k, where))
        pending = [i for i, _ in mem.store.outbox_entries()]
        if len(pending) > DRAIN_AT:  # a bulk write (an import): index it now, not per search
            flush(mem)
            pending = [i for i, _ in mem.store.outbox_entries()]
        if len(pending) > DRAIN_AT:  # still that many: the index refuses writes; the caller scores exactly
            raise BackendError(
                f"{len(pending)} memories are queued for the vector index of {mem.store.path.parent} and writing them "
                "failed (see the warning logged with the cause); this search is answered without the index. Fix "
                "the index (MemCube.reconcile(), or MemCube.reindex() to rebuild it)")
        if not pending:
            return list(self.inner.query(vector, k, where))
        queued = set(pending)
        # the index may hold an older vector of a queued item (or one deleted since): ask for room to drop those
        found = [(i, s) for i, s in self.inner.query(vector, k + len(queued), where) if i not in queued]
        rows = [(row, rid) for row, rid in mem.store.indexable(pending) if _matches(row, where)]
        if rows:
            rids, matrix = mem.store.vectors_for([rid for _, rid in rows])
            id_of = {rid: row.id for row, rid in rows}
            sims = matrix @ np.asarray(vector, dtype=np.float32) if rids else np.zeros(0)
            found += [(id_of[rid], float(s)) for rid, s in zip(rids, sims)]
        return sorted(found, key=lambda hit: -hit[1])[:k]


def _matches(row: Any, where: VectorFilter | None) -> bool:
    return all(getattr(row, name) in values for name, values in (where.conditions() if where else []))


class _Drainer:
    """One daemon thread per process that drains the deferred memories when they are due."""

    def __init__(self) -> None:
        self.states: weakref.WeakKeyDictionary[TextualMemory, _State] = weakref.WeakKeyDictionary()
        self.wake = threading.Condition()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        with self.wake:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="memos-index-drain", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            with self.wake:  # registrations happen under this lock too: the snapshot never races one
                self.wake.wait(timeout=min(1.0, MAX_AGE / 4))
                due = list(self.states.items())
            for mem, state in due:
                if _due(state, time.monotonic()):
                    start = time.monotonic()
                    _drain(mem, state)
                    time.sleep(min(PAUSE_MAX, PACE * (time.monotonic() - start)))  # see PACE


_drainer = _Drainer()


def _due(state: _State, now: float) -> bool:
    if state.closed or state.since is None or now < state.retry_at:
        return False
    return state.queued >= DRAIN_AT or now - state.since >= MAX_AGE


def _drain(mem: TextualMemory, state: _State) -> None:
    """Drain ``mem``'s outbox now; a failure is logged (the rows stay queued) and retried later."""
    from . import index_sync as X

    with state.lock:  # counted before the drain reads the outbox: a commit meanwhile starts a new count
        state.queued, state.since = 0, None
    try:
        state.drained += X.sync_index(mem)
    except Exception as exc:  # noqa: BLE001 - logged with its cause; the writes are committed and queued
        if state.closed:  # the cube closed under the drain: its close drained (or its next open replays)
            return
        with state.lock:
            state.queued += 1
            state.since = state.since or time.monotonic()
            state.retry_at = time.monotonic() + MAX_AGE
        _log.warning(
            "the memories are stored in %s, but the deferred vector-index write failed (%s: %s); they stay "
            "queued (search still finds them) and the write is retried in %.0f s (MemCube.reconcile() retries now)",
            mem.store.path, type(exc).__name__, exc, MAX_AGE, exc_info=exc,
        )


def defer_writes(mem: TextualMemory) -> None:
    """Make ``mem``'s writes acknowledge on commit and reach the index in background batches (idempotent).

    Needs a store that can run a hook before it closes (the embedded SQLite store), so that a clean close
    drains; with any other store the writes stay synchronous.
    """
    hooks = getattr(mem.store, "before_close", None)
    if hooks is None or mem in _drainer.states:  # the service calls this on every add: the common case first
        return
    with _drainer.wake:
        if mem in _drainer.states:
            return
        state = _State()
        _drainer.states[mem] = state
    if not isinstance(mem.index, PendingOverlay):
        mem.index = PendingOverlay(mem.index, mem)  # type: ignore[assignment]
    ref = weakref.ref(mem)

    def before_close() -> None:
        target = ref()
        if target is not None:
            state.closed = True
            flush(target)

    hooks.append(before_close)
    _drainer.start()


def is_deferred(mem: TextualMemory) -> bool:
    return mem in _drainer.states


def note_commit(mem: TextualMemory) -> bool:
    """Called after a committed write: True when ``mem`` defers (the drain is left to the background)."""
    state = _drainer.states.get(mem)
    if state is None or state.closed:
        return False
    with state.lock:
        state.queued += 1
        if state.since is None:
            state.since = time.monotonic()
        due = state.queued >= DRAIN_AT
    if due:
        with _drainer.wake:
            _drainer.wake.notify()
    return True


def flush(mem: TextualMemory) -> int:
    """Drain ``mem``'s outbox now, in this thread (after a background drain in flight, if any).

    Returns how many queued writes were applied; a failure is logged and they stay queued.
    """
    from . import index_sync as X

    state = _drainer.states.get(mem)
    if state is not None:
        with state.lock:
            state.queued, state.since = 0, None
    try:
        return X.sync_index(mem)
    except Exception as exc:  # noqa: BLE001 - logged with its cause; the writes are committed and queued
        if state is not None and not state.closed:  # the background drain retries them, as after its own failure
            with state.lock:
                state.queued += 1
                state.since = state.since or time.monotonic()
                state.retry_at = time.monotonic() + MAX_AGE
        _log.warning(
            "the memories are stored in %s, but writing the queued vector-index rows failed (%s: %s); they stay "
            "queued and are replayed when the cube opens (MemCube.reconcile() retries now)",
            mem.store.path, type(exc).__name__, exc, exc_info=exc,
        )
        return 0


def deferred_memories() -> Sequence[TextualMemory]:
    """The memories that defer their index writes in this process (for benchmarks and tests)."""
    return list(_drainer.states.keys())


def background_drained(mem: TextualMemory) -> int:
    """Rows the background thread applied for ``mem`` so far (0 when it does not defer)."""
    state = _drainer.states.get(mem)
    return 0 if state is None else state.drained
