"""Query expansion (issue 14, textual/expand.py): second passes that add candidates a first pass
missed. Small real cubes (MiniLM, SQLite); the arithmetic is in expand's doctests."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from memos_integrations import MemCube
from memos_integrations.errors import MemosError
from memos_integrations.textual import expand as E
from memos_integrations.textual import retrieve as R
from memos_integrations.textual.filters import MemoryFilter

FILLER = [
    "The quarterly tax forms are due at the end of the month.", "My car needs new tyres before winter.",
    "The printer at the office jammed again.", "Our team won the trivia night at the pub.",
    "The bakery on the corner sells rye bread.", "I replaced the battery in the smoke alarm.",
    "The train to the city was late this morning.", "We repainted the kitchen a pale green.",
    "The library extended its opening hours.", "My phone screen cracked when it fell.",
]
#: every expansion at once, each leg at full weight
ALL = dict(feedback_docs=2, feedback_dense_weight=1.0, feedback_terms=3, feedback_terms_weight=1.0,
           unnamed_weight=1.0)


def _ids(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.item.id for h in hits]


def test_rocchio_feedback_brings_in_a_memory_like_the_best_hit_that_the_query_alone_misses(cube: MemCube) -> None:
    camping, tent, pottery, *_ = cube.add(memory=[
        "Melanie took the kids camping in the mountains last week.",
        "We pitched a tent in the mountains with the kids and roasted marshmallows.",
        "Melanie signed up for a pottery class on Tuesdays.", *FILLER], user_id="u1")
    off = R.SearchPlan(name="off", keyword=False, time_aware=False, candidates=2, dense_weight=0.5)
    on = off.model_copy(update={"feedback_docs": 1, "feedback_dense_weight": 1.0})
    q = "Where has Melanie camped?"
    assert tent.id not in _ids(cube.search(q, user_id="u1", top_k=2, plan=off))  # not in the first pass's pool
    hits = cube.search(q, user_id="u1", top_k=2, plan=on)  # the feedback leg outweighs the dense leg's second
    assert _ids(hits) == [camping.id, tent.id] and set(hits[1].ranks) == {E.DENSE_FEEDBACK}


def test_term_feedback_adds_the_words_the_best_hits_share(cube: MemCube) -> None:
    cube.add(memory=["Melanie went camping at the beach with her family.", "The family loved camping in the forest.",
                     "Family trips to the coast bring us closer.", *FILLER], user_id="u1")
    off = R.SearchPlan(name="off", dense=False, time_aware=False, candidates=2)
    on = off.model_copy(update={"feedback_docs": 2, "feedback_terms": 3, "feedback_terms_weight": 1.0})
    q = "Where did Melanie go camping?"
    assert not any("coast" in h.item.text for h in cube.search(q, user_id="u1", top_k=3, plan=off))
    hits = cube.search(q, user_id="u1", top_k=3, plan=on)
    coast = [h for h in hits if "coast" in h.item.text]  # shares no word with the query, "family" with both hits
    assert coast and set(coast[0].ranks) == {E.TERM_FEEDBACK}


def test_the_unnamed_leg_finds_what_the_named_person_said_about_the_topic(cube: MemCube) -> None:
    chat = [("Melanie", "Hey Caroline, so good to see you!"), ("Caroline", "Hi Melanie, thanks, you too!"),
            ("Melanie", "Caroline, you are amazing."), ("Melanie", "That's great Caroline!"),
            ("Caroline", "Melanie, my dog barked all night."), ("Melanie", "Caroline! Wow, Caroline."),
            ("Caroline", "Thanks Melanie, you're a star."),
            ("Caroline", "I have been looking into adoption agencies for months."),
            ("Caroline", "I enrolled in a counselling course at the college."),
            ("Caroline", "I teach maths to teenagers at the high school.")]
    msgs = [{"role": "user", "name": w, "content": t, "id": f"m{n}"} for n, (w, t) in enumerate(chat)]
    adoption = cube.add(messages=msgs, user_id="u1", session_id="s1", timestamp="2023-05-08T10:00:00Z")[7]
    off = R.SearchPlan(name="off", keyword=False, time_aware=False, candidates=2, dense_weight=0.5)
    q = "What did Caroline look into?"  # the dense leg's best is "Caroline! Wow, Caroline."
    assert adoption.id not in _ids(cube.search(q, user_id="u1", top_k=2, plan=off))
    for mode in ("embed", "project"):  # deep re-embeds the question without its names; balanced projects
        on = off.model_copy(update={"unnamed_weight": 1.0, "unnamed_mode": mode})
        hits = cube.search(q, user_id="u1", top_k=2, plan=on)
        assert adoption.id in _ids(hits) and set(hits[_ids(hits).index(adoption.id)].ranks) == {E.UNNAMED}, mode
        # a "when" question keeps its name (the person's event is the point): no second leg
        assert not any(E.UNNAMED in h.ranks for h in cube.search("When did Caroline look into it?", user_id="u1", plan=on))
    assert E.unnamed("Where did Caroline's dog go?", {"Caroline"}) == "Where did they dog go?"


def test_expansions_never_reach_another_user_a_deleted_or_a_superseded_memory(cube: MemCube) -> None:
    mine = cube.add(memory=["Melanie took the kids camping in the mountains last week.", *FILLER], user_id="u1")
    theirs = cube.add(memory=["We pitched a tent by the lake and went camping in the forest.",
                              "Camping at the beach with the family was lovely."], user_id="u2")
    gone, closed = cube.add(memory=["Camping in the forest with a tent and a campfire.",
                                    "Camping by the river with the kids and a tent."], user_id="u1")
    then = datetime.now(UTC)
    time.sleep(0.01)
    cube.delete([gone.id])
    cube.update(closed.id, valid_to=datetime.now(UTC))  # superseded: true until now, not any more
    plan = R.BALANCED.model_copy(update={"name": "all", **ALL})
    q = "Where has Melanie camped?"
    everyone = _ids(cube.search(q, top_k=12, plan=plan))
    assert {t.id for t in theirs} <= set(everyone)  # unscoped, the expansions do find them: the test can fail
    hits = cube.search(q, user_id="u1", top_k=12, plan=plan)
    assert hits and {h.item.user_id for h in hits} == {"u1"} and mine[0].id in _ids(hits)
    assert gone.id not in _ids(hits) and closed.id not in _ids(hits) and gone.id not in everyone
    mem = cube.text_mem  # each leg on its own: the filter is what keeps the second passes in scope
    qvec = mem.embedder.embed_query(q)
    for flt, owners in ((MemoryFilter(), {"u1", "u2"}), (MemoryFilter(user_id="u1"), {"u1"})):
        legs = E.expansion_legs(mem, plan, q, qvec, R.keyword_terms(q), flt, 12, {"dense": mem._dense(qvec, flt, 3)})
        assert set(legs) == {E.DENSE_FEEDBACK, E.TERM_FEEDBACK}
        found = mem.store.get_by_rid([r for leg in legs.values() for r, _ in leg])
        assert {it.user_id for it in found.values()} == owners and gone.id not in {it.id for it in found.values()}
    past = _ids(cube.search(q, user_id="u1", top_k=12, plan=plan, as_of=then))  # time travel: it was true then
    assert closed.id in past and not set(past) & {t.id for t in theirs}
    assert cube.search(q, user_id="u1", top_k=12, plan=plan, as_of=datetime(2000, 1, 1, tzinfo=UTC)) == []


def test_empty_stopword_and_huge_queries_with_every_expansion(cube: MemCube) -> None:
    cube.add(memory=["Melanie took the kids camping in the mountains.", *FILLER], user_id="u1")
    plan = R.BALANCED.model_copy(update={"name": "all", **ALL})
    assert cube.search("", user_id="u1", plan=plan) == [] and cube.search("   ", user_id="u1", plan=plan) == []
    assert len(cube.search("what is the", user_id="u1", top_k=3, plan=plan)) == 3  # dense still answers
    huge = "Where has Melanie camped? " + "lorem ipsum dolor sit amet " * 20_000  # 560k characters
    assert cube.search(huge, user_id="u1", top_k=3, plan=plan)
    with pytest.raises(MemosError):
        cube.search("\ud800 camping", user_id="u1", plan=plan)  # not UTF-8: refused, as without expansion


def test_the_expansion_options_are_typed_and_off_by_default() -> None:
    for bad in ({"feedback_docs": -1}, {"feedback_docs": 51}, {"feedback_dense_weight": -0.5},
                {"feedback_terms": 99}, {"unnamed_weight": -1}, {"feedback_beta": -1}):
        with pytest.raises(ValidationError):
            R.SearchPlan(**bad)  # type: ignore[arg-type]
    assert E.leg_weights(R.SearchPlan()) == dict.fromkeys(E.leg_weights(R.SearchPlan()), 0.0)


def test_the_projected_unnamed_leg_embeds_no_new_text_per_search(cube: MemCube) -> None:
    """balanced's unnamed leg removes the names' directions from the query vector: after a name was
    embedded once, a search embeds only its own query (the 25 ms budget holds one embedding)."""
    cube.add(messages=[{"role": "user", "name": "Caroline", "content": "I have been looking into adoption agencies."},
                       {"role": "user", "name": "Melanie", "content": "Caroline, that is wonderful news!"}],
             user_id="u1", session_id="s1")
    mem = cube.text_mem
    seen: list[str] = []
    inner = mem.embedder.embed_query

    def counting(text: str) -> np.ndarray:
        seen.append(text)
        return inner(text)

    mem.embedder.embed_query = counting  # type: ignore[method-assign]
    try:
        cube.search("What did Caroline research?", user_id="u1", plan=R.BALANCED)
        assert seen == ["What did Caroline research?", "Caroline"]
        seen.clear()
        hits = cube.search("What did Caroline look into?", user_id="u1", plan=R.BALANCED)
        assert seen == ["What did Caroline look into?"] and any(E.UNNAMED in h.ranks for h in hits)
        seen.clear()
        cube.search("What did Caroline look into?", user_id="u1", plan=R.DEEP)  # depth pays a second embedding
        assert seen == ["What did Caroline look into?", "What did they look into?"]
    finally:
        del mem.embedder.embed_query
