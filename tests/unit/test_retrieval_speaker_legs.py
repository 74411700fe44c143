"""Questions about one person's life over many sessions (issue 14, textual/speaker_legs.py): legs
restricted to the named speaker's turns, the keyword leg without the names, the content prior and
the list spread. Small real cubes (MiniLM, SQLite); the pure parts are in speaker_legs' doctests."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from memos_integrations import MemCube
from memos_integrations.textual import retrieve as R
from memos_integrations.textual import speaker_legs as K
from memos_integrations.textual.filters import MemoryFilter

#: every option of the module at once
ALL = dict(speaker_dense_weight=1.0, speaker_keyword_weight=1.0, keyword_unnamed=True, list_spread=1,
           content_prior=8)


def _ids(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.item.id for h in hits]


def _chat(cube: MemCube, chat: list[tuple[str, str]], user: str = "u1", session: str = "s1",
          when: str = "2023-05-08T10:00:00Z") -> list[str]:
    msgs = [{"role": "user", "name": w, "content": t, "id": f"{user}-{session}-{n}"} for n, (w, t) in enumerate(chat)]
    return [it.id for it in cube.add(messages=msgs, user_id=user, session_id=session, timestamp=when)]


ADOPTION = [
    ("Melanie", "Caroline, I researched adoption agencies for my cousin."),
    ("Melanie", "Caroline, adoption agencies near us have long waiting lists, I researched them."),
    ("Melanie", "Caroline, I researched adoption agencies and their interviews."),
    ("Melanie", "Caroline, the adoption agency research for my cousin is done."),
    ("Caroline", "I spent the spring reading about how to adopt a child."),
    ("Caroline", "My dog barked all night, so I slept badly."),
]


def test_the_speaker_dense_leg_finds_the_named_persons_turn_beyond_the_global_pool(cube: MemCube) -> None:
    ids = _chat(cube, ADOPTION)
    theirs = ids[4]
    off = R.SearchPlan(name="off", keyword=False, time_aware=False, candidates=2)
    q = "What has Caroline researched about adoption agencies?"
    assert theirs not in _ids(cube.search(q, user_id="u1", top_k=2, plan=off))  # the other speaker fills the pool
    on = off.model_copy(update={"speaker_dense_weight": 1.0})
    hits = cube.search(q, user_id="u1", top_k=2, plan=on)
    assert theirs in _ids(hits) and set(hits[_ids(hits).index(theirs)].ranks) == {K.SPEAKER_DENSE}
    # naming both speakers narrows nothing: no speaker leg
    both = cube.search("What have Caroline and Melanie said about adoption?", user_id="u1", plan=on)
    assert not any(K.SPEAKER_DENSE in h.ranks for h in both)


def test_the_keyword_leg_without_names_stops_ranking_small_talk_by_the_name(cube: MemCube) -> None:
    ids = _chat(cube, [("Melanie", "Bye Caroline!"), ("Melanie", "Thanks Caroline!"), ("Melanie", "My kids love the museum."),
                       ("Caroline", "I did some research on adoption agencies and counselling courses this month.")])
    off = R.SearchPlan(name="off", dense=False, time_aware=False)
    q = "What did Caroline research?"
    assert {ids[0], ids[1]} <= set(_ids(cube.search(q, user_id="u1", top_k=4, plan=off)))  # matched by the name
    on = off.model_copy(update={"keyword_unnamed": True})
    assert _ids(cube.search(q, user_id="u1", top_k=4, plan=on)) == [ids[3]]  # only the word "research" matches now
    keyword_only = off.model_copy(update={"speaker_keyword_weight": 1.0, "keyword_weight": 0.0})
    hits = cube.search("What did Melanie say about the museum?", user_id="u1", top_k=4, plan=keyword_only)
    assert _ids(hits)[0] == ids[2] and K.SPEAKER_KEYWORD in hits[0].ranks


def test_the_content_prior_scales_small_talk_down_for_a_list_question(cube: MemCube) -> None:
    ids = _chat(cube, [("Melanie", "Love you, bye!"),
                       ("Melanie", "I love painting landscapes and pottery classes with my kids on quiet weekends.")])
    off = R.SearchPlan(name="off", dense=False, time_aware=False)
    on = off.model_copy(update={"content_prior": 8})
    q = "What things does Melanie love?"  # a list question
    before = {h.item.id: h.score for h in cube.search(q, user_id="u1", plan=off)}
    assert max(before, key=lambda i: before[i]) == ids[0]  # BM25 favours the short turn
    hits = cube.search(q, user_id="u1", plan=on)
    assert _ids(hits) == [ids[1], ids[0]]
    assert hits[1].score == pytest.approx(before[ids[0]] * 2 / 8)  # "love", "bye": 2 of 8 (no stop words, no names)
    assert hits[0].score == pytest.approx(before[ids[1]])  # enough content words: unchanged
    fact = cube.add(memory=["Melanie loves kayaks."], user_id="u1")[0]  # no speaker: a short fact is content
    assert next(h.score for h in cube.search(q, user_id="u1", plan=on) if h.item.id == fact.id) == \
        next(h.score for h in cube.search(q, user_id="u1", plan=off) if h.item.id == fact.id)
    one = "What does Melanie love?"  # one answer, which a short turn may give: unchanged
    assert [(h.item.id, h.score) for h in cube.search(one, user_id="u1", plan=on)] == \
        [(h.item.id, h.score) for h in cube.search(one, user_id="u1", plan=off)]


def test_the_list_spread_puts_one_hit_per_session_first_for_a_list_question(cube: MemCube) -> None:
    books = [("Melanie", f"I read another novel by the lake, book number {n}, about {t}.")
             for n, t in enumerate(("dragons", "sailors", "gardens"))]
    s1 = _chat(cube, books, session="s1")
    s2 = _chat(cube, [("Melanie", "At the library I borrowed a novel about a lighthouse keeper.")], session="s2",
               when="2023-06-08T10:00:00Z")
    off = R.SearchPlan(name="off", time_aware=False, dense_weight=0.5)
    on = off.model_copy(update={"list_spread": 1})
    q = "What books has Melanie read?"
    assert K.asks_for_list(q)
    plain = cube.search(q, user_id="u1", top_k=4, plan=off)
    assert [h.item.session_id for h in plain[:2]] == ["s1", "s1"]  # one session leads: the test can fail
    spread = cube.search(q, user_id="u1", top_k=4, plan=on)
    assert sorted(h.item.session_id for h in spread[:2]) == ["s1", "s2"]
    assert set(_ids(spread)) == {*s1, *s2}  # moved, not dropped
    single = "What book did Melanie read by the lake?"  # not a list: unchanged
    assert _ids(cube.search(single, user_id="u1", top_k=4, plan=on)) == _ids(cube.search(single, user_id="u1", top_k=4, plan=off))


def test_the_speaker_legs_never_reach_another_user_a_deleted_or_a_superseded_memory(cube: MemCube) -> None:
    mine = _chat(cube, ADOPTION)
    theirs = _chat(cube, [("Caroline", "I researched adoption agencies and an adoption lawyer."),
                          ("Caroline", "Researching adoption agencies took me weeks.")], user="u2")
    gone, closed = _chat(cube, [("Caroline", "Adoption agencies research: my notes."),
                                ("Caroline", "My adoption agency research is done.")], session="s2")
    then = datetime.now(UTC)
    time.sleep(0.01)
    cube.delete([gone])
    cube.update(closed, valid_to=datetime.now(UTC))  # superseded: true until now, not any more
    plan = R.BALANCED.model_copy(update={"name": "all", **ALL})
    q = "What has Caroline researched about adoption agencies?"
    everyone = _ids(cube.search(q, top_k=12, plan=plan))
    assert set(theirs) <= set(everyone)  # unscoped, the legs do find them: the test can fail
    hits = cube.search(q, user_id="u1", top_k=12, plan=plan)
    assert hits and {h.item.user_id for h in hits} == {"u1"} and mine[4] in _ids(hits)
    assert gone not in _ids(hits) and closed not in _ids(hits) and gone not in everyone
    mem = cube.text_mem  # each leg on its own: the filter is what keeps them in scope
    qvec = mem.embedder.embed_query(q)
    for flt, owners in ((MemoryFilter(), {"u1", "u2"}), (MemoryFilter(user_id="u1"), {"u1"})):
        first = {"dense": mem._dense(qvec, flt, 6), "keyword": mem.store.keyword_search(R.keyword_terms(q), flt, 6)}
        legs = K.speaker_legs(mem, plan, q, qvec, R.keyword_terms(q), flt, 12, first)
        assert set(legs) == {K.SPEAKER_DENSE, K.SPEAKER_KEYWORD, "keyword"}
        found = mem.store.get_by_rid([r for leg in legs.values() for r, _ in leg])
        assert {it.user_id for it in found.values()} == owners and gone not in {it.id for it in found.values()}
        assert {it.metadata["speaker"] for rid, it in found.items()
                if any(rid == r for leg in (K.SPEAKER_DENSE, K.SPEAKER_KEYWORD) for r, _ in legs[leg])} == {"Caroline"}
    past = _ids(cube.search(q, user_id="u1", top_k=12, plan=plan, as_of=then))  # time travel: it was true then
    assert closed in past and not set(past) & set(theirs)
    assert cube.search(q, user_id="u1", top_k=12, plan=plan, as_of=datetime(2000, 1, 1, tzinfo=UTC)) == []
    assert cube.search("", user_id="u1", plan=plan) == [] and cube.search("what is the", user_id="u1", plan=plan)
    huge = "What books has Caroline read? " + "Caroline Melanie lorem ipsum " * 20_000  # 580k characters
    started = time.process_time()
    assert {h.item.user_id for h in cube.search(huge, user_id="u1", top_k=3, plan=plan)} == {"u1"}
    assert time.process_time() - started < 5


def test_the_options_are_typed_and_the_legs_are_off_by_default() -> None:
    for bad in ({"speaker_dense_weight": -1}, {"speaker_keyword_weight": -0.1}, {"list_spread": 0},
                {"content_prior": 0}, {"content_prior": 101}):
        with pytest.raises(ValidationError):
            R.SearchPlan(**bad)  # type: ignore[arg-type]
    plain = R.SearchPlan()
    assert plain.speaker_dense_weight == plain.speaker_keyword_weight == 0 and plain.list_spread is None
    assert not plain.keyword_unnamed and plain.content_prior is None
