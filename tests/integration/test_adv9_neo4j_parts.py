"""Adversary, session 9: a long session's episode parts (organize/tree.py, ``episode_size``) on a cube whose
graph is projected onto a Bolt server (FalkorDB on loopback, as test_adv7_neo4j_tree.py). The parts' ids,
their ``summarized_by`` and ``before`` edges and their states must be the same on the server as in the
embedded truth through every reshaping: a deleted middle turn (its part and maybe a neighbour rewritten:
the cuts are content-defined, organize/episodes.py, so the expected parts are read from ``session_parts``),
a smaller ``episode_size`` (more parts; the pass killed after its first write, then resumed), a larger one
(parts archived)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memos_integrations import CubeConfig, MemCube, neo4j_graph
from memos_integrations.items import LIVE_STATES, Kind
from memos_integrations.organize import OrganizePolicy
from memos_integrations.organize.episodes import session_parts
from memos_integrations.storage.graph import BEFORE, SUMMARIZED_BY, EmbeddedGraph
from tests.falkordb_server import FalkorDBServer, falkordb_fixture  # noqa: F401 - fixture by name


def _ids(cube: MemCube) -> list[str]:
    return sorted({r[0] for r in cube.store.db.read("SELECT id FROM items")})


def _full(edges: Any) -> set[tuple[str, str, str, float, tuple[tuple[str, str], ...]]]:
    return {(e.src, e.type, e.dst, e.weight, tuple(sorted((k, repr(v)) for k, v in e.metadata.items())))
            for e in edges}


def _agree(cube: MemCube, turns: list[Any]) -> list[Any]:
    """The server holds the truth's edges and summary states; every live turn sits in exactly one live
    episode, the live episodes form one before-chain, and no edge reaches an archived episode."""
    truth = EmbeddedGraph(cube.store).edges(_ids(cube), "both")
    assert _full(cube.graph.projection.all_edges()) == _full(truth)
    summaries = cube.get_all(kinds=[Kind.SUMMARY], user_id="u", include_archived=True)
    nodes = {n.id: n for n in cube.graph.projection.nodes([s.id for s in summaries])}
    assert {s.id: (s.state.value, s.text) for s in summaries} == {i: (n.state, n.text) for i, n in nodes.items()}
    eps = [s for s in summaries if s.metadata.get("summary") == "episode"]
    live = {e.id for e in eps if e.state in LIVE_STATES}
    alive = {t.id for t in turns if cube.store.get_items([t.id])}
    up = [(e.src, e.dst) for e in truth if e.type == SUMMARIZED_BY and e.dst in {x.id for x in eps}]
    assert sorted(src for src, _ in up) == sorted(alive) and {dst for _, dst in up} == live
    chain = [(e.src, e.dst) for e in truth if e.type == BEFORE]
    assert len(chain) == len(live) - 1 and {x for pair in chain for x in pair} <= live
    return sorted((e for e in eps if e.id in live), key=lambda e: e.metadata.get("part", 1))


def _parts(turns: list[Any], size: int, gone: tuple[int, ...] = ()) -> list[list[str]]:
    ids = [t.id for n, t in enumerate(turns) if n not in gone]
    return [ids[lo:hi] for lo, hi in session_parts(ids, size)]


def test_episode_parts_reshape_the_same_on_the_bolt_server(tmp_path: Path, falkordb: FalkorDBServer,
                                                          embedder: Any) -> None:
    graph = neo4j_graph(falkordb.uri, auth=falkordb.auth, driver=falkordb.driver)
    cube = MemCube.create(tmp_path / "c", CubeConfig(graph=graph), embedder=embedder)
    try:
        turns = cube.add(memory=[f"Turn {k}: we planted bed number {k} of the garden." for k in range(23)],
                         user_id="u", session_id="s1", timestamp="2023-05-01")
        cube.organize(reader=None, policy=OrganizePolicy(episode_size=10))
        assert [list(e.sources) for e in _agree(cube, turns)] == _parts(turns, 10)
        assert len(_parts(turns, 10)) >= 3
        cube.delete(turns[12].id)  # a middle part loses a turn: it (and a neighbour if a cut moved) is rewritten
        cube.organize(reader=None, policy=OrganizePolicy(episode_size=10))
        assert [list(e.sources) for e in _agree(cube, turns)] == _parts(turns, 10, gone=(12,))
        real = cube.text_mem.add_items  # a pass that dies after its first write (kill -9), then resumes

        def dies(*args: Any, **kw: Any) -> Any:
            real(*args, **kw)
            raise KeyboardInterrupt

        cube.text_mem.add_items = dies  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            cube.organize(reader=None, policy=OrganizePolicy(episode_size=4))
        cube.text_mem.add_items = real  # type: ignore[method-assign]
        cube.organize(reader=None, policy=OrganizePolicy(episode_size=4))
        assert [list(e.sources) for e in _agree(cube, turns)] == _parts(turns, 4, gone=(12,))
        assert all(len(p) <= 4 for p in _parts(turns, 4, gone=(12,)))
        cube.organize(reader=None, policy=OrganizePolicy(episode_size=100))
        assert [e.metadata["members"] for e in _agree(cube, turns)] == [22]
    finally:
        cube.close()
