"""The ``tool_calls`` table's statements and PostgreSQL DDL run unchanged on a real PostgreSQL (pgserver)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
from test_storage_portable_sql import _OneConnection

from memos_integrations.storage.migrations import current_version
from memos_integrations.storage.tables.toolcalls import ToolCalls
from memos_integrations.toolmem.record import ToolCall, safe_args

pgserver = pytest.importorskip("pgserver")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="pg-toolmem-")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def test_tool_calls_table_on_postgresql(postgres: str) -> None:
    db = _OneConnection(postgres)
    try:
        table = ToolCalls(db)
        assert current_version(db, "tool_calls") == 1 and ToolCalls(db).version == 1  # reopening runs nothing
        calls = [ToolCall(id=f"c{n}", user_id=user, tool=tool, args=safe_args({"q": n, "password": "x"}), ok=ok,
                          latency_ms=1.5, created_at=1000.0 + n, session_id="t", error_class=None if ok else "E",
                          error=None if ok else "bad")
                 for n, (user, tool, ok) in enumerate([("maya", "a", False), ("maya", "a", True),
                                                        ("maya", "b", True), ("bob", "a", True)])]
        table.insert([c.row() for c in calls])
        assert [ToolCall.from_row(r) for r in table.rows("maya")] == calls[:3]
        assert [ToolCall.from_row(r) for r in table.rows("maya", ["a"], limit=1)] == [calls[1]]
        assert table.counts("maya") == {"a": (2, 1), "b": (1, 1)} and table.counts("bob", ["a", "zz"]) == {"a": (1, 1)}
        assert table.forget("maya") == 3 and table.rows("maya") == [] and len(table.rows("bob")) == 1
    finally:
        db.close()
