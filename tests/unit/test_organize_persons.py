"""Person topics (issue 14): each speaker's own memories clustered by topic by the organiser
(``OrganizePolicy.person_topics``), opened by the search plan option ``person_topics``; the cap on
members per opened summary (``summary_members``) and coarse to fine shut for "when" questions
(``coarse_on_time``). Small real cubes (MiniLM, SQLite)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from memos_integrations import MemCube
from memos_integrations.items import Edge, utcnow
from memos_integrations.organize import PERSON_TOPIC, OrganizePolicy, organize
from memos_integrations.textual import retrieve as R

#: (speaker, session, text): Melanie's pottery turns in three sessions, camping in two, Caroline's in between
CHAT = [
    ("Melanie", "s1", "I just signed up for a pottery class, shaping clay is like therapy for me."),
    ("Caroline", "s1", "I went to an LGBTQ support group yesterday and it was so powerful."),
    ("Melanie", "s2", "We went camping at the beach with the kids last weekend."),
    ("Caroline", "s2", "I am researching adoption agencies for my future family."),
    ("Melanie", "s3", "My pottery teacher showed me how to glaze a clay bowl on the wheel."),
    ("Caroline", "s3", "My friends gave me a necklace from my home country, Sweden."),
    ("Melanie", "s4", "Camping in the mountains was beautiful, we roasted marshmallows by the fire."),
    ("Melanie", "s5", "I made a clay mug in my pottery class, painted blue and glazed."),
]
PERSONS = OrganizePolicy(person_topics=True)
PLAN = R.BALANCED.model_copy(update={"name": "persons", "person_topics": True, "person_topic_seeds": 1,
                                     "time_aware": False})


def _chat(cube: MemCube, user: str = "u1") -> dict[str, str]:
    """Add the chat for ``user``; returns text -> id."""
    out: dict[str, str] = {}
    for n, (who, session, text) in enumerate(CHAT):
        msg = {"role": "user", "name": who, "content": text, "id": f"{user}-m{n}"}
        item = cube.add(messages=[msg], user_id=user, session_id=session, timestamp=f"2023-05-0{n + 1}T10:00:00Z")[0]
        out[text] = item.id
    return out


def _leg(cube: MemCube, query: str, user: str = "u1", plan: R.SearchPlan = PLAN) -> dict[str, int]:
    """id -> rank in the person topics leg, for the hits of ``query``."""
    return {h.item.id: h.ranks["person_topic"] for h in cube.search(query, user_id=user, top_k=8, plan=plan)
            if "person_topic" in h.ranks}


def _seed(cube: MemCube, query: str) -> list[str]:
    """The named person's memory most like the query: the leg's first (its own topic opened from it)."""
    return [i for i, rank in _leg(cube, query).items() if rank == 1]


def test_person_topics_cluster_each_speaker_alone_and_the_leg_opens_them(cube: MemCube) -> None:
    ids = _chat(cube)
    speaker = {i: who for (who, _, t), i in ((c, ids[c[2]]) for c in CHAT)}
    query = "What has Melanie made with clay?"
    organize(cube, reader=None)  # no person topics: the leg holds its one seed only
    assert list(_leg(cube, query)) == _seed(cube, query)
    before = {h.item.id: h.score for h in cube.search(query, user_id="u1", top_k=8, plan=PLAN)}
    report = organize(cube, reader=None, policy=PERSONS)
    assert report.links_added > 0
    edges = cube.graph.edges(list(ids.values()), "out", [PERSON_TOPIC])
    assert edges and all(speaker[e.src] == speaker[e.dst] == e.metadata["speaker"] for e in edges)
    leg = _leg(cube, query)
    pottery = {ids[t] for who, _, t in CHAT if who == "Melanie" and "pottery" in t}
    assert pottery <= set(leg), "the seed's topic brings its members from other sessions"
    assert all(speaker[i] == "Melanie" for i in leg)
    after = {h.item.id: h.score for h in cube.search(query, user_id="u1", top_k=8, plan=PLAN)}
    assert all(after[i] > before[i] for i in pottery - set(_seed(cube, query))), "members reached by the topic rise"
    assert all(after[i] == pytest.approx(before[i]) for i in after if i not in leg)
    # one member per session, and a query naming nobody (or everybody) adds no leg
    assert _leg(cube, "What has anyone made with clay?") == {}
    assert _leg(cube, "What have Melanie and Caroline made with clay?") == {}


def test_a_person_topic_never_reaches_another_users_memories(cube: MemCube) -> None:
    mine, theirs = _chat(cube, "u1"), _chat(cube, "u2")
    organize(cube, reader=None, policy=PERSONS)
    user_of = {i: "u1" for i in mine.values()} | {i: "u2" for i in theirs.values()}
    edges = cube.graph.edges(list(user_of), "out", [PERSON_TOPIC])
    assert edges and all(user_of[e.src] == user_of[e.dst] for e in edges), "clustered per user"
    # hostile: an edge from u1's pottery seed into u2's cluster must lead nowhere for u1
    seed = mine[CHAT[0][2]]
    cube.graph.add_edges([Edge(theirs[CHAT[4][2]], seed, PERSON_TOPIC, 1.0, {"speaker": "Melanie"}),
                          Edge(seed, theirs[CHAT[7][2]], PERSON_TOPIC, 1.0, {"speaker": "Melanie"})])
    for user, own in (("u1", mine), ("u2", theirs)):
        hits = cube.search("What has Melanie made with clay?", user_id=user, top_k=8, plan=PLAN)
        assert hits and {h.item.id for h in hits} <= set(own.values())


def test_a_deleted_or_superseded_member_is_never_served_through_its_topic(cube: MemCube) -> None:
    ids = _chat(cube)
    organize(cube, reader=None, policy=PERSONS)
    bowl, mug = ids[CHAT[4][2]], ids[CHAT[7][2]]
    assert {bowl, mug} <= set(_leg(cube, "What has Melanie made with clay?"))
    cube.delete(bowl)
    cube.update(mug, valid_to=utcnow() - timedelta(seconds=1))  # superseded: no longer current
    hits = cube.search("What has Melanie made with clay?", user_id="u1", top_k=8, plan=PLAN)
    assert hits and not {bowl, mug} & {h.item.id for h in hits}
    organize(cube, reader=None, policy=PERSONS)  # the next pass drops their edges
    assert not cube.graph.edges([bowl, mug], "both", [PERSON_TOPIC])


def test_organising_twice_changes_nothing_and_turning_person_topics_off_removes_them(cube: MemCube) -> None:
    ids = list(_chat(cube).values())
    first = organize(cube, reader=None, policy=PERSONS)
    n = len(cube.graph.edges(ids, "out", [PERSON_TOPIC]))
    assert n > 0
    again = organize(cube, reader=None, policy=PERSONS, full=True)
    assert (again.links_added, again.links_removed, again.topics_written) == (0, 0, 0), first
    off = organize(cube, reader=None)  # another policy: the user is redone, the edges go
    assert off.links_removed >= n and not cube.graph.edges(ids, "out", [PERSON_TOPIC])


def test_summary_members_caps_what_one_opened_summary_gives_and_when_questions_skip_it(cube: MemCube) -> None:
    _chat(cube)
    organize(cube, reader=None)
    base = R.BALANCED.model_copy(update={"name": "c2f", "coarse_to_fine": True, "summary_seeds": 1, "time_aware": False})
    hits = cube.search("Melanie's pottery class and clay", user_id="u1", top_k=8, plan=base)
    assert sum("summary" in h.ranks for h in hits) > 1
    capped = cube.search("Melanie's pottery class and clay", user_id="u1", top_k=8,
                         plan=base.model_copy(update={"summary_members": 1}))
    assert sum("summary" in h.ranks for h in capped) == 1
    when = "When did Melanie start her pottery class?"  # a "when" question: the summaries stay shut
    assert any("summary" in h.ranks for h in cube.search(when, user_id="u1", top_k=8, plan=base))
    shut = base.model_copy(update={"coarse_on_time": False})
    assert not any("summary" in h.ranks for h in cube.search(when, user_id="u1", top_k=8, plan=shut))
    assert any("summary" in h.ranks for h in cube.search("Melanie's pottery class", user_id="u1", top_k=8, plan=shut))
    with pytest.raises(ValidationError):
        R.SearchPlan(summary_members=0)
    with pytest.raises(ValidationError):
        OrganizePolicy(person_threshold=0)
    assert not R.DEEP.person_topics and not R.MULTIHOP.person_topics and not OrganizePolicy().person_topics
