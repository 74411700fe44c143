"""The faces' and MOS's table modules (memos_integrations/storage/tables/), each against a real database.

Every table test takes ``db`` from the fixture below, so the same assertions can run on PostgreSQL by
parametrising it (the PostgreSQL backend adds a ``PostgresDatabase``). The compatibility tests build the
tables with the DDL earlier releases wrote, verbatim, and check that the new code keeps their rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.errors import CubeCorruptedError, InvalidInputError
from memos_integrations.storage.migrations import current_version
from memos_integrations.storage.sql import Database, SQLiteDatabase
from memos_integrations.storage.tables import Tables
from memos_integrations.storage.tables.chat import LangChainMessages, LlamaIndexChat
from memos_integrations.storage.tables.checkpoints import CheckpointTables
from memos_integrations.storage.tables.lgstore import StoreTables
from memos_integrations.storage.tables.registry import Registry


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = SQLiteDatabase(tmp_path / "tables.db")
    yield database
    database.close()


# -- checkpoints -------------------------------------------------------------------------------------------
def _cp(thread: str, cid: str, parent: str | None = None, ns: str = "", md: dict[str, Any] | None = None,
        run: str | None = None) -> tuple[Any, ...]:
    return (thread, ns, cid, parent, "msgpack", b"blob-" + cid.encode(), json.dumps(md or {}), run, 1.0)


def test_checkpoints_put_get_and_list(db: Database) -> None:
    t = CheckpointTables(db)
    assert t.version == 1 and t.get("t1", "", None, with_owner=False) == []
    with t.transaction() as tx:
        for row in (_cp("t1", "1", md={"step": 1, "source": "loop", "ok": True, "tags": ["a"]}),
                    _cp("t1", "2", "1", md={"step": 2, "source": "input", "ok": False, "n": None, "deep": {"x": "y"}}),
                    _cp("t2", "1", md={"step": 1}, run="r2")):
            t.put(tx, row)
        t.put(tx, _cp("t1", "2", "1", md={"step": 2, "source": "input", "ok": False, "n": None, "deep": {"x": "y"}}))
        t.put_writes(tx, [("t1", "", "2", "task", "", 0, "ch", "json", b"v0"), ("t1", "", "2", "task", "", 1, "ch", "json", b"v1")],
                     replace=False)
        t.put_writes(tx, [("t1", "", "2", "task", "", 0, "ch", "json", b"ignored")], replace=False)
        t.put_writes(tx, [("t1", "", "2", "task", "", 1, "ch", "json", b"replaced")], replace=True)
        assert t.claim(tx, "t1", "alice", 1.0) is None and t.claim(tx, "t1", "bob", 1.0) == "alice"
    latest = t.get("t1", "", None, with_owner=True)
    assert [(r[0], r[1], r[10], r[11]) for r in latest] == [("2", "1", b"v0", "alice"), ("2", "1", b"replaced", "alice")]
    assert [r[0] for r in t.get("t1", "", "1", with_owner=False)] == ["1"] and t.get("t1", "x", None, with_owner=False) == []
    assert t.owner("t1") == "alice" and t.owner("t2") is None

    def ids(**kw: Any) -> list[tuple[str, str]]:
        return sorted({(r[0], r[2]) for r in t.select(**kw)})

    assert ids() == [("t1", "1"), ("t1", "2"), ("t2", "1")]
    assert ids(thread_id="t1", before="2") == [("t1", "1")]
    assert ids(owner="alice") == [("t1", "1"), ("t1", "2")]
    assert [r[2] for r in t.select(thread_id="t1", limit=1)] == ["2", "2"]  # one checkpoint, two writes
    assert ids(metadata={"source": "loop"}) == [("t1", "1")]
    assert ids(metadata={"step": 1}) == [("t1", "1"), ("t2", "1")]
    assert ids(metadata={"ok": False}) == [("t1", "2")]
    assert ids(metadata={"n": None, "deep.x": "y"}) == [("t1", "2")]
    assert ids(metadata={"tags": ["a"]}) == [("t1", "1")]
    with pytest.raises(InvalidInputError, match="invalid metadata filter key"):
        t.select(metadata={"a') OR 1=1 --": 1})


def test_checkpoints_copy_prune_and_delete_in_groups(db: Database) -> None:
    t = CheckpointTables(db)
    with t.transaction() as tx:
        for row in (_cp("a", "1", run="r1"), _cp("a", "2", "1", run="r1"), _cp("a", "1", ns="sub", run="r2"), _cp("b", "1", run="r3")):
            t.put(tx, row)
        t.put_writes(tx, [("a", "", "2", "task", "", 0, "ch", "json", b"w")], replace=False)
        t.claim(tx, "a", "alice", 1.0)
        t.claim(tx, "b", "bob", 1.0)
        assert t.foreign(tx, ["a", "b", "zz"], "alice") == ("b", "bob") and t.foreign(tx, ["a"], "alice") is None
        assert t.has_checkpoints(tx, "a") and not t.has_checkpoints(tx, "c")
        t.copy(tx, "a", "c", None, 2.0)  # no user: the copy keeps the source's owner
        t.copy(tx, "a", "c", None, 2.0)  # twice: replaces, never duplicates
        t.copy(tx, "b", "d", "carol", 2.0)
    assert t.owner("c") == "alice" and t.owner("d") == "carol"
    assert sorted((r[1], r[2], r[7]) for r in t.select(thread_id="c")) == [("", "1", None), ("", "2", "task"), ("sub", "1", None)]
    with t.transaction() as tx:
        assert t.run_threads(tx, ["r1", "r2", "nope"]) == ["a", "c"]
        t.delete_runs(tx, ["r2"])
        assert [(r[0], r[1], r[2]) for r in t.thread_checkpoints(tx, ["a", "b"])] == [("a", "", "2"), ("a", "", "1"), ("b", "", "1")]
        t.delete_checkpoints(tx, [("a", "", "2")])
        t.delete_threads(tx, ["b", "c"])
    assert {(r[0], r[1], r[2], r[7]) for r in t.select()} == {("a", "", "1", None), ("d", "", "1", None)}
    assert t.owner("b") is None and t.owner("a") == "alice"


# -- the LangGraph store ---------------------------------------------------------------------------------------
def _row(ns: str, key: str, value: Any, now: float = 10.0, ttl: float | None = None, ids: list[str] | None = None) -> tuple[Any, ...]:
    return (ns, key, json.dumps(value), now, now, None if ttl is None else now + ttl * 60, ttl, json.dumps(ids or []))


def test_store_order_is_first_write_and_survives_updates(db: Database) -> None:
    t = StoreTables(db)
    assert t.version == 2
    with t.transaction() as tx:
        t.write_lock(tx)
        t.upsert(tx, [_row("b", "k2", 1), _row("a", "k1", 1), _row("b", "k1", 1), _row("a.x", "z", 1)])
    with t.transaction() as tx:
        t.upsert(tx, [_row("b", "k2", 2, now=20.0)])  # an update keeps its place and created_at
        t.upsert(tx, [_row("a", "k0", 1)])
    rows = t.under(None, None, 0.0)
    assert [(r[0], r[1]) for r in rows] == [("b", "k2"), ("b", "k1"), ("a", "k1"), ("a", "k0"), ("a.x", "z")]
    assert rows[0][2:5] == ("2", 10.0, 20.0)
    assert [(r[0], r[1]) for r in t.under(None, None, 0.0, limit=2, offset=1)] == [("b", "k1"), ("a", "k1")]
    assert [(r[0], r[1]) for r in t.under("a", ("a.", "a/"), 0.0)] == [("a", "k1"), ("a", "k0"), ("a.x", "z")]
    assert set(t.rows_for([("a", "k1"), ("b", "k2"), ("no", "pe")], 0.0)) == {("a", "k1"), ("b", "k2")}
    assert t.get("a", "k1", 0.0)[0][:2] == ("a", "k1") and t.get("a", "nope", 0.0) == []
    with t.transaction() as tx:
        assert t.item_ids(tx, [("a", "k1"), ("zz", "k")]) == {("a", "k1"): "[]"}
        t.delete(tx, [("b", "k1"), ("b", "k2")])
        t.drop_empty(tx, ["a", "b"])
        t.upsert(tx, [_row("b", "again", 1)])  # a forgotten namespace comes back last
    assert sorted(t.live_namespaces(0.0)) == ["a", "a.x", "b"]
    assert [r[0] for r in t.under(None, None, 0.0)][-1] == "b"


def test_store_ttl_rows(db: Database) -> None:
    t = StoreTables(db)
    with t.transaction() as tx:
        t.upsert(tx, [_row("n", "short", 1, ttl=1.0, ids=["i1"]), _row("n", "long", 1, ttl=10.0), _row("m", "k", 1)])
    assert [r[1] for r in t.under(None, None, 10.0 + 120)] == ["long", "k"]
    assert [(r[0], r[1], r[2]) for r in t.expired(10.0 + 120)] == [("n", "short", '["i1"]')]
    t.refresh([(10.0 + 1000, "n", "short")])
    assert t.expired(10.0 + 120) == []
    with t.transaction() as tx:
        t.delete_expired(tx, [("n", "short"), ("n", "long")], 10.0 + 120)  # neither is expired now: both stay
    assert len(t.under(None, None, 0.0)) == 3
    assert t.live_namespaces(10.0 + 5000) == ["m"]


# -- chat transcripts ----------------------------------------------------------------------------------------
def test_langchain_messages(db: Database) -> None:
    t = LangChainMessages(db)
    with t.transaction() as tx:
        t.lock_session(tx, "s1")
        assert t.owners("s1", tx) == set()
        t.append(tx, [("s1", "alice", '{"m": 1}', 1.0), ("s1", None, '{"m": 2}', 2.0), ("s2", "bob", '{"m": 3}', 3.0)])
    assert t.messages("s1") == ['{"m": 1}', '{"m": 2}'] and t.owners("s1") == {"alice"}
    t.clear("s1")
    assert t.messages("s1") == [] and t.messages("s2") == ['{"m": 3}']


def test_llama_index_chat(db: Database) -> None:
    t = LlamaIndexChat(db)
    assert t.version == 2
    t.add("k", "alice", "active", ["a1", "a2", "a3"], 1.0)
    t.add("k", None, "active", ["n1"], 1.0)
    t.add("j", "alice", "archived", ["x"], 1.0)
    assert [m for _, m in t.rows("k", "alice")] == ["a1", "a2", "a3"] and [m for _, m in t.rows("k", None)] == ["n1"]
    assert [m for _, m in t.rows("k", "alice", "active", limit=1, offset=1)] == ["a2"]
    assert t.count("k", "alice", "active") == 3 and t.keys("alice") == ["j", "k"] and t.keys(None) == ["k"]
    with t.transaction() as tx:
        first = t.rows("k", "alice", "active", limit=2, tx=tx)
        t.archive_seqs(tx, [s for s, _ in first[:1]])
        t.delete_seqs([s for s, _ in first[1:]], tx)
    assert [m for _, m in t.rows("k", "alice", "archived")] == ["a1"] and [m for _, m in t.rows("k", "alice", "active")] == ["a3"]
    t.add("k", "alice", "active", ["b1"], 2.0, replace=True)
    assert [m for _, m in t.rows("k", "alice")] == ["a1", "b1"] and [m for _, m in t.rows("k", None)] == ["n1"]


# -- MOS registry ----------------------------------------------------------------------------------------------
def test_registry(db: Database) -> None:
    r = Registry(db)
    assert r.version == 2
    with r.transaction() as tx:
        assert not r.has_admin(tx)
        r.add_user(tx, "root", "root", "admin", 1.0)
        r.add_user(tx, "alice", "alice", "user", 1.0)
        r.update_user(tx, "alice", {"name": "Alice"})
        assert r.has_admin(tx) and r.user(tx, "alice") == ("Alice", "user") and r.role("root", tx) == "admin"
        with pytest.raises(InvalidInputError):
            r.update_user(tx, "alice", {"user_id": "x"})
        assert r.add_cube(tx, "c1", "/p/c1", "alice") and not r.add_cube(tx, "c1", "/p/other", "alice")
        assert not r.add_cube(tx, "c2", "/p/c1", "alice")
        r.add_cube(tx, "c0", "/p/c0", "root")
        r.audit((1.0, "root", "create_user", "alice", 1, "{}"), tx)
    r.audit((2.0, "bob", "create_user", "bob", 0, '{"why": 1}'))
    assert r.role("nobody") is None and [u[0] for u in r.users()] == ["alice", "root"]
    assert [(a[3], a[5]) for a in r.audit_rows(10)] == [("create_user", 0), ("create_user", 1)] and len(r.audit_rows(1)) == 1
    r.share("c0", "alice", "read")
    r.share("c0", "alice", "write")
    assert r.share_of("c0", "alice") == "write" and r.share_of("c1", "root") is None
    assert r.reachable("alice") == [("c0", "write"), ("c1", "owner")] and r.owned("alice") == ["c1"]
    assert r.cube("c1") == ("/p/c1", "alice") and r.cube("zz") is None and [c[0] for c in r.cubes()] == ["c0", "c1"]
    r.unshare("c0", "alice")
    assert r.reachable("alice") == [("c1", "owner")]


# -- versions: a newer schema is refused ---------------------------------------------------------------------
@pytest.mark.parametrize("tables", [CheckpointTables, StoreTables, LangChainMessages, LlamaIndexChat, Registry])
def test_a_newer_component_version_is_refused(db: Database, tables: type[Tables]) -> None:
    tables(db)
    newer = len(tables.STEPS[db.dialect]) + 1
    with db.transaction() as tx:
        tx.execute("UPDATE schema_migrations SET version = ? WHERE component = ?", (newer, tables.COMPONENT))
    with pytest.raises(CubeCorruptedError, match="newer"):
        tables(db)


# -- compatibility: tables written by the previous code -------------------------------------------------------
#: the DDL of the release before storage/tables/, verbatim (langgraph/saver.py, langgraph/store.py,
#: langchain/chat_history.py, llama_index/chat_store.py before the user_id column)
_OLD_DDL = """
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
CREATE TABLE IF NOT EXISTS lg_threads (thread_id TEXT PRIMARY KEY, user_id TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lg_store_ns (ns TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS lg_store (
    ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    expires_at REAL, ttl REAL, item_ids TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (ns, key)
);
CREATE INDEX IF NOT EXISTS lg_store_expiry ON lg_store (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS langchain_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    user_id TEXT,
    message TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS langchain_messages_session ON langchain_messages (session_id, seq);
CREATE TABLE IF NOT EXISTS llama_index_chat (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, status TEXT NOT NULL,
    message TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS llama_index_chat_key ON llama_index_chat (key, status, seq);
"""


def test_a_cube_written_by_the_previous_code_opens_and_keeps_its_rows(tmp_path: Path, embedder: Any) -> None:
    pytest.importorskip("llama_index.core")
    from langchain_core.messages import HumanMessage, message_to_dict
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from llama_index.core.llms import ChatMessage

    from memos_integrations import MemCube
    from memos_integrations.langchain import MemOSChatMessageHistory
    from memos_integrations.langgraph import MemOSSaver, MemOSStore
    from memos_integrations.llama_index import MemOSChatStore

    MemCube.init_from_dir(tmp_path / "cube", embedder=embedder).close()
    checkpoint = empty_checkpoint()
    type_, blob = JsonPlusSerializer().dumps_typed(checkpoint)
    old = sqlite3.connect(str(tmp_path / "cube" / "memory.db"))
    old.executescript(_OLD_DDL)
    old.execute("INSERT INTO lg_checkpoints VALUES ('t1', '', ?, NULL, ?, ?, '{\"step\": 1}', NULL, 1.0)",
                (checkpoint["id"], type_, blob))
    old.execute("INSERT INTO lg_threads VALUES ('t1', 'alice', 1.0)")
    # store rows in a rowid order that differs from key order: the order must survive the seq column
    for ns, key in (("users.alice", "zeta"), ("users.alice", "alpha"), ("users.bob", "k")):
        old.execute("INSERT INTO lg_store_ns (ns) VALUES (?) ON CONFLICT DO NOTHING", (ns,))
        old.execute("INSERT INTO lg_store VALUES (?, ?, ?, 1.0, 1.0, NULL, NULL, '[]')", (ns, key, json.dumps({"v": key})))
    old.execute("INSERT INTO langchain_messages (session_id, user_id, message, created_at) VALUES ('s1', 'alice', ?, 1.0)",
                (json.dumps(message_to_dict(HumanMessage("old hello", id="m1"))),))
    old.execute("INSERT INTO llama_index_chat (key, status, message, created_at) VALUES ('k', 'active', ?, 1.0)",
                (ChatMessage(role="user", content="old chat").model_dump_json(),))
    old.commit()
    old.close()

    cube = MemCube.open(tmp_path / "cube", embedder=embedder)
    try:
        saver = MemOSSaver(cube)
        found = saver.get_tuple({"configurable": {"thread_id": "t1", "user_id": "alice"}})
        assert found is not None and found.checkpoint["id"] == checkpoint["id"] and found.metadata == {"step": 1}
        store = MemOSStore(cube)
        assert [i.key for i in store.search(("users", "alice"))] == ["zeta", "alpha"]
        store.put(("users", "alice"), "beta", {"v": "beta"})
        assert [i.key for i in store.search(("users",))] == ["zeta", "alpha", "beta", "k"]
        assert [m.content for m in MemOSChatMessageHistory(cube, "s1", user_id="alice").messages] == ["old hello"]
        assert [m.content for m in MemOSChatStore.from_defaults(cube).get_messages("k")] == ["old chat"]  # no user's rows
        assert MemOSChatStore.from_defaults(cube, user_id="alice").get_messages("k") == []
        versions = {c: current_version(cube.store.db, c) for c in
                    ("langgraph_checkpoints", "langgraph_store", "langchain_messages", "llama_index_chat")}
        assert versions == {"langgraph_checkpoints": 1, "langgraph_store": 2, "langchain_messages": 1, "llama_index_chat": 2}
    finally:
        cube.close()


def test_a_mos_home_written_by_the_previous_code_opens_and_keeps_its_rows(tmp_path: Path, embedder: Any) -> None:
    from memos_integrations import MOS, MemCube

    home = tmp_path / "home"
    home.mkdir()
    MemCube.init_from_dir(home / "cubes" / "notes", embedder=embedder).close()
    old = sqlite3.connect(str(home / "mos.db"))
    old.executescript(  # mos.py's MIGRATIONS steps 1 and 2, verbatim, as PRAGMA user_version 2 recorded them
        "CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, name TEXT, role TEXT NOT NULL, created_at REAL NOT NULL);"
        "CREATE TABLE IF NOT EXISTS cubes (cube_id TEXT PRIMARY KEY, path TEXT NOT NULL, owner TEXT NOT NULL REFERENCES users(user_id));"
        "CREATE TABLE IF NOT EXISTS shares (cube_id TEXT NOT NULL REFERENCES cubes(cube_id),"
        " user_id TEXT NOT NULL REFERENCES users(user_id), access TEXT NOT NULL, PRIMARY KEY (cube_id, user_id));"
        "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, principal TEXT,"
        " action TEXT NOT NULL, target TEXT, allowed INTEGER NOT NULL, detail TEXT NOT NULL);"
        "PRAGMA user_version = 2;"
        "INSERT INTO users VALUES ('root', 'root', 'admin', 0), ('alice', 'Alice', 'user', 0), ('bob', 'bob', 'user', 0);"
        "INSERT INTO audit (at, principal, action, target, allowed, detail) VALUES (0, 'root', 'create_user', 'alice', 1, '{}');"
    )
    old.execute("INSERT INTO cubes VALUES ('notes', ?, 'alice')", (str((home / "cubes" / "notes").resolve()),))
    old.execute("INSERT INTO shares VALUES ('notes', 'bob', 'read')")
    old.commit()
    old.close()
    with MOS(home, embedder=embedder) as mos:
        assert mos.list_users(user_id="root")[0] == {"user_id": "alice", "name": "Alice", "role": "user"}
        assert mos.list_cubes("bob") == [{"cube_id": "notes", "access": "read"}]
        assert mos.access_of("notes", "alice") == "owner"
        assert [e["target"] for e in mos.audit_log(user_id="root")] == ["alice"]
        mos.create_user("carol")
        assert [e["target"] for e in mos.audit_log(user_id="root")] == ["carol", "alice"]
    check = sqlite3.connect(str(home / "mos.db"))
    assert check.execute("PRAGMA user_version").fetchone()[0] == 2
    assert check.execute("SELECT version FROM schema_migrations WHERE component = 'mos_registry'").fetchone()[0] == 2
    check.close()
