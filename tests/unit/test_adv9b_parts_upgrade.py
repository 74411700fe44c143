"""Adversary (session 9b): a cube organised by the fixed-offset parts (``episode-<key>-2``, ...) upgrades cleanly.

The old organiser cut a long session every ``episode_size`` memories and named part ``n`` ``episode-<key>-<n>``;
today's names a later part after its first member. The first pass of today's code on such a cube (a user's next memory: an unchanged user is skipped, its
old parts served as they are, each member once) must archive
every old later part (no member summarised twice, no ``before`` edge to one), keep part 1's id, and leave the
exact shape a fresh cube gets. Also: an adversary who picks every member id (an application's ``add_items``)
can force no cut at all (the old fixed offsets) but never parts smaller than ``m`` before the cap."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.items import LIVE_STATES, Kind, Lifecycle
from memos_integrations.organize import organize, tree
from memos_integrations.organize.episodes import _hits, cut_spacing, session_parts
from memos_integrations.textual.filters import MemoryFilter

sys.path.insert(0, str(Path(__file__).parent))
from test_parts9_stable_parts import SMALL, chat, shape, sound  # noqa: E402


def _old_parts(ids: Any, size: int) -> list[tuple[int, int]]:
    return [(k, min(k + size, len(ids))) for k in range(0, len(ids), size)]


def test_an_old_fixed_offset_cube_is_archived_and_rebuilt_never_served_twice(tmp_path: Path, embedder: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from memos_integrations.organize.episodes import episode_id

    counter = iter(range(2, 1000))

    def old_id(user_id: Any, session_id: str, first: Any = None) -> str:
        return episode_id(user_id, session_id) if first is None else f"{episode_id(user_id, session_id)}-{next(counter)}"

    with MemCube.init_from_dir(tmp_path / "old", embedder=embedder) as cube:
        turns = chat(cube, 55)
        with monkeypatch.context() as m:
            m.setattr(tree, "session_parts", _old_parts)
            m.setattr(tree, "episode_id", old_id)
            organize(cube, reader=None, policy=SMALL)
        old = {s.id for s in cube.get_all(kinds=[Kind.SUMMARY], user_id="u") if s.metadata.get("summary") == "episode"}
        assert len(old) == 6 and {i for i in old if i.endswith(("-2", "-6"))}
        assert organize(cube, reader=None, policy=SMALL).users_skipped == 1  # unchanged: the old shape is served
        turns += chat(cube, 1, start=55)  # the user's next turn: the pass runs with today's parts
        report = organize(cube, reader=None, policy=SMALL)
        new = sound(cube, turns, 10)
        assert report.summaries_archived >= 5
        every = {s.id: s for s in cube.store.list_items(MemoryFilter(user_id="u", kinds=[Kind.SUMMARY],
                                                                     states=[*LIVE_STATES, Lifecycle.ARCHIVED]))}
        assert all(every[i].state not in LIVE_STATES for i in old if i not in {e.id for e in new})
        assert episode_id("u", "s1") in {e.id for e in new}  # part 1 kept its id
        hits = cube.search("the garden bed number 7", user_id="u", top_k=50, kinds=[Kind.SUMMARY])
        assert not {h.item.id for h in hits} & (old - {episode_id("u", "s1")})  # an old part is never served
        got = shape(cube)
    with MemCube.init_from_dir(tmp_path / "fresh", embedder=embedder) as fresh:
        chat(fresh, 56)
        organize(fresh, reader=None, policy=SMALL)
        assert shape(fresh) == got  # the same parts as a cube never organised the old way


def test_chosen_ids_force_at_most_the_old_fixed_offsets_never_tiny_parts() -> None:
    size = 10
    m, p = cut_spacing(size)
    every = [f"k{i}" for i in range(5000) if _hits(f"k{i}", p)][:300]
    none = [f"k{i}" for i in range(5000) if not _hits(f"k{i}", p)][:300]
    assert session_parts(every, size) == _old_parts(every, size)  # every id hits: no cut, the cap alone
    assert session_parts(none, size) == _old_parts(none, size)
    # the worst a chooser can do: a hit every m members, parts of m (a quarter of the cap), never fewer
    spaced = [every[k // m] if k % m == m - 1 else none[k] for k in range(200)]
    assert {b - a for a, b in session_parts(spaced, size)} == {m}
