"""A long session is several episodes (organize/tree.py): each quotes and tracks at most ``episode_size``
memories, in time order, chained by ``before`` edges.

Before, a session of any length was one episode whose ``sources`` and ``source_versions`` named every
message: a 50,000-message session gave one summary row carrying 50,000 ids, an LLM reader was handed
50,000 texts in one call, and every search that hit that episode re-read all 50,000 members to check it
was not stale. Appending one message rewrote that whole episode."""

from __future__ import annotations

from typing import Any

from memos_integrations.items import Kind
from memos_integrations.organize import OrganizePolicy, organize, stale_summaries
from memos_integrations.textual.graph import BEFORE, SUMMARIZED_BY

POLICY = OrganizePolicy(episode_size=10)


def episodes(cube: Any) -> list[Any]:
    found = [i for i in cube.get_all(kinds=[Kind.SUMMARY]) if i.metadata.get("summary") == "episode"]
    return sorted(found, key=lambda e: (e.metadata["started"], e.metadata.get("part", 1)))


def chat(cube: Any, n: int, start: int = 0) -> list[Any]:
    return cube.add(memory=[f"Turn {k}: we talked about the garden, bed number {k}." for k in range(start, start + n)],
                    user_id="u", session_id="s1", timestamp="2023-05-01")


def test_a_long_session_is_episodes_of_at_most_episode_size_in_time_order(cube: Any) -> None:
    turns = chat(cube, 25)
    organize(cube, policy=POLICY)
    eps = episodes(cube)
    assert [e.metadata["members"] for e in eps] == [10, 10, 5]
    assert [list(e.sources) for e in eps] == [[t.id for t in turns[k : k + 10]] for k in (0, 10, 20)]
    assert all(len(e.metadata["source_versions"]) <= 10 and e.session_id == "s1" for e in eps)
    assert [e.metadata.get("part", 1) for e in eps] == [1, 2, 3]
    assert eps[1].text.startswith("Session s1, part 2 (2023-05-01): ")
    chain = [(e.src, e.dst) for e in cube.graph.edges([e.id for e in eps], "out", [BEFORE])]
    assert sorted(chain) == sorted([(eps[0].id, eps[1].id), (eps[1].id, eps[2].id)])
    # every turn leads to exactly one episode
    up = cube.graph.edges([t.id for t in turns], "out", [SUMMARIZED_BY])
    to_episode = [e.src for e in up if e.dst in {x.id for x in eps}]
    assert sorted(to_episode) == sorted(t.id for t in turns)


def test_appending_to_a_long_session_rewrites_only_its_last_episode(cube: Any) -> None:
    chat(cube, 25)
    organize(cube, policy=POLICY)
    before = [(e.id, e.text, e.sources) for e in episodes(cube)]
    chat(cube, 1, start=25)
    report = organize(cube, policy=POLICY)
    assert report.episodes_written == 1  # (a member's partition move only refreshes a part's source versions)
    after = episodes(cube)
    assert [e.metadata["members"] for e in after] == [10, 10, 6]
    assert [(e.id, e.text, e.sources) for e in after[:2]] == before[:2]
    # the session crosses a boundary: a new part, the full ones untouched
    chat(cube, 4, start=26)
    report = organize(cube, policy=POLICY)
    assert report.episodes_written == 1 and [e.metadata["members"] for e in episodes(cube)] == [10, 10, 10]
    chat(cube, 1, start=30)
    report = organize(cube, policy=POLICY)
    assert report.episodes_written == 1 and [e.metadata["members"] for e in episodes(cube)] == [10, 10, 10, 1]


def test_a_deleted_turn_makes_only_its_own_part_stale_and_the_parts_follow(cube: Any) -> None:
    turns = chat(cube, 25)
    organize(cube, policy=POLICY)
    first = episodes(cube)
    cube.delete([turns[12].id])
    assert stale_summaries(cube.store, first) == {first[1].id}  # the part that quoted it
    organize(cube, policy=POLICY)
    eps = episodes(cube)
    assert [e.metadata["members"] for e in eps] == [10, 10, 4]
    assert (eps[0].id, eps[0].text, eps[0].sources) == (first[0].id, first[0].text, first[0].sources)
    assert turns[12].id not in {s for e in eps for s in e.sources}
    assert all(e.state.value != "archived" for e in eps)


def test_the_default_keeps_a_locomo_session_one_episode() -> None:
    """LoCoMo dev's longest session is 43 turns: the default cap leaves every one of them a single episode."""
    assert OrganizePolicy().episode_size >= 50
