"""In-memory caches of an :class:`~.sqlstore.SQLStore`: item vectors and decoded item rows.

Both exist for search's CPU (issue 13: a search on a LoCoMo-sized cube read ~130 rows and decoded
each into a :class:`~memos_integrations.items.MemoryItem`, three ``json.loads`` and five datetimes
apiece, more than half of the engine's time). Neither can serve a stale value: the vector cache is
cleared when another connection commits and per row when this store rewrites it; a decoded row is
reused only when the row just read from the database is equal, column for column, to the one it was
decoded from, so no write path has to remember to invalidate it.

Held with the decoded rows (``DecodedRows.derived``, cleared with them whenever anything commits):
who said each row (:func:`held_speaker_map`), the cube's speakers (:func:`held_speakers`) and each
row's event time (:func:`held_event_times`), read by one scan per commit of a cube of at most a few
thousand rows; the speaker boost, the keyword leg and the time boost read them instead of decoding rows (:mod:`memos_integrations.textual.speaker_legs`). A search's hits
are copies of held rows where the row just read equals the held one (:meth:`DecodedRows.fresh`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from ..items import MemoryItem, from_epoch, to_epoch


class DecodedRows:
    """Decoded ``items`` rows by row id, reused while the stored row is unchanged.

    Two ways to know a row is unchanged: :meth:`item` compares the row just read with the one the
    entry was decoded from (always safe, saves the decoding); :meth:`valid` trusts every entry while a
    store's write token (another connection's commits and this store's own transactions) is the one
    they were read under (saves the read too; the store reads token, rows and entries under one lock).
    The items it returns are shared between searches: they are for ranking to read (speaker,
    session, times, kind, metadata), never to hand out or mutate; a search returns freshly decoded
    items. Bounded: past ``max_rows`` entries the older half is dropped (insertion order).

    A commit retires the entries rather than dropping them: :meth:`valid` no longer trusts them, but
    :meth:`item` and :meth:`fresh` still compare a row just read with a retired entry, so a search
    right after a write to the cube reads its rows again without decoding them again (a LoCoMo search
    ranks ~150 rows; adds interleaved with searches used to decode them all after every add).

    :attr:`derived` holds results computed from rows read under the same token (a filter's dense
    candidates and their vectors, :mod:`memos_integrations.textual.dense`): cleared with the rows, so
    they are exactly as current; whoever puts an entry there bounds their number.
    """

    def __init__(self, decode: Callable[[Sequence[Any]], MemoryItem], max_rows: int = 4096) -> None:
        self.decode = decode
        self.max_rows = max_rows
        self._rows: dict[int, tuple[tuple[Any, ...], MemoryItem]] = {}
        #: entries read under an older token: reused only where the row just read is equal (never trusted)
        self._retired: dict[int, tuple[tuple[Any, ...], MemoryItem]] = {}
        self._lock = threading.Lock()
        self.token: Hashable | None = None
        self.derived: dict[Hashable, Any] = {}

    def valid(self, token: Hashable) -> DecodedRows:
        """Itself, every entry still current when ``token`` is what they were read under (else cleared)."""
        if token != self.token:
            with self._lock:
                retired = self._retired
                retired.update(self._rows)
                if len(retired) > self.max_rows:  # bounded as the trusted entries are: the older half goes
                    retired = dict(list(retired.items())[len(retired) - self.max_rows // 2:])
                self._retired, self._rows, self.derived = retired, {}, {}
            self.token = token
        return self

    @property
    def valid_rows(self) -> dict[int, tuple[tuple[Any, ...], MemoryItem]]:
        """The entries by row id (current only right after :meth:`valid`, under the store's lock)."""
        return self._rows

    def item(self, rid: int, row: Sequence[Any]) -> MemoryItem:
        """The item ``row`` (the ``items`` columns of row ``rid``) decodes to, decoded once per content."""
        key = tuple(row)
        entry = self._rows.get(rid)
        if entry is not None and entry[0] == key:
            return entry[1]
        entry = self._retired.get(rid)
        item = entry[1] if entry is not None and entry[0] == key else self.decode(key)
        with self._lock:
            if len(self._rows) >= self.max_rows:
                for old in list(self._rows)[: self.max_rows // 2]:
                    del self._rows[old]
            self._rows[rid] = (key, item)
        return item

    def fresh(self, rid: int, row: Sequence[Any]) -> MemoryItem:
        """The item ``row`` decodes to, as a new object to hand out: a copy of the held item when that
        was decoded from an equal row (its containers copied too, so a caller who changes them changes
        nothing held), else decoded. Never stores anything: a row read outside the store's lock could
        be older than the token the held rows stand for."""
        entry = self._rows.get(rid)
        if entry is None or entry[0] != tuple(row):
            entry = self._retired.get(rid)
        if entry is None or entry[0] != tuple(row):
            return self.decode(row)
        held = entry[1]
        item: MemoryItem = object.__new__(type(held))
        item.__dict__.update(held.__dict__)  # times, enums and strings are immutable: shared
        item.sources, item.tags, item.metadata = _json_copy(held.sources), _json_copy(held.tags), _json_copy(held.metadata)
        return item

    def clear(self) -> None:
        with self._lock:
            self._rows, self._retired = {}, {}
            self.derived = {}


def _json_copy(value: Any) -> Any:
    """A deep copy of decoded JSON (dicts, lists and immutable scalars), key order kept."""
    if type(value) is dict:
        return {k: _json_copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_json_copy(v) for v in value]
    return value


def first_expiry(store: Any, flt: Any, after: float) -> float | None:
    """The earliest ``valid_to`` after ``after`` among the rows ``flt`` passes when its current-truth
    condition is left out: until then, ``flt``'s current-truth candidates at any later time are the
    ones at ``after`` (a cache of them holds that long). ``store`` is an :class:`~.sqlstore.SQLStore`,
    ``flt`` a :class:`~memos_integrations.textual.filters.MemoryFilter`."""
    from dataclasses import replace

    where, params = store.where(replace(flt, current=False))
    found = store.db.scalar(f"SELECT MIN(items.valid_to) FROM items WHERE {where} AND items.valid_to > ?", [*params, after])
    return None if found is None else float(found)


#: rows of a cube whose speakers are held by row (:func:`held_speaker_map`, one scan per commit); larger: decoded
SPEAKER_MAP_ROWS = 4096


def held_value(store: Any, key: Hashable, compute: Callable[[], Any]) -> Any:
    """``compute()``'s value, held on ``store``'s :class:`DecodedRows` (``derived``) under ``key`` until
    anything commits; None where nothing can be held (a store without them, a thread inside a write).
    ``compute`` runs under the store's connection lock, so it may read the store and other held values."""
    held = getattr(store, "_held", None)
    if held is None:
        return None
    with held() as cache:
        if cache is None:
            return None
        if key not in cache.derived:
            cache.derived[key] = compute()
        return cache.derived[key]


def held_speaker_map(store: Any, max_rows: int) -> dict[int, str | None] | None:
    """Each row's speaker (``metadata.speaker`` where it is a non-empty string, else None) by row id,
    every row of ``store`` (every state, every time), read by one scan per write token and held
    (:func:`held_value`); None where nothing can be held (a thread inside a write, a store that cannot
    tell commits apart) or the cube has more than ``max_rows`` rows. Never stale by time passing: it
    says who said a row, not whether the row is in a filter's scope."""

    def scan() -> dict[int, str | None] | None:
        if store.max_rid() > max_rows:
            return None
        d, path = store.filter_dialect, store.filter_dialect.path("speaker")
        rows = store.db.read(f"SELECT rid, {d.type_of('items.metadata')}, {d.text_value('items.metadata')} "
                             "FROM items", [path, path])
        return {rid: value if kind == "text" and value else None for rid, kind, value in rows}

    return held_value(store, ("speaker_of", max_rows), scan)  # type: ignore[no-any-return]


def held_event_times(store: Any, max_rows: int) -> dict[int, tuple[float | None, bool]] | None:
    """Each row's (event time as epoch seconds, whether its metadata holds ``refers_to``) by row id: what
    a search's time boost reads (:func:`~memos_integrations.textual.retrieve.apply_time`), every row of
    ``store`` (every state, every time), the same values its decoded row gives, read by one scan per write
    token and held like :func:`held_speaker_map`, with the same bounds (None where that is None)."""
    def scan() -> dict[int, tuple[float | None, bool]] | None:
        if store.max_rid() > max_rows:
            return None
        d = store.filter_dialect
        # SQL parses a row's JSON only where its text holds the key's name (most rows don't); a text with
        # an escape, which could spell the name (SQLite's paths do not unescape keys), is read by json.loads
        # as the decoded row is. The same answer as decoding, less work
        text = "CAST(items.metadata AS TEXT)"
        escaped = d.has_substring(text, "?")
        rows = store.db.read(
            f"SELECT rid, event_time, CASE WHEN {d.has_substring(text, '?')} AND NOT {escaped} THEN "
            f"{d.type_of('items.metadata')} END, CASE WHEN {escaped} THEN {text} END FROM items",
            ['"refers_to"', "\\", d.path("refers_to"), "\\"])
        # through a datetime and back, as the decoded row's event time is: the same float, bit for bit
        # (once per distinct time: a session's turns share one)
        epoch: dict[float | None, float | None] = {}
        return {rid: (epoch[when] if when in epoch else epoch.setdefault(when, to_epoch(from_epoch(when))),
                      kind is not None if raw is None else "refers_to" in json.loads(raw))
                for rid, when, kind, raw in rows}

    return held_value(store, ("event_times", max_rows), scan)  # type: ignore[no-any-return]


def held_speakers(store: Any, limit: int, max_rows: int) -> frozenset[str] | None:
    """Every speaker of :func:`held_speaker_map` (a superset of any filter's), held with it; None where
    that is, or there are more than ``limit``."""

    def collect() -> frozenset[str] | None:
        speaker_of = held_speaker_map(store, max_rows)
        found = None if speaker_of is None else frozenset(s for s in speaker_of.values() if s is not None)
        return found if found is None or len(found) <= limit else None

    return held_value(store, ("speakers", limit, max_rows), collect)  # type: ignore[no-any-return]


def scope_speakers(store: Any, flt: Any, limit: int) -> frozenset[Any] | None:
    """The distinct values SQL sees at ``metadata.speaker`` of the rows ``flt`` passes (None for a row
    without one; a number stays a number), or None when there are more than ``limit``. A speaker
    condition on ``flt`` (:func:`~memos_integrations.textual.shape_legs.speaker_filter`) matches a row of
    the scope exactly when it matches one of these values, so "does anyone in scope say X" and "does
    anyone but X speak" are set lookups. ``flt`` as for :func:`first_expiry`."""
    where, params = store.where(flt)
    d, path = store.filter_dialect, store.filter_dialect.path("speaker")
    rows = store.db.read(f"SELECT DISTINCT {d.value('items.metadata')} FROM items WHERE {where} LIMIT ?",
                         [path, *params, limit + 1])
    return frozenset(r[0] for r in rows) if len(rows) <= limit else None


class VectorCache:
    """Item vectors held in memory, so exact dense search does not re-read blobs from the database.

    Rows live in one growing matrix (a gather is one ``take``); an entry is dropped whenever this
    store rewrites that row, and the whole cache is cleared when another connection commits (the
    store's :meth:`SQLStore.data_version` changes), so a shared cube never scores stale vectors.
    """

    def __init__(self, max_rows: int = 200_000) -> None:
        self.max_rows = max_rows
        self.clear()

    def clear(self) -> None:
        self.row_of: dict[int, int] = {}
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.n = 0

    def drop(self, rids: Sequence[int]) -> None:
        for rid in rids:
            self.row_of.pop(rid, None)

    def put(self, rids: Sequence[int], matrix: np.ndarray) -> None:
        if not rids:
            return
        if self.n + len(rids) > self.max_rows:
            self.clear()
            if len(rids) > self.max_rows:
                return
        if self.matrix.shape[1] != matrix.shape[1]:
            self.clear()
            self.matrix = np.zeros((max(1024, len(rids)), matrix.shape[1]), dtype=np.float32)
        if self.n + len(rids) > self.matrix.shape[0]:
            grown = np.zeros((max(2 * self.matrix.shape[0], self.n + len(rids)), matrix.shape[1]), dtype=np.float32)
            grown[: self.n] = self.matrix[: self.n]
            self.matrix = grown
        self.matrix[self.n : self.n + len(rids)] = matrix
        for k, rid in enumerate(rids):
            self.row_of[rid] = self.n + k
        self.n += len(rids)
