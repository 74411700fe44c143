"""Adversary, session 9: a long session's episode parts (``OrganizePolicy.episode_size``) and the
organiser's staleness and resume (issue 14's Bad input: "A reorganiser interrupted mid-run (kill -9), a
cluster whose members were deleted or superseded, a summary whose sources changed: nothing stale is
served as current; summaries are rebuilt from their sources; the job resumes.").

Each test names what it found broken before the fix it guards."""

from __future__ import annotations

from typing import Any

import pytest

from memos_integrations.items import LIVE_STATES, Kind, utcnow
from memos_integrations.organize import OrganizePolicy, organize, stale_summaries

SMALL, LARGE = OrganizePolicy(episode_size=10), OrganizePolicy(episode_size=100)


def chat(cube: Any, n: int, user: str = "u", session: str = "s1") -> list[Any]:
    return cube.add(memory=[f"Turn {k}: we planted bed number {k} of the garden." for k in range(n)],
                    user_id=user, session_id=session, timestamp="2023-05-01")


def live_summaries(cube: Any, user: str = "u") -> list[Any]:
    return [s for s in cube.get_all(kinds=[Kind.SUMMARY], user_id=user) if s.state in LIVE_STATES]


def served_summaries(cube: Any, query: str, user: str = "u") -> list[Any]:
    """What a plan that keeps summary hits (``fast``) hands a model: the summaries themselves."""
    return [h.item for h in cube.search(query, top_k=20, user_id=user, plan="fast", kinds=["summary"])]


def twice_summarised(episodes: list[Any]) -> list[str]:
    sources = [s for e in episodes if e.metadata.get("summary") == "episode" for s in e.sources]
    return sorted({s for s in sources if sources.count(s) > 1})


class Crash(RuntimeError):
    pass


def crash_after_first_summary_write(cube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The organiser's process dies right after its first batch of summaries is committed (kill -9)."""
    real = cube.text_mem.add_items

    def add_items(items: Any, *args: Any, **kw: Any) -> Any:
        out = real(items, *args, **kw)
        if any(i.kind == Kind.SUMMARY for i in items):
            raise Crash("killed")
        return out

    monkeypatch.setattr(cube.text_mem, "add_items", add_items)


def test_a_pass_killed_after_its_first_write_never_leaves_a_message_in_two_live_episodes(
        cube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found: the summaries a pass no longer wants (a larger episode_size folds parts 2 and 3 into part 1)
    were archived only after every new summary was written, so a search during the pass, or after a
    kill -9 between the two, was served the new 30-turn part 1 AND the old parts 2 and 3: every turn from
    10 on summarised twice, by a live summary the current policy no longer has."""
    chat(cube, 30)
    organize(cube, reader=None, policy=SMALL)
    crash_after_first_summary_write(cube, monkeypatch)
    with pytest.raises(Crash):
        organize(cube, reader=None, policy=LARGE)
    monkeypatch.undo()
    assert twice_summarised(live_summaries(cube)) == []
    assert twice_summarised(served_summaries(cube, "which garden bed did we plant?")) == []
    # the job resumes: one live episode of all 30 turns, the old parts archived
    report = organize(cube, reader=None, policy=LARGE)
    assert report.users == 1
    episodes = [s for s in live_summaries(cube) if s.metadata.get("summary") == "episode"]
    assert [e.metadata["members"] for e in episodes] == [30]


class EditsDuringThePass:
    """A reader whose first ``summarize`` call runs ``edit``: another writer changing a member while the
    organiser is half-way through its pass (after it read the members, before it recorded the user)."""

    name = "edits-during-the-pass"

    def __init__(self, edit: Any) -> None:
        self.edit, self.fired = edit, False

    def summarize(self, texts: list[str]) -> None:
        if not self.fired:
            self.fired = True
            self.edit()
        return None  # extractive


@pytest.mark.parametrize("change", ["same_length_text", "validity_closed", "moved_session"])
def test_a_change_during_a_pass_is_rebuilt_by_the_next_pass_and_never_served_meanwhile(cube: Any, change: str) -> None:
    """Found: an edit during a pass that kept the text's length, closed a memory's validity (superseded it)
    or moved it to another session was recorded as organised (others_inputs does not see it), so the next
    pass skipped the user and the summaries quoting the old state stayed live until some other change.
    A search never served the first two (the read-time check filters them: the rebuild was only delayed),
    but the episode of the session a memory left was served as current, naming it as its member."""
    turns = cube.add(memory=["Maya lives in Lisbon by the river.", "Maya walks by the river every day."],
                     user_id="u", session_id="s1")
    edit = {"same_length_text": lambda: cube.update(turns[0].id, text="Maya lives in Madrid by the river."),
            "validity_closed": lambda: cube.update(turns[0].id, valid_to=utcnow()),
            "moved_session": lambda: cube.update(turns[0].id, session_id="s2")}[change]
    gone = "Lisbon" if change != "moved_session" else "no longer current"  # moved: still Maya's memory
    organize(cube, reader=EditsDuringThePass(edit))
    # meanwhile, what a search serves is current: no summary quotes Lisbon, none names a member of another session
    for summary in served_summaries(cube, "Where does Maya live by the river?"):
        assert gone not in summary.text
        if summary.metadata.get("summary") == "episode":
            assert all(cube.get(i).session_id == summary.session_id for i in summary.sources)
    report = organize(cube, reader=None)
    assert report.users == 1 and report.users_skipped == 0  # redone, not skipped
    assert stale_summaries(cube.store, live_summaries(cube)) == set()
    for summary in live_summaries(cube):
        assert gone not in summary.text
        current = cube.store.get_items(list(summary.sources))
        assert all(summary.metadata["source_versions"][i] == current[i].version for i in summary.sources)


def test_a_memory_moved_to_another_user_is_no_longer_quoted_to_the_first(cube: Any) -> None:
    """Found: a memory reassigned to another user (``update(user_id=...)``) stayed a source of its first
    user's summaries, and stale_summaries did not see it (same text, same id): until the organiser ran,
    the first user's search was served an episode quoting a memory that is now another user's."""
    turns = cube.add(memory=["My bank PIN hint is the blue door.", "My bank card is from Nordea."],
                     user_id="alice", session_id="s1")
    organize(cube, reader=None)
    assert any("blue door" in s.text for s in served_summaries(cube, "bank PIN hint", "alice"))
    cube.update(turns[0].id, user_id="bob")
    assert stale_summaries(cube.store, live_summaries(cube, "alice"))
    assert not any("blue door" in s.text for s in served_summaries(cube, "bank PIN hint", "alice"))
    organize(cube, reader=None)
    assert not any("blue door" in s.text for s in live_summaries(cube, "alice"))


class Reader:
    name = "short-reader"

    def summarize(self, texts: list[str]) -> str:
        return "They planted the garden beds one by one, and " + "talked about the weather " * 40


def test_a_huge_session_id_neither_stops_the_pass_nor_fills_the_summary(cube: Any) -> None:
    """Found: an episode's text is ``Session <id> (...): `` + the reader's summary cut to summary_chars,
    so a summary was longer than summary_chars, and a session id longer than the cube's max_text_chars
    (an embedded cube takes any) made every pass with a reader fail with OversizedInputError on that
    user, leaving every user sorted after it never organised; without a reader that episode's whole text
    was its truncated head."""
    chat(cube, 3, user="a", session="x" * 40_000)
    chat(cube, 3, user="b", session="s1")
    policy = OrganizePolicy()
    report = organize(cube, reader=Reader(), policy=policy)
    assert report.users == 2
    for user in ("a", "b"):
        summaries = live_summaries(cube, user)
        assert summaries and all(len(s.text) <= policy.summary_chars for s in summaries)
        assert all("planted" in s.text for s in summaries)
    organize(cube, reader=None, full=True)
    episode = next(s for s in live_summaries(cube, "a") if s.metadata.get("summary") == "episode")
    assert "planted" in episode.text and episode.session_id == "x" * 40_000


def test_two_users_one_session_id_and_the_part_boundaries(cube: Any) -> None:
    """Found sound: two users with the same session id get their own parts and their own before-chains;
    a session of exactly episode_size is one part, one more memory makes it parts (cut by content:
    organize/episodes.py); parts chain in part order; a size change is a full redo."""
    from memos_integrations.organize.episodes import session_parts
    from memos_integrations.storage.graph import BEFORE, SUMMARIZED_BY

    mine, theirs = chat(cube, 10, user="u"), chat(cube, 11, user="v")
    organize(cube, reader=None, policy=SMALL)
    split = [hi - lo for lo, hi in session_parts([t.id for t in theirs], 10)]
    assert len(split) >= 2
    for user, turns, sizes in (("u", mine, [10]), ("v", theirs, split)):
        eps = sorted((s for s in live_summaries(cube, user) if s.metadata.get("summary") == "episode"),
                     key=lambda e: e.metadata.get("part", 1))
        assert [e.metadata["members"] for e in eps] == sizes and all(e.user_id == user for e in eps)
        ids = [e.id for e in eps]
        chain = sorted((e.src, e.dst) for e in cube.graph.edges(ids, "both", [BEFORE]))
        assert chain == sorted(zip(ids, ids[1:]))  # part order, never the other user's
        up = cube.graph.edges([t.id for t in turns], "out", [SUMMARIZED_BY])
        assert sorted(e.src for e in up if e.dst in ids) == sorted(t.id for t in turns)
    report = organize(cube, reader=None, policy=OrganizePolicy(episode_size=11))
    assert report.users == 2 and report.summaries_archived == len(split) - 1  # v's later parts fold into part 1
    assert twice_summarised(live_summaries(cube, "v")) == []
