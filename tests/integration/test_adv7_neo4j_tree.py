"""Adversary, session 7: issue 14 says the tree and links live in the cube's graph, embedded AND on
Neo4j when that backend is configured. No test organised a cube whose graph is projected onto a Bolt
server; these do (FalkorDB on loopback, as tests/integration/test_neo4j_cube.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memos_integrations import CubeConfig, MemCube, neo4j_graph
from memos_integrations.items import Kind
from memos_integrations.storage.graph import EmbeddedGraph
from tests.falkordb_server import FalkorDBServer, falkordb_fixture  # noqa: F401 - fixture by name

MEMORIES = ["Maya adopted a beagle puppy called Pixel.", "Pixel the beagle loves chasing squirrels in the park.",
            "Maya takes her dog Pixel to the vet every spring.", "Maya bakes sourdough bread every Sunday.",
            "Maya is learning to bake croissants with butter.", "Maya lives in Lisbon.", "Maya lives in Porto."]


def _ids(cube: MemCube) -> list[str]:
    return sorted({r[0] for r in cube.store.db.read("SELECT id FROM items")})


def _full(edges: Any) -> set[tuple[str, str, str, float, tuple[tuple[str, str], ...]]]:
    return {(e.src, e.type, e.dst, e.weight, tuple(sorted((k, repr(v)) for k, v in e.metadata.items())))
            for e in edges}


def test_the_organised_tree_is_the_same_on_the_bolt_server(tmp_path: Path, falkordb: FalkorDBServer,
                                                           embedder: Any) -> None:
    graph = neo4j_graph(falkordb.uri, auth=falkordb.auth, driver=falkordb.driver)
    cube = MemCube.create(tmp_path / "c", CubeConfig(graph=graph), embedder=embedder)
    try:
        items = cube.add(memory=MEMORIES[:5], user_id="maya", session_id="s1")
        items += cube.add(memory=MEMORIES[5:], user_id="maya", session_id="s2")
        report = cube.organize(reader=None)
        assert report.topics_written >= 1 and report.episodes_written == 2 and report.conflicts == 1
        truth = EmbeddedGraph(cube.store).edges(_ids(cube), "both")
        types = {e.type for e in truth}
        assert {"summarized_by", "same_entity", "before", "conflict"} <= types
        # the projection holds the same edges, metadata included (a conflict's status and values)
        assert _full(cube.graph.projection.all_edges()) == _full(truth)
        # the summaries are nodes there, with the state the cube has
        summaries = cube.get_all(kinds=[Kind.SUMMARY], user_id="maya")
        nodes = {n.id: n for n in cube.graph.projection.nodes([s.id for s in summaries])}
        assert {s.id: s.state.value for s in summaries} == {i: n.state for i, n in nodes.items()}
        # a member deleted: the rebuild's edge changes and the archived summary reach the server
        cube.delete(items[1].id)
        cube.delete(items[4].id)
        cube.organize(reader=None)
        truth = EmbeddedGraph(cube.store).edges(_ids(cube), "both")
        assert _full(cube.graph.projection.all_edges()) == _full(truth)
        summaries = [cube.get(s.id) for s in summaries]
        nodes = {n.id: n for n in cube.graph.projection.nodes([s.id for s in summaries])}
        assert {s.id: s.state.value for s in summaries} == {i: n.state for i, n in nodes.items()}
        assert {s.id: s.text for s in summaries} == {i: n.text for i, n in nodes.items()}
        # Cypher over the server sees the tree: members of each live topic
        rows = cube.graph.cypher(
            "MATCH (m:Memory {cube_id: $cube})-[r]->(s:Memory {cube_id: $cube}) WHERE s.kind = 'summary' "
            "AND r.type = 'summarized_by' RETURN m.id AS m, s.id AS s", {})
        assert {(r["m"], r["s"]) for r in rows} == {(e.src, e.dst) for e in truth if e.type == "summarized_by"}
    finally:
        cube.close()
