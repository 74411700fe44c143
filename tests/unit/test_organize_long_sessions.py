"""A long session is several episodes (organize/tree.py): each quotes and tracks at most ``episode_size``
memories, in insertion order, chained by ``before`` edges; where the parts are cut is content-defined
(organize/episodes.py ``session_parts``: tests/unit/test_parts9_cut_points.py pins its properties), so the
expected parts here are read from it, not from fixed offsets.

Before, a session of any length was one episode whose ``sources`` and ``source_versions`` named every
message: a 50,000-message session gave one summary row carrying 50,000 ids, an LLM reader was handed
50,000 texts in one call, and every search that hit that episode re-read all 50,000 members to check it
was not stale. Appending one message rewrote that whole episode."""

from __future__ import annotations

from typing import Any

from memos_integrations.items import Kind
from memos_integrations.organize import OrganizePolicy, organize, stale_summaries
from memos_integrations.organize.episodes import session_parts
from memos_integrations.textual.graph import BEFORE, SUMMARIZED_BY

POLICY = OrganizePolicy(episode_size=10)


def episodes(cube: Any) -> list[Any]:
    found = [i for i in cube.get_all(kinds=[Kind.SUMMARY]) if i.metadata.get("summary") == "episode"]
    return sorted(found, key=lambda e: (e.metadata["started"], e.metadata.get("part", 1)))


def chat(cube: Any, n: int, start: int = 0) -> list[Any]:
    return cube.add(memory=[f"Turn {k}: we talked about the garden, bed number {k}." for k in range(start, start + n)],
                    user_id="u", session_id="s1", timestamp="2023-05-01")


def parts(turns: list[Any]) -> list[list[str]]:
    """The members of each part the session's live ``turns`` (in insertion order) should have."""
    ids = [t.id for t in turns]
    return [ids[lo:hi] for lo, hi in session_parts(ids, POLICY.episode_size)]


def test_a_long_session_is_episodes_of_at_most_episode_size_in_insertion_order(cube: Any) -> None:
    turns = chat(cube, 25)
    organize(cube, policy=POLICY)
    eps = episodes(cube)
    assert [list(e.sources) for e in eps] == parts(turns) and len(eps) >= 3
    assert [e.metadata["members"] for e in eps] == [len(p) for p in parts(turns)]
    assert all(len(e.metadata["source_versions"]) <= 10 and e.session_id == "s1" for e in eps)
    assert [e.metadata.get("part", 1) for e in eps] == list(range(1, len(eps) + 1))
    assert eps[0].text.startswith("Session s1 (2023-05-01): ")
    assert all(e.text.startswith("Session s1, continued (2023-05-01): ") for e in eps[1:])
    chain = [(e.src, e.dst) for e in cube.graph.edges([e.id for e in eps], "out", [BEFORE])]
    assert sorted(chain) == sorted(zip([e.id for e in eps], [e.id for e in eps[1:]]))
    # every turn leads to exactly one episode
    up = cube.graph.edges([t.id for t in turns], "out", [SUMMARIZED_BY])
    to_episode = [e.src for e in up if e.dst in {x.id for x in eps}]
    assert sorted(to_episode) == sorted(t.id for t in turns)


def test_appending_to_a_long_session_rewrites_only_its_last_episode(cube: Any) -> None:
    turns = chat(cube, 25)
    organize(cube, policy=POLICY)
    for n in range(25, 37):  # one at a time: the last part grows, or a new part starts after a cut
        before = [(e.id, e.text, e.sources) for e in episodes(cube)]
        turns += chat(cube, 1, start=n)
        report = organize(cube, policy=POLICY)
        assert report.episodes_written == 1  # (a member's partition move only refreshes a part's source versions)
        after = episodes(cube)
        assert [list(e.sources) for e in after] == parts(turns)
        assert [(e.id, e.text, e.sources) for e in after[: len(before) - 1]] == before[:-1]
        assert len(after) in (len(before), len(before) + 1)


def test_a_deleted_turn_makes_only_its_own_part_stale_and_the_parts_follow(cube: Any) -> None:
    turns = chat(cube, 25)
    organize(cube, policy=POLICY)
    first = episodes(cube)
    cube.delete([turns[12].id])
    holder = next(e for e in first if turns[12].id in e.sources)
    assert stale_summaries(cube.store, first) == {holder.id}  # the part that quoted it
    report = organize(cube, policy=POLICY)
    eps = episodes(cube)
    assert [list(e.sources) for e in eps] == parts(turns[:12] + turns[13:])
    # the parts before it are untouched, and at most its own part and a neighbour are rewritten
    untouched = first[: first.index(holder)]
    assert untouched and [(e.id, e.text, e.sources) for e in eps[: len(untouched)]] == \
        [(e.id, e.text, e.sources) for e in untouched]
    assert report.episodes_written <= 3
    assert turns[12].id not in {s for e in eps for s in e.sources}
    assert all(e.state.value != "archived" for e in eps)


def test_the_default_keeps_a_locomo_session_one_episode() -> None:
    """LoCoMo dev's longest session is 43 turns: the default cap leaves every one of them a single episode."""
    assert OrganizePolicy().episode_size >= 50
    assert session_parts([f"t{k}" for k in range(OrganizePolicy().episode_size)], OrganizePolicy().episode_size) == \
        [(0, OrganizePolicy().episode_size)]
