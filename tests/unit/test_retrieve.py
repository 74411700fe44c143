"""Retrieval: the pure search-plan functions, and the plans on a real cube (hybrid legs, time awareness,
graph expansion, MMR, and the exact and ANN dense paths agreeing)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, VectorConfig
from memos_integrations.textual import retrieve as R
from memos_integrations.textual.filters import MemoryFilter

UTC = timezone.utc
NOW = datetime(2023, 5, 17, 12, 0, tzinfo=UTC)  # a Wednesday


# -- pure functions -------------------------------------------------------------------------------
def test_keyword_query_keeps_content_words_quoted() -> None:
    assert R.keyword_query("When did Caroline's dog go to the vet?") == '"caroline" OR "dog" OR "vet"'
    assert R.keyword_query("what is it?") is None
    # FTS5 syntax in a user's query is quoted, never interpreted
    assert R.keyword_query('NEAR("a" bb) AND x*') == '"near" OR "bb"'


def test_rrf_fuses_ranks_with_weights() -> None:
    scores = R.rrf({"dense": [1, 2, 3], "keyword": [3, 1]}, {"dense": 1.0, "keyword": 2.0}, 60)
    assert scores[1] == pytest.approx(1 / 61 + 2 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 2 / 61)
    assert max(scores, key=scores.get) == 3


@pytest.mark.parametrize(
    "query, start, end, asks_when",
    [
        ("what did we plan last week?", "2023-05-08", "2023-05-14", False),
        ("What happened in May 2023?", "2023-05-01", "2023-05-31", False),
        ("anything in december 2022", "2022-12-01", "2022-12-31", False),
        ("what did I do during 2021", "2021-01-01", "2021-12-31", False),
        ("what did I eat yesterday", "2023-05-16", "2023-05-16", False),
        ("When did Caroline go to the support group?", None, None, True),
        ("tell me about tea", None, None, False),
    ],
)
def test_time_hint(query: str, start: str | None, end: str | None, asks_when: bool) -> None:
    hint = R.time_hint(query, NOW)
    assert (hint.start.date().isoformat() if hint.start else None) == start
    assert (hint.end.date().isoformat() if hint.end else None) == end
    assert hint.asks_when is asks_when


def test_apply_time_boosts_items_in_the_period_and_items_with_a_time_for_when() -> None:
    hint = R.time_hint("what happened last week", NOW)
    inside, outside = datetime(2023, 5, 10, tzinfo=UTC).timestamp(), datetime(2023, 4, 1, tzinfo=UTC).timestamp()
    out = R.apply_time({1: 1.0, 2: 1.0, 3: 1.0}, hint, {1: (inside, False), 2: (outside, False), 3: (None, False)}, 0.5)
    assert out == {1: 1.5, 2: 1.0, 3: 1.0}
    when = R.time_hint("when did it happen", NOW)
    assert R.apply_time({1: 1.0, 2: 1.0}, when, {1: (None, True), 2: (None, False)}, 0.5) == {1: 1.1, 2: 1.0}
    assert R.apply_time({1: 1.0}, hint, {1: (inside, False)}, 0.0) == {1: 1.0}


def test_expand_adds_neighbours_at_a_share_of_their_seed() -> None:
    out = R.expand({1: 1.0, 2: 0.1}, {3: (1, 1.0), 2: (1, 0.5)}, 0.5)
    assert out == {1: 1.0, 2: 0.25, 3: 0.5}
    assert R.expand({1: 1.0, 2: 0.9}, {2: (1, 1.0)}, 0.5)[2] == 0.9  # never lowers a score


def test_mmr_prefers_diverse_results() -> None:
    v = {1: np.array([1.0, 0.0]), 2: np.array([1.0, 0.0]), 3: np.array([0.0, 1.0])}
    rel = {1: 1.0, 2: 0.99, 3: 0.8}
    assert R.mmr([1, 2, 3], v, rel, 1.0, 3) == [1, 2, 3]  # relevance only
    assert R.mmr([1, 2, 3], v, rel, 0.5, 2) == [1, 3]  # the duplicate gives way


def test_plans_are_typed_named_and_validated() -> None:
    assert R.plan_named(None) is R.BALANCED and R.plan_named("deep") is R.DEEP
    assert R.FAST.keyword is False and R.DEEP.graph_hops == 1 and R.DEEP.coarse_to_fine and R.MULTIHOP.graph_seeds == 10
    assert R.BALANCED.graph_hops == 1 and R.BALANCED.dense_weight < R.BALANCED.keyword_weight
    with pytest.raises(ValidationError):
        R.SearchPlan(candidates=0)
    with pytest.raises(ValidationError):
        R.SearchPlan(mmr_lambda=1.5)
    with pytest.raises(ValidationError):
        R.SearchPlan(turbo=True)
    with pytest.raises(ValidationError):
        R.BALANCED.candidates = 5  # type: ignore[misc]  # presets are frozen


# -- plans on a real cube --------------------------------------------------------------------------
CONVERSATION = [
    # The fast reader indexes each turn with the turn before it, so the words of a turn also find the
    # next one; the turns the tests below look for are the last of their session for that reason.
    ("D1:1", "Caroline", "Hey Mel! I just got back from the LGBTQ support group meeting.", "1:56 pm on 8 May, 2023"),
    ("D1:2", "Melanie", "Oh wow, how was it?", "1:56 pm on 8 May, 2023"),
    ("D1:3", "Caroline", "It was really powerful, everyone shared their transgender stories.", "1:56 pm on 8 May, 2023"),
    ("D2:1", "Melanie", "I took my kids to the beach and we built sandcastles.", "10:37 am on 27 June, 2023"),
    ("D2:2", "Caroline", "That sounds lovely! My sister visited me as well.", "10:37 am on 27 June, 2023"),
    ("D2:3", "Melanie", "We adopted a puppy and named it Zorblax-7.", "10:37 am on 27 June, 2023"),
    ("D3:1", "Caroline", "I painted a sunrise over the lake for my art class.", "8:15 pm on 3 August, 2023"),
    ("D3:2", "Melanie", "I ran a charity race to raise money for the shelter.", "8:15 pm on 3 August, 2023"),
    ("D3:3", "Melanie", "My automobile broke down on the highway yesterday.", "8:15 pm on 3 August, 2023"),
]


@pytest.fixture(scope="module")
def convo(tmp_path_factory, embedder):  # type: ignore[no-untyped-def]
    cube = MemCube.init_from_dir(tmp_path_factory.mktemp("retrieve") / "cube", embedder=embedder)
    by_source = {}
    for session in ("D1", "D2", "D3"):
        turns = [t for t in CONVERSATION if t[0].startswith(session)]
        items = cube.add(messages=[{"role": "user", "name": n, "content": c, "id": i} for i, n, c, _ in turns],
                         user_id="pair", session_id=session, timestamp=turns[0][3])
        by_source.update({it.sources[0]: it for it in items})
    # distractors that share no words with the queries below
    cube.add(memory=[f"Filler note number {n} about spreadsheets and quarterly invoices." for n in range(20)],
             user_id="pair")
    yield cube, by_source
    cube.close()


def _ids(hits):  # type: ignore[no-untyped-def]
    return [h.item.sources[0] if h.item.sources else h.item.text for h in hits]


def test_keyword_only_match_is_found_by_the_keyword_leg(convo) -> None:  # type: ignore[no-untyped-def]
    cube, _ = convo
    hits = cube.search("Zorblax-7", user_id="pair", top_k=3)
    assert _ids(hits)[0] == "D2:3" and hits[0].ranks["keyword"] == 1
    dense_only = R.BALANCED.model_copy(update={"keyword": False})
    assert "keyword" not in cube.search("Zorblax-7", user_id="pair", plan=dense_only)[0].ranks


def test_meaning_only_match_is_found_by_the_dense_leg(convo) -> None:  # type: ignore[no-untyped-def]
    cube, _ = convo
    hits = cube.search("car trouble on the motorway", user_id="pair", top_k=3)
    assert _ids(hits)[0] == "D3:3"
    assert "keyword" not in hits[0].ranks and hits[0].ranks["dense"] == 1
    keyword_only = R.BALANCED.model_copy(update={"dense": False})
    assert "D3:3" not in _ids(cube.search("car trouble on the motorway", user_id="pair", plan=keyword_only))


def test_hits_are_sorted_by_score_and_carry_sources_and_times(convo) -> None:  # type: ignore[no-untyped-def]
    cube, _ = convo
    hits = cube.search("support group", user_id="pair", top_k=5)
    assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].item.event_time == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert cube.search("support group", user_id="someone-else") == []


@pytest.mark.parametrize("plan", ["fast", "balanced", "deep"])
def test_every_preset_finds_the_obvious_answer(convo, plan: str) -> None:  # type: ignore[no-untyped-def]
    cube, _ = convo
    hits = cube.search("Who built sandcastles at the beach with the kids?", user_id="pair", top_k=3, plan=plan)
    assert _ids(hits)[0] == "D2:1"
    assert len(hits) == 3


def test_graph_expansion_returns_the_neighbouring_turn(convo) -> None:  # type: ignore[no-untyped-def]
    cube, _ = convo
    # "Oh wow, how was it?" (D1:2) shares no word with the query; only the graph brings it in
    query = "transgender stories"
    no_graph = R.BALANCED.model_copy(update={"dense": False, "graph_hops": 0})
    with_graph = no_graph.model_copy(update={"graph_hops": 1})
    assert "D1:2" not in _ids(cube.search(query, user_id="pair", plan=no_graph, top_k=5))
    hits = cube.search(query, user_id="pair", plan=with_graph, top_k=5)
    assert _ids(hits)[0] == "D1:3" and "D1:2" in _ids(hits)
    expanded = next(h for h in hits if _ids([h]) == ["D1:2"])
    assert expanded.ranks == {} and 0 < expanded.score <= hits[0].score * with_graph.graph_weight + 1e-12
    # neighbours obey the filter too: another user's scope stays closed
    assert cube.search(query, user_id="nobody", plan=with_graph) == []


def test_time_aware_boost_for_a_named_period(convo) -> None:  # type: ignore[no-untyped-def]
    cube, _ = convo
    # the time boost alone (the speaker boost would lift Caroline's turns of every month too)
    timeless = R.BALANCED.model_copy(update={"time_aware": False, "speaker_boost": 0.0})
    strong = R.BALANCED.model_copy(update={"time_boost": 2.0, "speaker_boost": 0.0})
    query = "what did Caroline do in August 2023?"
    top_plain = _ids(cube.search(query, user_id="pair", plan=timeless, top_k=3))
    top_timed = _ids(cube.search(query, user_id="pair", plan=strong, top_k=3))
    assert all(t.startswith("D3") for t in top_timed), top_timed  # the three August turns
    assert not all(t.startswith("D3") for t in top_plain), "the period, not the words, must make the difference"
    # "last week", resolved against a given now: on Wed 5 July 2023 it is 26 June - 2 July (session D2)
    query = "what happened last week"
    hits = _ids(cube.search(query, user_id="pair", plan=strong, now=datetime(2023, 7, 5, tzinfo=UTC), top_k=3))
    assert all(t.startswith("D2") for t in hits), hits
    assert not all(t.startswith("D2") for t in _ids(cube.search(query, user_id="pair", plan=timeless, top_k=3)))


def test_mmr_drops_near_duplicates(tmp_path, embedder) -> None:  # type: ignore[no-untyped-def]
    with MemCube.init_from_dir(tmp_path / "mmr", embedder=embedder) as cube:
        cube.add(memory=["Gina loves hiking in the Alps.", "Gina loves hiking in the Alps!",
                         "Gina loves hiking in the Alps mountains.", "Gina also plays jazz piano."])
        relevance_only = R.SearchPlan(name="dense", keyword=False, time_aware=False)
        plain = cube.search("Does Gina like hiking?", top_k=2, plan=relevance_only)
        diverse = cube.search("Does Gina like hiking?", top_k=2, plan=relevance_only.model_copy(update={"mmr_lambda": 0.3}))
        assert sum("Alps" in h.item.text for h in plain) == 2
        assert {("Alps" in h.item.text) for h in diverse} == {True, False}


def test_query_vector_without_text_searches_dense_only(convo, embedder) -> None:  # type: ignore[no-untyped-def]
    cube, _ = convo
    vec = embedder.embed_query("adopting a dog")
    hits = cube.search("", query_vector=vec, user_id="pair", top_k=1)
    assert _ids(hits) == ["D2:3"] and set(hits[0].ranks) == {"dense"}


def test_exact_and_ann_dense_paths_agree(convo, tmp_path, embedder) -> None:  # type: ignore[no-untyped-def]
    cube, _ = convo
    ann = cube.clone(tmp_path / "ann")
    ann.close()
    header_config = CubeConfig(cube_id="ann", vector=VectorConfig(exact_search_max=0))
    # reopen the copy with exact search switched off: every dense query goes to Chroma
    import json

    header = json.loads((tmp_path / "ann" / "cube.json").read_text())
    header["config"] = header_config.to_json_dict()
    (tmp_path / "ann" / "cube.json").write_text(json.dumps(header))
    with MemCube.open(tmp_path / "ann", embedder=embedder) as ann:
        assert ann.text_mem.exact_search_max == 0
        dense = R.BALANCED.model_copy(update={"keyword": False, "time_aware": False})
        for query, flt in [
            ("puppy", MemoryFilter(user_id="pair")),
            ("beach day with children", MemoryFilter(session_id="D2")),
            ("invoices", MemoryFilter(kinds=["fact"])),
            ("art class painting", MemoryFilter(user_id="pair", metadata={"speaker": "Caroline"})),
            ("anything", MemoryFilter(user_id="nobody")),
        ]:
            qv = embedder.embed_query(query)
            exact = cube.text_mem._dense(qv, flt, 8)
            approx = ann.text_mem._dense(qv, flt, 8)
            exact_ids = [cube.store.get_by_rid([r])[r].id for r, _ in exact]
            approx_ids = [ann.store.get_by_rid([r])[r].id for r, _ in approx]
            assert approx_ids == exact_ids, query
            np.testing.assert_allclose([s for _, s in approx], [s for _, s in exact], atol=1e-4)
            a = [h.item.id for h in ann.search(query, filter=flt, plan=dense, top_k=5)] if query != "anything" else []
            e = [h.item.id for h in cube.search(query, filter=flt, plan=dense, top_k=5)] if query != "anything" else []
            assert a == e


def test_mmr_never_returns_fewer_than_top_k_when_there_are_more(tmp_path, embedder) -> None:  # type: ignore[no-untyped-def]
    with MemCube.init_from_dir(tmp_path / "many", embedder=embedder) as cube:
        cube.add(memory=[f"Note {i}: a distinct fact about topic {i} and gardening." for i in range(45)])
        for plan in ("balanced", "deep"):  # deep re-ranks with MMR over a pool of 30 by default
            assert len(cube.search("gardening facts", top_k=40, plan=plan)) == 40
