"""benchmarks/fit_fusion_extra.py's ``--extra`` columns (issue 14, category 1; measured, none shipped) and
fit_fusion's ``--fit-on`` (weights fitted on another probe's candidates, held out by conversation): pure
functions on hand-made inputs, no cube, no model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from benchmarks import fit_fusion as FF
from benchmarks import fit_fusion_extra as XF


def test_the_head_phrase_is_the_noun_phrase_a_question_asks_for() -> None:
    assert XF.head_phrase("What activities does Melanie partake in?") == "activities"
    assert XF.head_phrase("Which cities has Jon visited?") == "cities"
    assert XF.head_phrase("What kind of art does Caroline make?") == "art"
    assert XF.head_phrase("What are some changes Caroline has faced?") == "changes"
    assert XF.head_phrase("What musical artists/bands has Melanie seen?") == "musical artists/bands"
    # no head phrase: another question word, a verb right after "what", a name right after it, empty input
    for q in ("When did Jon open his studio?", "What has Melanie painted?", "What Jon thinks?", "", "what"):
        assert XF.head_phrase(q) == ""


def test_a_zscore_is_zero_for_a_constant_a_single_or_a_switched_off_column() -> None:
    assert not XF.zscore(np.array([0.3, 0.3, 0.3])).any()
    assert not XF.zscore(np.array([0.9])).any()
    assert not XF.zscore(np.array([0.1, 0.9]), on=False).any()
    z = XF.zscore(np.array([1.0, 2.0, 3.0]))
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1.0) < 1e-12


def test_query_token_rows_join_word_pieces_into_the_word_they_spell() -> None:
    pieces = ["what", "activities", "does", "mel", "##anie", "part", "##ake", "in", "?"]
    assert XF._query_rows(pieces, {"activities", "partake"}) == [1, 5, 6]
    assert XF._query_rows(pieces, {"melanie"}) == [3, 4]
    assert XF._query_rows([], {"x"}) == []


def _row(text: str, speaker: str, session: str = "s1") -> SimpleNamespace:
    return SimpleNamespace(text=text, metadata={"speaker": speaker}, session_id=session)


def test_coverage_speaker_and_narration_columns_read_only_the_candidates_text() -> None:
    rows = {
        1: _row("I went swimming with the kids yesterday!", "Melanie"),
        2: _row("Swimming with the kids sounds great, Melanie?", "Caroline"),
        3: _row("Last week we finished a pottery class.", "Melanie"),
    }
    wanted = ["novel", "speaker_rank", "event_time", "first_past", "asks", "narrates"]
    cols = XF.columns(wanted, "What activities does Melanie do?", [1, 2, 3], rows, np.zeros((3, 4)), None, [1, 2, 3])
    assert set(cols) == set(wanted)
    assert cols["novel"][0] == 1.0 and cols["novel"][1] < 1.0 and cols["novel"][2] == 1.0  # 2 repeats 1's words
    assert list(cols["speaker_rank"]) == [1.0, 1.0, 0.5]  # Melanie's second turn in the fused order
    assert list(cols["narrates"]) == [1.0, 0.0, 1.0] and list(cols["asks"]) == [0.0, 1.0, 0.0]
    # a photo caption does not count as the turn's own words
    cap = {4: _row("Nice! [shares a photo: we just went hiking yesterday]", "Melanie")}
    assert XF.columns(["narrates"], "q?", [4], cap, np.zeros((1, 4)), None, [4])["narrates"][0] == 0.0


def _q(conv: str, X: np.ndarray, y: np.ndarray) -> FF.Question:
    cands = list(range(len(y)))
    return FF.Question(conv, 1, {f"{conv}{i}" for i in np.flatnonzero(y)}, cands, X, y, [],
                       {r: [f"{conv}{r}"] for r in cands}, dict.fromkeys(cands, 10), ["s"] * len(y))


def test_fit_on_another_probe_scores_each_conversation_by_weights_that_never_saw_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # training probe: feature 1 marks the positive in every conversation but "c"; the scored probe's
    # questions put their positive last in the plan's order and mark it with feature 1
    rng = np.random.default_rng(0)

    def question(conv: str, marked: bool) -> FF.Question:
        y = np.zeros(12)
        y[-1] = 1.0
        X = np.column_stack([np.ones(12), y if marked else rng.random(12)])
        return _q(conv, X, y)

    train = [question(c, c != "c") for c in "abc" for _ in range(3)]
    scored = [question(c, True) for c in "abc"]
    seen: list[set[str]] = []
    inner = FF.fit

    def fit(qs, *a, **kw):  # type: ignore[no-untyped-def]
        seen.append({q.conv for q in qs})
        return inner(qs, *a, **kw)

    monkeypatch.setattr(FF, "fit", fit)
    held, chosen = FF.cross_probe(scored, train, "pointwise", [0.01])
    assert seen and all(len(s) < 3 for s in seen)  # no fit (L2 choice included) saw every conversation
    assert chosen == [0.01] * 3
    assert held["all"] == 1.0  # every conversation's weights learned "feature 1 marks it" from the others
    for q in scored:
        assert FF.recall(q, None) == 0.0  # the plan's own order puts it 12th: outside the first 10
