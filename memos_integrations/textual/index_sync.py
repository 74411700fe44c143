"""Vector-index upkeep for :class:`~memos_integrations.textual.memory.TextualMemory`.

The store is the truth; the ANN index (:class:`~memos_integrations.storage.base.VectorIndex`) is
derived from it through the outbox (target ``"vectors"``) that every write fills in its own transaction. This module drains that outbox into the index
(:func:`sync_index`, after each commit through :func:`sync_after_commit`), repairs drift
(:func:`reconcile`) and rebuilds the index (:func:`reindex`), one drain at a time under the memory's
:class:`~memos_integrations.cubelock.IndexWriteLock`. The functions take the memory they work on;
``TextualMemory`` keeps the public methods. A memory may defer the drain after each commit to
background batches (:mod:`.index_defer`, what the service does): same outbox, same drain, later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import index_defer as D
from .embed import VECTOR_TEXT_META, VECTOR_TEXT_VERSION, item_vectors

if TYPE_CHECKING:
    from .memory import TextualMemory

_log = logging.getLogger("memos_integrations.textual.memory")  # the logger these warnings always used
_DRAIN_BATCH = 2000


def sync_after_commit(mem: TextualMemory) -> None:
    """Apply the outbox after a committed write. The write is done and acknowledged either way:
    if the index cannot be updated now, its rows stay queued for the next write, ``reconcile`` or
    open, and a warning says why (with the cause) instead of an error for a write that succeeded.
    A memory that defers its index writes (:mod:`.index_defer`) leaves the drain to its background batch."""
    if D.note_commit(mem):
        return
    try:
        mem.sync_index()
    except Exception as exc:  # noqa: BLE001 - logged with its cause; the memory is committed
        _log.warning(
            "the memory is stored in %s, but updating the vector index failed (%s: %s); the index write "
            "stays queued and is retried on the next write and when the cube opens (MemCube.reconcile() "
            "retries now)", mem.store.path, type(exc).__name__, exc, exc_info=exc,
        )


def sync_index(mem: TextualMemory) -> int:
    """See :meth:`TextualMemory.sync_index`."""
    applied = 0
    follow = getattr(mem.graph, "follow_items", None)  # a projected graph keeps a node per item (storage/neo4j)
    with mem.write_lock.hold():
        pending = mem.store.outbox_entries()
        for start in range(0, len(pending), _DRAIN_BATCH):
            batch = pending[start : start + _DRAIN_BATCH]
            if follow is not None:  # queued for the graph before these rows are cleared: a crash loses none
                follow([i for i, _ in batch])
            apply(mem, [i for i, _ in batch])
            mem.store.clear_outbox(batch)
            applied += len(batch)
    return applied


def apply(mem: TextualMemory, ids: Sequence[str]) -> None:
    """Make the index hold exactly the live ones of ``ids``, with their stored vectors and fields."""
    rows = mem.store.indexable(ids)
    rid_list, matrix = mem.store.vectors_for([rid for _, rid in rows])
    by_rid = dict(zip(rid_list, matrix))
    lost = [row.id for row, rid in rows if rid not in by_rid]
    if lost:  # a vector lost (older cube, manual edit): embed again from the source of truth
        rid_of = {row.id: rid for row, rid in rows}
        items = mem.get_many(lost)
        for item, vec in zip(items, item_vectors(mem.embedder, items)):
            by_rid[rid_of[item.id]] = vec
    rows = [r for r in rows if r[1] in by_rid]  # deleted meanwhile: removed below, like any non-live id
    if rows:
        vectors = np.stack([by_rid[rid] for _, rid in rows])
        mem.index.upsert([row for row, _ in rows], vectors)
    live = {row.id for row, _ in rows}
    mem.index.delete([i for i in ids if i not in live])


def reconcile(mem: TextualMemory, full: bool = False) -> dict[str, int]:
    """See :meth:`TextualMemory.reconcile`."""
    with mem.write_lock.hold():
        replayed = mem.sync_index()
        added = removed = 0
        if full:
            live = {row.id for row, _ in mem.store.indexable()}
            indexed = mem.index.ids()
            # committed since the drain above (another process, waiting for this lock): its own drain
            # applies it; it is in flight, not drift
            queued = {i for i, _ in mem.store.outbox_entries()}
            orphans = sorted(indexed - live - queued)
            missing = sorted(live - indexed - queued)
            mem.index.delete(orphans)
            if missing:
                mem.store.queue_index(missing)
                mem.sync_index()
            added, removed = len(missing), len(orphans)
    return {"replayed": replayed, "added": added, "removed": removed}


def reindex(mem: TextualMemory, reembed: bool = False) -> int:
    """See :meth:`TextualMemory.reindex`."""
    with mem.write_lock.hold():
        mem.index.reset()
        rows = mem.store.indexable()
        if reembed:
            for start in range(0, len(rows), 512):
                chunk = rows[start : start + 512]
                items = mem.get_many([row.id for row, _ in chunk])
                vectors = item_vectors(mem.embedder, items)
                # same version: the vectors changed, not the memory; one changed meanwhile keeps its own
                mem.store.put_vectors({it.id: (it.embed_text, v) for it, v in zip(items, vectors)})
        mem.store.queue_index([row.id for row, _ in rows])
        mem.sync_index()
        if reembed:  # every vector now means what this release embeds
            mem.store.set_meta(VECTOR_TEXT_META, VECTOR_TEXT_VERSION)
    return len(rows)
