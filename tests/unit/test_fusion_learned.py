"""The learned re-scorer (``SearchPlan(fusion="learned")``, textual/fusion_learned.py): it re-orders
only what the plan's legs found under the search's filter, it is deterministic, and its weights
are constants in the module (no file read). Small real cubes (MiniLM, SQLite)."""

from __future__ import annotations

import builtins
import importlib
import io
import pathlib
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from memos_integrations import MemCube
from memos_integrations.errors import InvalidInputError
from memos_integrations.items import Edge, Kind, MemoryItem
from memos_integrations.textual import fusion_features as F
from memos_integrations.textual import fusion_learned as FL
from memos_integrations.textual import retrieve as R

LEARNED = R.BALANCED.model_copy(update={"name": "learned", "fusion": "learned"})

CHAT = [
    ("Melanie", "Caroline, I researched adoption agencies for my cousin."),
    ("Caroline", "I spent the spring reading about how to adopt a child."),
    ("Melanie", "Bye Caroline!"),
    ("Caroline", "I went to an adoption agency interview last week and it went well."),
    ("Caroline", "My dog barked all night, so I slept badly."),
    ("Melanie", "I love painting landscapes and pottery classes with my kids."),
]


def _chat(cube: MemCube, chat: list[tuple[str, str]], user: str = "u1", session: str = "s1") -> list[str]:
    msgs = [{"role": "user", "name": w, "content": t, "id": f"{user}-{session}-{n}"} for n, (w, t) in enumerate(chat)]
    return [it.id for it in cube.add(messages=msgs, user_id=user, session_id=session, timestamp="2023-05-08T10:00:00Z")]


def _ids(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.item.id for h in hits]


def test_the_weights_are_constants_of_the_module_and_name_known_features(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_files(*a, **kw):  # type: ignore[no-untyped-def]
        raise AssertionError(f"the re-scorer read a file: {a!r}")

    for owner, name in ((builtins, "open"), (io, "open"), (pathlib.Path, "open"), (np, "load"), (np, "loadtxt")):
        monkeypatch.setattr(owner, name, no_files)
    importlib.reload(FL)  # loading the weights opens nothing
    monkeypatch.undo()
    assert set(FL.WEIGHTS) <= set(F.NAMES) and FL.weight_vector().shape == (len(F.NAMES),)
    assert all(np.isfinite(v) for v in FL.WEIGHTS.values())
    with pytest.raises(InvalidInputError, match="unknown re-scorer features"):
        FL.weight_vector({"not_a_feature": 1.0})
    with pytest.raises(ValidationError):
        R.SearchPlan(fusion="fitted")  # type: ignore[arg-type]


def test_the_learned_plan_reorders_the_plans_own_hits_deterministically(cube: MemCube) -> None:
    ids = _chat(cube, CHAT)
    q = "What has Caroline done about adoption?"
    plain = cube.search(q, user_id="u1", top_k=6, plan=R.BALANCED)
    runs = [[(h.item.id, h.score, h.ranks) for h in cube.search(q, user_id="u1", top_k=6, plan=LEARNED)]
            for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    assert {i for i, _, _ in runs[0]} == set(_ids(plain)) <= set(ids)  # re-ordered, nothing new, nothing lost
    scores = [s for _, s, _ in runs[0]]
    assert scores == sorted(scores, reverse=True) and all(0.0 < s < 1.0 for s in scores)
    # the features, for the record: one row per candidate, the same twice
    order = [1, 2, 3]
    scored = {"dense": [(1, 0.9), (3, 0.5)], "keyword": [(2, 4.0), (1, 1.0)]}
    X = F.features("What books has Jon read?", F.candidates(order, scored), order, {1: 3.0, 2: 2.0, 3: 1.0}, scored, {})
    assert X.shape == (3, len(F.NAMES)) and np.array_equal(X, F.features(
        "What books has Jon read?", [1, 2, 3], order, {1: 3.0, 2: 2.0, 3: 1.0}, scored, {}))
    assert X[:, F.NAMES.index("list")].tolist() == [1.0, 1.0, 1.0]


def test_the_learned_plan_never_reaches_another_user_a_deleted_or_a_superseded_memory(cube: MemCube) -> None:
    mine = _chat(cube, CHAT)
    theirs = _chat(cube, [("Caroline", "I researched adoption agencies and an adoption lawyer."),
                          ("Caroline", "Researching adoption agencies took me weeks.")], user="u2")
    gone, closed = _chat(cube, [("Caroline", "Adoption agencies research: my notes."),
                                ("Caroline", "My adoption agency research is done.")], session="s2")
    then = datetime.now(UTC)
    time.sleep(0.01)
    cube.delete([gone])
    cube.update(closed, valid_to=datetime.now(UTC))  # superseded: true until now, not any more
    q = "What has Caroline researched about adoption agencies?"
    everyone = _ids(cube.search(q, top_k=12, plan=LEARNED))
    assert set(theirs) <= set(everyone)  # unscoped, it does find them: the test can fail
    hits = cube.search(q, user_id="u1", top_k=12, plan=LEARNED)
    assert hits and {h.item.user_id for h in hits} == {"u1"} and set(_ids(hits)) <= set(mine)
    assert gone not in everyone and closed not in everyone
    past = _ids(cube.search(q, user_id="u1", top_k=12, plan=LEARNED, as_of=then))  # it was true then
    assert closed in past and not set(past) & set(theirs)
    assert cube.search(q, user_id="u1", top_k=12, plan=LEARNED, as_of=datetime(2000, 1, 1, tzinfo=UTC)) == []
    assert cube.search("", user_id="u1", plan=LEARNED) == []
    only = cube.search(q, user_id="u1", top_k=12, plan=LEARNED, metadata={"speaker": "Melanie"})
    assert only and {h.item.metadata["speaker"] for h in only} == {"Melanie"}


def test_the_learned_plan_keeps_working_memory_first_and_ranks_a_cube_without_speakers(cube: MemCube) -> None:
    cube.add(memory=["The user prefers window seats on trains.", "Train tickets to Lyon cost 40 euros."], user_id="u1")
    work = cube.add(memory=["Current task: find a train from Paris to Lyon on Friday."], user_id="u1",
                    session_id="s1", metadata={"partition": "working"})[0]
    plan = LEARNED.model_copy(update={"working_first": 1})
    hits = cube.search("train seats", user_id="u1", top_k=3, plan=plan, current_session="s1")
    assert hits[0].item.id == work.id and "working" in hits[0].ranks
    assert len(cube.search("train seats", user_id="u1", top_k=50, plan=LEARNED)) == 3  # facts only, all found
    assert len(cube.search("train seats", user_id="u1", top_k=1, plan=LEARNED)) == 1


def test_learned_over_the_shape_legs_stays_in_scope_and_serves_no_summary(cube: MemCube) -> None:
    mine = _chat(cube, [("Ana", "Jon and I planned a beach holiday on an island."),
                        ("Ana", "We booked a ferry to the island for the holiday.")])
    theirs = _chat(cube, [("Jon", "Jon booked the island ferry for the beach holiday."), ("Jon", "Jon packed snorkels.")],
                   user="u2")
    # a summary of u1 that (wrongly) lists u2's items, and a link across users: neither may leak
    summary = MemoryItem(text="Beach holiday on an island with Jon.", kind=Kind.SUMMARY, user_id="u1",
                         sources=[*mine, *theirs], metadata={"summary": "topic", "members": 4})
    cube.add_items([summary], [Edge(m, summary.id, "summarized_by") for m in (*mine, *theirs)])
    cube.relate(mine[0], theirs[0], "same_entity", entity="Jon")
    for base in (R.DEEP, R.MULTIHOP):
        plan = base.model_copy(update={"fusion": "learned"})
        hits = cube.search("Jon beach holiday island ferry", user_id="u1", top_k=10, plan=plan, current_session="s1")
        assert hits and {h.item.id for h in hits} <= set(mine), base.name
        assert all(h.item.kind != Kind.SUMMARY for h in hits)
        everyone = cube.search("Jon beach holiday island ferry", top_k=10, plan=plan, current_session="s1")
        assert set(theirs) & {h.item.id for h in everyone}  # unscoped they are found: the test can fail


def _item(speaker: str, session: str, text: str = "I went swimming and camping.") -> MemoryItem:
    return MemoryItem(text=text, user_id="u1", session_id=session, metadata={"speaker": speaker})


def test_a_list_question_is_read_deeper_and_by_its_own_weights_and_only_what_the_legs_found() -> None:
    # list questions: LIST_WINDOW deep, which the preset's legs give, and LIST_WEIGHTS; the rest as before
    assert F.window("What books has Jon read?") == F.LIST_WINDOW == R.LEARNED.candidates > F.WINDOW
    assert F.window("When did Jon read?") == F.WINDOW and F.PER_SESSION == 0
    assert set(FL.LIST_WEIGHTS) <= set(F.NAMES) and FL.LIST_WEIGHTS != FL.WEIGHTS
    off = {"list_sess_first", "list_sess_best", "peer_cos", "list_peer_cos"}  # measured, not shipped
    assert not off & (set(FL.WEIGHTS) | set(FL.LIST_WEIGHTS))
    assert not {n for n in FL.LIST_WEIGHTS if n.startswith("list")}  # folded: list is the bias there
    order = list(range(1, 201))
    scored = {"dense": [(r, 1.0 - r / 1000) for r in order], "keyword": [(500, 9.0), (3, 1.0)]}
    assert F.candidates(order, scored, 120) == order[:120]  # 500 was never placed by the plan: not a candidate
    assert F.candidates(order, scored, 10, extra=[150, 999])[-1] == 150  # extra: only rows the plan scored
    # per session: the named speaker's dense hits ranked within their session, best session first
    items = {1: _item("Mel", "s1"), 2: _item("Jon", "s1"), 3: _item("Mel", "s1"), 4: _item("Mel", "s2")}
    dense = {"dense": [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.5)]}
    ranks = F.session_ranks("What activities does Mel do?", dense, items)
    assert ranks == {1: (1, 0.0), 3: (2, pytest.approx(0.0)), 4: (1, pytest.approx(-0.4))}
    assert F.session_ranks("What does Mel do on Fridays?", dense, items) == {}  # not a list question
    assert F.session_ranks("What activities do Mel and Jon share?", dense, items) == {}  # names everyone
    X = F.features("What activities does Mel do?", [1, 4], [1, 4], {1: 2.0, 4: 1.0}, dense, items, ranks)
    assert X[:, F.NAMES.index("list_sess_first")].tolist() == [1.0, 1.0]
    assert X[:, F.NAMES.index("list_sess_best")].tolist() == pytest.approx([1.0, 0.6])
    # peers: the cosine to the mean of the fused order's first five (unit vectors)
    peers = F.peer_cosines([1, 2], [1, 2], [1, 2], np.array([[1.0, 0.0], [0.0, 2.0]]))
    assert peers == pytest.approx({1: 2**-0.5, 2: 2**-0.5})
    assert F.peer_cosines([1], [1], [], np.zeros((0, 2))) == {}


def test_per_session_candidates_stay_in_the_searchs_scope(cube: MemCube, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _chat(cube, CHAT) + _chat(cube, [("Melanie", "We went camping at the beach."),
                                            ("Caroline", "Bye Mel!")], session="s2")
    theirs = _chat(cube, [("Melanie", "I love camping, pottery and swimming."),
                          ("Caroline", "Camping sounds fun.")], user="u2", session="s3")
    q = "What activities does Melanie partake in?"
    for per_session, window in ((0, F.LIST_WINDOW), (2, 3)):  # as shipped (read 100 deep); per session (off)
        monkeypatch.setattr(F, "PER_SESSION", per_session)
        monkeypatch.setattr(F, "LIST_WINDOW", window)
        assert set(theirs) & set(_ids(cube.search(q, top_k=12, plan=R.LEARNED)))  # unscoped they are found
        hits = cube.search(q, user_id="u1", top_k=12, plan=R.LEARNED)
        assert hits and set(_ids(hits)) <= set(mine)
        assert len(_ids(hits)) == len(set(_ids(hits)))  # a row added per session is not listed twice


def test_rescore_picks_the_list_weights_for_a_list_question(monkeypatch: pytest.MonkeyPatch) -> None:
    order = list(range(1, 121))
    scored = {"dense": [(r, 1.0 - r / 1000) for r in order]}
    rows = {r: _item("Mel" if r % 2 else "Jon", f"s{r % 7}") for r in order}
    read: list[int] = []

    def ones(query, cands, *rest):  # type: ignore[no-untyped-def]
        read.append(len(cands))
        return np.ones((len(cands), len(F.NAMES)))

    monkeypatch.setattr(F, "features", ones)
    monkeypatch.setattr(FL, "_W", np.zeros(len(F.NAMES)))  # logit 0: probability 0.5
    monkeypatch.setattr(FL, "_WL", np.full(len(F.NAMES), 0.5))  # logit large: probability near 1
    top = {}
    for q in ("What activities does Mel do?", "Where does Mel live?"):
        scores = {r: 1.0 / r for r in order}
        out = FL.rescore(q, list(order), scores, scored, lambda rids: {r: rows[r] for r in rids}, R.LEARNED)
        assert sorted(out) == order and out[:3] == order[:3]  # the same rows; ties keep the plan's order
        top[q] = scores[out[0]]
    assert read == [F.LIST_WINDOW, F.WINDOW]  # a list question is read deeper
    assert top["Where does Mel live?"] == 0.5 and top["What activities does Mel do?"] > 0.99


def test_next_fused_reads_only_the_next_turn_of_the_same_session_among_the_candidates() -> None:
    # 10 and 11 follow each other in s1; 12 is s2's (another session); 21 follows 20 but is no candidate
    items = {10: _item("Mel", "s1"), 11: _item("Jon", "s1"), 12: _item("Mel", "s2"), 20: _item("Mel", "s1")}
    scores = {10: 4.0, 11: 2.0, 12: 1.0, 20: 1.0, 21: 8.0}
    scored = {"dense": [(r, 0.5) for r in (10, 11, 12, 20)]}
    X = F.features("Where does Mel live?", [10, 11, 12, 20], [10, 11, 12, 20, 21], scores, scored, items)
    assert X[:, F.NAMES.index("next_fused")].tolist() == [0.5, 0.0, 0.0, 0.0]  # 11's score / the best (10's)
    assert {"next_fused"} <= set(FL.WEIGHTS) & set(FL.LIST_WEIGHTS)
