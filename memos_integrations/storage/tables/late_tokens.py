"""The ``late_tokens`` table: each memory's content-word token vectors, for the ``late`` preset's re-scorer.

Where it sits: beside the engine's ``vectors`` table, in ``memory.db`` (SQLite) or the cube's PostgreSQL
schema (``bytea`` columns), created by this module's migration component when the store opens. A row holds
the last-layer MiniLM vectors of the content words of one item's own views, from the forward pass that made
the item's vector (:mod:`memos_integrations.textual.late`), int8 with one float32 scale per row. It is
written, replaced and dropped by :meth:`~memos_integrations.storage.sqlstore.SQLStore.write_items` (and
PostgreSQL's batched one) and ``put_vectors`` in the transaction that writes the item's vector
(:func:`written`, :func:`written_many`), so the two never disagree: a new vector without token vectors of the
same pass drops the old ones, a deletion drops them, and an update that keeps the text keeps them. On
PostgreSQL a writer writes them after the ``vectors`` rows (the order every write path locks them in), and
two writers of one item are ordered by its ``items`` row (and the advisory lock ``get_items`` takes). A file
copy (dump, clone) and ``memcube migrate`` (both ways) carry them; ``export`` / ``import`` and ``reindex
--reembed`` embed again and write them again.

Nothing read is trusted (:func:`read`): a row whose sizes, dimension, scales or item id do not match is
treated as absent (logged once), never decoded into a wrong-sized array; a row holds at most
:data:`MAX_ROWS` vectors, so no row can ask for a large allocation.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ...items import Lifecycle
from ..migrations import Step
from ..sql import chunks, marks
from . import Tables

_log = logging.getLogger(__name__)

#: most token vectors stored (and accepted on read) for one memory
MAX_ROWS = 256

_DDL = """
CREATE TABLE IF NOT EXISTS late_tokens (
    rid INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    data BLOB NOT NULL,
    scales BLOB NOT NULL
)
"""
#: PostgreSQL's: the same columns (bytea for the blobs; the rid is items.rid's BIGINT). No foreign key, as
#: ``vectors`` has none: a row is only read for the item id it names, and the write paths keep it in step
_PG_DDL = """
CREATE TABLE IF NOT EXISTS late_tokens (
    rid BIGINT PRIMARY KEY,
    item_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    data BYTEA NOT NULL,
    scales BYTEA NOT NULL
)
"""
_PUT = ("INSERT INTO late_tokens (rid, item_id, n, dim, data, scales) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (rid) DO UPDATE SET item_id = excluded.item_id, n = excluded.n, dim = excluded.dim, "
        "data = excluded.data, scales = excluded.scales")


class LateTokens(Tables):
    """``late_tokens``: one row per memory that has token vectors, keyed by its ``items.rid``."""

    COMPONENT = "late_tokens"
    STEPS: ClassVar[Mapping[str, Sequence[Step]]] = {"sqlite": [_DDL], "postgres": [_PG_DDL]}


_TABLES: weakref.WeakKeyDictionary[Any, LateTokens] = weakref.WeakKeyDictionary()
_warned: set[str] = set()


def attach(store: Any) -> None:
    """Bring the table up to date when ``store`` (a :class:`~..sqlstore.SQLStore`, SQLite or PostgreSQL) opens.

    At open, not on the first write: a migration inside a write transaction would be rolled back with it
    (and on PostgreSQL its DDL would hold locks on the write's tables until that commit)."""
    if getattr(store.db, "dialect", None) in LateTokens.STEPS:
        _TABLES[store] = LateTokens(store.db)


def table(store: Any) -> LateTokens | None:
    """The store's table when it has one that is ready (None: another backend, or a read-only view not migrated)."""
    found = _TABLES.get(store)
    return found if found is not None and found.ready() else None


def written(store: Any, tx: Any, rid: int, item: Any, vector: np.ndarray | None) -> None:
    """Keep row ``rid`` in step with the item's vector, in the item's own transaction ``tx``.

    ``vector`` is the vector written for the item now (None: its text did not change, its tokens stay).
    The tokens are the ones :mod:`~memos_integrations.textual.late` computed in the pass that made exactly
    this vector; anything else (a caller's own vector, an embedding from another process) drops the row."""
    written_many(store, tx, [(rid, item, vector)])


def written_many(store: Any, tx: Any, rows: Sequence[tuple[int, Any, np.ndarray | None]]) -> None:
    """:func:`written` for a batch of (rid, item, vector) in one transaction: one delete and one batched
    upsert, in rid order (PostgreSQL's ``write_items`` writes a batch in a few round trips). On PostgreSQL call
    it after the batch's ``vectors`` rows: every write path there takes a row's ``vectors`` lock before its
    ``late_tokens`` lock, so two writers never wait on each other in a cycle."""
    if table(store) is None or not rows:
        return
    from ...textual.late import pending_tokens

    drop: list[int] = []
    put: list[tuple[Any, ...]] = []
    for rid, item, vector in rows:
        if item.state == Lifecycle.DELETED:
            drop.append(int(rid))
            continue
        if vector is None:
            continue
        found = pending_tokens(item.id, vector)
        if found is None:
            drop.append(int(rid))
            continue
        q, scales = found
        put.append((int(rid), item.id, int(q.shape[0]), int(q.shape[1]), q.tobytes(), scales.tobytes()))
    if drop:
        if store.db.dialect == "postgres":
            tx.execute("DELETE FROM late_tokens WHERE rid = ANY(?)", (sorted(drop),))
        else:
            for chunk in chunks(sorted(drop)):
                tx.execute(f"DELETE FROM late_tokens WHERE rid IN ({marks(len(chunk))})", chunk)
    if put:
        tx.executemany(_PUT, sorted(put, key=lambda r: r[0]))


def read(store: Any, rids: Sequence[int], ids: Mapping[int, str], dim: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The stored (int8 rows, float32 scales) of ``rids`` whose row names the item id ``ids[rid]``.

    A row that does not hold what it says (sizes, dimension, non-finite or negative scales, more than
    :data:`MAX_ROWS` rows, another item's id: a hostile or damaged file) is left out, as if absent."""
    if table(store) is None or not rids:
        return {}
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for rid, item_id, n, d, data, scales in _rows(store, [int(r) for r in rids]):  # each row checked before it is decoded
        ok = (isinstance(n, int) and isinstance(d, int) and 0 <= n <= MAX_ROWS and d == dim
              and isinstance(data, bytes) and isinstance(scales, bytes)
              and len(data) == n * d and len(scales) == 4 * n and ids.get(rid) == item_id)
        if ok:
            s = np.frombuffer(scales, dtype=np.float32)
            ok = bool(np.isfinite(s).all() and (s >= 0).all() and (s <= 1.0).all())  # unit rows: scale <= 1/127
        if not ok:
            _warn(store)
            continue
        out[int(rid)] = (np.frombuffer(data, dtype=np.int8).reshape(n, d), s)
    return out


def _rows(store: Any, rids: list[int]) -> Iterator[Any]:
    """The stored rows of ``rids``: one ``= ANY`` statement on PostgreSQL (one round trip), chunks of
    bound marks on SQLite. PostgreSQL's bytea arrives as ``bytes``, as SQLite's BLOB does."""
    if store.db.dialect == "postgres":  # binary rows: bytea as bytes, not hex text (read_binary)
        yield from getattr(store.db, "read_binary", store.db.read)(
            "SELECT rid, item_id, n, dim, data, scales FROM late_tokens WHERE rid = ANY(?)", (rids,))
        return
    for chunk in chunks(rids):
        yield from store.db.read(
            f"SELECT rid, item_id, n, dim, data, scales FROM late_tokens WHERE rid IN ({marks(len(chunk))})", chunk)


def count(store: Any) -> int:
    """How many memories have token vectors (0 without the table)."""
    return int(store.db.scalar("SELECT COUNT(*) FROM late_tokens")) if table(store) is not None else 0


def _warn(store: Any) -> None:
    where = str(getattr(store, "path", "?"))
    if where not in _warned:
        _warned.add(where)
        _log.warning("%s: late_tokens rows that do not hold what they say were ignored (the late preset ranks "
                     "those memories without them); `memcube reindex --reembed` writes them again", where)
