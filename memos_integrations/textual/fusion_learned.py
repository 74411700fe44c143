"""A learned re-scorer over the candidates a search already holds (``SearchPlan(fusion="learned")``).

The plan runs as with ``fusion="rrf"`` (legs, fusion, time, hops, speaker boost, content prior);
then the first :data:`.fusion_features.WINDOW` of its order and of each leg (``LIST_WINDOW``, 100,
for a question asking for a list: its answers lie deeper) are re-scored by a
linear model of cheap features (:mod:`.fusion_features`: each leg's rank and score, the fused
rank, who said it, how much content it has, whether the question asks for a list, how many other
candidates share its session, how good a candidate the turn right after it is) and re-ordered; the rest follow in the plan's order, below them.

The weights are constants (:data:`WEIGHTS`; :data:`LIST_WEIGHTS` for list questions), fitted by ``benchmarks/fit_fusion.py`` on the LoCoMo
dev split (logistic regression, L2, evidence turns as positives) and rounded; nothing is read from a
file. No new candidate is found here: every row re-scored was found by a leg under the search's
filter, so scope, ``as_of`` and lifecycle hold as for the plan it starts from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import fusion_features as F
from . import retrieve as R

if TYPE_CHECKING:
    from ..items import MemoryItem

#: the re-scorer's weights by feature name (:data:`.fusion_features.NAMES`) for a question that does not ask
#: for a list: logistic regression, L2 0.0001 (the strength of best held-out recall), fitted on all 5 LoCoMo
#: dev conversations, rounded to 0.01 (``python -m benchmarks.fit_fusion --models pointwise --l2
#: 0.01,0.001,0.0001 --nested --split-list --write``). Read as: the fused score leads; a turn near one of
#: the best five of its session, whose reply (the next turn of its session) is itself a good candidate,
#: with content words, ranked high by the keyword leg's score or the nameless dense leg rises; a turn
#: said by someone the question does not name falls. A feature not listed weighs 0.
WEIGHTS: Mapping[str, float] = {
    "bias": -4.85,
    "fused_rr": 0.1,
    "fused_score": 4.67,
    "dense_rr": -0.7,
    "dense_cos": 0.24,
    "unnamed_rr": 1.07,
    "keyword_rr": -1.43,
    "keyword_score": 2.46,
    "hop_only": -0.06,
    "named_speaker": 0.4,
    "other_speaker": -2.0,
    "content": 1.69,
    "session_share": 0.38,
    "near_best": 3.06,
    "next_fused": 1.49,
}

#: the same, fitted on the list questions alone (:func:`.speaker_legs.asks_for_list`, whose candidates
#: are read :data:`.fusion_features.LIST_WINDOW` deep), in the same fit (``list_*`` features folded into
#: the ones they equal there). Read as: the fused rank counts more and the fused score less; being near
#: the session's best hits counts far less (list answers come from many sessions); a turn of someone
#: the question does not name falls more.
LIST_WEIGHTS: Mapping[str, float] = {
    "bias": -3.16,
    "fused_rr": 2.51,
    "fused_score": 1.6,
    "dense_rr": 0.49,
    "dense_cos": 0.63,
    "unnamed_rr": 1.14,
    "keyword_rr": -0.93,
    "keyword_score": 1.08,
    "hop_only": -1.21,
    "named_speaker": -0.31,
    "other_speaker": -2.61,
    "content": 1.47,
    "session_share": 0.37,
    "near_best": 0.73,
    "next_fused": 1.59,
}


def weight_vector(weights: Mapping[str, float] = WEIGHTS) -> np.ndarray:
    """``weights`` as one column per feature of :data:`.fusion_features.NAMES` (a name not there is 0)."""
    unknown = set(weights) - set(F.NAMES)
    if unknown:
        from ..errors import InvalidInputError

        raise InvalidInputError(f"unknown re-scorer features {sorted(unknown)}; known: {list(F.NAMES)}")
    return np.array([float(weights.get(n, 0.0)) for n in F.NAMES])


_W = weight_vector()
_WL = weight_vector(LIST_WEIGHTS)


def rescore(
    query: str, order: list[int], scores: dict[int, float], scored: Mapping[str, Sequence[tuple[int, float]]],
    rows: Callable[[Sequence[int]], dict[int, MemoryItem]], plan: R.SearchPlan, w: np.ndarray | None = None,
    late: Callable[[Sequence[int], Mapping[int, MemoryItem], np.ndarray], np.ndarray | None] | None = None,
) -> list[int]:
    """Re-order the candidates of ``order`` (:func:`.fusion_features.candidates`) by the linear model
    ``w`` (default :data:`WEIGHTS`, :data:`LIST_WEIGHTS` for a list question); the rest of ``order``
    follows. ``scores`` is updated in place so
    that a hit's score falls with its rank: the candidates get the model's probability, the rest a
    share of the lowest of them. The plan's re-orderings before it (content prior, session cap, list
    spread) are features or undone; its working memory first (``working_first``) is kept: it is
    applied again to the new order. ``late`` (:func:`.late.scorer`) gives the logits from the features and
    more columns, or None to rank by ``w`` as without it.

    Returns:
        The new order (the same rows as ``order``).
    """
    win = F.window(query)
    sessions: dict[int, tuple[int, float]] = {}
    extra: list[int] = []
    if F.PER_SESSION and "dense" in scored and F.asks_for_list(query):  # off as shipped (module doc)
        sessions = F.session_ranks(query, scored, rows([r for r, _ in scored["dense"]]))
        extra = [r for r, (n, _) in sessions.items() if n <= F.PER_SESSION]
    cands = F.candidates(order, scored, win, extra)
    if not cands:
        return order
    items = rows(cands)
    X = F.features(query, cands, order, scores, scored, items, sessions)
    logit = late(cands, items, X) if late is not None else None  # the late preset (.late); None: as learned
    if logit is None:
        logit = X @ ((_WL if F.asks_for_list(query) else _W) if w is None else w)
    prob = 1.0 / (1.0 + np.exp(-np.clip(logit, -30.0, 30.0)))
    ranked = np.argsort(-logit, kind="stable")  # ties: the plan's order
    head = [cands[i] for i in ranked]
    placed = set(head)
    tail = [r for r in order if r not in placed]
    floor = float(prob.min())
    top_tail = max((scores[r] for r in tail), default=0.0) or 1.0
    for i, rid in enumerate(cands):
        scores[rid] = float(prob[i])
    for rid in tail:
        scores[rid] = floor * 0.5 * max(scores[rid], 0.0) / top_tail
    if plan.working_first and "working" in scored:
        return R.working_first(head + tail, {r for r, _ in scored["working"]}, plan.working_first)
    return head + tail
