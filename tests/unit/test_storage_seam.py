"""The storage seam: the engine schema's migrations, the outbox per target, the graph's Cypher capability,
backend selection by registry, and the rule that engine SQL is written once in the portable dialect."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, GraphConfig
from memos_integrations.errors import CubeCorruptedError, MemosError
from memos_integrations.items import Lifecycle
from memos_integrations.storage import registry, sqlstore
from memos_integrations.storage.base import CypherUnsupportedError, IndexRow
from memos_integrations.storage.graph import EmbeddedGraph
from memos_integrations.storage.sqlite import SQLiteStore
from memos_integrations.textual.filters import MemoryFilter
from memos_integrations.textual.store import SQLiteStore as ShimStore

#: The schema releases before versioned migrations created, verbatim, with the outbox of the oldest
#: of them (no ``seq`` column) and no ``schema_migrations`` table.
_PREVIOUS = """
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
CREATE TABLE IF NOT EXISTS vector_outbox (item_id TEXT PRIMARY KEY, op TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (collection, key)
);
"""


def _previous_release_db(path: Path) -> None:
    """A memory.db as an older release left it: two items (one queued), an edge, an audit row, kv."""
    item = {"id": "m1", "text": "Ana keeps bees.", "kind": "fact", "user_id": "ana", "state": "generated", "version": 1}
    db = sqlite3.connect(path)
    db.executescript(_PREVIOUS)
    for rid, (iid, text) in enumerate((("m1", "Ana keeps bees."), ("m2", "Ana's hives are in Porto.")), 1):
        db.execute(
            "INSERT INTO items (rid, id, text, kind, user_id, created_at, updated_at, state, version, metadata) "
            "VALUES (?, ?, ?, 'fact', 'ana', 1.0, 1.0, 'generated', 1, '{\"n\": 1}')", (rid, iid, text))
        db.execute("INSERT INTO versions VALUES (?, 1, ?, 1.0)", (iid, json.dumps({**item, "id": iid, "text": text})))
        db.execute("INSERT INTO items_fts (rowid, body) VALUES (?, ?)", (rid, text))
        db.execute("INSERT INTO vectors VALUES (?, ?)", (rid, np.eye(1, 4, rid - 1, dtype=np.float32).tobytes()))
    db.execute("INSERT INTO vector_outbox VALUES ('m2', 'upsert')")
    db.execute("INSERT INTO edges VALUES ('m2', 'm1', 'about', 1.0, '{}', 1.0)")
    db.execute("INSERT INTO audit (at, principal, action, target, allowed) VALUES (1.0, 'ana', 'add', 'm1', 1)")
    db.execute("INSERT INTO kv VALUES ('c', 'k', '\"v\"')")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.commit()
    db.close()


def test_a_database_of_the_previous_schema_opens_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    _previous_release_db(path)
    store = SQLiteStore(path)
    try:
        assert store.schema_version == len(SQLiteStore.migrations["sqlite"]) >= 2
        assert store.get_meta("schema_version") == str(store.schema_version)  # older releases refuse it now
        assert sorted(store.get_items(["m1", "m2"])) == ["m1", "m2"]
        assert store.history("m1")[0].text == "Ana keeps bees."
        assert store.outbox() == [("m2", "upsert")]  # the queued write survived, as a "vectors" row
        assert store.edges(["m1"])[0].type == "about" and store.kv_all("c") == {"k": "v"}
        assert store.audit_log()[0]["target"] == "m1"
        hits = store.keyword_search(["porto"], MemoryFilter(user_id="ana"), 5)
        assert [store.get_by_rid([r])[r].id for r, _ in hits] == ["m2"]
        rids, matrix = store.vectors_for([1, 2])
        assert rids == [1, 2] and matrix.shape == (2, 4)
        item = store.get_items(["m1"])["m1"]
        store.write_items([item.evolve(version=2, text="Ana keeps three hives.")], np.eye(1, 4, dtype=np.float32))
        assert [v.version for v in store.history("m1")] == [1, 2]
    finally:
        store.close()
    again = SQLiteStore(path)  # a second open finds the recorded version and runs nothing
    try:
        assert again.schema_version == store.schema_version and again.get_items(["m1"])["m1"].version == 2
    finally:
        again.close()


def test_a_database_of_a_newer_engine_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_migrations SET version = 99 WHERE component = 'engine'")
    db.commit()
    db.close()
    with pytest.raises(CubeCorruptedError, match="newer than this package"):
        SQLiteStore(path)


def test_a_previous_release_database_stamped_newer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    _previous_release_db(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(CubeCorruptedError, match="newer memos-integrations"):
        SQLiteStore(path)


def test_the_outbox_keeps_one_queue_per_target(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "memory.db")
    try:
        store.queue_index(["a", "b"], target="graph")
        store.queue_index(["a"])
        assert store.outbox() == [("a", "upsert")]
        assert [i for i, _ in store.outbox_entries("graph")] == ["a", "b"]
        store.clear_outbox(store.outbox_entries())  # draining the vectors leaves the graph's rows
        assert store.outbox() == [] and len(store.outbox_entries("graph")) == 2
        entries = store.outbox_entries("graph")
        store.queue_index(["a"], op="delete", target="graph")  # queued again while a drain runs
        store.clear_outbox(entries, target="graph")
        assert store.outbox("graph") == [("a", "delete")]
    finally:
        store.close()


def test_indexable_gives_neutral_index_rows(tmp_path: Path, embedder: Any) -> None:
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as cube:
        item = cube.add(memory="Ana keeps bees.", user_id="ana", session_id="s")[0]
        [(row, rid)] = cube.store.indexable([item.id])
        assert row == IndexRow(item.id, "ana", None, "s", "fact", "generated") and isinstance(rid, int)
        cube.delete(item.id)
        assert cube.store.indexable([item.id]) == []


def test_the_embedded_graph_says_it_runs_no_cypher(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "memory.db")
    try:
        graph = EmbeddedGraph(store)
        assert graph.supports_cypher is False
        with pytest.raises(CypherUnsupportedError, match="Neo4j") as err:
            graph.cypher("MATCH (n) RETURN n")
        assert isinstance(err.value, MemosError)
    finally:
        store.close()


def test_a_neo4j_graph_is_a_registered_backend(tmp_path: Path, embedder: Any) -> None:
    # the neo4j graph exists now (storage/neo4j.py; tested on a real Bolt server in
    # tests/integration/test_neo4j_*.py); creating the cube opens no connection
    config = CubeConfig(graph=GraphConfig(backend="neo4j", uri="bolt://localhost:7687"))
    with MemCube.create(tmp_path / "g", config, embedder=embedder) as cube:
        assert cube.graph.supports_cypher
    assert registry.factory("graph", "neo4j").__name__ == "open_neo4j_graph"


def test_cube_json_without_a_store_entry_still_opens(tmp_path: Path, embedder: Any) -> None:
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as cube:
        cube.add(memory="Ana keeps bees.", user_id="ana")
    header = json.loads((tmp_path / "c" / "cube.json").read_text())
    assert header["config"].pop("store") == {"backend": "sqlite"}
    (tmp_path / "c" / "cube.json").write_text(json.dumps(header))  # as a release before this field wrote it
    with MemCube.open(tmp_path / "c", embedder=embedder) as cube:
        assert cube.stats()["items"] == 1 and cube.config.store.backend == "sqlite"


def test_the_registry_imports_backends_lazily_and_names_what_exists() -> None:
    assert registry.factory("store", "sqlite").__module__ == "memos_integrations.storage.sqlite"
    with pytest.raises(registry.UnknownBackendError, match=r"\['postgres', 'sqlite'\]"):
        registry.factory("store", "oracle")


def test_the_shim_keeps_the_historical_import_path() -> None:
    assert ShimStore is SQLiteStore


def test_engine_sql_is_written_in_the_portable_dialect() -> None:
    """No SQLite-only syntax in the shared store (the dialect rules of storage/sql.py)."""
    source = Path(sqlstore.__file__).read_text()
    dml = source[: source.index("POSTGRES_ENGINE_STEPS")]  # the DDL below is PostgreSQL's own
    for pattern in (r"\browid\b", r"INSERT OR", r"\?\d", r"%s", r"json_extract", r"PRAGMA", r"\bIS \?"):
        assert not re.search(pattern, dml), pattern


def test_scheduler_queries_run_through_store_methods(tmp_path: Path, embedder: Any) -> None:
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as cube:
        a, b = cube.add(memory=["Ana keeps bees.", "Ben rides a bike."], user_id="ana")
        cube.add(memory="No one's note.")
        cube.store.touch([a.id, a.id])
        assert cube.store.ids_used_at_least(Lifecycle.GENERATED, 2) == [a.id]
        assert cube.store.user_ids([Lifecycle.GENERATED]) == [None, "ana"]
        assert len(cube.store.rids_of_user(None, [Lifecycle.GENERATED], 10)) == 1
        assert cube.store.most_used([Lifecycle.GENERATED], "ana", 1) == [a.id]
