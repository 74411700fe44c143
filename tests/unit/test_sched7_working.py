"""A session's working memory is kept current by the write path (issue 14, must-have 1), without a
manual organise: adds enter their session's working memory, overflow is demoted (versioned, audited),
search hits count as use, two writers never exceed the capacity, a kill -9 between the add and the move
is repaired by the next run, and ``MemScheduler.run()`` organises only when something changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from memos_integrations import MemCube
from memos_integrations.items import Kind
from memos_integrations.organize import LONG_TERM, PROFILE, WORKING, OrganizePolicy, organize, partition_of
from memos_integrations.organize.partitions import set_working_policy, working_policy
from memos_integrations.schedule import MemScheduler, SchedulerPolicy
from memos_integrations.textual.retrieve import DEEP

ROOT = Path(__file__).resolve().parents[2]


def working(cube: Any, user: str = "u", session: str | None = "s") -> list[str]:
    """The ids in ``session``'s working memory, oldest first."""
    items = cube.get_all(user_id=user, session_id=session, limit=10_000)
    return [i.id for i in sorted(items, key=lambda i: i.created_at) if partition_of(i) == WORKING]


def add_turns(cube: Any, n: int, session: str = "s", user: str = "u", start: int = 0) -> list[Any]:
    return [cube.add(memory=f"Turn {k} of chat {session}: we talked about topic number {k}.", user_id=user,
                     session_id=session)[0] for k in range(start, start + n)]


def test_adds_enter_their_sessions_working_memory_without_organise(cube):
    items = add_turns(cube, 25)
    assert working(cube) == [i.id for i in items[5:]]                   # the newest 20, right after the adds
    assert all(partition_of(cube.get(i.id)) == LONG_TERM for i in items[:5])
    batch = cube.add(memory=[f"Batch note {k}." for k in range(30)], user_id="u", session_id="t")
    assert working(cube, session="t") == [i.id for i in batch[10:]]     # one add of 30: the newest 20
    # no session, a preference, a summary: no working memory
    loose = cube.add(memory="A note outside any session.", user_id="u")[0]
    pref = cube.add(memory="Maya's favourite colour is blue.", user_id="u", session_id="s", kind=Kind.PREFERENCE)[0]
    assert partition_of(loose) == LONG_TERM and "partition" not in cube.get(pref.id).metadata
    assert len(working(cube)) == 20


def test_overflow_is_demoted_as_a_version_with_an_audit_row(cube):
    items = add_turns(cube, 20)
    first = cube.get(items[0].id)
    assert first.version == 1 and partition_of(first) == WORKING and first.metadata["partition_since"]
    assert any(e["action"] == "promote" and e["detail"]["to"] == WORKING and items[0].id in e["detail"]["ids"]
               for e in cube.audit_log(limit=1000))                       # entering is audited too
    add_turns(cube, 1, start=20)
    history = cube.history(items[0].id)
    assert [partition_of(h) for h in history] == [WORKING, LONG_TERM]    # the demotion is a version of its own
    assert history[-1].metadata["partition_since"] and history[-1].text == items[0].text
    demote = [e for e in cube.audit_log(limit=1000) if e["action"] == "demote"]
    assert len(demote) == 1 and demote[0]["detail"]["ids"] == [items[0].id]
    assert demote[0]["detail"]["from"] == WORKING and demote[0]["detail"]["to"] == LONG_TERM
    assert demote[0]["principal"] == "scheduler"


def test_a_search_hit_counts_as_use(cube):
    items = add_turns(cube, 20)
    hits = cube.search("Turn 0 of chat s: topic number 0", user_id="u", top_k=1)
    assert hits[0].item.id == items[0].id                                 # the agent used the oldest turn...
    add_turns(cube, 1, start=20)
    assert items[0].id in working(cube) and items[1].id not in working(cube)  # ...so the next oldest leaves


def test_a_new_session_pushes_the_least_recent_session_out(cube):
    set_working_policy(cube, active_sessions=2)
    a = add_turns(cube, 3, session="a")
    add_turns(cube, 3, session="b")
    assert len(working(cube, session="a")) == 3
    add_turns(cube, 3, session="c")
    assert working(cube, session="a") == [] and len(working(cube, session="b")) == 3
    assert partition_of(cube.history(a[0].id)[-1]) == LONG_TERM


def test_the_organiser_agrees_with_the_write_path(cube):
    add_turns(cube, 25, session="a")
    add_turns(cube, 7, session="b")
    cube.add(memory="Maya's favourite colour is green.", user_id="u", kind=Kind.PREFERENCE, session_id="b")
    report = organize(cube)
    assert report.demoted == 0 and report.promoted == 1                  # only the preference moves (to the profile)
    assert len(working(cube, session="a")) == 20 and len(working(cube, session="b")) == 7
    # a smaller capacity given to the organiser becomes the write path's too (no tug of war)
    report = organize(cube, policy=OrganizePolicy(working_capacity=5))
    assert report.demoted == 15 + 2 and working_policy(cube.store).capacity == 5
    add_turns(cube, 1, session="b", start=100)
    assert len(working(cube, session="b")) == 5
    assert [partition_of(i) for i in cube.get_all(user_id="u", kinds=[Kind.PREFERENCE])] == [PROFILE]


def test_working_memory_first_finds_the_current_sessions_items(cube):
    cube.add(memory=[f"I went hiking in the Alps in summer {y}." for y in range(2010, 2022)], user_id="u",
             session_id="old")
    now = cube.add(memory=["Today we are planning the mountain trip for next weekend."], user_id="u",
                   session_id="now")[0]
    plain = cube.search("hiking in the mountains", user_id="u", top_k=5)
    assert now.id not in [h.item.id for h in plain[:1]]
    hits = cube.search("hiking in the mountains", user_id="u", top_k=5, plan=DEEP, current_session="now")
    assert hits[0].item.id == now.id                                     # no organise was run


def test_two_writers_to_one_session(cube):
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for k in range(30):
                cube.add(memory=f"Writer {tag} says thing {k}.", user_id="u", session_id="s")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    items = sorted(cube.get_all(user_id="u", session_id="s", limit=100), key=lambda i: (i.created_at, i.id))
    assert len(items) == 60                                               # no item lost
    assert working(cube) == [i.id for i in items[-20:]]                   # capacity held, the newest kept


_KILLED = textwrap.dedent("""
    import os, signal, sys
    from memos_integrations import MemCube
    from memos_integrations.organize import partitions
    from memos_integrations.textual.embed import MiniLMEmbedder
    cube = MemCube.open(sys.argv[1], embedder=MiniLMEmbedder())
    partitions.keep_working = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # dies after the add commits
    cube.add(memory=[f"Late turn {k}." for k in range(5)], user_id="u", session_id="s")
""")


def test_a_kill_between_the_add_and_the_move_is_repaired_by_the_next_run(cube, embedder):
    add_turns(cube, 20)
    path = cube.path
    cube.close()
    run = subprocess.run([sys.executable, "-c", _KILLED, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == -9, run.stderr
    with MemCube.open(path, embedder=embedder) as again:
        assert len(working(again)) == 25                                  # admitted with the add, never demoted
        report = MemScheduler(again, SchedulerPolicy(organize=False)).run()
        assert report["working"]["demoted"] == 5
        items = sorted(again.get_all(user_id="u", session_id="s", limit=100), key=lambda i: (i.created_at, i.id))
        assert working(again) == [i.id for i in items[-20:]]
        assert MemScheduler(again, SchedulerPolicy(organize=False)).run()["working"]["demoted"] == 0


def test_the_next_add_also_repairs_an_overfull_session(cube):
    items = add_turns(cube, 20)
    _raw_admitted(cube, 5)  # as a crash would leave it: five more admitted, none demoted
    assert len(working(cube)) == 25
    add_turns(cube, 1, start=50)
    assert len(working(cube)) == 20 and items[0].id not in working(cube)


def test_run_organises_only_when_something_changed(cube):
    add_turns(cube, 6)
    scheduler = MemScheduler(cube)
    first = scheduler.run()
    assert first["organize"]["users"] == 1 and first["working"] == {"promoted": 0, "demoted": 0, "users": 0}
    second = scheduler.run()
    assert second["organize"]["users"] == 0 and second["organize"]["users_skipped"] == 1
    add_turns(cube, 1, start=6)
    assert scheduler.run()["organize"]["users"] == 1
    off = MemScheduler(cube, SchedulerPolicy(organize=False)).run()
    assert "organize" not in off and off["working"]["demoted"] == 0


def _raw_admitted(cube: Any, n: int) -> list[Any]:
    """``n`` turns written as the add writes them, without the step after its commit."""
    from memos_integrations.organize import partitions

    keep, partitions.keep_working = partitions.keep_working, lambda *a, **k: None
    try:
        return add_turns(cube, n, start=100)
    finally:
        partitions.keep_working = keep


def test_a_demotion_on_the_write_path_reaches_a_metadata_filtered_search(cube, embedder):
    items = add_turns(cube, 20)
    only = {"partition": WORKING}
    before = [h.item.id for h in cube.search("topic number 0", user_id="u", top_k=30, metadata=only, plan="fast")]
    assert items[0].id in before                                          # rows held by the search now
    add_turns(cube, 1, start=20)                                          # demotes items[0], rewritten in place
    after = [h.item.id for h in cube.search("topic number 0", user_id="u", top_k=30, metadata=only, plan="fast")]
    assert items[0].id not in after and len(after) == 20
    path = cube.path
    cube.close()
    with MemCube.open(path, embedder=embedder) as fresh:
        assert after == [h.item.id for h in fresh.search("topic number 0", user_id="u", top_k=30, metadata=only,
                                                           plan="fast")]


def test_a_langchain_retriever_finds_the_runs_session_first_without_organise(cube):
    from memos_integrations.langchain import MemOSRetriever

    cube.add(memory=["The user prefers window seats on trains.", "Train seats to Lyon cost 40 euros."], user_id="u1",
             session_id="earlier")
    cube.add(messages=[{"role": "user", "content": "Current task: find a train from Paris to Lyon on Friday."}],
             user_id="u1", session_id="s1")                              # as the faces write a turn
    deep = MemOSRetriever(cube=cube, user_id="u1", plan="deep", k=3)
    docs = deep.invoke("which seats on trains?", config={"configurable": {"session_id": "s1"}})
    assert docs[0].page_content.endswith("Current task: find a train from Paris to Lyon on Friday.")
    assert deep.invoke("which seats on trains?")[0].metadata["session_id"] != "s1"  # no session named: nothing leads
