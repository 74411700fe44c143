"""Search plans that use the shape of organised memory (issue 14): coarse to fine over summaries,
entity and relation hops, the session's working memory first; provenance and scope kept; presets.

The cubes are built by hand with the organiser's contract (summaries are ``kind="summary"`` items whose
``sources`` are their members, linked ``member --summarized_by--> summary``; relation edges
``same_entity`` with ``metadata["entity"]``; ``metadata["partition"] == "working"`` per session), so
these tests hold whatever organiser fills a cube.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from memos_integrations import MemCube
from memos_integrations.errors import InvalidInputError
from memos_integrations.items import Edge, Kind, MemoryItem
from memos_integrations.textual import retrieve as R
from memos_integrations.textual.entities import entities

TRIP = [
    "Booked the ferry tickets for the island crossing.",
    "Packed the snorkel, the fins and the sunscreen.",
    "The guesthouse confirmed our room with a sea view.",
]
OTHER = [
    "My sister started a pottery class on Tuesdays.",
    "The printer at work jams every morning.",
    "We adopted a grey kitten called Pixel.",
    "The quarterly report is due next Friday.",
    "I repainted the kitchen cabinets dark green.",
]


def _messages(cube: MemCube, texts: list[str], user: str = "u1", session: str = "s1", prefix: str = "m") -> list[MemoryItem]:
    msgs = [{"role": "user", "name": "Ana", "content": t, "id": f"{prefix}{n}"} for n, t in enumerate(texts)]
    return cube.add(messages=msgs, user_id=user, session_id=session, timestamp="2023-05-08T10:00:00Z")


def _summary(cube: MemCube, text: str, members: list[MemoryItem], user: str = "u1") -> MemoryItem:
    summary = MemoryItem(text=text, kind=Kind.SUMMARY, user_id=user, sources=[m.id for m in members],
                         metadata={"summary": "topic", "members": len(members)})
    edges = [Edge(m.id, summary.id, "summarized_by") for m in members]
    return cube.add_items([summary], edges)[0]


@pytest.fixture
def trip_cube(cube: MemCube) -> tuple[MemCube, list[MemoryItem], MemoryItem]:
    trip = _messages(cube, TRIP, prefix="t")
    _messages(cube, OTHER, prefix="o", session="s2")
    summary = _summary(cube, "Planning a beach holiday on an island: travel, luggage and lodging.", trip)
    return cube, trip, summary


# -- coarse to fine -------------------------------------------------------------------------------
def test_coarse_to_fine_ranks_the_members_of_the_best_summary(trip_cube: Any) -> None:
    cube, trip, _ = trip_cube
    plan = R.BALANCED.model_copy(update={"coarse_to_fine": True, "summary_seeds": 1})
    hits = cube.search("beach holiday preparations", user_id="u1", top_k=5, plan=plan)
    led = [h for h in hits if "summary" in h.ranks]
    assert {h.item.id for h in led} >= {t.id for t in trip}  # every member reached through its summary
    assert all(h.item.kind == Kind.MESSAGE for h in led)  # the leg ranks members, not summaries


def test_expand_replaces_a_summary_hit_by_its_members_with_their_provenance(trip_cube: Any) -> None:
    cube, trip, summary = trip_cube
    keep = cube.search("beach holiday on an island", user_id="u1", top_k=3,
                       plan=R.SearchPlan(keyword=False, time_aware=False))
    assert keep[0].item.id == summary.id and keep[0].item.sources == [t.id for t in trip]  # annotated: members
    plan = R.SearchPlan(keyword=False, time_aware=False, summary_hits="expand", expand_members=2)
    hits = cube.search("beach holiday on an island", user_id="u1", top_k=3, plan=plan)
    assert all(h.item.kind != Kind.SUMMARY for h in hits)
    via = [h for h in hits if "via_summary" in h.ranks]
    assert via and all(h.ranks["via_summary"] == 1 for h in via)
    assert {h.item.id for h in via} <= {t.id for t in trip}
    for h in hits:  # every hit still points to the message it was read from
        assert len(h.item.sources) == 1 and h.item.sources[0][0] in "to"


def test_plans_without_shape_options_rank_as_before(trip_cube: Any) -> None:
    cube, _, _ = trip_cube
    plain = R.LEARNED.model_copy(update={"name": "x"})  # deep re-scores as learned does
    shaped = R.DEEP.model_copy(update={"coarse_to_fine": False, "entity_leg": False,
                                       "relation_hops": 0, "working_first": 0})
    q = "what did the guesthouse say?"
    assert [h.item.id for h in cube.search(q, top_k=5, plan=plain)] == [h.item.id for h in cube.search(q, top_k=5, plan=shaped)]


# -- entities and relations -----------------------------------------------------------------------
def test_entities_are_extractive_names() -> None:
    assert entities("Where did Jon's dance studio open, and did Gina help?") == ["Jon", "Gina"]
    assert entities("What did they eat at \"Casa Mia\" in New York?") == ["Casa Mia", "New York"]
    assert entities("how are you?") == []


def test_entity_leg_finds_memories_that_mention_the_query_names(cube: MemCube) -> None:
    items = cube.add(memory=["Jon opened a dance studio downtown.", "Gina lost her job at the store.",
                             "The weather was rainy all week.", "Jon's studio hosts a showcase in June."], user_id="u1")
    plan = R.SearchPlan(keyword=False, time_aware=False, entity_leg=True, entity_max_share=0.5)
    hits = cube.search("What happened with Jon?", user_id="u1", top_k=4, plan=plan)
    by_entity = {h.item.id for h in hits if "entity" in h.ranks}
    assert by_entity == {items[0].id, items[3].id}
    # a name in more than entity_max_share of the cube (a chat's speaker) narrows nothing: no leg
    common = cube.search("What happened with Jon?", user_id="u1", top_k=4,
                         plan=plan.model_copy(update={"entity_max_share": 0.25}))
    assert all("entity" not in h.ranks for h in common)


def test_relation_hops_follow_links_of_the_query_entity_only(cube: MemCube) -> None:
    a, b, c = cube.add(memory=["Jon signed the lease for his dance studio.", "The opening night sold out.",
                               "Gina sent flowers to the opening."], user_id="u1")
    cube.relate(a.id, b.id, "same_entity", entity="Jon")
    cube.relate(a.id, c.id, "same_entity", entity="Gina")
    plan = R.SearchPlan(keyword=False, time_aware=False, rrf_k=1, relation_hops=1, relation_seeds=1, relation_weight=0.9)
    q = "When did Jon sign his lease?"
    on = {h.item.id: h.score for h in cube.search(q, user_id="u1", top_k=3, plan=plan)}
    off = {h.item.id: h.score for h in cube.search(q, user_id="u1", top_k=3, plan=plan.model_copy(update={"relation_hops": 0}))}
    assert max(on, key=lambda i: on[i]) == a.id
    assert on[b.id] == pytest.approx(max(off[b.id], 0.9 * off[a.id]))  # Jon's link followed
    assert on[b.id] > off[b.id]
    assert on[c.id] == pytest.approx(off[c.id])  # Gina's link is not: the question does not name her


# -- working memory -------------------------------------------------------------------------------
def test_working_memory_of_the_current_session_leads(cube: MemCube) -> None:
    cube.add(memory=["The user prefers window seats on trains.", "Train tickets to Lyon cost 40 euros."], user_id="u1")
    work = cube.add(memory=["Current task: find a train from Paris to Lyon on Friday."], user_id="u1",
                    session_id="s1", metadata={"partition": "working"})[0]
    other = cube.add(memory=["Current task: compare train seats."], user_id="u1", session_id="s2",
                     metadata={"partition": "working"})[0]
    plan = R.SearchPlan(time_aware=False, working_first=1)
    hits = cube.search("train seats", user_id="u1", top_k=3, plan=plan, current_session="s1")
    assert hits[0].item.id == work.id and "working" in hits[0].ranks
    assert other.id not in [h.item.id for h in hits if "working" in h.ranks]  # another session's is not "working"
    no_session = cube.search("train seats", user_id="u1", top_k=3, plan=plan)
    assert all("working" not in h.ranks for h in no_session)


# -- scope ----------------------------------------------------------------------------------------
def test_a_second_users_items_are_never_returned_through_the_shape(cube: MemCube) -> None:
    mine = _messages(cube, TRIP, prefix="t")
    theirs = _messages(cube, ["Jon booked the island ferry for the beach holiday.", "Jon packed snorkels."],
                       user="u2", prefix="x")
    # a summary of u1 that (wrongly) lists u2's items, and links across users: none may leak
    _summary(cube, "Beach holiday on an island with Jon.", [*mine, *theirs])
    cube.relate(mine[0].id, theirs[0].id, "same_entity", entity="Jon")
    cube.add(memory=["Jon's working note about the ferry."], user_id="u2", session_id="s1",
             metadata={"partition": "working"})
    for plan in ("deep", "multihop"):
        hits = cube.search("Jon beach holiday island ferry", user_id="u1", top_k=10, plan=plan, current_session="s1")
        assert hits and all(h.item.user_id == "u1" for h in hits), plan


# -- presets --------------------------------------------------------------------------------------
def test_presets_are_named_and_typed() -> None:
    assert set(R.PRESETS) == {"fast", "balanced", "deep", "multihop", "learned", "late"}
    assert R.plan_named("multihop") is R.MULTIHOP and R.MULTIHOP.relation_hops == 2
    assert R.DEEP.coarse_to_fine and R.DEEP.summary_hits == "expand" and R.DEEP.entity_leg
    assert R.BALANCED.graph_types == R.SEQUENCE_EDGES  # the neighbour hop never wanders along organiser links
    assert R.BALANCED.summary_hits == "expand"  # every hit points to messages, even on an organised cube
    with pytest.raises(InvalidInputError, match="presets"):
        R.plan_named("deeper")
    with pytest.raises(ValidationError):
        R.SearchPlan(summary_hits="replace")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        R.SearchPlan(relation_hops=9)
    with pytest.raises(ValidationError):
        R.SearchPlan(coarse_too_fine=True)  # type: ignore[call-arg]


def test_pure_shape_helpers() -> None:
    assert R.members_leg([(9, 1.0)], {9: [1, 2]}, {}) == [1, 2]
    assert R.expand_summaries([9], {9: []}, per=2) == ([], {})
    assert R.expand_summaries([1, 9, 2, 3], {9: [3, 2]}, per=1) == ([1, 3, 2], {3: 2})
    assert R.working_first([1, 2], set(), 3) == [1, 2]
    assert R.follows_entity("before", {}, {"jon"})
