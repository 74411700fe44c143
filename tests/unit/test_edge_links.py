"""The graph hop's lean edge read (``SideTables.edge_links``) says what ``edges(..., "both")`` says
(same edges, same order, the type filter, a pair linked both ways, ids past one chunk), and the
hop over it finds the same neighbours with the same weights (search results rest on both)."""

from __future__ import annotations

from pathlib import Path

from memos_integrations.items import Edge
from memos_integrations.storage.graph import EmbeddedGraph
from memos_integrations.storage.sqlite import SQLiteStore


def test_edge_links_match_edges_both_ways_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "memory.db")
    try:
        ids = [f"m{i}" for i in range(1200)]  # more ids than one IN (...) chunk
        edges = [Edge(ids[i], ids[(i * 7 + 3) % 1200], "about" if i % 3 else "next", 0.5 + (i % 5) / 10,
                      {"why": i}) for i in range(1200)]
        edges += [Edge("m2", "m1", "about", 0.25), Edge("m1", "m2", "about", 0.75), Edge("m1", "m1", "self", 1.0)]
        store.add_edges(edges)
        for asked, types in ((ids[:5], None), (ids, None), (ids[:40], ["about"]), (["m1", "m2"], ["about", "self"]),
                             (["nobody"], None), ([], None)):
            want = [(e.src, e.dst, e.weight) for e in store.edges(asked, "both", types)]
            assert store.edge_links(asked, types) == want
        graph = EmbeddedGraph(store)
        for seeds, depth, types in ((["m1", "m5"], 2, ["about"]), (ids[:30], 3, None), (["m2"], 1, None)):
            found = graph.neighbors(seeds, depth, types)
            assert found and found == _neighbors_over_edges(store, seeds, depth, types)
    finally:
        store.close()


def _neighbors_over_edges(store: SQLiteStore, ids: list[str], depth: int, types: list[str] | None) -> dict:
    """The hop as it read full edges (metadata decoded) before ``edge_links``."""
    seen, found, frontier = set(ids), {}, {i: (i, 1.0) for i in ids}
    for hop in range(1, depth + 1):
        nxt: dict[str, tuple[str, float]] = {}
        for edge in store.edges(list(frontier), "both", types):
            for here, there in ((edge.src, edge.dst), (edge.dst, edge.src)):
                if here in frontier and there not in seen:
                    seed, weight = frontier[here]
                    if there not in nxt or nxt[there][1] < weight * edge.weight:
                        nxt[there] = (seed, weight * edge.weight)
        for node, (seed, weight) in nxt.items():
            seen.add(node)
            found[node] = (seed, hop, weight)
        frontier = nxt
        if not frontier:
            break
    return found
