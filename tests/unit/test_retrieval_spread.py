"""Plan options for evidence spread over a conversation (issue 14): the speaker a query names, and a
cap on hits per session. Small real cubes (MiniLM, SQLite); the arithmetic is in retrieve's doctests."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from memos_integrations import MemCube
from memos_integrations.textual import retrieve as R

CHAT = [
    ("Jon", "I went hiking in the mountains last weekend."),
    ("Gina", "I went hiking in the mountains last weekend too, it was lovely."),
    ("Gina", "My clothing store had a busy week."),
    ("Jon", "My dance studio is finally busy."),
]


def _chat(cube: MemCube) -> dict[str, str]:
    msgs = [{"role": "user", "name": who, "content": text, "id": f"m{n}"} for n, (who, text) in enumerate(CHAT)]
    items = cube.add(messages=msgs, user_id="u1", session_id="s1", timestamp="2023-05-08T10:00:00Z")
    return {it.id: it.metadata["speaker"] for it in items}


def test_speaker_boost_multiplies_what_the_named_person_said_and_nothing_else(cube: MemCube) -> None:
    speaker = _chat(cube)
    off = R.BALANCED.model_copy(update={"name": "off", "speaker_boost": 0.0})
    on = off.model_copy(update={"speaker_boost": 1.0})
    q = "Where did Jon go hiking?"
    before = {h.item.id: h.score for h in cube.search(q, user_id="u1", top_k=4, plan=off)}
    after = cube.search(q, user_id="u1", top_k=4, plan=on)
    assert speaker[after[0].item.id] == "Jon"
    for h in after:  # applied after the hops: the other speaker's turns keep their score exactly
        assert h.score == pytest.approx(before[h.item.id] * (2.0 if speaker[h.item.id] == "Jon" else 1.0))
    for neutral in ("Where did Jon and Gina go hiking?", "Who went hiking?"):  # both, or nobody: no change
        a = [(h.item.id, round(h.score, 9)) for h in cube.search(neutral, user_id="u1", top_k=4, plan=off)]
        b = [(h.item.id, round(h.score, 9)) for h in cube.search(neutral, user_id="u1", top_k=4, plan=on)]
        assert a == b, neutral


def test_session_cap_moves_a_crowding_session_down_without_dropping_it(cube: MemCube) -> None:
    many = [f"We talked about the garden again, part {n}: tomatoes and basil." for n in range(4)]
    crowd = cube.add(memory=many, user_id="u1", session_id="s1")
    lone = cube.add(memory=["The garden needs compost before spring."], user_id="u1", session_id="s2")[0]
    plan = R.SearchPlan(time_aware=False, session_cap=1)
    hits = cube.search("garden tomatoes basil", user_id="u1", top_k=5, plan=plan)
    assert [h.item.session_id for h in hits[:2]] in (["s1", "s2"], ["s2", "s1"])
    assert {h.item.id for h in hits} == {*(c.id for c in crowd), lone.id}  # moved, not dropped


def test_the_new_options_are_typed() -> None:
    with pytest.raises(ValidationError):
        R.SearchPlan(speaker_boost=-1)
    with pytest.raises(ValidationError):
        R.SearchPlan(session_cap=0)
    assert R.PRESETS["multihop"].speaker_boost > 0 and R.PRESETS["deep"].speaker_boost > 0
    assert R.uses_working_memory("deep") and not R.uses_working_memory("balanced")


def test_speaker_names_match_whole_words_and_are_never_patterns() -> None:
    speakers = ["Al", "C++ (bot)", ".*", " ", "Alice"]
    assert R.named_speakers("What did Alice also say about alpacas?", speakers) == {"Alice"}  # not "Al"
    assert R.named_speakers("what did c++ (bot) answer?", speakers) == {"C++ (bot)"}
    assert R.named_speakers("anything at all", speakers) == set()  # ".*" is a name, not a regex; blank is none
    assert R.apply_speaker({1: 1.0}, {1: "Al"}, {"Al"}, 1.0) == {1: 1.0}  # the only speaker: nothing to tell apart
