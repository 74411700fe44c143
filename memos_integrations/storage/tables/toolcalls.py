"""The ``tool_calls`` table: every tool call an agent made through a face, for tool memory.

Where it sits: the storage half of :class:`memos_integrations.toolmem.ToolMemory`. Calls are a log, not
memories: they are many, short-lived in meaning and never searched by similarity, so they live in a
plain table (no embedding on the hot path of a tool call) and only the experiences distilled from them
become cube items. Every read names one user: no statement here returns another user's calls.
Arguments, errors and outputs arrive already capped and redacted (``toolmem.record``); this module
stores what it is given, in the portable dialect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..migrations import Step
from ..sql import Row, chunks, marks
from . import Tables

#: the columns, in the order :meth:`ToolCalls.insert` takes and :meth:`ToolCalls.rows` returns them
COLUMNS = ("id", "user_id", "agent_id", "session_id", "tool", "call_id", "args", "ok", "error_class", "error",
           "output", "latency_ms", "created_at")

_DDL = """
CREATE TABLE IF NOT EXISTS tool_calls (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    tool TEXT NOT NULL,
    call_id TEXT,
    args TEXT NOT NULL,
    ok INTEGER NOT NULL,
    error_class TEXT,
    error TEXT,
    output TEXT,
    latency_ms {real} NOT NULL,
    created_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS tool_calls_user_tool ON tool_calls (user_id, tool, created_at)
"""


class ToolCalls(Tables):
    """``tool_calls``: one row per tool call, keyed by a fresh id, read per user (and tool)."""

    COMPONENT = "tool_calls"
    STEPS: ClassVar[Mapping[str, Sequence[Step]]] = {
        "sqlite": [_DDL.format(real="REAL")],
        "postgres": [_DDL.format(real="DOUBLE PRECISION")],
    }

    def insert(self, rows: Sequence[Sequence[Any]]) -> None:
        """Store calls, each a tuple in :data:`COLUMNS` order, in one transaction."""
        with self.transaction() as tx:
            tx.executemany(f"INSERT INTO tool_calls ({', '.join(COLUMNS)}) VALUES ({marks(len(COLUMNS))})", rows)

    def append(self, row: Sequence[Any]) -> bool | None:
        """Store one call; return whether the call before it (same user, tool and session) succeeded.

        None when it is the first such call. Read in the same transaction as the insert, so it holds
        across processes and restarts.
        """
        user, session, tool = row[1], row[3], row[4]
        with self.transaction() as tx:
            before = tx.execute(
                "SELECT ok FROM tool_calls WHERE user_id = ? AND tool = ? AND session_id IS NOT DISTINCT FROM ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1", (user, tool, session)).fetchone()
            tx.execute(f"INSERT INTO tool_calls ({', '.join(COLUMNS)}) VALUES ({marks(len(COLUMNS))})", row)
        return None if before is None else bool(before[0])

    def rows(self, user_id: str, tools: Sequence[str] | None = None, limit: int = 500) -> list[Row]:
        """The user's latest ``limit`` calls (of ``tools`` when given), oldest first, in :data:`COLUMNS` order."""
        if not self.ready():
            return []
        select = f"SELECT {', '.join(COLUMNS)} FROM tool_calls WHERE user_id = ?"
        if tools is None:
            got = self.db.read(select + " ORDER BY created_at DESC, id DESC LIMIT ?", (user_id, limit))
        else:
            got = []
            for part in chunks(list(tools)):
                got += self.db.read(select + f" AND tool IN ({marks(len(part))}) ORDER BY created_at DESC, id DESC LIMIT ?",
                                    (user_id, *part, limit))
            got.sort(key=lambda r: (r[-1], r[0]), reverse=True)
            got = got[:limit]
        return got[::-1]

    def counts(self, user_id: str, tools: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
        """``{tool: (calls, successes)}`` over all the user's calls (of ``tools`` when given)."""
        if not self.ready():
            return {}
        sql = "SELECT tool, COUNT(*), SUM(ok) FROM tool_calls WHERE user_id = ?"
        if tools is None:
            return {r[0]: (int(r[1]), int(r[2] or 0)) for r in self.db.read(sql + " GROUP BY tool", (user_id,))}
        out: dict[str, tuple[int, int]] = {}
        for part in chunks(list(tools)):
            for r in self.db.read(sql + f" AND tool IN ({marks(len(part))}) GROUP BY tool", (user_id, *part)):
                out[r[0]] = (int(r[1]), int(r[2] or 0))
        return out

    def forget(self, user_id: str) -> int:
        """Delete every call of the user; return how many went."""
        with self.transaction() as tx:
            return int(tx.execute("DELETE FROM tool_calls WHERE user_id = ?", (user_id,)).rowcount)
