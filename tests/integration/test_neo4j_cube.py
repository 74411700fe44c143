"""A cube whose graph is projected onto a real Bolt server (FalkorDB on loopback), end to end.

The truth stays the cube's own ``edges`` table; these tests check that the projection follows it
(items and edges, after each commit, idempotently), that retrieval, ``cube.neighbors`` and
``cube.graph.cypher`` read it, that no password reaches cube.json, and that a server that is down or
killed mid-write leaves the truth whole and the outbox holding what the server missed, replayed on
the next call, on open, or rebuilt by ``memcube reindex --graph``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import CubeConfig, MemCube, neo4j_graph
from memos_integrations.cli import main as memcube
from memos_integrations.errors import GraphUnavailableError
from memos_integrations.items import Edge, Kind
from memos_integrations.storage.graph import EmbeddedGraph
from memos_integrations.storage.neo4j import Neo4jGraph, ProjectedGraph
from memos_integrations.textual.memory import new_item
from tests.falkordb_server import FalkorDBServer, falkordb_fixture, falkordb_fresh_fixture  # noqa: F401 - fixtures by name

pytestmark = pytest.mark.integration

CHAT = [
    {"role": "user", "content": "I adopted a grey cat called Miso last spring."},
    {"role": "assistant", "content": "Lovely! How is Miso settling in?"},
    {"role": "user", "content": "She sleeps on the piano every afternoon."},
    {"role": "assistant", "content": "Pianos are warm; cats know."},
]


def neo4j_cube(path: Path, server: FalkorDBServer, embedder: Any, *, own_driver: bool = False) -> MemCube:
    graph = (neo4j_graph(server.uri, auth=server.auth) if own_driver
             else neo4j_graph(server.uri, auth=server.auth, driver=server.driver))
    return MemCube.create(path, CubeConfig(graph=graph), embedder=embedder)


def truth_edges(cube: MemCube) -> set[tuple[str, str, str, float]]:
    return {(e.src, e.type, e.dst, e.weight) for e in EmbeddedGraph(cube.store).edges(_all_ids(cube), "both")}


def _all_ids(cube: MemCube) -> list[str]:
    return sorted({r[0] for r in cube.store.db.read("SELECT id FROM items")})


def projected_edges(graph: ProjectedGraph) -> set[tuple[str, str, str, float]]:
    return {(e.src, e.type, e.dst, e.weight) for e in graph.projection.all_edges()}


def pending(cube: MemCube) -> int:
    return len(cube.store.outbox_entries("graph"))


def test_the_projection_follows_the_cube(tmp_path: Path, falkordb: FalkorDBServer, embedder: Any) -> None:
    cube = neo4j_cube(tmp_path / "c", falkordb, embedder)
    try:
        graph = cube.graph
        assert isinstance(graph, ProjectedGraph) and graph.supports_cypher
        turns = cube.add(messages=CHAT, user_id="maya", session_id="s1")
        fact = cube.add(memory="Maya's cat Miso is grey.", user_id="maya")[0]
        cube.relate(fact.id, turns[0].id, "derived_from", 0.9)
        assert pending(cube) == 0  # applied after each commit
        assert projected_edges(graph) == truth_edges(cube) and truth_edges(cube)
        rows = cube.graph.cypher(
            "MATCH (n:Memory {cube_id: $cube}) WHERE n.user_id = $user RETURN n.id AS id, n.kind AS kind, "
            "n.state AS state, n.text AS text", {"user": "maya"},
        )
        by_id = {r["id"]: r for r in rows}
        assert set(by_id) == set(_all_ids(cube))
        assert by_id[fact.id]["text"] == "Maya's cat Miso is grey." and by_id[fact.id]["kind"] == Kind.FACT.value
        # cube.neighbors reads the projection; the answer is the embedded graph's
        assert [it.id for it in cube.neighbors(turns[1].id, 1)] == [it.id for it in cube.text_mem.get_many(
            list(EmbeddedGraph(cube.store).neighbors([turns[1].id], 1)))]
        assert graph.projection.neighbors([fact.id], 2) == EmbeddedGraph(cube.store).neighbors([fact.id], 2)
        # an update and a delete reach the node
        cube.update(fact.id, text="Maya's cat Miso is grey and white.")
        cube.delete(turns[3].id)
        nodes = {n.id: n for n in graph.projection.nodes([fact.id, turns[3].id])}
        assert nodes[fact.id].text == "Maya's cat Miso is grey and white."
        assert nodes[turns[3].id].state == "deleted"
        # re-applying everything changes nothing (idempotent)
        before = (projected_edges(graph), sorted(graph.projection.node_ids()))
        assert graph.rebuild() >= len(before[1])
        assert (projected_edges(graph), sorted(graph.projection.node_ids())) == before
        # removing edges reaches the projection too
        assert cube.text_mem.graph.remove_edges(type="derived_from") == 1
        assert projected_edges(graph) == truth_edges(cube)
    finally:
        cube.close()


def test_cube_json_never_holds_the_password_and_reopen_reads_the_env(
    tmp_path: Path, falkordb: FalkorDBServer, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = neo4j_graph(falkordb.uri, auth=("falkordb", "pw-that-must-not-leak"), driver=falkordb.driver)
    cube = MemCube.create(tmp_path / "c", CubeConfig(graph=graph), embedder=embedder)
    cube.add(messages=CHAT[:2], user_id="maya")
    cube.close()
    text = (tmp_path / "c" / "cube.json").read_text()
    assert "pw-that-must-not-leak" not in text
    recorded = json.loads(text)["config"]["graph"]
    assert recorded["backend"] == "neo4j" and recorded["uri"] == falkordb.uri
    assert recorded["password_env"] == "MEMOS_NEO4J_PASSWORD" and recorded["namespace"].startswith("cube_")
    monkeypatch.setenv("MEMOS_NEO4J_PASSWORD", "")  # FalkorDB's user falkordb has an empty password
    with MemCube.open(tmp_path / "c", embedder=embedder) as again:  # builds its own driver from cube.json
        assert isinstance(again.graph, ProjectedGraph)
        assert len(again.graph.cypher("MATCH (n:Memory {cube_id: $cube}) RETURN n.id AS id")) == 2


def test_retrieval_expands_through_the_projection(
    tmp_path: Path, falkordb: FalkorDBServer, embedder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cube = neo4j_cube(tmp_path / "c", falkordb, embedder)
    try:
        turns = cube.add(messages=CHAT, user_id="maya", session_id="s1")
        calls: list[Any] = []
        projection = cube.graph.projection  # type: ignore[attr-defined]
        walk = projection.neighbors

        def spy(*a: Any, **kw: Any) -> Any:  # records the call and runs the real walk
            calls.append(a)
            return walk(*a, **kw)

        projection.neighbors = spy
        with caplog.at_level(logging.WARNING):
            hits = cube.search("Where does the cat sleep?", user_id="maya", plan="balanced", top_k=4)
        assert calls, "graph expansion did not ask the projection"
        assert not [r for r in caplog.records if "graph server" in r.getMessage()]
        assert turns[2].id in [h.item.id for h in hits]
    finally:
        cube.close()


def test_a_server_that_is_down_keeps_the_truth_and_the_queue(
    tmp_path: Path, falkordb_fresh: FalkorDBServer, embedder: Any, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cubes reopened below build drivers of their own, and each one closed says GOODBYE: the next new
    # connection's handshake then goes unanswered (the server quirk in tests/falkordb_server.py) until the
    # adapter's connect_timeout, and its retry connects. That wait (the default 5 s, twice) was most of this
    # test's time; the retry is still what gets through, after 2 s (the session driver's own timeout).
    monkeypatch.setitem(Neo4jGraph.__init__.__kwdefaults__, "connect_timeout", 2.0)
    path = tmp_path / "c"
    cube = neo4j_cube(path, falkordb_fresh, embedder)
    first = cube.add(messages=CHAT[:2], user_id="maya", session_id="s1")
    falkordb_fresh.stop()
    with caplog.at_level(logging.WARNING):
        later = cube.add(messages=CHAT[2:], user_id="maya", session_id="s1")  # the write succeeds
    assert any("queued" in r.getMessage() for r in caplog.records)
    assert len(_all_ids(cube)) == 4 and pending(cube) > 0  # the truth is whole; the graph rows wait
    # reads: neighbours from the truth; Cypher says what to do
    assert [it.id for it in cube.neighbors(later[0].id, 1)] == [it.id for it in cube.text_mem.get_many(
        list(EmbeddedGraph(cube.store).neighbors([later[0].id], 1)))]
    with pytest.raises(GraphUnavailableError) as info:
        cube.graph.cypher("MATCH (n) RETURN count(n) AS n")
    assert "start the server" in str(info.value)
    cube.close()
    # the server comes back (empty: no persistence); opening the cube replays what it queued
    falkordb_fresh.start()
    monkeypatch.setenv("MEMOS_NEO4J_PASSWORD", "")
    with MemCube.open(path, embedder=embedder) as cube:
        assert pending(cube) == 0
        got = {r["id"] for r in cube.graph.cypher("MATCH (n:Memory {cube_id: $cube}) RETURN n.id AS id")}
        assert {it.id for it in later} <= got
    # what the restarted server lost (it kept nothing) comes back with a rebuild
    assert memcube(["reindex", str(path), "--graph"]) == 0
    with MemCube.open(path, embedder=embedder) as cube:
        graph = cube.graph
        assert isinstance(graph, ProjectedGraph)
        assert graph.projection.node_ids() == set(_all_ids(cube))
        assert {n.user_id for n in graph.projection.nodes([it.id for it in first + later])} == {"maya"}
        assert projected_edges(graph) == truth_edges(cube)


def test_a_server_killed_mid_write_leaves_nothing_half_written(
    tmp_path: Path, falkordb_fresh: FalkorDBServer, embedder: Any
) -> None:
    cube = neo4j_cube(tmp_path / "c", falkordb_fresh, embedder)
    try:
        items = [new_item(f"note {i} about the garden", user_id="maya") for i in range(300)]
        edges = [Edge(a.id, b.id, "next") for a, b in zip(items, items[1:])]
        graph = cube.graph
        assert isinstance(graph, ProjectedGraph)
        # the server dies between two messages of the projection's write (a spy on the real call: the
        # third message stops the real server, so the batch is cut half-way, as a crash would cut it)
        sent = graph.projection.run
        calls = []

        def run_then_crash(*a: Any, **kw: Any) -> Any:
            calls.append(1)
            if len(calls) == 3:
                falkordb_fresh.stop()
            return sent(*a, **kw)

        graph.projection.run = run_then_crash  # type: ignore[method-assign]
        cube.add_items(items, edges)  # never raises for the server: the truth commits first
        graph.projection.run = sent  # type: ignore[method-assign]
        assert len(calls) >= 3 and pending(cube) > 0
        assert len(_all_ids(cube)) == 300 and len(truth_edges(cube)) == 299  # all of it, in one transaction
        falkordb_fresh.stop()
        falkordb_fresh.start()
        cube.graph._down_until = 0.0  # type: ignore[attr-defined]  # do not wait out the cool-down
        cube.reconcile(full=False)
        assert pending(cube) == 0
        graph.rebuild()  # the restarted server is empty: the rebuild brings what it held before the kill
        assert projected_edges(graph) == truth_edges(cube)
    finally:
        cube.close()


def test_reindex_graph_on_an_embedded_cube_says_there_is_nothing_to_rebuild(
    tmp_path: Path, embedder: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    MemCube.create(tmp_path / "e", embedder=embedder).close()
    assert memcube(["reindex", str(tmp_path / "e"), "--graph"]) == 2
    assert "no graph projection to rebuild" in capsys.readouterr().err


def test_two_cubes_on_one_server_stay_apart(tmp_path: Path, falkordb: FalkorDBServer, embedder: Any) -> None:
    a, b = (neo4j_cube(tmp_path / n, falkordb, embedder) for n in ("a", "b"))
    try:
        a.add(memory="Only in cube a.", user_id="u")
        b.add(memory="Only in cube b.", user_id="u")
        texts = [r["t"] for r in a.graph.cypher("MATCH (n:Memory {cube_id: $cube}) RETURN n.text AS t")]
        assert texts == ["Only in cube a."]
        assert a.config.graph.namespace != b.config.graph.namespace
    finally:
        a.close()
        b.close()


def test_unique_namespace_per_helper_call() -> None:
    assert neo4j_graph("bolt://x:1").namespace != neo4j_graph("bolt://x:1").namespace


def test_the_llama_index_property_graph_reads_relations_through_the_projection(
    tmp_path: Path, falkordb: FalkorDBServer, embedder: Any
) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.graph_stores.types import EntityNode, Relation

    from memos_integrations.llama_index.graph_store import MemOSPropertyGraphStore

    cube = neo4j_cube(tmp_path / "c", falkordb, embedder)
    try:
        store = MemOSPropertyGraphStore.from_defaults(cube, user_id="alice")
        store.upsert_nodes([EntityNode(name="Alice", label="PERSON"), EntityNode(name="Acme", label="ORG")])
        store.upsert_relations([Relation(label="WORKS_AT", source_id="Alice", target_id="Acme")])
        projection = cube.graph.projection  # type: ignore[attr-defined]
        read = projection.edges
        asked: list[Any] = []

        def spy(*a: Any, **kw: Any) -> Any:  # records the call and runs the real read
            asked.append(a)
            return read(*a, **kw)

        projection.edges = spy
        assert [(s.id, r.label, o.id) for s, r, o in store.get_triplets(entity_names=["Alice"])] == [
            ("Alice", "WORKS_AT", "Acme")]
        assert asked, "relations were not read from the projection"
        assert MemOSPropertyGraphStore.from_defaults(cube, user_id="bob").get_triplets(entity_names=["Alice"]) == []
        rows = store.structured_query(
            "MATCH (a:Memory {cube_id: $cube})-[r:RELATES {type: 'WORKS_AT'}]->(b) RETURN a.user_id AS user, r.type AS t")
        assert rows == [{"user": "alice", "t": "WORKS_AT"}]
    finally:
        cube.close()


def test_a_cube_opens_and_searches_while_its_graph_server_is_down(
    tmp_path: Path, falkordb_fresh: FalkorDBServer, embedder: Any, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "c"
    with neo4j_cube(path, falkordb_fresh, embedder) as cube:
        turns = cube.add(messages=CHAT, user_id="maya", session_id="s1")
    falkordb_fresh.stop()
    monkeypatch.setenv("MEMOS_NEO4J_PASSWORD", "")
    with caplog.at_level(logging.WARNING), MemCube.open(path, embedder=embedder) as cube:
        hits = cube.search("Where does the cat sleep?", user_id="maya", plan="balanced", top_k=4)
        assert turns[2].id in [h.item.id for h in hits]  # the expansion answered from the truth
        assert [it.id for it in cube.neighbors(turns[1].id, 1)]
    assert any("graph server unavailable" in r.getMessage() for r in caplog.records)  # said, not raised
