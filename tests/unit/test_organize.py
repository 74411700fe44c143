"""Organised memory (issue 14): partitions, the tree of summaries and episodes, links, incremental runs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from memos_integrations.cli import main as cli_main
from memos_integrations.items import Kind, Lifecycle
from memos_integrations.organize import (
    LONG_TERM,
    PROFILE,
    WORKING,
    OrganizePolicy,
    organize,
    partition_of,
    set_profile,
    set_working_policy,
    stale_summaries,
)
from memos_integrations.organize.links import attributes, entities_of
from memos_integrations.organize.tree import leader_clusters
from memos_integrations.schedule import MemScheduler
from memos_integrations.storage.graph import SUPERSEDED_BY
from memos_integrations.textual.graph import BEFORE, CONFLICT, SAME_ENTITY, SUMMARIZED_BY

DOGS = ["Maya adopted a beagle puppy called Pixel.", "Pixel the beagle loves chasing squirrels in the park.",
        "Maya takes her dog Pixel to the vet every spring."]
BREAD = ["Maya bakes sourdough bread every Sunday.", "Maya is learning to bake croissants with butter."]
LONER = "Her sourdough starter is named Bubbles and lives in the fridge."


def summaries(cube: Any, user: str | None = None, what: str | None = None) -> list[Any]:
    out = [i for i in cube.get_all(kinds=[Kind.SUMMARY]) if i.user_id == user or user is None]
    return [i for i in out if what is None or i.metadata.get("summary") == what]


def add_topics(cube: Any, user: str = "maya", session: str = "s1") -> list[Any]:
    return cube.add(memory=[DOGS[0], DOGS[1], BREAD[0], LONER, DOGS[2], BREAD[1]], user_id=user, session_id=session)


# -- partitions ---------------------------------------------------------------------------------------
def test_working_memory_is_bounded_per_session_and_moves_are_versioned_and_audited(cube):
    set_working_policy(cube, on=False)  # the organiser's own moves (the write path's: test_sched7_working.py)
    old = cube.add(memory=[f"Turn {n} of the first chat." for n in range(5)], user_id="u", session_id="a")
    new = cube.add(memory=[f"Turn {n} of the second chat." for n in range(25)], user_id="u", session_id="b")
    policy = OrganizePolicy(working_capacity=20, active_sessions=1)
    report = organize(cube, policy=policy)
    parts = {i.id: partition_of(i) for i in cube.get_all(user_id="u") if i.kind != Kind.SUMMARY}
    assert [parts[i.id] for i in new[5:]] == [WORKING] * 20                 # the 20 most recent of the session
    assert [parts[i.id] for i in new[:5]] == [LONG_TERM] * 5 and all(parts[i.id] == LONG_TERM for i in old)
    assert report.promoted == 20
    promoted = cube.get(new[-1].id)
    assert promoted.version == 2 and promoted.metadata["partition_since"]
    assert "partition" not in cube.history(new[-1].id)[0].metadata          # the move is a version of its own
    assert any(e["action"] == "promote" and e["detail"]["to"] == WORKING for e in cube.audit_log())
    # a third session becomes the active one: the second session's working memory is demoted
    cube.add(memory=["A brand new conversation starts."], user_id="u", session_id="c")
    report = organize(cube, policy=policy)
    assert report.demoted == 20 and report.promoted == 1
    assert partition_of(cube.get(new[-1].id)) == LONG_TERM
    demote = next(e for e in cube.audit_log() if e["action"] == "demote")
    assert demote["detail"]["from"] == WORKING and demote["detail"]["to"] == LONG_TERM and len(demote["detail"]["ids"]) == 20


def test_a_retrieved_item_reenters_working_memory(cube):
    items = cube.add(memory=[f"Note {n}: the meeting moved to room {n}." for n in range(6)] +
                     ["The quarterly budget for penguins was approved."], user_id="u", session_id="s")
    policy = OrganizePolicy(working_capacity=3)
    organize(cube, policy=policy)
    assert partition_of(cube.get(items[0].id)) == LONG_TERM
    cube.store.flush_usage()
    with cube.store.transaction() as tx:  # the oldest note was written long ago...
        tx.execute("UPDATE items SET created_at = created_at - 86400 WHERE id = ?", (items[0].id,))
    hits = cube.search("Note 0 meeting room 0", user_id="u", kinds=[Kind.FACT], top_k=1)   # ...and is used now
    assert hits[0].item.id == items[0].id
    organize(cube, policy=policy)
    assert partition_of(cube.get(items[0].id)) == WORKING
    assert sum(partition_of(i) == WORKING for i in cube.get_all(user_id="u")) == 3


def test_profile_keeps_one_current_entry_per_key_and_history(cube):
    blue = cube.add(memory="Maya's favourite colour is blue.", kind=Kind.PREFERENCE, user_id="maya")[0]
    organize(cube)
    assert partition_of(cube.get(blue.id)) == PROFILE
    assert cube.get(blue.id).metadata["profile_key"] == "maya|favourite colour"
    green = cube.add(memory="Maya's favourite colour is green.", kind=Kind.PREFERENCE, user_id="maya")[0]
    report = organize(cube)
    assert report.superseded == 1
    old = cube.history(blue.id)
    assert old[-1].state == Lifecycle.ARCHIVED and old[-1].metadata["superseded_by"] == green.id
    assert old[0].text == "Maya's favourite colour is blue."                # never a silent loss
    assert [i.id for i in cube.get_all(user_id="maya") if partition_of(i) == PROFILE] == [green.id]
    # set_profile: the current entry gets a new version
    updated = set_profile(cube, "maya", "maya|favourite colour", "Maya's favourite colour is teal.")
    assert updated.id == green.id and [h.text for h in cube.history(green.id)][0] == "Maya's favourite colour is green."
    fresh = set_profile(cube, "maya", "diet", "Maya is vegetarian.")
    assert partition_of(fresh) == PROFILE and fresh.kind == Kind.PREFERENCE


# -- the tree --------------------------------------------------------------------------------------------
def test_leader_clustering_is_deterministic_and_incremental_matches_full():
    rng = np.random.default_rng(7)
    v = rng.normal(size=(60, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [f"m{n:02d}" for n in range(60)]
    a = leader_clusters(ids, v, 0.3, 10)
    assert [(c.leader, c.members) for c in a] == [(c.leader, c.members) for c in leader_clusters(ids, v, 0.3, 10)]
    prefix = leader_clusters(ids[:30], v[:30], 0.3, 10)                   # appended items never move earlier ones
    for early, full in zip(prefix, a):
        assert full.members[: len(early.members)] == early.members
    assert all(len(c.members) <= 10 for c in a)


def test_topic_summaries_follow_the_contract(cube):
    items = add_topics(cube)
    report = organize(cube)
    topics = summaries(cube, "maya", "topic")
    assert report.topics_written == 2 and len(topics) == 2
    by_id = {i.id: i for i in items}
    groups = sorted(sorted(by_id[s].text for s in t.sources) for t in topics)
    assert groups == sorted([sorted(BREAD), sorted(DOGS)])                       # the loner has no summary
    for t in topics:
        assert t.kind == Kind.SUMMARY and t.user_id == "maya" and t.id == f"topic-{t.sources[0]}"
        assert t.metadata["members"] == len(t.sources)
        assert t.metadata["source_versions"] == {s: cube.get(s).version for s in t.sources}
        assert len(t.text) <= 480 and all(w in t.text for w in ("Maya",))
        into = {e.src for e in cube.graph.edges([t.id], "in", [SUMMARIZED_BY])}
        assert into == set(t.sources)
    # determinism: a second cube with the same memories gets the same summaries
    assert sorted(t.text for t in topics) == sorted(t.text for t in topics)


def test_same_input_gives_the_same_tree_in_another_cube(make_cube):
    texts = []
    for name in ("one", "two"):
        c = make_cube(name)
        add_topics(c)
        organize(c)
        texts.append(sorted((s.metadata["summary"], s.text) for s in summaries(c)))
    assert texts[0] == texts[1]


def test_episodes_one_per_session_linked_in_time_order(cube):
    cube.add(memory=DOGS, user_id="maya", session_id="s1", timestamp="2023-05-01")
    cube.add(memory=BREAD, user_id="maya", session_id="s2", timestamp="2023-06-01")
    organize(cube)
    eps = sorted(summaries(cube, "maya", "episode"), key=lambda e: e.metadata["session_id"])
    assert [e.metadata["session_id"] for e in eps] == ["s1", "s2"] and [e.metadata["members"] for e in eps] == [3, 2]
    assert eps[0].text.startswith("Session s1 (2023-05-01): ") and eps[0].session_id == "s1"
    assert [(e.src, e.dst) for e in cube.graph.edges([eps[0].id], "out", [BEFORE])] == [(eps[0].id, eps[1].id)]


def test_links_same_entity_chain_and_flagged_conflict(cube):
    a, b, c = cube.add(memory=["We met Caroline at the LGBTQ support group.", "Yesterday I called Caroline about it.",
                               "Caroline's dog is a beagle."], user_id="u")
    d = cube.add(memory="Caroline's dog is a poodle.", user_id="u")[0]
    report = organize(cube)
    same = {(e.src, e.dst): e.metadata["entity"] for e in cube.graph.edges([a.id, b.id, c.id, d.id], "both", [SAME_ENTITY])}
    assert same[(b.id, a.id)] == "Caroline" and (c.id, b.id) in same and (d.id, c.id) in same
    conflicts = cube.graph.edges([d.id], "out", [CONFLICT])
    assert report.conflicts == 1 and [(e.dst, e.metadata["status"]) for e in conflicts] == [(c.id, "flagged")]
    assert conflicts[0].metadata["values"] == ["poodle", "beagle"]


def test_entities_and_attributes_are_extractive():
    items = [type("I", (), {"id": "1", "text": "Yesterday Melanie went to New York. Melanie loved it."})(),
             type("I", (), {"id": "2", "text": "The weather was great. Great!"})()]
    assert entities_of(items) == {"1": ["Melanie", "New York"], "2": []}  # type: ignore[arg-type]
    assert [(x.entity, x.attribute, x.value) for x in attributes("Jon lives in Paris, and Jon's car is a red Fiat.")] == [
        ("Jon", "car", "red fiat"), ("Jon", "lives in", "paris")]


# -- incremental, idempotent, bad input --------------------------------------------------------------------
def test_second_run_changes_nothing_and_only_changed_users_are_redone(cube):
    add_topics(cube, "maya")
    add_topics(cube, "tom")
    first = organize(cube)
    assert first.users == 2
    versions = cube.stats()["versions"]
    edges = cube.stats()["edges"]
    again = organize(cube)
    assert (again.users, again.users_skipped) == (0, 2)
    full = organize(cube, full=True)                                      # recomputed, nothing different to write
    assert full.users == 2 and full.topics_written == full.episodes_written == full.links_added == 0
    assert (cube.stats()["versions"], cube.stats()["edges"]) == (versions, edges)
    cube.add(memory="Tom's cat is called Miso.", user_id="tom", session_id="s1")
    third = organize(cube)
    assert (third.users, third.users_skipped) == (1, 1)


def test_users_are_never_mixed(cube):
    maya = add_topics(cube, "maya")
    tom = add_topics(cube, "tom")                                          # the very same texts
    nobody = add_topics(cube, None, "s0")                                  # items without a user: a scope too
    organize(cube)
    for user, items in (("maya", maya), ("tom", tom), (None, nobody)):
        own = {i.id for i in items}
        mine = [s for s in cube.get_all(kinds=[Kind.SUMMARY]) if s.user_id == user]
        assert len(mine) == 3 and all(set(s.sources) <= own for s in mine)
        for e in cube.graph.edges(sorted(own), "both", [SAME_ENTITY, CONFLICT, SUMMARIZED_BY]):
            assert {e.src, e.dst} <= own | {s.id for s in mine}


def test_deleted_or_superseded_members_rebuild_or_retire_the_summary(cube):
    items = add_topics(cube)
    organize(cube)
    dog_topic = next(s for s in summaries(cube, "maya", "topic") if items[0].id in s.sources)
    cube.delete(items[1].id)                                              # a dog member deleted
    assert stale_summaries(cube.store, [dog_topic]) == {dog_topic.id}     # seen at read time already
    report = organize(cube)
    rebuilt = cube.get(dog_topic.id)
    assert report.stale_marked >= 1 and rebuilt.state == Lifecycle.GENERATED
    assert set(rebuilt.sources) == {items[0].id, items[4].id} and "squirrels" not in rebuilt.text
    assert not cube.graph.edges([items[1].id], "out", [SUMMARIZED_BY])
    states = [h.state for h in cube.history(dog_topic.id)]
    assert Lifecycle.ARCHIVED in states                                   # marked stale before the rebuild
    # the bread cluster loses a member to a merge (superseded): under min_members, its summary retires
    bread_topic = next(s for s in summaries(cube, "maya", "topic") if items[2].id in s.sources)
    cube.update(items[5].id, state=Lifecycle.MERGED)
    report = organize(cube)
    retired = cube.history(bread_topic.id)[-1]
    assert retired.state == Lifecycle.ARCHIVED and retired.metadata["stale"] is True
    assert report.stale_marked == 2 and report.episodes_written == 1      # the topic retired, the episode rebuilt
    assert bread_topic.id not in {h.item.id for h in cube.search("sourdough croissants", user_id="maya", top_k=20)}


def test_a_summary_whose_source_text_changed_is_rebuilt(cube):
    items = add_topics(cube)
    organize(cube)
    topic = next(s for s in summaries(cube, "maya", "topic") if items[0].id in s.sources)
    assert "squirrels" in topic.text or "Pixel" in topic.text
    cube.update(items[4].id, text="Maya takes her dog Pixel to the groomer every spring.")
    assert stale_summaries(cube.store, [topic]) == {topic.id}
    organize(cube)
    now = cube.get(topic.id)
    assert now.metadata["source_versions"][items[4].id] == cube.get(items[4].id).version
    assert stale_summaries(cube.store, [now]) == set()
    assert "groomer" in now.text or items[4].id not in now.sources


def test_partition_moves_alone_do_not_make_summaries_stale(cube):
    items = add_topics(cube)
    organize(cube, policy=OrganizePolicy(active_sessions=0))
    organize(cube, policy=OrganizePolicy(active_sessions=1))              # a new policy: everything enters working memory
    topics = summaries(cube, "maya", "topic")
    assert all(partition_of(cube.get(i.id)) == WORKING for i in items)
    assert stale_summaries(cube.store, topics) == set()
    assert all(t.metadata["source_versions"] == {s: cube.get(s).version for s in t.sources} for t in topics)


# -- entry points ------------------------------------------------------------------------------------------
def test_cube_scheduler_and_cli_entry_points(cube, tmp_path, capsys):
    add_topics(cube)
    assert MemScheduler(cube).organize()["topics_written"] == 2
    assert cube.organize().users_skipped == 1
    assert any(e["action"] == "organize" and e["principal"] == "scheduler" for e in cube.audit_log())
    path = cube.path
    cube.close()
    assert cli_main(["organize", str(path), "--user", "maya", "--full"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["users"] == 1 and out["topics_written"] == 0


class RuleReader:
    """A reader that follows fixed rules (what an LLM reader answers, without the LLM): the organiser's
    contract with a reader is these two methods."""

    def summarize(self, texts: list[str]) -> str:
        return f"{len(texts)} memories, first: {texts[0]}"

    def resolve_conflict(self, newer: Any, older: Any) -> bool:
        return True                                                       # the newer statement wins


def test_a_reader_writes_summaries_and_resolves_conflicts(cube):
    items = add_topics(cube)
    old, new = cube.add(memory=["Maya's car is a red Fiat.", "Maya's car is a blue Volvo."], user_id="maya")
    report = organize(cube, reader=RuleReader())
    topic = next(s for s in summaries(cube, "maya", "topic") if items[0].id in s.sources)
    assert topic.text == f"3 memories, first: {DOGS[0]}"
    assert report.superseded == 1 and cube.history(old.id)[-1].valid_to is not None  # closed, as SUPERSEDE does
    assert [e.dst for e in cube.graph.edges([old.id], "out", [SUPERSEDED_BY])] == [new.id]
    assert cube.history(old.id)[-1].metadata["superseded_by"] == new.id
    assert [e.metadata["status"] for e in cube.graph.edges([new.id], "out", [CONFLICT])] == ["resolved"]
    assert all(old.id not in s.sources for s in summaries(cube, "maya"))  # superseded before the tree was built
    again = organize(cube, reader=RuleReader(), full=True)
    assert again.links_removed == 0 and again.superseded == 0
    assert [e.metadata["status"] for e in cube.graph.edges([new.id], "out", [CONFLICT])] == ["resolved"]


def test_the_scheduler_never_merges_the_organisers_summaries(cube):
    cube.add(memory=BREAD, user_id="maya", session_id="s1")              # one topic == the session: same vector
    organize(cube)
    assert len(summaries(cube, "maya")) == 2
    assert MemScheduler(cube).merge() == {"merged": 0, "groups": 0}
    assert organize(cube).users_skipped == 1
