"""The engine's side tables, as a mixin of :class:`~memos_integrations.storage.sqlstore.SQLStore`.

Split out of :mod:`.sqlstore` so that the store's item logic reads on its own: the ``outbox``
(derived writes per target, not yet confirmed), ``edges`` (the embedded graph's storage), ``audit``
and ``kv`` (key-value rows for the faces). :class:`SideTables` needs only ``self.db`` and
``self.transaction()``; :class:`SQLStore` inherits it, so its public API is unchanged. SQL here
follows the portable rules of :mod:`.sql` like the rest of the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..errors import InvalidInputError
from ..items import Edge, Lifecycle, from_epoch, to_epoch, utcnow
from .base import IndexRow
from .sql import Database, Row, Tx, chunks, marks

#: the outbox targets the engine drains: the ANN index and a graph projection
VECTORS = "vectors"
GRAPH = "graph"

_QUEUE = (
    "INSERT INTO outbox (target, item_id, op, seq) VALUES (?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox)) "
    "ON CONFLICT (target, item_id) DO UPDATE SET op = excluded.op, seq = excluded.seq"
)


class SideTables:
    """The outbox (and what the vector drain reads from items), edges, audit and kv tables (see the module docstring); mixed into ``SQLStore``."""

    db: Database

    def transaction(self) -> AbstractContextManager[Tx]:  # provided by SQLStore
        raise NotImplementedError

    # -- late_tokens: each item's token vectors, kept in step with its vector (tables/late_tokens.py) ---------
    def _late_attach(self) -> None:
        from .tables import late_tokens

        late_tokens.attach(self)

    def _late_written(self, tx: Tx, rid: int, item: Any, vector: Any) -> None:
        from .tables import late_tokens

        late_tokens.written(self, tx, rid, item, vector)

    def _put_vector(self, tx: Tx, rid: int, vector: Any) -> None:  # provided by SQLStore
        raise NotImplementedError

    def _put_vector_and_tokens(self, tx: Tx, rid: int, item: Any, vector: Any) -> None:
        """``put_vectors``' write of one vector, with the token vectors of the same pass (or none)."""
        self._put_vector(tx, rid, vector)
        self._late_written(tx, rid, item, vector)

    # -- outbox: derived writes (vectors, graph projection) not yet confirmed ----------------------------
    def outbox(self, target: str = VECTORS) -> list[tuple[str, str]]:
        """Queued writes for ``target`` as (item id, op), oldest first."""
        return [(r[0], r[1]) for r in self.db.read(
            "SELECT item_id, op FROM outbox WHERE target = ? ORDER BY seq, item_id", (target,))]

    def outbox_entries(self, target: str = VECTORS) -> list[tuple[str, int]]:
        """Queued writes for ``target`` as (item id, sequence number): what a drain reads and later clears."""
        return [(r[0], r[1]) for r in self.db.read(
            "SELECT item_id, seq FROM outbox WHERE target = ? ORDER BY seq, item_id", (target,))]

    def queue_index(self, ids: Sequence[str], op: str = "upsert", target: str = VECTORS) -> None:
        """Queue writes of ``ids`` for ``target`` (the drain decides upsert or delete from the item's state).

        Joins the caller's transaction when there is one, so the queue row commits with the write.
        """
        with self.transaction() as tx:
            tx.executemany(_QUEUE, [(target, i, op) for i in ids])

    def clear_outbox(self, entries: Sequence[tuple[str, int]], target: str = VECTORS) -> None:
        """Clear the rows a drain applied; a row queued again since (a newer number) stays queued."""
        with self.transaction() as tx:
            tx.executemany("DELETE FROM outbox WHERE target = ? AND item_id = ? AND seq = ?",
                           [(target, i, s) for i, s in entries])

    def indexable(self, ids: Sequence[str] | None = None) -> list[tuple[IndexRow, int]]:
        """(IndexRow, rid) of the non-deleted items, optionally only ``ids``: what a vector index stores."""
        sql = "SELECT id, rid, user_id, agent_id, session_id, kind, state FROM items WHERE state <> ?"
        out: list[tuple[IndexRow, int]] = []

        def add(rows: list[Row]) -> None:
            out.extend((IndexRow(r[0], r[2], r[3], r[4], r[5], r[6]), r[1]) for r in rows)

        if ids is None:
            add(self.db.read(sql + " ORDER BY rid", (Lifecycle.DELETED.value,)))
            return out
        for chunk in chunks(list(ids)):
            add(self.db.read(f"{sql} AND id IN ({marks(len(chunk))})", [Lifecycle.DELETED.value, *chunk]))
        return out

    # -- edges (the embedded graph's storage) -------------------------------------------------------
    def add_edges(self, edges: Sequence[Edge]) -> None:
        now = to_epoch(utcnow())
        with self.transaction() as tx:
            tx.executemany(
                "INSERT INTO edges (src, dst, type, weight, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (src, type, dst) DO UPDATE SET weight = excluded.weight, metadata = excluded.metadata",
                [(e.src, e.dst, e.type, e.weight, json.dumps(e.metadata), now) for e in edges],
            )

    def remove_edges(self, src: str | None = None, dst: str | None = None, type: str | None = None) -> int:
        clauses, params = [], []
        for col, val in (("src", src), ("dst", dst), ("type", type)):
            if val is not None:
                clauses.append(f"{col} = ?")
                params.append(val)
        if not clauses:
            raise InvalidInputError("remove_edges needs at least one of src, dst, type")
        with self.transaction() as tx:
            return int(tx.execute(f"DELETE FROM edges WHERE {' AND '.join(clauses)}", params).rowcount)

    def _edge_rows(self, ids: Sequence[str], columns: Sequence[str], types: Sequence[str] | None,
                   fields: str) -> Iterator[Any]:
        """Rows of ``fields`` (a constant column list) of the edges whose ``columns`` are in ``ids``, chunk by
        chunk and column by column (the order :meth:`edges` and :meth:`edge_links` keep)."""
        type_sql, type_params = "", []
        if types:
            type_sql = f" AND type IN ({marks(len(types))})"
            type_params = list(types)
        for chunk in chunks(list(ids)):
            for column in columns:
                yield from self.db.read(f"SELECT {fields} FROM edges WHERE {column} IN ({marks(len(chunk))}){type_sql}",
                                        [*chunk, *type_params])

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]:
        """Edges touching ``ids`` (``out``: leaving them, ``in``: entering them, ``both``)."""
        if not ids:
            return []
        columns = [c for c, wanted in (("src", ("out", "both")), ("dst", ("in", "both"))) if direction in wanted]
        out: dict[tuple[str, str, str], Edge] = {}
        for r in self._edge_rows(ids, columns, types, "src, dst, type, weight, metadata"):
            out[(r[0], r[2], r[1])] = Edge(r[0], r[1], r[2], r[3], json.loads(r[4]))
        return list(out.values())

    def edge_links(self, ids: Sequence[str], types: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
        """(src, dst, weight) of the edges touching ``ids``, in :meth:`edges` ``"both"`` order, without
        decoding their metadata: a search's graph hop reads only these three (JSON per edge was a
        tenth of it)."""
        if not ids:
            return []
        out: dict[tuple[str, str, str], tuple[str, str, float]] = {}
        for r in self._edge_rows(ids, ("src", "dst"), types, "src, dst, type, weight"):
            out[(r[0], r[2], r[1])] = (r[0], r[1], r[3])
        return list(out.values())

    def edges_from_prefixes(self, prefixes: Sequence[str], types: Sequence[str] | None = None) -> list[Edge]:
        """Edges whose source id starts with one of ``prefixes``, in insertion order."""
        if not prefixes:
            return []
        sql = "SELECT src, dst, type, weight, metadata FROM edges WHERE (" + " OR ".join(
            "(src >= ? AND src < ?)" for _ in prefixes) + ")"
        params: list[Any] = [x for p in prefixes for x in (p, p + "\U0010ffff")]
        if types:
            sql += f" AND type IN ({marks(len(types))})"
            params += list(types)
        rows = self.db.read(sql + " ORDER BY created_at, src, type, dst", params)
        return [Edge(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def iter_edges(self, batch: int = 1000) -> Iterator[Edge]:
        """Every edge, in a stable order, read in pages (exports)."""
        last: tuple[str, str, str] | None = None
        while True:
            if last is None:
                rows = self.db.read("SELECT src, dst, type, weight, metadata FROM edges ORDER BY src, type, dst LIMIT ?", (batch,))
            else:
                rows = self.db.read(
                    "SELECT src, dst, type, weight, metadata FROM edges WHERE src > ? OR (src = ? AND type > ?) "
                    "OR (src = ? AND type = ? AND dst > ?) ORDER BY src, type, dst LIMIT ?",
                    (last[0], last[0], last[1], last[0], last[1], last[2], batch))
            if not rows:
                return
            for r in rows:
                yield Edge(r[0], r[1], r[2], r[3], json.loads(r[4]))
            last = (rows[-1][0], rows[-1][2], rows[-1][1])

    # -- audit ---------------------------------------------------------------------------------------------
    def audit(self, action: str, principal: str | None, target: str | None, detail: dict[str, Any], allowed: bool) -> None:
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO audit (at, principal, action, target, allowed, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (to_epoch(utcnow()), principal, action, target, int(allowed), json.dumps(detail, default=str)),
            )

    def audit_log(self, limit: int = 100, principal: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT seq, at, principal, action, target, allowed, detail FROM audit", []
        if principal is not None:
            sql += " WHERE principal = ?"
            params.append(principal)
        rows = self.db.read(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit])
        return [
            {"seq": r[0], "at": from_epoch(r[1]), "principal": r[2], "action": r[3], "target": r[4],
             "allowed": bool(r[5]), "detail": json.loads(r[6])}
            for r in rows
        ]

    # -- key-value rows for the faces ------------------------------------------------------------------
    def kv_get(self, collection: str, keys: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for chunk in chunks(list(keys)):
            rows = self.db.read(
                f"SELECT key, value FROM kv WHERE collection = ? AND key IN ({marks(len(chunk))})", [collection, *chunk])
            out.update({k: json.loads(v) for k, v in rows})
        return out

    def kv_put(self, collection: str, rows: dict[str, Any]) -> None:
        with self.transaction() as tx:
            tx.executemany(
                "INSERT INTO kv (collection, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value",
                [(collection, k, json.dumps(v)) for k, v in rows.items()],
            )

    def kv_delete(self, collection: str, keys: Sequence[str]) -> int:
        with self.transaction() as tx:
            return sum(int(tx.execute("DELETE FROM kv WHERE collection = ? AND key = ?", (collection, k)).rowcount)
                       for k in keys)

    def kv_all(self, collection: str) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.read("SELECT key, value FROM kv WHERE collection = ?", (collection,))}
