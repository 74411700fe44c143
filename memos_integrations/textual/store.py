"""The source of truth: one SQLite database per cube (``<cube>/memory.db``).

Tables: ``items`` (the current version of each memory), ``versions`` (every version ever written),
``vectors`` (each item's embedding, so the ANN index can be rebuilt without re-embedding),
``items_fts`` (FTS5 keyword index), ``edges`` (typed relations and the parent tree), ``audit``
(who did what, allowed or denied), ``vector_outbox`` (index writes not yet confirmed, replayed after a
crash), ``kv`` (key-value rows for the faces) and ``meta``.

Concurrency policy: one connection per store, guarded by a re-entrant lock, in WAL mode with a busy
timeout so several processes may share the database. Every write runs inside
:meth:`SQLiteStore.transaction` (``BEGIN IMMEDIATE``: writers queue for SQLite's write lock before they
read), so a crash mid-write leaves the previous state and a read-modify-write inside one transaction
sees the latest commit of every thread and process. All values are bound parameters.

Each outbox row carries a sequence number, renewed whenever the item is written again: a drain of the
outbox clears only the rows it read (same id, same number), so a write that commits while a drain
runs keeps its row and is applied by the next drain.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CubeCorruptedError, InvalidInputError
from ..items import Edge, Kind, Lifecycle, MemoryItem, from_epoch, to_epoch, utcnow
from ..storage.sql import SQLiteDatabase
from .filters import MemoryFilter

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    user_id TEXT, agent_id TEXT, session_id TEXT, cube_id TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    event_time REAL, valid_from REAL, valid_to REAL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]',
    created_by TEXT, method TEXT, confidence REAL,
    tags TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}',
    parent_id TEXT,
    access_count INTEGER NOT NULL DEFAULT 0,
    last_access REAL
);
CREATE INDEX IF NOT EXISTS items_user_state ON items (user_id, state);
CREATE INDEX IF NOT EXISTS items_session ON items (session_id);
CREATE INDEX IF NOT EXISTS items_time ON items (event_time);
CREATE INDEX IF NOT EXISTS items_parent ON items (parent_id);
CREATE TABLE IF NOT EXISTS versions (
    item_id TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL, recorded_at REAL NOT NULL,
    PRIMARY KEY (item_id, version)
);
CREATE TABLE IF NOT EXISTS vectors (rid INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5(body, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS edges (
    src TEXT NOT NULL, dst TEXT NOT NULL, type TEXT NOT NULL, weight REAL NOT NULL DEFAULT 1.0,
    metadata TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,
    PRIMARY KEY (src, type, dst)
);
CREATE INDEX IF NOT EXISTS edges_dst ON edges (dst, type);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, principal TEXT, action TEXT NOT NULL,
    target TEXT, allowed INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS vector_outbox (item_id TEXT PRIMARY KEY, op TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS kv (
    collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (collection, key)
);
"""

# rows written before the outbox had sequence numbers get one (0: applied by the next drain)
_OUTBOX_SEQ = "ALTER TABLE vector_outbox ADD COLUMN seq INTEGER NOT NULL DEFAULT 0"
_OUTBOX_SEQ_INDEX = "CREATE INDEX IF NOT EXISTS vector_outbox_seq ON vector_outbox (seq)"
_QUEUE = (
    "INSERT INTO vector_outbox (item_id, op, seq) VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM vector_outbox)) "
    "ON CONFLICT(item_id) DO UPDATE SET op=excluded.op, seq=excluded.seq"
)

_COLUMNS = (
    "id", "text", "context", "kind", "user_id", "agent_id", "session_id", "cube_id", "created_at",
    "updated_at", "event_time", "valid_from", "valid_to", "state", "version", "sources", "created_by",
    "method", "confidence", "tags", "metadata", "parent_id",
)
_SELECT = ", ".join(f"items.{c}" for c in _COLUMNS)


def _row_to_item(row: Sequence[Any]) -> MemoryItem:
    d = dict(zip(_COLUMNS, row))
    return MemoryItem(
        id=d["id"], text=d["text"], context=d["context"], kind=Kind(d["kind"]), user_id=d["user_id"],
        agent_id=d["agent_id"], session_id=d["session_id"], cube_id=d["cube_id"],
        created_at=from_epoch(d["created_at"]),  # type: ignore[arg-type]
        updated_at=from_epoch(d["updated_at"]),  # type: ignore[arg-type]
        event_time=from_epoch(d["event_time"]), valid_from=from_epoch(d["valid_from"]),
        valid_to=from_epoch(d["valid_to"]), state=Lifecycle(d["state"]), version=d["version"],
        sources=json.loads(d["sources"]), created_by=d["created_by"], method=d["method"],
        confidence=d["confidence"], tags=json.loads(d["tags"]), metadata=json.loads(d["metadata"]),
        parent_id=d["parent_id"],
    )


def _item_values(item: MemoryItem) -> list[Any]:
    try:
        return [
            item.id, item.text, item.context, Kind(item.kind).value, item.user_id, item.agent_id,
            item.session_id, item.cube_id, to_epoch(item.created_at), to_epoch(item.updated_at),
            to_epoch(item.event_time), to_epoch(item.valid_from), to_epoch(item.valid_to),
            Lifecycle(item.state).value, item.version, json.dumps(list(item.sources)), item.created_by,
            item.method, item.confidence, json.dumps(list(item.tags)),
            json.dumps(item.metadata, sort_keys=True, allow_nan=False), item.parent_id,
        ]
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"memory {item.id!r} cannot be stored: {exc}; metadata must be JSON") from exc


class _VectorCache:
    """Item vectors held in memory, so exact dense search does not re-read blobs from SQLite.

    Rows live in one growing matrix (a gather is one ``take``); an entry is dropped whenever this
    store rewrites that row, and the whole cache is cleared when another connection commits
    (SQLite's ``PRAGMA data_version``), so a cube shared between processes never scores stale vectors.
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


class SQLiteStore:
    """The cube's SQLite database. Faces may add their own tables through :meth:`ensure_schema`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: the connection layer (storage/sql.py): table modules in storage/ run their SQL through it
        self.db = SQLiteDatabase(self.path)
        self.lock = self.db.lock
        self._vectors = _VectorCache()
        self._data_version: int | None = None
        # search hits are counted in memory and written in batches: a write per search would cost
        # more than the search (a crash loses at most a few usage counts, never a memory)
        self._usage: dict[str, tuple[int, float]] = {}
        self._usage_flushed = time.monotonic()
        try:
            self.conn = self.db.conn
            self.ensure_schema(_SCHEMA)
            self._migrate_outbox()
            version = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None:
                self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(version[0]) > SCHEMA_VERSION:
                raise CubeCorruptedError(
                    f"{self.path} was written by a newer memos-integrations (schema {version[0]}); upgrade the package"
                )
        except sqlite3.DatabaseError as exc:
            raise CubeCorruptedError(
                f"{self.path} is not a readable cube database ({exc}); restore it from a dump or export"
            ) from exc

    def _migrate_outbox(self) -> None:
        """Give an older cube's outbox its sequence column (checked again under the write lock)."""
        def has_seq() -> bool:
            return any(r[1] == "seq" for r in self.conn.execute("PRAGMA table_info(vector_outbox)"))

        if not has_seq():
            with self.transaction() as c:
                if not has_seq():
                    c.execute(_OUTBOX_SEQ)
        self.conn.execute(_OUTBOX_SEQ_INDEX)

    # -- connection plumbing ------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        with self.lock:
            if self.conn.in_transaction:  # nested: join the outer transaction
                yield self.conn
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def ensure_schema(self, ddl: str) -> None:
        with self.lock:
            self.conn.executescript(ddl)

    def close(self) -> None:
        with self.lock:
            if isinstance(self.conn, _ClosedConnection):
                return
            try:
                self.flush_usage()
            except sqlite3.Error:  # closing must not fail because a usage count could not be written
                pass
            self.db.close()
            # a call on the closed cube (or from a thread still using it) gets a MemosError saying what
            # to do, not sqlite3's "Cannot operate on a closed database"
            self.conn = _ClosedConnection(self.path)  # type: ignore[assignment]

    def get_meta(self, key: str) -> str | None:
        row = self.read("SELECT value FROM meta WHERE key=?", (key,))
        return row[0][0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # -- items --------------------------------------------------------------------------------
    def write_items(self, items: Sequence[MemoryItem], vectors: np.ndarray | None) -> None:
        """Insert or replace the current version of each item, record the version, index its text.

        ``vectors`` (one row per item, or None for items whose text did not change) are stored
        beside the item and queued in the outbox for the ANN index.
        """
        now = to_epoch(utcnow())
        with self.transaction() as c:
            for n, item in enumerate(items):
                values = _item_values(item)
                c.execute(
                    f"INSERT INTO items ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                    f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{col}=excluded.{col}' for col in _COLUMNS[1:])}",
                    values,
                )
                rid = c.execute("SELECT rid FROM items WHERE id=?", (item.id,)).fetchone()[0]
                self._vectors.drop([rid])
                c.execute(
                    "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?)",
                    (item.id, item.version, json.dumps(item.to_dict(), sort_keys=True), now),
                )
                c.execute("DELETE FROM items_fts WHERE rowid=?", (rid,))
                if item.state == Lifecycle.DELETED:
                    c.execute("DELETE FROM vectors WHERE rid=?", (rid,))
                    c.execute(_QUEUE, (item.id, "delete"))
                    continue
                c.execute("INSERT INTO items_fts (rowid, body) VALUES (?, ?)", (rid, item.index_text))
                if vectors is not None:
                    c.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?)", (rid, np.asarray(vectors[n], np.float32).tobytes()))
                c.execute(_QUEUE, (item.id, "upsert"))

    def put_vectors(self, vectors: Mapping[str, tuple[str, np.ndarray]]) -> int:
        """Replace stored vectors, by id, each made from an embed text; an item whose embed text
        changed since (another writer) keeps its own. Writes no version. Returns how many were written."""
        written = 0
        with self.transaction() as c:
            current = self.get_items(list(vectors))
            for item_id, (text, vector) in vectors.items():
                item = current.get(item_id)
                if item is None or item.embed_text != text:
                    continue
                rid = c.execute("SELECT rid FROM items WHERE id=?", (item_id,)).fetchone()[0]
                self._vectors.drop([rid])
                c.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?)", (rid, np.asarray(vector, np.float32).tobytes()))
                written += 1
        return written

    def get_items(self, ids: Sequence[str], include_deleted: bool = False) -> dict[str, MemoryItem]:
        out: dict[str, MemoryItem] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rows = self.read(f"SELECT {_SELECT} FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            for row in rows:
                item = _row_to_item(row)
                if include_deleted or item.state != Lifecycle.DELETED:
                    out[item.id] = item
        return out

    def get_by_rid(self, rids: Sequence[int], flt: MemoryFilter | None = None) -> dict[int, MemoryItem]:
        """The rows ``rids``; with ``flt`` only those that pass it now (a search re-checks its hits)."""
        out: dict[int, MemoryItem] = {}
        where, params = flt.to_sql() if flt is not None else ("1", [])
        for start in range(0, len(rids), 500):
            chunk = list(rids[start : start + 500])
            rows = self.read(
                f"SELECT rid, {_SELECT} FROM items WHERE rid IN ({','.join('?' * len(chunk))}) AND {where}", [*chunk, *params]
            )
            out.update({row[0]: _row_to_item(row[1:]) for row in rows})
        return out

    def list_items(
        self, flt: MemoryFilter, limit: int | None = None, offset: int = 0, order: str = "created_at"
    ) -> list[MemoryItem]:
        where, params = flt.to_sql()
        order_sql = {"created_at": "items.created_at, items.rid", "event_time": "COALESCE(items.event_time, items.created_at), items.rid",
                     "updated_at": "items.updated_at DESC, items.rid",
                     "latest": "items.created_at DESC, items.rid DESC"}[order]
        sql = f"SELECT {_SELECT} FROM items WHERE {where} ORDER BY {order_sql} LIMIT ? OFFSET ?"
        rows = self.read(sql, [*params, -1 if limit is None else limit, offset])
        return [_row_to_item(r) for r in rows]

    def count(self, flt: MemoryFilter | None = None) -> int:
        where, params = (flt or MemoryFilter(states=None)).to_sql()
        return int(self.read(f"SELECT COUNT(*) FROM items WHERE {where}", params)[0][0])

    def candidate_rids(self, flt: MemoryFilter, limit: int) -> list[int]:
        where, params = flt.to_sql()
        return [r[0] for r in self.read(f"SELECT rid FROM items WHERE {where} LIMIT ?", [*params, limit])]

    def rid_ids(self, ids: Sequence[str], flt: MemoryFilter) -> dict[str, int]:
        """Which of ``ids`` pass ``flt``, with their row ids."""
        out: dict[str, int] = {}
        where, params = flt.to_sql()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rows = self.read(
                f"SELECT id, rid FROM items WHERE id IN ({','.join('?' * len(chunk))}) AND {where}", [*chunk, *params]
            )
            out.update(dict(rows))
        return out

    def vectors_for(self, rids: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """The stored vectors of ``rids`` (those that have one), from the in-memory cache when it can."""
        with self.lock:
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:  # another connection committed: our copies may be stale
                self._vectors.clear()
                self._data_version = version
            cache = self._vectors
            missing = [r for r in rids if r not in cache.row_of]
            expected = len(rids) - len(missing)
            if missing:
                found, matrix = self._read_vectors(missing)
                cache.put(found, matrix)
                expected += len(found)
            present = [r for r in rids if r in cache.row_of]
            if len(present) < expected:  # the cache overflowed and was cleared: read directly
                return self._read_vectors(list(rids))
            if not present:
                return [], np.zeros((0, 0), dtype=np.float32)
            rows = np.fromiter((cache.row_of[r] for r in present), dtype=np.int64, count=len(present))
            return present, cache.matrix[rows]

    def vectors_by_id(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (unit-length) vectors of the items ``ids``, by id; items without one are absent."""
        rid_of: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rid_of.update(dict(self.read(f"SELECT id, rid FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk)))
        rids, matrix = self.vectors_for(list(rid_of.values()))
        by_rid = dict(zip(rids, matrix))
        return {i: by_rid[r] for i, r in rid_of.items() if r in by_rid}

    def _read_vectors(self, rids: Sequence[int]) -> tuple[list[int], np.ndarray]:
        found: list[int] = []
        blobs: list[bytes] = []
        for start in range(0, len(rids), 900):
            chunk = list(rids[start : start + 900])
            for rid, blob in self.read(f"SELECT rid, vector FROM vectors WHERE rid IN ({','.join('?' * len(chunk))})", chunk):
                found.append(rid)
                blobs.append(blob)
        if not blobs:
            return [], np.zeros((0, 0), dtype=np.float32)
        return found, np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)

    def keyword_search(self, match: str, flt: MemoryFilter, k: int) -> list[tuple[int, float]]:
        """FTS5/BM25 over the filter's items: (rid, bm25 score, larger is better), best first."""
        where, params = flt.to_sql("items")
        sql = (
            "SELECT items.rid, -bm25(items_fts) AS s FROM items_fts JOIN items ON items.rid = items_fts.rowid "
            f"WHERE items_fts MATCH ? AND {where} ORDER BY bm25(items_fts) LIMIT ?"
        )
        try:
            return [(r, float(s)) for r, s in self.read(sql, [match, *params, k])]
        except sqlite3.OperationalError as exc:  # a malformed MATCH expression from a caller
            raise InvalidInputError(f"keyword query {match!r} is not valid FTS5 syntax: {exc}") from exc

    def max_rid(self) -> int:
        """An upper bound on the number of items, at the cost of one index lookup."""
        return int(self.read("SELECT COALESCE(MAX(rid), 0) FROM items")[0][0])

    def term_counts(self, terms: Sequence[str]) -> dict[str, int]:
        """How many indexed documents contain each term (counting is cheap; ranking is not)."""
        return {t: int(self.read("SELECT count(*) FROM items_fts WHERE items_fts MATCH ?", (f'"{t}"',))[0][0]) for t in terms}

    def history(self, item_id: str) -> list[MemoryItem]:
        rows = self.read("SELECT data FROM versions WHERE item_id=? ORDER BY version", (item_id,))
        return [MemoryItem.from_dict(json.loads(r[0])) for r in rows]

    def touch(self, ids: Sequence[str]) -> None:
        """Record that items were returned by a search (the scheduler promotes what is used)."""
        if not ids:
            return
        now = to_epoch(utcnow())
        with self.lock:
            for i in ids:
                count, _ = self._usage.get(i, (0, 0.0))
                self._usage[i] = (count + 1, now)  # type: ignore[assignment]
            if len(self._usage) >= 512 or time.monotonic() - self._usage_flushed > 5.0:
                self.flush_usage()

    def flush_usage(self) -> None:
        """Write the buffered search-hit counts (done every few seconds, on close, and before reads of them)."""
        with self.lock:
            pending, self._usage = self._usage, {}
            self._usage_flushed = time.monotonic()
            if not pending:
                return
            with self.transaction() as c:
                c.executemany(
                    "UPDATE items SET access_count = access_count + ?, last_access = ? WHERE id = ?",
                    [(n, at, i) for i, (n, at) in pending.items()],
                )

    def usage(self, ids: Sequence[str]) -> dict[str, tuple[int, float | None]]:
        self.flush_usage()
        rows = self.read(
            f"SELECT id, access_count, last_access FROM items WHERE id IN ({','.join('?' * len(ids))})", list(ids)
        ) if ids else []
        return {r[0]: (r[1], r[2]) for r in rows}

    # -- outbox -------------------------------------------------------------------------------
    def outbox(self) -> list[tuple[str, str]]:
        """Queued index writes as (item id, op), oldest first."""
        return [(r[0], r[1]) for r in self.read("SELECT item_id, op FROM vector_outbox ORDER BY seq")]

    def outbox_entries(self) -> list[tuple[str, int]]:
        """Queued index writes as (item id, sequence number): what a drain reads and later clears."""
        return [(r[0], r[1]) for r in self.read("SELECT item_id, seq FROM vector_outbox ORDER BY seq")]

    def queue_index(self, ids: Sequence[str], op: str = "upsert") -> None:
        """Queue index writes for ``ids`` (the drain decides upsert or delete from the item's state)."""
        with self.transaction() as c:
            c.executemany(_QUEUE, [(i, op) for i in ids])

    def clear_outbox(self, entries: Sequence[tuple[str, int]]) -> None:
        """Clear the rows a drain applied; a row written again since (a newer number) stays queued."""
        with self.transaction() as c:
            c.executemany("DELETE FROM vector_outbox WHERE item_id=? AND seq=?", list(entries))

    def indexable(self, ids: Sequence[str] | None = None) -> list[tuple[str, int, dict[str, Any]]]:
        """(id, rid, chroma metadata) of the non-deleted items, optionally only ``ids``."""
        sql = "SELECT id, rid, user_id, agent_id, session_id, kind, state FROM items WHERE state != 'deleted'"
        params: list[Any] = []
        if ids is not None:
            if not ids:
                return []
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            params = list(ids)
        return [
            (r[0], r[1], {"user_id": r[2], "agent_id": r[3], "session_id": r[4], "kind": r[5], "state": r[6]})
            for r in self.read(sql, params)
        ]

    # -- edges (the embedded graph's storage) -------------------------------------------------
    def add_edges(self, edges: Sequence[Edge]) -> None:
        now = to_epoch(utcnow())
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO edges VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(src, type, dst) DO UPDATE SET "
                "weight=excluded.weight, metadata=excluded.metadata",
                [(e.src, e.dst, e.type, e.weight, json.dumps(e.metadata), now) for e in edges],
            )

    def remove_edges(self, src: str | None = None, dst: str | None = None, type: str | None = None) -> int:
        clauses, params = [], []
        for col, val in (("src", src), ("dst", dst), ("type", type)):
            if val is not None:
                clauses.append(f"{col}=?")
                params.append(val)
        if not clauses:
            raise InvalidInputError("remove_edges needs at least one of src, dst, type")
        with self.transaction() as c:
            return c.execute(f"DELETE FROM edges WHERE {' AND '.join(clauses)}", params).rowcount

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        type_sql, type_params = "", []
        if types:
            type_sql = f" AND type IN ({','.join('?' * len(types))})"
            type_params = list(types)
        parts, params = [], []
        if direction in ("out", "both"):
            parts.append(f"SELECT src, dst, type, weight, metadata FROM edges WHERE src IN ({marks}){type_sql}")
            params += [*ids, *type_params]
        if direction in ("in", "both"):
            parts.append(f"SELECT src, dst, type, weight, metadata FROM edges WHERE dst IN ({marks}){type_sql}")
            params += [*ids, *type_params]
        rows = self.read(" UNION ".join(parts), params)
        return [Edge(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    # -- audit --------------------------------------------------------------------------------
    def audit(self, action: str, principal: str | None, target: str | None, detail: dict[str, Any], allowed: bool) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO audit (at, principal, action, target, allowed, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (to_epoch(utcnow()), principal, action, target, int(allowed), json.dumps(detail, default=str)),
            )

    def audit_log(self, limit: int = 100, principal: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT seq, at, principal, action, target, allowed, detail FROM audit", []
        if principal is not None:
            sql += " WHERE principal = ?"
            params.append(principal)
        rows = self.read(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit])
        return [
            {"seq": r[0], "at": from_epoch(r[1]), "principal": r[2], "action": r[3], "target": r[4],
             "allowed": bool(r[5]), "detail": json.loads(r[6])}
            for r in rows
        ]

    # -- key-value rows for the faces -----------------------------------------------------------
    def kv_get(self, collection: str, keys: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            rows = self.read(
                f"SELECT key, value FROM kv WHERE collection=? AND key IN ({','.join('?' * len(chunk))})", [collection, *chunk]
            )
            out.update({k: json.loads(v) for k, v in rows})
        return out

    def kv_put(self, collection: str, rows: dict[str, Any]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT(collection, key) DO UPDATE SET value=excluded.value",
                [(collection, k, json.dumps(v)) for k, v in rows.items()],
            )

    def kv_delete(self, collection: str, keys: Sequence[str]) -> int:
        with self.transaction() as c:
            return sum(c.execute("DELETE FROM kv WHERE collection=? AND key=?", (collection, k)).rowcount for k in keys)

    def kv_all(self, collection: str) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.read("SELECT key, value FROM kv WHERE collection=?", (collection,))}


class _ClosedConnection:
    """Stands in for the connection of a closed store: any use raises :class:`InvalidInputError`."""

    in_transaction = False

    def __init__(self, path: Path) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise InvalidInputError(
            f"the cube at {self._path.parent} is closed; open it again (MemCube.open) to use it, and close "
            "it only when no thread uses it any more")
