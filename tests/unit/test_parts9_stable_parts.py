"""A long session's episode parts have stable, local, content-defined boundaries (organize/tree.py).

Found (adversary, session 9): parts were cut at fixed offsets (``turns[k:k+size]``) and numbered by their
ordinal, so deleting turn 5 of a 301-turn session at ``episode_size=10`` shifted every later boundary and
rewrote 30 episodes: 31 LLM-reader calls for one deleted message. Now a part ends after a turn whose id
hashes to a cut (a condition on that turn and the few before it only), a later part is named after its first
member, and its ordinal (``metadata["part"]``) is refreshed in place: an edit rewrites the parts around it."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.items import LIVE_STATES, Kind, MemoryItem
from memos_integrations.organize import OrganizePolicy, organize
from memos_integrations.storage.graph import BEFORE, SUMMARIZED_BY

SMALL = OrganizePolicy(episode_size=10)


class Counting:
    """A reader that counts its calls: each would be an LLM call with a real one."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def summarize(self, texts: list[str]) -> str:
        self.calls += 1
        return f"They talked about {len(texts)} garden beds."


def chat(cube: Any, n: int, start: int = 0, session: str = "s1") -> list[MemoryItem]:
    """``n`` turns with fixed ids (``turn-0000``, ...: the same cuts on every run) in insertion order."""
    return cube.text_mem.add_items([
        MemoryItem(id=f"turn-{k:04d}", text=f"Turn {k}: we talked about the garden, bed number {k}.", user_id="u",
                   session_id=session, event_time=datetime(2023, 5, 1, tzinfo=timezone.utc))
        for k in range(start, start + n)])


def live_episodes(cube: Any) -> list[Any]:
    found = [s for s in cube.get_all(kinds=[Kind.SUMMARY], user_id="u")
             if s.state in LIVE_STATES and s.metadata.get("summary") == "episode"]
    return sorted(found, key=lambda e: (e.session_id, e.metadata.get("part", 1)))


def shape(cube: Any) -> dict[str, tuple[tuple[str, ...], int]]:
    return {e.id: (tuple(e.sources), e.metadata.get("part", 1)) for e in live_episodes(cube)}


def sound(cube: Any, turns: list[Any], size: int) -> list[Any]:
    """Every live turn in exactly one live episode of at most ``size``, parts in insertion order, one
    before-chain over the live episodes in part order, no edge to a dead one."""
    eps = live_episodes(cube)
    alive = [t.id for t in turns if cube.store.get_items([t.id])]
    assert [s for e in eps for s in e.sources] == alive  # insertion order, each once
    assert all(1 <= len(e.sources) <= size and e.metadata["members"] == len(e.sources) for e in eps)
    assert [e.metadata.get("part", 1) for e in eps] == list(range(1, len(eps) + 1))
    ids = [e.id for e in eps]
    chain = sorted((e.src, e.dst) for e in cube.graph.edges(ids, "both", [BEFORE]))
    assert chain == sorted(zip(ids, ids[1:]))
    up = cube.graph.edges(alive, "out", [SUMMARIZED_BY])
    assert sorted(e.src for e in up if e.dst in ids) == sorted(alive)
    return eps


def test_deleting_an_early_turn_rewrites_only_the_parts_around_it(cube: Any) -> None:
    turns = chat(cube, 120)
    organize(cube, reader=Counting(), policy=SMALL)
    before = {e.id: (e.text, tuple(e.sources), e.version) for e in sound(cube, turns, 10)}
    assert len(before) >= 8
    cube.delete([turns[5].id])
    reader = Counting()
    report = organize(cube, reader=reader, policy=SMALL)
    after = {e.id: (e.text, tuple(e.sources), e.version) for e in sound(cube, turns, 10)}
    assert report.episodes_written <= 2, report  # the part that held it, and a neighbour a moved cut reaches
    assert reader.calls == report.reader_calls == report.episodes_written + report.topics_written
    kept = [i for i in before if i in after and before[i][:2] == after[i][:2]]
    assert len(kept) >= len(before) - 3
    assert len([i for i in after if i not in before or before[i][:2] != after[i][:2]]) <= 2


def test_appending_rewrites_only_the_last_part_and_a_session_of_episode_size_is_one_episode(cube: Any) -> None:
    from memos_integrations.organize.tree import episode_id

    turns = chat(cube, 10)
    organize(cube, reader=None, policy=SMALL)
    (only,) = sound(cube, turns, 10)
    assert only.id == episode_id("u", "s1") and "part" not in only.metadata  # today's id: LoCoMo unchanged
    assert only.text.startswith("Session s1 (2023-05-01): ")
    turns += chat(cube, 40, start=10)
    organize(cube, reader=Counting(), policy=SMALL)
    eps = sound(cube, turns, 10)
    assert eps[0].id == episode_id("u", "s1") and len(eps) >= 4
    assert eps[0].text.startswith("Session s1 (2023-05-01): They talked about")
    assert all(e.text.startswith("Session s1, continued (2023-05-01): ") for e in eps[1:])
    for n in range(50, 56):
        prior = shape(cube)
        turns += chat(cube, 1, start=n)
        report = organize(cube, reader=Counting(), policy=SMALL)
        assert report.episodes_written == 1 and report.reader_calls == 1 + report.topics_written
        now = shape(cube)
        assert [i for i in now if now[i] != prior.get(i)] == [live_episodes(cube)[-1].id]
        sound(cube, turns, 10)


def test_the_parts_depend_only_on_the_members_not_on_the_history(tmp_path: Path, embedder: Any) -> None:
    """The same live members give the same parts (ids, sources, part numbers) however the store got there."""
    with MemCube.init_from_dir(tmp_path / "cube", embedder=embedder) as cube:
        turns = chat(cube, 90)
    shutil.copytree(tmp_path / "cube", tmp_path / "other")
    walked = MemCube.open(tmp_path / "cube", embedder=embedder)
    direct = MemCube.open(tmp_path / "other", embedder=embedder)
    try:
        organize(walked, reader=None, policy=SMALL)
        for k in (3, 40, 41, 77, 89):  # one at a time, organising after each
            walked.delete([turns[k].id])
            organize(walked, reader=None, policy=SMALL)
        direct.delete([turns[k].id for k in (3, 40, 41, 77, 89)])
        organize(direct, reader=None, policy=SMALL)
        assert shape(walked) == shape(direct)
        assert {e.id: e.text for e in live_episodes(walked)} == {e.id: e.text for e in live_episodes(direct)}
        sound(walked, turns, 10)
    finally:
        walked.close()
        direct.close()


def test_a_merge_upstream_renumbers_the_later_parts_in_place_without_a_reader_call(cube: Any) -> None:
    """Deleting the turn a part ends on merges it with the next: every later part's ordinal drops by one,
    but its id (its first member's) and text (no part number in it) stay, so it is refreshed in place."""
    from memos_integrations.organize.episodes import session_parts

    turns = chat(cube, 80)
    ids = [t.id for t in turns]
    parts = session_parts(ids, 10)
    merged = next(hi - 1 for lo, hi in parts[1:-3]
                  if len(session_parts(ids[: hi - 1] + ids[hi:], 10)) == len(parts) - 1)
    organize(cube, reader=Counting(), policy=SMALL)
    before = {e.id: e for e in sound(cube, turns, 10)}
    cube.delete([ids[merged]])
    reader = Counting()
    report = organize(cube, reader=reader, policy=SMALL)
    after = sound(cube, turns, 10)
    assert len(after) == len(before) - 1
    assert report.episodes_written == 1 and reader.calls == 1 + report.topics_written
    later = after[next(n for n, e in enumerate(after) if merged < ids.index(e.sources[0])):]
    assert len(later) >= 3 and report.summaries_refreshed >= len(later)
    for e in later:
        old = before[e.id]
        assert (e.text, e.sources) == (old.text, old.sources)
        assert e.metadata["part"] == old.metadata["part"] - 1 and e.version > old.version


def test_an_imported_newest_first_session_keeps_its_parts_and_chain_in_insertion_order(cube: Any) -> None:
    """Parts follow insertion order, not event time: a session imported newest first has its part 2
    earlier in time than its part 1, and the before-chain still runs part 1, part 2, ... (a session that
    started earlier chains before it, a later one after it)."""
    from datetime import timedelta

    day = datetime(2023, 5, 30, tzinfo=timezone.utc)
    cube.text_mem.add_items([MemoryItem(id="early", text="We first met at the garden.", user_id="u",
                                        session_id="s0", event_time=day - timedelta(days=60))])
    turns = cube.text_mem.add_items([
        MemoryItem(id=f"turn-{k:04d}", text=f"Turn {k}: we talked about the garden, bed number {k}.", user_id="u",
                   session_id="s1", event_time=day - timedelta(days=k)) for k in range(40)])
    cube.text_mem.add_items([MemoryItem(id="late", text="Years later we met again.", user_id="u",
                                        session_id="s2", event_time=day + timedelta(days=60))])
    organize(cube, reader=None, policy=SMALL)
    eps = [e for e in live_episodes(cube) if e.session_id == "s1"]
    assert [s for e in eps for s in e.sources] == [t.id for t in turns] and len(eps) >= 3
    assert eps[1].event_time < eps[0].event_time  # part 2 is earlier in time than part 1
    order = [live_episodes(cube)[0].id, *[e.id for e in eps], live_episodes(cube)[-1].id]
    assert [e.session_id for e in live_episodes(cube)] == ["s0"] + ["s1"] * len(eps) + ["s2"]
    chain = sorted((e.src, e.dst) for e in cube.graph.edges(order, "both", [BEFORE]))
    assert chain == sorted(zip(order, order[1:]))


def test_a_pass_killed_mid_write_then_resumed_gives_the_uninterrupted_parts(tmp_path: Path, embedder: Any) -> None:
    """A pass that dies right after its first summary write (kill -9), then runs again, ends with the parts,
    texts and before-chain a pass that was never interrupted writes from the same members."""
    with MemCube.init_from_dir(tmp_path / "cube", embedder=embedder) as cube:
        turns = chat(cube, 90)
        organize(cube, reader=None, policy=OrganizePolicy(episode_size=30))
    shutil.copytree(tmp_path / "cube", tmp_path / "clean")
    gone = [turns[k].id for k in (2, 33, 34, 60)]
    killed = MemCube.open(tmp_path / "cube", embedder=embedder)
    clean = MemCube.open(tmp_path / "clean", embedder=embedder)
    try:
        real = killed.text_mem.add_items

        def dies(items: Any, *args: Any, **kw: Any) -> Any:
            real(items[:1], *args, **{**kw, "vectors": None if kw.get("vectors") is None else kw["vectors"][:1]})
            raise KeyboardInterrupt

        for cube in (killed, clean):
            cube.delete(gone)
        killed.text_mem.add_items = dies  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            organize(killed, reader=None, policy=SMALL)
        killed.text_mem.add_items = real  # type: ignore[method-assign]
        organize(killed, reader=None, policy=SMALL)
        organize(clean, reader=None, policy=SMALL)
        assert shape(killed) == shape(clean)
        assert {e.id: e.text for e in live_episodes(killed)} == {e.id: e.text for e in live_episodes(clean)}
        sound(killed, turns, 10)
        ids = [e.id for e in live_episodes(clean)]
        assert sorted((e.src, e.dst) for e in killed.graph.edges(ids, "both", [BEFORE])) == \
            sorted((e.src, e.dst) for e in clean.graph.edges(ids, "both", [BEFORE]))
    finally:
        killed.close()
        clean.close()
