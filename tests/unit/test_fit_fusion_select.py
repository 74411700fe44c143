"""benchmarks/fit_fusion.py's set-level choices (``--select``), measured for issue 14's category 1 and not
shipped: the knapsack never passes the word budget, MMR trades a near-duplicate for a different hit, the
window rule skips a neighbour of a pick, and every choice keeps every candidate (pure functions, no cube)."""

from __future__ import annotations

import numpy as np

from benchmarks import fit_fusion as FF
from benchmarks.bench_retrieval import BUDGET_WORDS


def _question(words: list[int], vecs: np.ndarray | None = None, sessions: list[str | None] | None = None) -> FF.Question:
    n = len(words)
    cands = list(range(100, 100 + n))
    return FF.Question(
        "c", 1, {"t0"}, cands, np.zeros((n, 2)), np.zeros(n), [], {r: [f"t{i}"] for i, r in enumerate(cands)},
        dict(zip(cands, words)), sessions or ["s"] * n, vecs,
    )


def test_the_knapsack_fills_the_budget_with_short_hits_when_their_value_is_larger() -> None:
    # one long hit (300 words) then six of 60: the long one alone leaves room for one short hit
    q = _question([300, 60, 60, 60, 60, 60, 60])
    logit = np.array([3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4])
    picked = FF.select(q, logit, "knapsack:0")
    assert sorted(picked) == list(range(7))  # nothing lost, only reordered
    first = picked[:6]
    assert sum(q.words[q.cands[i]] for i in first) <= BUDGET_WORDS and 0 not in first


def test_mmr_passes_over_a_near_duplicate_and_the_window_rule_over_a_neighbour() -> None:
    vecs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    q = _question([10, 10, 10], vecs)
    logit = np.array([2.0, 1.9, 1.5])
    assert FF.select(q, logit, "mmr:0.0")[:2] == [0, 1]
    assert FF.select(q, logit, "mmr:0.5")[:2] == [0, 2]
    assert FF.select(q, logit, "window:1", k=2)[:2] == [0, 2]  # rows 100 and 101: neighbours in one session
    q2 = _question([10, 10, 10], vecs, ["a", "b", "a"])
    assert FF.select(q2, logit, "window:1", k=2)[:2] == [0, 1]  # another session: not a neighbour
