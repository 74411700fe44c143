"""The LangGraph checkpoint tables (``lg_checkpoints``, ``lg_writes``, ``lg_threads``) over a :class:`Database`.

Where it sits: the storage half of :class:`memos_integrations.langgraph.MemOSSaver`. The saver decides
who may act and (de)serialises; this module owns every statement on the three tables, written once in
the portable dialect (see :mod:`memos_integrations.storage.sql`). Reads take the database; writes take
the open transaction the saver holds (so an owner check and the write it guards commit together).

The one statement that cannot be portable is the metadata filter of ``list(filter=...)`` (a JSON path):
:func:`metadata_predicate` branches on ``db.dialect``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...errors import InvalidInputError
from ..sql import Row, Tx, chunks, marks
from . import Tables

COMPONENT = "langgraph_checkpoints"

#: Step 1 is the DDL every earlier release wrote (IF NOT EXISTS: an existing cube passes it unchanged).
STEPS: dict[str, list[str]] = {
    "sqlite": ["""
CREATE TABLE IF NOT EXISTS lg_checkpoints (
    thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT, type TEXT NOT NULL, checkpoint BLOB NOT NULL, metadata TEXT NOT NULL,
    run_id TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX IF NOT EXISTS lg_checkpoints_run ON lg_checkpoints (run_id) WHERE run_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS lg_writes (
    thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL, task_path TEXT NOT NULL DEFAULT '', idx INTEGER NOT NULL,
    channel TEXT NOT NULL, type TEXT NOT NULL, value BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
CREATE TABLE IF NOT EXISTS lg_threads (thread_id TEXT PRIMARY KEY, user_id TEXT, created_at REAL NOT NULL)
"""],
    "postgres": ["""
CREATE TABLE IF NOT EXISTS lg_checkpoints (
    thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT, type TEXT NOT NULL, checkpoint BYTEA NOT NULL, metadata TEXT NOT NULL,
    run_id TEXT, created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX IF NOT EXISTS lg_checkpoints_run ON lg_checkpoints (run_id) WHERE run_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS lg_writes (
    thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL, task_path TEXT NOT NULL DEFAULT '', idx INTEGER NOT NULL,
    channel TEXT NOT NULL, type TEXT NOT NULL, value BYTEA,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
CREATE TABLE IF NOT EXISTS lg_threads (thread_id TEXT PRIMARY KEY, user_id TEXT, created_at DOUBLE PRECISION NOT NULL)
"""],
}

_CP = "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata, run_id, created_at"
_W = "thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, value"
_CP_KEY = "thread_id, checkpoint_ns, checkpoint_id"
_W_KEY = "thread_id, checkpoint_ns, checkpoint_id, task_id, idx"
_PUT = (f"INSERT INTO lg_checkpoints ({_CP}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT ({_CP_KEY}) DO UPDATE SET "
        "parent_checkpoint_id = excluded.parent_checkpoint_id, type = excluded.type, checkpoint = excluded.checkpoint, "
        "metadata = excluded.metadata, run_id = excluded.run_id, created_at = excluded.created_at")
_W_REPLACE = ("DO UPDATE SET task_path = excluded.task_path, channel = excluded.channel, type = excluded.type, "
              "value = excluded.value")
# get: the checkpoint joined with its pending writes (one row per write; the checkpoint columns repeat,
# which costs less than a second statement) and, with a user, the thread's owner
_GET = """
SELECT c.checkpoint_id, c.parent_checkpoint_id, c.type, c.checkpoint, c.metadata,
       w.task_id, w.task_path, w.idx, w.channel, w.type, w.value{owner}
FROM lg_checkpoints c
LEFT JOIN lg_writes w ON w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns
    AND w.checkpoint_id = c.checkpoint_id{owner_join}
WHERE c.thread_id = ? AND c.checkpoint_ns = ? AND c.checkpoint_id = {cid}"""
_LATEST = "(SELECT max(checkpoint_id) FROM lg_checkpoints WHERE thread_id = ? AND checkpoint_ns = ?)"
_GET_SQL = {
    (by_id, with_owner): _GET.format(
        cid="?" if by_id else _LATEST, owner=", t.user_id" if with_owner else "",
        owner_join=" LEFT JOIN lg_threads t ON t.thread_id = c.thread_id" if with_owner else "",
    )
    for by_id in (False, True) for with_owner in (False, True)
}
_LIST = (
    "SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.type, c.checkpoint, c.metadata, "
    "w.task_id, w.task_path, w.idx, w.channel, w.type, w.value FROM ({chosen}) c "
    "LEFT JOIN lg_writes w ON w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns "
    "AND w.checkpoint_id = c.checkpoint_id"
)
_FILTER_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def metadata_predicate(dialect: str, key: str, value: Any) -> tuple[str, list[Any]]:
    """SQL for one ``list(filter=...)`` condition: JSON equality on a (dotted) metadata key.

    The only dialect branch of these tables: SQLite reads JSON with ``json_extract``, PostgreSQL with
    ``jsonb #>``. A missing key and a JSON ``null`` both match ``None`` on both.

    Raises:
        InvalidInputError: a key with characters outside letters, digits, ``_``, ``-`` and ``.``.
    """
    if not isinstance(key, str) or not key or not set(key) <= _FILTER_KEY_CHARS:
        raise InvalidInputError(f"invalid metadata filter key {key!r}: use letters, digits, '_', '-' and '.'")
    if dialect == "postgres":
        path = "CAST(metadata AS JSONB) #> CAST(? AS TEXT[])"
        parts = key.split(".")
        if value is None:
            return f"COALESCE({path}, 'null') = 'null'", [parts]
        return f"{path} = CAST(? AS JSONB)", [parts, json.dumps(value, separators=(",", ":"))]
    json_path = "$." + ".".join(f'"{part}"' for part in key.split("."))
    if value is None:
        return "json_extract(metadata, ?) IS NULL", [json_path]
    if isinstance(value, bool):
        return "json_extract(metadata, ?) = ?", [json_path, int(value)]
    if isinstance(value, (dict, list)):
        return "json_extract(metadata, ?) = json(?)", [json_path, json.dumps(value, separators=(",", ":"))]
    return "json_extract(metadata, ?) = ?", [json_path, value]


class CheckpointTables(Tables):
    """Every statement on the checkpoint tables. Creating one brings their schema up to date."""

    COMPONENT = COMPONENT
    STEPS = STEPS

    # -- reads ------------------------------------------------------------------------------------
    def get(self, thread_id: str, ns: str, checkpoint_id: str | None, *, with_owner: bool) -> list[Row]:
        """One checkpoint (the latest of the namespace without ``checkpoint_id``) and its writes.

        Returns:
            rows of (checkpoint_id, parent_id, type, checkpoint, metadata, task_id, task_path, idx,
            channel, type, value[, owner]); write columns are NULL when it has none; no rows if not found.
        """
        if not self.ready():
            return []
        params = (thread_id, ns, checkpoint_id) if checkpoint_id else (thread_id, ns, thread_id, ns)
        return self.db.read(_GET_SQL[bool(checkpoint_id), with_owner], params)

    def owner(self, thread_id: str) -> str | None:
        """The user who owns ``thread_id`` (None: nobody, or no such thread)."""
        if not self.ready():
            return None
        return self.db.scalar("SELECT user_id FROM lg_threads WHERE thread_id = ?", (thread_id,))  # type: ignore[no-any-return]

    def select(
        self, *, thread_id: str | None = None, owner: str | None = None, ns: str | None = None,
        checkpoint_id: str | None = None, metadata: Mapping[str, Any] | None = None, before: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """The checkpoints ``list`` chooses, newest id first, joined with their writes (one row per write).

        Args:
            thread_id: only this thread.
            owner: only threads this user owns (when ``thread_id`` is None).
            ns: only this namespace.
            checkpoint_id: only this checkpoint id.
            metadata: JSON equality per (dotted) metadata key.
            before: only ids below this one.
            limit: at most this many checkpoints (not rows).

        Returns:
            rows of (thread_id, ns, checkpoint_id, parent_id, type, checkpoint, metadata, task_id,
            task_path, idx, channel, type, value); several rows per checkpoint with several writes.

        Raises:
            InvalidInputError: a metadata key with characters outside ``[A-Za-z0-9_.-]``.
        """
        where: list[str] = []
        params: list[Any] = []
        if thread_id is not None:
            where.append("thread_id = ?")
            params.append(thread_id)
        elif owner is not None:
            where.append("thread_id IN (SELECT thread_id FROM lg_threads WHERE user_id = ?)")
            params.append(owner)
        for column, value in (("checkpoint_ns", ns), ("checkpoint_id", checkpoint_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        for key, value in (metadata or {}).items():
            sql, p = metadata_predicate(self.db.dialect, key, value)
            where.append(sql)
            params.extend(p)
        if before is not None:
            where.append("checkpoint_id < ?")
            params.append(before)
        chosen = f"SELECT {_CP} FROM lg_checkpoints{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY checkpoint_id DESC"
        if limit is not None:
            chosen += " LIMIT ?"
            params.append(int(limit))
        return self.db.read(_LIST.format(chosen=chosen), params) if self.ready() else []

    # -- inside a write transaction -----------------------------------------------------------------
    def claim(self, tx: Tx, thread_id: str, user: str, now: float | None) -> str | None:
        """Make ``user`` the owner of a thread nobody owns; return the other owner if someone else has it."""
        tx.lock(f"lg_thread:{thread_id}")
        row = tx.execute("SELECT user_id FROM lg_threads WHERE thread_id = ?", (thread_id,)).fetchone()
        if row is None:
            tx.execute("INSERT INTO lg_threads (thread_id, user_id, created_at) VALUES (?, ?, ?)", (thread_id, user, now))
        elif row[0] is None:
            tx.execute("UPDATE lg_threads SET user_id = ? WHERE thread_id = ?", (user, thread_id))
        elif row[0] != user:
            return str(row[0])
        return None

    def foreign(self, tx: Tx, thread_ids: Sequence[str], user: str) -> tuple[str, str] | None:
        """The first of ``thread_ids`` owned by another user than ``user``, as (thread_id, owner), or None."""
        for chunk in chunks(list(thread_ids)):
            row = tx.execute(
                f"SELECT thread_id, user_id FROM lg_threads WHERE thread_id IN ({marks(len(chunk))}) "
                "AND user_id IS NOT NULL AND user_id != ?", [*chunk, user],
            ).fetchone()
            if row is not None:
                return str(row[0]), str(row[1])
        return None

    def put(self, tx: Tx, row: Sequence[Any]) -> None:
        """Write (or replace) one checkpoint: ``row`` is (thread_id, ns, id, parent_id, type, blob,
        metadata_json, run_id, created_at)."""
        tx.execute(_PUT, row)

    def put_writes(self, tx: Tx, rows: Iterable[Sequence[Any]], *, replace: bool) -> None:
        """Write pending writes in one statement; ``replace`` overwrites an existing (task, idx), else it is kept."""
        tx.executemany(f"INSERT INTO lg_writes ({_W}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                       f"ON CONFLICT ({_W_KEY}) {_W_REPLACE if replace else 'DO NOTHING'}", rows)

    def delete_threads(self, tx: Tx, thread_ids: Sequence[str]) -> None:
        """Delete threads with their checkpoints, writes and owner rows."""
        for chunk in chunks(list(thread_ids)):
            for table in ("lg_checkpoints", "lg_writes", "lg_threads"):
                tx.execute(f"DELETE FROM {table} WHERE thread_id IN ({marks(len(chunk))})", chunk)

    def run_threads(self, tx: Tx, run_ids: Sequence[str]) -> list[str]:
        """The threads holding a checkpoint written by any of ``run_ids``."""
        found: set[str] = set()
        for chunk in chunks(list(run_ids)):
            found.update(r[0] for r in tx.execute(
                f"SELECT DISTINCT thread_id FROM lg_checkpoints WHERE run_id IN ({marks(len(chunk))})", chunk).fetchall())
        return sorted(found)

    def delete_runs(self, tx: Tx, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints written by ``run_ids`` and their writes."""
        for chunk in chunks(list(run_ids)):
            inn = marks(len(chunk))
            tx.execute(f"DELETE FROM lg_writes WHERE ({_CP_KEY}) IN "
                       f"(SELECT {_CP_KEY} FROM lg_checkpoints WHERE run_id IN ({inn}))", chunk)
            tx.execute(f"DELETE FROM lg_checkpoints WHERE run_id IN ({inn})", chunk)

    def has_checkpoints(self, tx: Tx, thread_id: str) -> bool:
        return tx.execute("SELECT 1 FROM lg_checkpoints WHERE thread_id = ? LIMIT 1", (thread_id,)).fetchone() is not None

    def copy(self, tx: Tx, src: str, dst: str, user: str | None, now: float | None) -> None:
        """Copy every checkpoint and write of ``src`` to ``dst`` (replacing what ``dst`` has under the same
        keys); ``dst`` gets ``user`` as its owner, or ``src``'s owner without one (an owned ``dst`` keeps its)."""
        rest = _CP.split(", ", 1)[1]
        tx.execute(f"INSERT INTO lg_checkpoints ({_CP}) SELECT CAST(? AS TEXT), {rest} FROM lg_checkpoints "
                   f"WHERE thread_id = ? ON CONFLICT ({_CP_KEY}) DO UPDATE SET "
                   + ", ".join(f"{c} = excluded.{c}" for c in _CP.split(", ")[3:]), (dst, src))
        rest = _W.split(", ", 1)[1]
        tx.execute(f"INSERT INTO lg_writes ({_W}) SELECT CAST(? AS TEXT), {rest} FROM lg_writes "
                   f"WHERE thread_id = ? ON CONFLICT ({_W_KEY}) {_W_REPLACE}", (dst, src))
        if user is not None:
            tx.execute("INSERT INTO lg_threads (thread_id, user_id, created_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (thread_id) DO NOTHING", (dst, user, now))
        else:
            tx.execute("INSERT INTO lg_threads (thread_id, user_id, created_at) SELECT CAST(? AS TEXT), user_id, "
                       "CAST(? AS DOUBLE PRECISION) FROM lg_threads WHERE thread_id = ? ON CONFLICT (thread_id) DO NOTHING",
                       (dst, now, src))

    def thread_checkpoints(self, tx: Tx, thread_ids: Sequence[str]) -> list[Row]:
        """Every checkpoint of ``thread_ids`` as (thread_id, ns, id, parent_id, type, blob, metadata),
        by thread and namespace, newest id first."""
        rows: list[Row] = []
        for chunk in chunks(list(thread_ids)):
            rows += tx.execute(
                "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata "
                f"FROM lg_checkpoints WHERE thread_id IN ({marks(len(chunk))}) "
                "ORDER BY thread_id, checkpoint_ns, checkpoint_id DESC", chunk).fetchall()
        return rows

    def delete_checkpoints(self, tx: Tx, keys: Sequence[tuple[str, str, str]]) -> None:
        """Delete checkpoints (thread_id, ns, id) and their writes."""
        for table in ("lg_writes", "lg_checkpoints"):
            tx.executemany(f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?", keys)
