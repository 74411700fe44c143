"""A search's query and the text its plan embeds next, in one forward pass (textual/embed_ahead.py): the
vectors are embed_query's bit for bit, the hits are the ones two passes gave, and a wrong guess costs only time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from memos_integrations.textual import embed_ahead as EA
from memos_integrations.textual import expand as E
from memos_integrations.textual.embed import MiniLMEmbedder
from memos_integrations.textual.filters import MemoryFilter
from memos_integrations.textual.retrieve import BALANCED, DEEP, MULTIHOP

TEXTS = ["What did Caroline research?", "What did they research?", "Where has Melanie's family camped?",
         "Where has they family camped?", "x", "?", "Why did Gina decide to start her own clothing store " * 30,
         "What books has Melanie read, and which ones did she recommend to Caroline after the race?"]
QUERIES = ["What did Caroline research?", "What activities does Melanie partake in?", "Where has Melanie camped?",
           "What do Caroline and Melanie both like?", "When did Caroline go to the support group?", "pottery"]
TURNS = [("Caroline", "I went to the LGBTQ support group yesterday."), ("Melanie", "I painted a sunrise last week."),
         ("Caroline", "I'm researching adoption agencies."), ("Melanie", "We went camping in the mountains."),
         ("Caroline", "I signed up for a pottery class."), ("Melanie", "I ran a charity race for mental health.")]


def _fill(cube: Any) -> None:
    for n in range(2):
        cube.add(messages=[{"role": "user", "name": s, "content": t} for s, t in TURNS], user_id="u1",
                 session_id=f"s{n}", timestamp=f"{8 + n} May, 2023")


def _alone(embedder: Any, texts: list[str]) -> np.ndarray:
    return np.stack([embedder.embed_queries([t])[0] for t in texts])


def test_together_is_embed_query_bit_for_bit(embedder: Any, one_torch_thread: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert EA.pair_model(embedder) is not None  # torch, fp32, one thread: the shared pass runs
    assert EA._checked(EA.pair_model(embedder))  # this CPU's products pass the check
    shared: list[Any] = []
    monkeypatch.setattr(EA, "_shared_pass", lambda model, ids, f=EA._shared_pass: shared.append(ids) or f(model, ids))
    for pair in ([TEXTS[0], TEXTS[1]], [TEXTS[2], TEXTS[3]], [TEXTS[6], TEXTS[7]], TEXTS):
        assert np.array_equal(EA.together(embedder, pair), _alone(embedder, pair))
    assert len(shared) == 3  # "x" and "?" (3 tokens) are embedded alone: tiny products round otherwise


def test_together_int8_and_elsewhere_embed_alone(embedder: Any, one_torch_thread: Any) -> None:
    int8 = MiniLMEmbedder(query_precision="int8")
    assert np.array_equal(EA.together(int8, TEXTS[:4]), _alone(int8, TEXTS[:4]))
    import torch

    torch.set_num_threads(2)  # a product's rounding then depends on its rows: not shared, embedded alone
    try:
        assert EA.pair_model(embedder) is None
        embedder.clear_query_cache()  # vectors cached at one thread are not what two threads compute
        assert np.array_equal(EA.together(embedder, TEXTS[:2]), _alone(embedder, TEXTS[:2]))
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("plan", [DEEP, MULTIHOP])
def test_embed_ahead_same_hits_as_two_passes(cube: Any, plan: Any, one_torch_thread: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(cube)
    embedder = cube.text_mem.embedder

    def run() -> list[Any]:
        embedder.clear_query_cache()
        return [[(h.item.id, h.score, h.ranks) for h in cube.search(q, top_k=6, plan=plan, **kw)]
                for q in QUERIES for kw in ({}, {"user_id": "u1"}, {"user_id": "nobody"})]

    shared = run()
    assert any(shared)
    monkeypatch.setattr(EA, "pair_model", lambda embedder: None)  # the path before: one pass per text
    assert run() == shared


def test_embed_ahead_one_pass_per_search_and_cached(cube: Any, one_torch_thread: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(cube)
    embedder = cube.text_mem.embedder
    cube.search("warm the held speakers", plan=DEEP)
    embedder.clear_query_cache()
    passes: list[list[str]] = []
    together = EA.together
    monkeypatch.setattr(EA, "together", lambda e, texts: passes.append(list(texts)) or together(e, texts))
    monkeypatch.setattr(embedder, "embed_queries", _counting(embedder.embed_queries, passes))
    cube.search(QUERIES[0], plan=DEEP)
    assert len(passes) == 1 and len(passes[0]) == 2  # the question and the question without Caroline
    cube.search(QUERIES[0], plan=DEEP)
    assert len(passes) == 1  # both vectors were cached as embed_query caches them
    cube.search(QUERIES[4], plan=DEEP)  # a "when" question embeds no second text
    assert [len(p) for p in passes] == [2, 1]


def test_embed_ahead_wrong_guess_embeds_what_is_needed(cube: Any, one_torch_thread: Any) -> None:
    """The guess (the scope's speakers the query names) is only a guess: the leg asks by exact text."""
    _fill(cube)
    mem = cube.text_mem
    flt = MemoryFilter()
    assert EA.speculate(mem, DEEP, QUERIES[3], flt) == "What do they and they both like?"
    assert EA.speculate(mem, BALANCED, QUERIES[0], flt) is None  # balanced projects the names out: no second text
    assert EA.speculate(mem, DEEP, QUERIES[0], MemoryFilter(user_id="nobody")) is None  # nobody speaks there
    scored = {"dense": [(r, 0.0) for r in mem.store.candidate_rids(MemoryFilter(metadata={"speaker": "Caroline"}), 3)]}
    qvec = mem.embedder.embed_query(QUERIES[3])
    wrong = {"What do they and they both like?": np.zeros(384, dtype=np.float32)}  # never asked for
    legs = E.expansion_legs(mem, DEEP, QUERIES[3], qvec, [], flt, 5, scored, wrong)  # only Caroline is in the hits
    assert legs[E.UNNAMED] == mem._dense(mem.embedder.embed_query("What do they and Melanie both like?"), flt, 5)


def _counting(func: Any, calls: list[list[str]]) -> Any:
    def counted(texts: Any, *a: Any, **kw: Any) -> Any:
        calls.append(list(texts))
        return func(texts, *a, **kw)
    return counted
