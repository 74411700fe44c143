"""benchmarks/fit_fusion_layouts.py: late.py's constants scored on split-list columns give the logits the
engine computes on the unsplit ones (the table's "late.py's WEIGHTS" row is the shipped model)."""

from __future__ import annotations

import numpy as np

from benchmarks import fit_fusion as FF
from benchmarks import fit_fusion_layouts as FL
from memos_integrations.textual import fusion_features as F
from memos_integrations.textual import late as LT


def _question(is_list: bool) -> FF.Question:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, len(F.NAMES) + len(LT.NAMES)))
    X[:, F.NAMES.index("bias")] = 1.0
    X[:, F.NAMES.index("list")] = float(is_list)
    y = np.zeros(6)
    y[2] = 1.0
    cands = list(range(6))
    return FF.Question("c", 1, {"e"}, cands, X, y, [], {2: ["e"]}, dict.fromkeys(cands, 5), ["s"] * 6)


def test_the_shipped_constants_on_split_columns_are_the_engines_logits() -> None:
    for is_list in (False, True):
        q = _question(is_list)
        plain = q.X.copy()
        FL.split_list([q])
        assert q.X.shape[1] == 2 * plain.shape[1]
        want = plain @ LT.weight_vector(LT.LIST_WEIGHTS if is_list else LT.WEIGHTS)
        assert np.allclose(FL.shipped(q), want)
        # the list weights differ from the others: scoring a list question by WEIGHTS would not match
        assert not np.allclose(plain @ LT.weight_vector(LT.WEIGHTS if is_list else LT.LIST_WEIGHTS), want)


def test_without_late_zeroes_the_late_columns_of_both_halves_and_keeps_the_rest() -> None:
    q = _question(True)
    FL.split_list([q])
    (bare,) = FL.without_late([q])
    n, m, half = len(F.NAMES), len(LT.NAMES), q.X.shape[1] // 2
    for start in (n, half + n):
        assert not bare.X[:, start:start + m].any()
    keep = [i for i in range(q.X.shape[1]) if not (n <= i < n + m or half + n <= i < half + n + m)]
    assert np.array_equal(bare.X[:, keep], q.X[:, keep])
    assert q.X[:, half + n:half + n + m].any()  # the original is untouched
