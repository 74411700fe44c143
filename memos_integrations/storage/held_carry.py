"""Decoded rows and per-row maps a store holds, carried across its own commits (the rows it wrote read again).

Why: the maps held with a store's decoded rows (:mod:`.caches`: who said each row, each row's event
time, the cube's speakers) were read by one scan of every row after each commit, and a service where
adds interleave with searches paid that scan on nearly every new search (issue 13: the speaker scan
alone was a fifth of a search's engine CPU right after an add). A commit of this store changes only the
rows its transactions wrote, so the maps of the previous commit are exact once those rows are read
again; nothing else is. The decoded rows themselves (:class:`.caches.DecodedRows`) are carried the same
way: those of the previous commit that it did not write stay trusted, so ranking reads no row again
that it read before the commit.

What this store wrote is known exactly: :meth:`~.sqlstore.SQLStore.write_items` names each row it
upserts, and every other statement a transaction runs passes :class:`TrackedTx`, which gives up
(``changed`` None: scan everything, as before) at any write to ``items`` it does not know. Carried
only where nothing else can have committed (the database's ``data_version`` is the one the maps were
read under) and one lock serialises reads and writes (SQLite's connection lock, under which a
transaction also commits): elsewhere, and after another connection's commit, the maps are read afresh.
Every SQL expression here is the one :mod:`.caches` scans with, restricted to the rows written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..items import from_epoch, to_epoch
from .sql import chunks, marks

if TYPE_CHECKING:
    from .caches import DecodedRows

#: rows written past which the maps are read whole again (a bulk import: one scan is cheaper)
MAX_CARRIED = 256
_WRITES = re.compile(r"^\s*(?!SELECT\b)", re.IGNORECASE)  # anything but a plain read may write
_ITEMS = re.compile(r"\b(items|vectors)\b", re.IGNORECASE)  # the tables held rows come from (not items_fts)
#: how an entry of another module (by its type) is carried: (store, entry, rows written) -> the entry, or None
CARRIERS: dict[type, Callable[[Any, Any, set[int]], Any]] = {}


class TrackedTx:
    """A transaction that tells its store when a statement may have written ``items`` rows it cannot
    name (a write path other than :meth:`~.sqlstore.SQLStore.write_items`, raw SQL in a test): the
    store's held maps are then read whole after this commit."""

    __slots__ = ("tx", "store", "known")

    def __init__(self, tx: Any, store: Any, known: frozenset[str]) -> None:
        self.tx, self.store, self.known = tx, store, known

    def _check(self, sql: str) -> None:
        if sql not in self.known and _ITEMS.search(sql) and _WRITES.match(sql):
            self.store._changed = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._check(sql)
        return self.tx.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        self._check(sql)
        return self.tx.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tx, name)


def held_rows(store: Any) -> Iterator[DecodedRows | None]:
    """The body of :meth:`~.sqlstore.SQLStore._held`: its decoded rows, all current while this is open
    (nothing committed since they were read: :meth:`data_version` for other connections, ``_writes``
    for this store); None where that cannot be known, or this thread is inside a write (it must see its
    own uncommitted rows). On a commit of this store alone, the held maps it can carry are carried."""
    version = store.data_version()  # read before the rows: a commit after it only makes them newer
    lock = getattr(store.db, "lock", None)
    with store._cache_lock() if version is not None else nullcontext():  # SQLite: the connection lock
        if version is None or getattr(store._in_tx, "depth", 0) > 0:
            yield None
            return
        cache, token = store._decoded, (version, store._writes)
        if token != cache.token:
            before, old, rows = cache.token, cache.derived, cache.valid_rows
            changed, store._changed = store._changed, set()
            cache.valid(token)
            if (lock is not None and changed is not None and len(changed) <= MAX_CARRIED
                    and isinstance(before, tuple) and before[0] == version):
                # the rows decoded at the previous commit that this one did not write are current still
                held = cache.valid_rows
                held.update(rows)
                for rid in changed:
                    held.pop(rid, None)
                if old:
                    cache.derived.update(carry(store, old, changed))
        yield cache


def carry(store: Any, old: dict[Hashable, Any], changed: set[int]) -> dict[Hashable, Any]:
    """The entries of ``old`` (a commit's held maps) that hold after ``changed`` rows were written:
    who said each row and each row's event time with those rows read again, the cube's speakers where
    no row left a speaker behind. Entries of any other kind are not carried (read again when asked)."""
    out: dict[Hashable, Any] = {}
    size = store.max_rid() if changed else None
    for key, value in old.items():
        if type(value) in CARRIERS:
            found = CARRIERS[type(value)](store, value, changed)
            if found is not None:
                out[key] = found
            continue
        if not isinstance(key, tuple) or len(key) != 2 or not isinstance(value, dict):
            continue
        kind, max_rows = key
        if size is not None and size > max_rows:  # the scan would give None now
            continue
        if kind in ("speaker_of", "event_times") and not changed:
            out[key] = value  # never changed in place: the same map serves
        elif kind == "speaker_of":
            out[key] = _with(value, changed, _speakers(store, changed))
        elif kind == "event_times":
            out[key] = _with(value, changed, _event_times(store, changed))
    for key, value in old.items():  # ("speakers", limit, max_rows): held_speakers over a carried map
        if (isinstance(key, tuple) and len(key) == 3 and key[0] == "speakers" and ("speaker_of", key[2]) in out
                and (value is None or isinstance(value, frozenset))):
            before, after = old[("speaker_of", key[2])], out[("speaker_of", key[2])]
            if any(before.get(r) is not None and before.get(r) != after.get(r) for r in changed):
                continue  # a speaker may have left the cube: collected again when asked
            grown = value if value is None else value | {after[r] for r in changed if after.get(r) is not None}
            out[key] = grown if grown is None or len(grown) <= key[1] else None
    return out


def _with(held: dict[int, Any], changed: set[int], fresh: dict[int, Any]) -> dict[int, Any]:
    """``held`` with the ``changed`` rows as read now (a row gone: dropped); a copy, so a search still
    reading the previous commit's map sees it whole."""
    out = dict(held)
    for rid in changed:
        if rid in fresh:
            out[rid] = fresh[rid]
        else:
            out.pop(rid, None)
    return out


def _speakers(store: Any, rids: set[int]) -> dict[int, str | None]:
    """:func:`.caches.held_speaker_map`'s value of each of ``rids``."""
    d, path = store.filter_dialect, store.filter_dialect.path("speaker")
    out: dict[int, str | None] = {}
    for chunk in chunks(sorted(rids)):
        rows = store.db.read(f"SELECT rid, {d.type_of('items.metadata')}, {d.text_value('items.metadata')} "
                             f"FROM items WHERE rid IN ({marks(len(chunk))})", [path, path, *chunk])
        out.update({rid: value if kind == "text" and value else None for rid, kind, value in rows})
    return out


def _event_times(store: Any, rids: set[int]) -> dict[int, tuple[float | None, bool]]:
    """:func:`.caches.held_event_times`'s value of each of ``rids`` (the same SQL and conversions)."""
    import json

    d = store.filter_dialect
    text = "CAST(items.metadata AS TEXT)"
    escaped = d.has_substring(text, "?")
    out: dict[int, tuple[float | None, bool]] = {}
    for chunk in chunks(sorted(rids)):
        rows = store.db.read(
            f"SELECT rid, event_time, CASE WHEN {d.has_substring(text, '?')} AND NOT {escaped} THEN "
            f"{d.type_of('items.metadata')} END, CASE WHEN {escaped} THEN {text} END FROM items "
            f"WHERE rid IN ({marks(len(chunk))})", ['"refers_to"', "\\", d.path("refers_to"), "\\", *chunk])
        out.update({rid: (to_epoch(from_epoch(when)), kind is not None if raw is None else "refers_to" in json.loads(raw))
                    for rid, when, kind, raw in rows})
    return out


def passing(store: Any, rids: set[int], flt: Any) -> list[int]:
    """Which of ``rids`` pass ``flt`` now (a :class:`~memos_integrations.textual.filters.MemoryFilter`)."""
    where, params = store.where(flt)
    out: list[int] = []
    for chunk in chunks(sorted(rids)):
        out += [r[0] for r in store.db.read(
            f"SELECT items.rid FROM items WHERE items.rid IN ({marks(len(chunk))}) AND {where}", [*chunk, *params])]
    return out


def first_expiry_among(store: Any, rids: set[int], flt: Any, after: float) -> float | None:
    """:func:`.caches.first_expiry` over ``rids`` alone: the earliest ``valid_to`` after ``after`` among
    them that ``flt`` passes when its current-truth condition is left out."""
    where, params = store.where(replace(flt, current=False))
    found = [r[0] for chunk in chunks(sorted(rids)) for r in store.db.read(
        f"SELECT MIN(items.valid_to) FROM items WHERE items.rid IN ({marks(len(chunk))}) AND {where} "
        "AND items.valid_to > ?", [*chunk, *params, after]) if r[0] is not None]
    return float(min(found)) if found else None
