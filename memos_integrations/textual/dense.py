"""The dense leg of a search: every candidate scored exactly when they are few, the ANN index otherwise.

Why a module: a search scores densely up to three times with one filter (the dense leg, the unnamed
leg, relevance feedback), and every search of a cube with the same filter used to read the same
candidate row ids (one SQL read of the whole scope) and gather the same vectors each time: on a
LoCoMo-sized cube that was a fifth of a search's CPU (issue 13). Here the candidates of a filter and
their vectors are held between searches, on the store's :class:`~memos_integrations.storage.caches.DecodedRows`
(``derived``), so they are trusted exactly as long as its decoded rows are: until anything commits to
the cube (another connection, or this store's own write). The current-truth condition
(``valid_to > now``) is the one input that changes by itself: an entry also ends at the first
``valid_to`` among the rows its filter passes (:func:`~memos_integrations.storage.caches.first_expiry`),
and is never used by a clock that reads earlier than when it was filled.

What is scored is unchanged: the same candidates, in row order (held or not, whatever plan SQL
chose: equal scores keep one order), and the same vectors, so results are identical to reading them
each time. "Anything committed" is the store's ``data_version``: SQLite's ``PRAGMA data_version`` plus
this store's own transaction counter, and on PostgreSQL the server's current snapshot
(``pg_current_snapshot()``, which any write commit on the server changes). A thread inside a write
reads every time. A commit of this store alone does not drop them: :mod:`~memos_integrations.storage.held_carry`
reads again only the rows it wrote (whether they pass the filter now, their vectors, when they end) and
keeps the rest (:func:`_carried`), so a search right after an add reads a row, not the scope.

A filter's speakers (:func:`speakers`: the distinct ``metadata.speaker`` values of its rows) are held
the same way, with the same bounds: the speaker legs ask whether anyone in scope says a name, or anyone
else speaks, of them instead of SQL. Where every candidate has a non-empty string speaker they are
read off the held candidates and who said each row (:func:`_held_scope`), without a scan.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendError
from ..storage.caches import SPEAKER_MAP_ROWS, first_expiry, held_speaker_map, scope_speakers
from ..storage.held_carry import CARRIERS, first_expiry_among, passing
from .index_defer import PendingOverlay

if TYPE_CHECKING:
    from .filters import MemoryFilter
    from .memory import TextualMemory

_log = logging.getLogger(__name__)

#: filters held per cube, and candidate rows in all (each row holds its vector: 1.5 KB at 384 dimensions, so
#: a LoCoMo cube is ~0.7 MB and the most a cube holds ~25 MB); past either, everything held is dropped
MAX_HELD = 16
MAX_HELD_ROWS = 16_384
_CHUNK = 50_000


@dataclass(frozen=True)
class Candidates:
    """A filter's candidates as read at ``since``: row ids in row order and their vectors (``rids`` None:
    more than ``cap``, the exact-search maximum), trusted while nothing commits and the clock is in
    ``[since, until)``; ``flt`` (a copy of the filter) carries them across this store's own commits."""

    rids: list[int] | None
    matrix: np.ndarray | None
    since: float
    until: float
    flt: MemoryFilter | None = None
    cap: int = 0


def dense(mem: TextualMemory, qvec: np.ndarray, flt: MemoryFilter, k: int) -> list[tuple[int, float]]:
    """The ``k`` nearest items passing ``flt``: (rid, cosine), best first."""
    held = candidates(mem, flt)
    if held is not None and held.rids is not None:
        return top(held.rids, held.matrix, qvec, k)
    if held is None:
        found = mem.store.candidate_rids(flt, mem.exact_search_max + 1)
        if len(found) <= mem.exact_search_max:
            # few candidates: score them exactly from the vectors SQLite keeps (no ANN recall loss), in
            # row order as held candidates are (equal scores keep one order whatever SQL's plan)
            return exact(mem, qvec, sorted(found), k)
    # many candidates: ANN with the filter part the index understands, then the exact filter in SQL.
    # The lifecycle condition goes to SQL first: it matches nearly every indexed item (deleted ones
    # are not indexed), and Chroma's metadata pre-filter on it cost 25x the search itself (54 ms
    # against 2 ms at 10k items); only if that leaves too few hits does the index get it too.
    loose, strict = flt.vector_filter(states=False), flt.vector_filter()
    attempts = [(k * 3, loose), (k * 12, loose)] + ([(k * 12, strict)] if strict != loose else [])
    # the outbox is shared: writes another cube object or process acknowledged and queued (deferred, or
    # its index write failed) are scored exactly here too, not only by the memory that deferred them
    index = mem.index if isinstance(mem.index, PendingOverlay) else PendingOverlay(mem.index, mem)
    for fetch, where in attempts:
        try:
            hits_found = index.query(qvec, fetch, where)
        except BackendError as exc:  # the index is derived: answer from the truth, slower but exact
            _log.warning("%s; scoring this search exactly from memory.db instead", exc)
            break
        allowed = mem.store.rid_ids([i for i, _ in hits_found], flt)
        hits = [(allowed[i], s) for i, s in hits_found if i in allowed]
        if len(hits) >= k or len(hits_found) < fetch:
            return hits[:k]
    # the filter is selective in ways Chroma cannot see (tags, metadata, time), or the index failed:
    # never return fewer than k because of it; score every candidate exactly, in chunks
    return exact(mem, qvec, mem.store.candidate_rids(flt, -1), k)


def exact(mem: TextualMemory, qvec: np.ndarray, rids: Sequence[int], k: int) -> list[tuple[int, float]]:
    """``rids`` scored exactly against ``qvec`` from their stored vectors (in chunks); the best ``k``."""
    best: list[tuple[int, float]] = []
    for start in range(0, len(rids), _CHUNK):
        found, matrix = mem.store.vectors_for(rids[start : start + _CHUNK])
        if found:
            best.extend(top(found, matrix, qvec, k))
    return sorted(best, key=lambda h: -h[1])[:k]


def top(rids: Sequence[int], matrix: Any, qvec: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` rows of ``matrix`` (one per rid) nearest ``qvec``, best first."""
    if not rids:
        return []
    sims = matrix @ qvec
    order = np.argsort(-sims)[:k]
    # float32 -> float through tolist, as float() converts each: the same numbers, one call; argsort
    # already ordered them best first (finite vectors: no NaN), ties as it left them
    return list(zip([rids[i] for i in order.tolist()], sims[order].tolist()))


def candidates(mem: TextualMemory, flt: MemoryFilter) -> Candidates | None:
    """``flt``'s candidates, held between searches (see the module docstring); None where they cannot be."""
    store = mem.store
    held = getattr(store, "_held", None)  # SQLStore's: its decoded rows, current under its connection lock
    key = _key(flt)
    if held is None or key is None:
        return None
    with held() as cache:
        if cache is None:
            return None
        now = time.time()
        entry: Candidates | None = cache.derived.get(key)
        if entry is not None and entry.since <= now < entry.until:
            return entry
        start = now
        found = store.candidate_rids(flt, mem.exact_search_max + 1)
        many = len(found) > mem.exact_search_max
        if not many and len(found) > _CHUNK:  # scored in chunks (exact): not held
            return None
        rids, matrix = (None, None) if many else store.vectors_for(sorted(found))
        # the rows of those that end first bound the entry: until then no row leaves the candidates
        until = (first_expiry(store, flt, start) if flt.current else None) or float("inf")
        entry = Candidates(rids, matrix, time.time(), until, copy.deepcopy(flt), mem.exact_search_max)
        rows = sum(len(e.rids or ()) for e in cache.derived.values() if isinstance(e, Candidates)) + len(rids or ())
        if len(cache.derived) >= MAX_HELD or rows > MAX_HELD_ROWS:
            cache.derived.clear()
        cache.derived[key] = entry
        return entry


def _carried(store: Any, entry: Candidates, changed: set[int]) -> Candidates | None:
    """``entry`` after this store's commit wrote the rows ``changed`` (:mod:`~memos_integrations.storage.held_carry`):
    those rows read again (whether they pass the filter now, their vectors, when they end), the others kept;
    what a fresh read gives, row for row. None where it cannot be carried (too many, expired, not held)."""
    now = time.time()
    if entry.rids is None or entry.flt is None or not entry.since <= now < entry.until:
        return None
    if not changed:
        return entry
    found = sorted(passing(store, changed, entry.flt))
    until = entry.until
    if entry.flt.current:
        first = first_expiry_among(store, changed, entry.flt, now)
        until = until if first is None else min(until, first)
    present, fresh = store.vectors_for(found) if found else ([], None)
    old, matrix = entry.rids, entry.matrix
    assert matrix is not None
    at = {r: n for r in changed for n in [bisect_left(old, r)] if n < len(old) and old[n] == r}  # rows held
    if at.keys() == set(present):  # the same rows (none, or rewritten in place): the same order
        rows = [at[r] for r in present]
        if rows and not np.array_equal(matrix[rows], fresh):  # a new vector: a copy with it
            matrix = matrix.copy()
            matrix[rows] = fresh
        return Candidates(old, matrix, time.time(), until, entry.flt, entry.cap)
    dropped = set(at.values())
    keep = [n for n in range(len(old)) if n not in dropped]
    rids = [old[n] for n in keep] + list(present)
    if len(rids) > entry.cap or len(rids) > _CHUNK:
        return None
    if not rids:
        return Candidates([], np.zeros((0, 0), dtype=np.float32), time.time(), until, entry.flt, entry.cap)
    if dropped:
        matrix = matrix[keep]
    if present:
        matrix = np.concatenate([matrix, fresh]) if keep else fresh
        if keep and old[keep[-1]] > present[0]:  # a row written in the middle: back into row order
            order = np.argsort(np.asarray(rids), kind="stable")
            rids, matrix = [rids[n] for n in order.tolist()], matrix[order]
    return Candidates(rids, matrix, time.time(), until, entry.flt, entry.cap)


CARRIERS[Candidates] = _carried


@dataclass(frozen=True)
class Speakers:
    """A filter's speakers (:func:`~memos_integrations.storage.caches.scope_speakers`) as read at
    ``since``, trusted as :class:`Candidates` are."""

    values: frozenset[Any] | None
    since: float
    until: float


def speakers(mem: TextualMemory, flt: MemoryFilter, limit: int) -> frozenset[Any] | None:
    """The values of ``metadata.speaker`` among ``flt``'s rows (:func:`~.caches.scope_speakers`), held
    between searches as its candidates are; None where they cannot be held, or there are more than ``limit``."""
    held = getattr(mem.store, "_held", None)
    key = _key(flt)
    if held is None or key is None:
        return None
    with held() as cache:
        if cache is None:
            return None
        now = time.time()
        entry: Speakers | None = cache.derived.get(("speakers", limit, key))
        if entry is None or not entry.since <= now < entry.until:
            entry = _held_scope(mem, flt, limit)
            if entry is None:
                values = scope_speakers(mem.store, flt, limit)
                until = (first_expiry(mem.store, flt, now) if flt.current else None) or float("inf")
                entry = Speakers(values, time.time(), until)
            if len(cache.derived) >= MAX_HELD:
                cache.derived.clear()
            cache.derived[("speakers", limit, key)] = entry
        return entry.values


def _held_scope(mem: TextualMemory, flt: MemoryFilter, limit: int) -> Speakers | None:
    """``flt``'s speakers from what this commit already holds: its candidates (every row of the scope)
    and who said each row (:func:`~memos_integrations.storage.caches.held_speaker_map`), trusted as long as
    the candidates are; None where either is not held, or a candidate has no non-empty string speaker (SQL
    then says which value it holds: a number, an empty string, none). Saves the scope's scan for the
    speakers and its bound (a tenth of a search right after a commit, issue 13); the same set as SQL's."""
    speaker_of = held_speaker_map(mem.store, SPEAKER_MAP_ROWS)
    held = candidates(mem, flt) if speaker_of is not None else None
    if speaker_of is None or held is None or held.rids is None:
        return None
    said = set(map(speaker_of.get, held.rids))
    if None in said:
        return None
    return Speakers(frozenset(said) if len(said) <= limit else None, held.since, held.until)


def _key(flt: MemoryFilter) -> tuple[Any, ...] | None:
    """What ``flt``'s candidate SQL is made of (equal keys: equal SQL and parameters), or None."""
    try:
        meta = None if flt.metadata is None else json.dumps(flt.metadata, allow_nan=False, default=_refuse)
    except (TypeError, ValueError):
        return None

    def seq(v: Any) -> tuple[Any, ...] | None:
        return None if v is None else tuple(v)
    return ("candidates", seq(flt.user_id), seq(flt.agent_id), seq(flt.session_id), seq(flt.kinds), seq(flt.states),
            seq(flt.tags_any), seq(flt.tags_all), meta, flt.time_from, flt.time_to, seq(flt.ids), flt.parent_id,
            flt.parent_prefix, flt.as_of, flt.current)


def _refuse(value: Any) -> Any:
    raise TypeError(f"not a plain JSON value: {type(value).__name__}")
