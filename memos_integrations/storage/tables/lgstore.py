"""The LangGraph ``BaseStore`` tables (``lg_store``, ``lg_store_ns``) over a :class:`Database`.

Where it sits: the storage half of :class:`memos_integrations.langgraph.MemOSStore`, which keeps the
batch semantics, TTL policy and index items; this module owns every statement on the two tables.

Order: LangGraph lists namespaces in first-write order and keys in insertion order. Earlier releases
read SQLite's ``rowid`` for that; step 2 gives both tables a ``seq`` column (filled from the rowid on
SQLite) so the order is a real column on every backend. A new row takes ``max(seq) + 1`` inside the
write transaction, which :meth:`StoreTables.write_lock` serialises on PostgreSQL (an update keeps its
``seq``, as an upsert kept its rowid). Every statement here is portable; there is no dialect branch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..sql import Row, Tx, chunks
from . import Tables

COMPONENT = "langgraph_store"

STEPS: dict[str, list[str]] = {
    "sqlite": [
        """
CREATE TABLE IF NOT EXISTS lg_store_ns (ns TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS lg_store (
    ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    expires_at REAL, ttl REAL, item_ids TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (ns, key)
);
CREATE INDEX IF NOT EXISTS lg_store_expiry ON lg_store (expires_at) WHERE expires_at IS NOT NULL
""",
        """
ALTER TABLE lg_store_ns ADD COLUMN seq INTEGER;
UPDATE lg_store_ns SET seq = rowid;
ALTER TABLE lg_store ADD COLUMN seq INTEGER;
UPDATE lg_store SET seq = rowid;
CREATE INDEX IF NOT EXISTS lg_store_ns_seq ON lg_store_ns (seq);
CREATE INDEX IF NOT EXISTS lg_store_seq ON lg_store (seq)
""",
    ],
    "postgres": [
        """
CREATE TABLE IF NOT EXISTS lg_store_ns (ns TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS lg_store (
    ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION, ttl DOUBLE PRECISION,
    item_ids TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (ns, key)
);
CREATE INDEX IF NOT EXISTS lg_store_expiry ON lg_store (expires_at) WHERE expires_at IS NOT NULL
""",
        """
ALTER TABLE lg_store_ns ADD COLUMN IF NOT EXISTS seq BIGINT;
ALTER TABLE lg_store ADD COLUMN IF NOT EXISTS seq BIGINT;
CREATE INDEX IF NOT EXISTS lg_store_ns_seq ON lg_store_ns (seq);
CREATE INDEX IF NOT EXISTS lg_store_seq ON lg_store (seq)
""",
    ],
}

#: the columns of a row as the store reads it
ROW = "s.ns, s.key, s.value, s.created_at, s.updated_at, s.ttl, s.item_ids"
_LIVE = "(s.expires_at IS NULL OR s.expires_at > ?)"
_NO_LIMIT = 2**62  # LIMIT -1 is SQLite's "no limit"; a huge number means the same on every backend
_KEYS_PER_QUERY = 300  # (ns, key) pairs per OR list: 600 bound values


class StoreTables(Tables):
    """Every statement on ``lg_store`` / ``lg_store_ns``. Creating one brings their schema up to date."""

    COMPONENT = COMPONENT
    STEPS = STEPS

    # -- reads ------------------------------------------------------------------------------------
    def get(self, ns: str, key: str, now: float) -> list[Row]:
        """The live row of (ns, key), as ``ROW`` columns (empty if absent or expired)."""
        if not self.ready():
            return []
        return self.db.read(f"SELECT {ROW} FROM lg_store s WHERE s.ns = ? AND s.key = ? AND {_LIVE}", (ns, key, now))

    def under(self, ns: str | None, rng: tuple[str, str] | None, now: float, limit: int = -1, offset: int = 0) -> list[Row]:
        """Live rows in namespace ``ns`` or below it (``rng``: the encoded prefix's [low, high) range; both
        None: every row), by namespace first-write order, then key insertion order.

        Args:
            ns: the encoded namespace prefix itself.
            rng: the encoded range of the namespaces below it (``store_logic.prefix_range``).
            now: the clock (rows expired before it are invisible).
            limit: at most this many rows (negative: all).
            offset: skip this many first.

        Returns:
            rows of ``ROW`` columns.
        """
        if not self.ready():
            return []
        where = _LIVE
        params: list[Any] = [now]
        if rng is not None:
            where += " AND (s.ns = ? OR (s.ns >= ? AND s.ns < ?))"
            params += [ns, *rng]
        return self.db.read(
            f"SELECT {ROW} FROM lg_store s JOIN lg_store_ns n ON n.ns = s.ns WHERE {where} "
            "ORDER BY n.seq, s.seq LIMIT ? OFFSET ?", [*params, _NO_LIMIT if limit < 0 else limit, offset],
        )

    def rows_for(self, keys: Sequence[tuple[str, str]], now: float) -> dict[tuple[str, str], Row]:
        """The live rows of ``keys`` ((ns, key) pairs), by key; a few queries for any number of keys."""
        out: dict[tuple[str, str], Row] = {}
        if not self.ready():
            return out
        for chunk in chunks(list(keys), _KEYS_PER_QUERY):
            cond = " OR ".join(["(s.ns = ? AND s.key = ?)"] * len(chunk))
            for row in self.db.read(f"SELECT {ROW} FROM lg_store s WHERE ({cond}) AND {_LIVE}",
                                    [*(v for k in chunk for v in k), now]):
                out[(row[0], row[1])] = row
        return out

    def live_namespaces(self, now: float) -> list[str]:
        """The encoded namespaces holding at least one live row."""
        if not self.ready():
            return []
        return [r[0] for r in self.db.read(
            f"SELECT n.ns FROM lg_store_ns n WHERE EXISTS (SELECT 1 FROM lg_store s WHERE s.ns = n.ns AND {_LIVE})", (now,))]

    def expired(self, now: float) -> list[Row]:
        """(ns, key, item_ids) of every row expired at ``now``."""
        if not self.ready():
            return []
        return self.db.read(
            "SELECT ns, key, item_ids FROM lg_store WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))

    # -- writes (inside the caller's transaction) -----------------------------------------------------
    def refresh(self, due: Iterable[tuple[float, str, str]]) -> None:
        """Set new expiry times: ``due`` is (expires_at, ns, key) rows; one transaction."""
        with self.transaction() as tx:
            tx.executemany("UPDATE lg_store SET expires_at = ? WHERE ns = ? AND key = ?", due)

    @staticmethod
    def write_lock(tx: Tx) -> None:
        """Serialise writers of these tables (the ``max(seq) + 1`` of a new row must not race)."""
        tx.lock("lg_store")

    def item_ids(self, tx: Tx, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The ``item_ids`` JSON of the existing rows among ``keys``, by (ns, key)."""
        out: dict[tuple[str, str], str] = {}
        for chunk in chunks(list(keys), _KEYS_PER_QUERY):
            cond = " OR ".join(["(ns = ? AND key = ?)"] * len(chunk))
            for ns, key, ids in tx.execute(f"SELECT ns, key, item_ids FROM lg_store WHERE {cond}",
                                           [v for k in chunk for v in k]).fetchall():
                out[(ns, key)] = ids
        return out

    @staticmethod
    def delete(tx: Tx, keys: Sequence[tuple[str, str]]) -> None:
        tx.executemany("DELETE FROM lg_store WHERE ns = ? AND key = ?", keys)

    @staticmethod
    def upsert(tx: Tx, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert or update rows (ns, key, value, created_at, updated_at, expires_at, ttl, item_ids), in
        order; a new namespace or key goes last in its order, an update keeps its place and ``created_at``."""
        tx.executemany(
            "INSERT INTO lg_store_ns (ns, seq) VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM lg_store_ns)) "
            "ON CONFLICT (ns) DO NOTHING", [(r[0],) for r in rows])
        tx.executemany(
            "INSERT INTO lg_store (ns, key, value, created_at, updated_at, expires_at, ttl, item_ids, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM lg_store)) "
            "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, "
            "expires_at = excluded.expires_at, ttl = excluded.ttl, item_ids = excluded.item_ids", rows)

    @staticmethod
    def drop_empty(tx: Tx, namespaces: Iterable[str]) -> None:
        """Forget namespaces left without rows (a later write puts them last in the order again)."""
        tx.executemany(
            "DELETE FROM lg_store_ns WHERE ns = ? AND NOT EXISTS (SELECT 1 FROM lg_store WHERE ns = lg_store_ns.ns)",
            [(ns,) for ns in namespaces])

    @staticmethod
    def delete_expired(tx: Tx, keys: Sequence[tuple[str, str]], now: float) -> None:
        """Delete (ns, key) rows that are still expired at ``now`` (a refresh since keeps them)."""
        tx.executemany("DELETE FROM lg_store WHERE ns = ? AND key = ? AND expires_at <= ?", [(*k, now) for k in keys])
