"""Fit the learned re-scorer (``SearchPlan(fusion="learned")``, textual/fusion_learned.py) on LoCoMo dev,
and say honestly what it is worth: leave-one-conversation-out.

For every question of categories 1-4 the ``balanced`` plan runs with ``fusion="learned"`` and the
re-scorer's feature matrix is recorded (:mod:`memos_integrations.textual.fusion_features`: the
candidates are the first 50 of balanced's order and of each leg, ``--list-window`` (100) for a list
question, the legs widened to give that many). A candidate is positive when it
was read from an evidence turn (at most 3 source turns, issue 14's counting rule). Models (numpy
only, L2-regularised, full batch, deterministic):

- ``pointwise``: logistic regression, each question's positives and negatives weighted to equal
  totals (a question with one evidence turn counts as much as one with eight), Newton's method;
- ``listwise``: softmax over each question's candidates, the mean log-probability of its positives
  (3,000 steps of Adam).

Scored as bench_retrieval scores (R@10 within 400 words, per category): each conversation held out
in turn and ranked by weights fitted on the other four ("held-out"), beside weights fitted on all
five ("in-sample") and balanced itself; ``--nested`` also chooses the L2 strength inside each fold
(the grid never sees the held-out conversation). ``--write`` prints the weights fitted on all five at
the L2 of best held-out recall, rounded, as the ``WEIGHTS`` constant for textual/fusion_learned.py
(with ``--split-list``, a weight per feature for list questions and one for the rest, also
``LIST_WEIGHTS``). The table also gives the candidates' ceiling (every positive first) and the
module's own rounded constants in-sample. The options for list questions measured in the fourth
session (``--pool``, ``--per-session``, ``--session-features``, ``--peers``, ``--spread``) are off as
shipped; ``--dump`` writes each question's nested recall to compare two variants question by question.
Measured in the fifth session for category 1 and not shipped either: ``--models gbdt`` (scikit-learn's
gradient-boosted trees, ``--trees``; only here, never at search time), ``--crosses`` (pairwise
products of the features), ``--extra`` (neighbour, exact-cosine and query-coverage features) and
``--select`` (the first 10 chosen as a set: MMR on the stored vectors, one hit per 3-turn window, or a
knapsack of the 400-word budget); of the ``--extra`` columns, ``next_fused`` became a module feature
(``--drop next_fused`` gives the model before it).
Sixth session: fit_fusion_extra's ``late_*`` columns ship as the ``late`` preset (textual/late.py, weights by ``--extra
late_... --write``; cubes hold token vectors: ``-late`` in ``--cubes``); its other columns and ``--fit-on`` do not.

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.fit_fusion --cubes /tmp/fit_fusion_cubes-late
    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.fit_fusion --models pointwise --l2 0.01,0.001,0.0001 --nested --split-list
    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.fit_fusion --models pointwise --l2 0.01,0.001,0.0001 --split-list --write
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memos_integrations import MemCube
from memos_integrations.prompting import format_memory
from memos_integrations.textual import fusion_features as F
from memos_integrations.textual import fusion_learned as FL
from memos_integrations.textual.embed import MiniLMEmbedder
from memos_integrations.textual.retrieve import BALANCED, DEEP, MULTIHOP, SearchPlan

from . import fit_fusion_extra as XF
from .bench_engine_cpu import open_cube
from .bench_retrieval import BUDGET_WORDS, MAX_SOURCES
from .common import locomo, table

PROBE = BALANCED.model_copy(update={"name": "balanced-probe", "fusion": "learned"})
PROBES = {"balanced": PROBE,  # --probe deep / multihop: those presets' candidates, re-scored (sixth session)
          "deep": DEEP.model_copy(update={"name": "deep-probe", "fusion": "learned", "candidates": 100}),
          "multihop": MULTIHOP.model_copy(update={"name": "multihop-probe", "fusion": "learned"})}


@dataclass
class Question:
    conv: str
    category: int
    evidence: set[str]
    cands: list[int]
    X: np.ndarray
    y: np.ndarray  # 1.0 where the candidate holds evidence
    tail: list[int]  # the plan's order after the candidates
    sources: dict[int, list[str]]  # counted sources of candidates and tail (empty for > MAX_SOURCES)
    words: dict[int, int]
    session: list[str | None]  # each candidate's session
    vecs: np.ndarray | None = None  # --select mmr: each candidate's unit vector (zeros without one)


def record(cube: MemCube, conv: str, qa: list[dict[str, Any]], plan: SearchPlan = PROBE) -> list[Question]:
    """Run ``plan`` (a plan with ``fusion="learned"``) on every question, keeping the re-scorer's inputs (the feature function wrapped)."""
    seen: list[tuple[list[int], np.ndarray, list[int], list[int]]] = []
    inner = F.features

    store = cube.text_mem.store

    def keep(query: str, cands: Sequence[int], order: Sequence[int], scores: Any, scored: Any, items: Any,
             sessions: Any = None, peers: Any = None) -> np.ndarray:
        if SESSION_FEATURES and not sessions and scored.get("dense"):  # measured here only (not shipped)
            sessions = F.session_ranks(query, scored, store.ranking_rows([r for r, _ in scored["dense"]]))
        if PEERS:
            peers = F.peer_cosines(cands, order, *store.vectors_for(list(cands)))
        X = inner(query, cands, order, scores, scored, items, sessions, peers)
        seen.append((list(cands), X.copy(), [r for r in order if r not in set(cands)], list(order)))
        return X

    out = []
    F.features = keep  # type: ignore[assignment]
    try:
        for q in qa:
            if q["category"] == 5 or not q.get("evidence"):
                continue
            seen.clear()
            cube.search(q["question"], top_k=20, plan=plan)
            evidence = {e.strip() for e in q["evidence"]}
            cands, X, tail, fused = seen[-1] if seen else ([], np.zeros((0, len(F.NAMES))), [], [])
            rows = cube.text_mem.store.ranking_rows([*cands, *tail[:20]])
            sources = {r: (it.sources if len(it.sources) <= MAX_SOURCES else []) for r, it in rows.items()}
            words = {r: len(format_memory(it).split()) for r, it in rows.items()}
            y = np.array([1.0 if evidence & set(sources.get(r, ())) else 0.0 for r in cands])
            session = [rows[r].session_id if r in rows else None for r in cands]
            vecs = None
            if EXTRA or SELECT.startswith("mmr"):
                vecs = unit_vectors(cands, *store.vectors_for(cands))
                qvec = cube.text_mem.embedder.embed_query(q["question"])
                X = np.hstack([X, extra_features(q["question"], cands, X, session, rows, vecs, qvec)])
                more = XF.columns(EXTRA, q["question"], cands, rows, vecs, cube.text_mem.embedder, fused,
                                  store, qvec)
                if more:
                    cols = np.stack([more[n] for n in EXTRA if n in more], axis=1)
                    if EXTRA_LIST_ONLY and not F.asks_for_list(q["question"]):
                        cols[:] = 0.0
                    X = np.hstack([X, cols])
            out.append(Question(conv, q["category"], evidence, cands, X, y, tail[:20], sources, words, session, vecs))
    finally:
        F.features = inner  # type: ignore[assignment]
    return out


SESSION_FEATURES = False  # --session-features: list_sess_first / list_sess_best computed for every list question
PEERS = False  # --peers: peer_cos / list_peer_cos computed (the candidates' stored vectors)
SPREAD = 0.0  # --spread: each hit already placed from a candidate's session lowers its logit by this
SPREAD_LIST = False  # --spread-list: only for list questions
# Fifth session (issue 14, category 1), measured and not shipped (docs/organize.md):
EXTRA: list[str] = []  # --extra: more feature columns (EXTRA_NAMES), appended after F.NAMES
EXTRA_NAMES = ("prev_fused", "next_fused", "exact_cos", "nb_cos", "q_cover", *XF.NAMES)
EXTRA_LIST_ONLY = False  # --extra-list-only: fit_fusion_extra's columns are 0 for a question not asking for a list
SELECT = ""  # --select: set-level choice of the first 10 (mmr:LAMBDA, knapsack:SHIFT, window:GAP)


def unit_vectors(cands: Sequence[int], rids: Sequence[int], matrix: np.ndarray) -> np.ndarray:
    """One unit vector per candidate (a zero row for one without a stored vector)."""
    out = np.zeros((len(cands), matrix.shape[1] if len(rids) else 1))
    row = {r: i for i, r in enumerate(rids)}
    for i, r in enumerate(cands):
        if r in row:
            v = matrix[row[r]]
            out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


def extra_features(question: str, cands: Sequence[int], X: np.ndarray, session: Sequence[str | None],
                   rows: Any, vecs: np.ndarray, qvec: np.ndarray) -> np.ndarray:
    """``--extra`` columns: the fused score of the turn just before / after in the same session ("an
    answer follows its question"), the exact cosine to the query (not the leg's window floor), the
    best neighbour's cosine, and the share of the query's non-name content words in the text."""
    from memos_integrations.textual import retrieve as R

    q = qvec / max(float(np.linalg.norm(qvec)), 1e-12)
    cos = vecs @ q
    at = {r: i for i, r in enumerate(cands)}
    fused = X[:, F.NAMES.index("fused_score")]
    speakers = {s for it in rows.values() if isinstance(s := it.metadata.get("speaker"), str) and s}
    names = {w for s in speakers for w in R.keyword_terms(s, None)}
    terms = set(R.keyword_terms(question, None)) - names
    mine = [n for n in EXTRA if n not in XF.NAMES]
    out = np.zeros((len(cands), len(mine)))
    for i, r in enumerate(cands):
        nb = [at[n] for n in (r - 1, r + 1) if n in at and session[at[n]] == session[i] and session[i] is not None]
        text = rows[r].text if r in rows else ""
        values = {
            "prev_fused": fused[at[r - 1]] if at.get(r - 1) in nb else 0.0,
            "next_fused": fused[at[r + 1]] if at.get(r + 1) in nb else 0.0,
            "exact_cos": float(cos[i]),
            "nb_cos": max((float(cos[j]) for j in nb), default=0.0),
            "q_cover": len(terms & set(R.keyword_terms(text, None))) / max(len(terms), 1),
        }
        out[i] = [values[n] for n in mine]
    return out


def crosses(X: np.ndarray) -> np.ndarray:
    """``--crosses``: X with the pairwise products (squares included) of the base features that vary."""
    base = [F.NAMES.index(n) for n in F.NAMES if n not in ("bias", "list") and not n.startswith("list_")]
    pairs = [(a, b) for k, a in enumerate(base) for b in base[k:]]
    return np.hstack([X, np.stack([X[:, a] * X[:, b] for a, b in pairs], axis=1)]) if len(X) else \
        np.zeros((0, X.shape[1] + len(pairs)))


def select(q: Question, logit: np.ndarray, how: str, k: int = 10) -> list[int]:
    """Candidate indices with the first ``k`` chosen as a set (``--select``), the rest by logit:
    ``mmr:L`` each pick maximises p - L * (its best cosine to those picked); ``window:G`` skips a
    candidate within G rows of one picked in the same session; ``knapsack:C`` the set of at most ``k``
    that fits BUDGET_WORDS with the largest sum of sigmoid(logit - C) (the first 30 by logit, words in
    units of 5)."""
    kind, _, value = how.partition(":")
    lam = float(value)
    order = sorted(range(len(q.cands)), key=lambda i: (-logit[i], i))
    if kind == "knapsack":
        picked = knapsack(q, logit, order[:30], lam, k)
    else:
        p = 1 / (1 + np.exp(-np.clip(logit, -30, 30)))
        picked = []
        left = list(order)
        while left and len(picked) < k:
            if kind == "mmr":
                assert q.vecs is not None
                sims = q.vecs[left] @ q.vecs[picked].T if picked else np.zeros((len(left), 1))
                best = left[int(np.argmax(p[left] - lam * sims.max(axis=1)))]
            else:  # window
                best = next((i for i in left if not any(
                    q.session[i] is not None and q.session[i] == q.session[j] and abs(q.cands[i] - q.cands[j]) <= lam
                    for j in picked)), left[0])
            picked.append(best)
            left.remove(best)
    if kind == "knapsack":  # a set that fits: by logit within it; mmr and window keep their pick order
        picked.sort(key=lambda i: (-logit[i], i))
    chosen = set(picked)
    return picked + [i for i in order if i not in chosen]


def knapsack(q: Question, logit: np.ndarray, idx: list[int], shift: float, k: int, unit: int = 5) -> list[int]:
    """:func:`select`'s ``knapsack``: dynamic programming over (hits taken, words used)."""
    cap = BUDGET_WORDS // unit
    value = 1 / (1 + np.exp(-(logit - shift)))
    cost = [-(-q.words.get(q.cands[i], 0) // unit) for i in idx]
    best = np.full((k + 1, cap + 1), -np.inf)
    best[0, 0] = 0.0
    took = np.zeros((len(idx), k + 1, cap + 1), dtype=bool)
    for t, i in enumerate(idx):
        c = cost[t]
        if c > cap:
            continue
        gain = best[:-1, : cap + 1 - c] + value[i]
        better = gain > best[1:, c:]
        best[1:, c:] = np.where(better, gain, best[1:, c:])
        took[t, 1:, c:] = better
    n, w = (int(x) for x in np.unravel_index(int(np.argmax(best)), best.shape))
    picked = []
    for t in range(len(idx) - 1, -1, -1):
        if took[t, n, w]:
            picked.append(idx[t])
            n, w = n - 1, w - cost[t]
    return picked


def spread(q: Question, logit: np.ndarray, lam: float, k: int = 10) -> list[int]:
    """Candidate indices by ``logit``, greedily: each of the first ``k`` picks lowers the logits of the
    other candidates of its session by ``lam`` (the rest follow by logit)."""
    left = sorted(range(len(q.cands)), key=lambda i: (-logit[i], i))
    out: list[int] = []
    placed: dict[str | None, int] = defaultdict(int)
    while left and len(out) < k:
        best = max(left, key=lambda i: (logit[i] - lam * placed[q.session[i]] if q.session[i] else logit[i], -i))
        out.append(best)
        left.remove(best)
        placed[q.session[best]] += 1
    return out + left


def recall(q: Question, logit: np.ndarray | None) -> float:
    """R@10 within BUDGET_WORDS of the candidates ranked by ``logit`` (None: the plan's own order)."""
    lam = SPREAD if not SPREAD_LIST or q.X[0, F.NAMES.index("list")] > 0 else 0.0
    if logit is None:
        idx: Sequence[int] = range(len(q.cands))
    elif SELECT and len(q.cands):
        idx = select(q, logit, SELECT)
    elif lam > 0 and len(q.cands):
        idx = spread(q, logit, lam)
    else:
        idx = sorted(range(len(q.cands)), key=lambda i: (-logit[i], i))
    ranked = [q.cands[i] for i in idx] + q.tail
    found: set[str] = set()
    words = 0
    for rid in ranked[:10]:
        w = q.words.get(rid, 0)
        if words + w > BUDGET_WORDS:
            break
        words += w
        found.update(q.sources.get(rid, ()))
    return len(q.evidence & found) / len(q.evidence)


def shipped_logits(q: Question, split: bool) -> np.ndarray:
    """The module's rounded constants on ``q`` (its list questions by LIST_WEIGHTS)."""
    n, half = len(F.NAMES), q.X.shape[1] // 2
    X = q.X[:, :n] + q.X[:, half:half + n] if split else q.X[:, :n]
    is_list = len(q.cands) > 0 and bool(X[0, F.NAMES.index("list")] > 0)
    return X @ FL.weight_vector(FL.LIST_WEIGHTS if is_list else FL.WEIGHTS)


FOLD = {"list": "bias", "list_content": "content", "list_dense_rr": "dense_rr", "list_keyword_rr": "keyword_rr",
        "list_named": "named_speaker", "list_sess_first": None, "list_sess_best": None, "list_peer_cos": "peer_cos"}


def fold(w: np.ndarray) -> np.ndarray:
    """List-question weights with each ``list_*`` feature added to the feature it equals on a list question
    (``list`` is the bias there): the same logits, one weight per thing measured."""
    if not len(w):
        return w
    out = w.copy()
    for name, into in FOLD.items():
        if into is not None:
            i, j = F.NAMES.index(name), F.NAMES.index(into)
            out[j] += out[i]
            out[i] = 0.0
    return out


class Trees:
    """``--models gbdt``: gradient-boosted trees that score a feature matrix as ``X @ trees`` does
    (``__array_ufunc__ = None`` makes numpy hand ``@`` to ``__rmatmul__``), so the held-out loops
    serve both kinds of model."""

    __array_ufunc__ = None

    def __init__(self, model: Any) -> None:
        self.model = model

    def __rmatmul__(self, X: np.ndarray) -> np.ndarray:
        return self.model.decision_function(X) if len(X) else np.zeros(0)  # type: ignore[no-any-return]


def fit(qs: list[Question], model: str, l2: float | str, steps: int = 3000) -> Any:
    """Weights (one per column) fitted on ``qs``, full batch, from zero; no L2 on the bias.
    Pointwise: Newton's method to convergence (the loss is convex); listwise: ``steps`` of Adam;
    gbdt (``l2`` is ``"trees:depth:rate"``): scikit-learn's gradient boosting (bench only, never
    at search time) with pointwise's sample weights, as :class:`Trees`."""
    if model == "gbdt":
        from sklearn.ensemble import GradientBoostingClassifier

        trees, depth, rate = str(l2).split(":")
        Xg = np.vstack([q.X for q in qs])
        yg = np.concatenate([q.y for q in qs])
        qg = np.concatenate([np.full(len(q.cands), i) for i, q in enumerate(qs)])
        pos, neg = np.bincount(qg, weights=yg), np.bincount(qg, weights=1 - yg)
        sw = np.where(yg > 0, 1 / np.maximum(pos[qg], 1), 1 / np.maximum(neg[qg], 1))
        gb = GradientBoostingClassifier(n_estimators=int(trees), max_depth=int(depth), learning_rate=float(rate),
                                        random_state=0)
        return Trees(gb.fit(Xg, yg, sample_weight=sw))
    l2 = float(l2)
    X = np.vstack([q.X for q in qs])
    y = np.concatenate([q.y for q in qs])
    qid = np.concatenate([np.full(len(q.cands), i) for i, q in enumerate(qs)])
    n = len(qs)
    if model == "pointwise":  # each question: positives weigh 1 in all, negatives 1 in all
        pos = np.bincount(qid, weights=y, minlength=n)
        neg = np.bincount(qid, weights=1 - y, minlength=n)
        sw = np.where(y > 0, 1 / np.maximum(pos[qid], 1), 1 / np.maximum(neg[qid], 1)) / n
    npos = np.bincount(qid, weights=y, minlength=n)
    w = np.zeros(X.shape[1])
    reg = np.ones_like(w)
    reg[0] = 0.0
    if model == "pointwise":
        for _ in range(50):
            p = 1 / (1 + np.exp(-np.clip(X @ w, -30, 30)))
            g = X.T @ (sw * (p - y)) + l2 * reg * w
            H = (X * (sw * p * (1 - p))[:, None]).T @ X + np.diag(l2 * reg + 1e-9)
            step = np.linalg.solve(H, g)
            w = w - step
            if np.abs(step).max() < 1e-8:
                break
        return w
    m, v = np.zeros_like(w), np.zeros_like(w)
    lr, b1, b2 = 0.05, 0.9, 0.999
    for t in range(1, steps + 1):
        s = X @ w  # listwise: softmax within each question that has a positive
        e = np.exp(s - s.max())
        p = e / np.bincount(qid, weights=e, minlength=n)[qid]
        coef = np.where(npos[qid] > 0, p - y / np.maximum(npos[qid], 1), 0.0) / max(int((npos > 0).sum()), 1)
        g = X.T @ coef + l2 * reg * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
    return w


def scores_of(qs: list[Question], logits: list[np.ndarray | None]) -> dict[str, float]:
    """Mean recall overall and per category; ``"<cat>:up"`` / ``":down"``: questions above / below the plan's order."""
    per: dict[str, list[float]] = defaultdict(list)
    for q, lg in zip(qs, logits):
        r = recall(q, lg)
        per["all"].append(r)
        per[str(q.category)].append(r)
        base = recall(q, None)
        per[f"{q.category}:up"].append(float(r > base))
        per[f"{q.category}:down"].append(float(r < base))
    return {k: float(np.sum(v) if ":" in k else np.mean(v)) for k, v in per.items()}


def held_out(qs: list[Question], fit_fold: Callable[[list[Question]], np.ndarray]) -> list[np.ndarray | None]:
    """Each question's logits from weights ``fit_fold`` fitted on the other conversations (leave one out)."""
    held: list[np.ndarray | None] = [None] * len(qs)
    for c in sorted({q.conv for q in qs}):
        w = fit_fold([q for q in qs if q.conv != c])
        for i, q in enumerate(qs):
            if q.conv == c:
                held[i] = q.X @ w
    return held


def evaluate(qs: list[Question], model: str, l2: float | str) -> tuple[dict[str, float], dict[str, float], Any]:
    """(held-out scores, in-sample scores, weights on all)."""
    held = held_out(qs, lambda train: fit(train, model, l2))
    w_all = fit(qs, model, l2)
    return scores_of(qs, held), scores_of(qs, [q.X @ w_all for q in qs]), w_all


def nested(
    qs: list[Question], model: str, grid: Sequence[float | str],
) -> tuple[dict[str, float], list[float | str], list[np.ndarray | None]]:
    """Held-out scores with the L2 strength chosen inside each fold (leave-one-conversation-out over
    the four training conversations, best overall recall): the L2 grid never sees the held-out
    conversation. Returns the scores, the L2 each fold chose and each question's held-out logits."""
    held, chosen = cross_logits(qs, qs, model, grid)
    return scores_of(qs, held), chosen, held


def cross_probe(qs: list[Question], train: list[Question], model: str,
                grid: Sequence[float | str]) -> tuple[dict[str, float], list[float | str]]:
    """Scores of ``qs`` by weights fitted on ``train`` (the same questions as another probe's candidates)
    without the held-out conversation, L2 chosen on those (nested, as :func:`nested`)."""
    held, chosen = cross_logits(qs, train, model, grid)
    return scores_of(qs, held), chosen


def cross_logits(qs: list[Question], train: list[Question], model: str,
                 grid: Sequence[float | str]) -> tuple[list[np.ndarray | None], list[float | str]]:
    """:func:`cross_probe`'s held-out logits of each question of ``qs`` and the L2 each fold chose."""
    held: list[np.ndarray | None] = [None] * len(qs)
    chosen: list[float | str] = []
    for c in sorted({q.conv for q in qs}):
        rest = [q for q in train if q.conv != c]
        best = max(grid, key=lambda l2: evaluate_loco(rest, model, l2))
        chosen.append(best)
        w = fit(rest, model, best)
        for i, q in enumerate(qs):
            if q.conv == c:
                held[i] = q.X @ w
    return held, chosen


def evaluate_loco(qs: list[Question], model: str, l2: float | str) -> float:
    """Mean held-out recall (leave-one-conversation-out) of ``qs`` alone."""
    logits = held_out(qs, lambda train: fit(train, model, l2))
    return float(np.mean([recall(q, lg) for q, lg in zip(qs, logits)]))


def collect(where: Path, organised: bool, limit: int | None, plan: SearchPlan = PROBE) -> list[Question]:
    embedder = MiniLMEmbedder()
    qs: list[Question] = []
    for conv in locomo()[:limit]:
        flat = where / "flat"
        flat.mkdir(parents=True, exist_ok=True)
        cube = open_cube(flat, embedder, conv)
        if organised:
            cube.close()
            org = where / "organised" / conv["sample_id"]
            if not org.exists():
                shutil.copytree(flat / conv["sample_id"], org)
                cube = MemCube.open(org, embedder=embedder)
                from memos_integrations.organize import organize

                organize(cube, user_id=conv["sample_id"])
            else:
                cube = MemCube.open(org, embedder=embedder)
        qs.extend(record(cube, conv["sample_id"], conv["qa"], plan))
        cube.close()
    if XF._TOKENS:
        XF._TOKENS[0].save()
    return qs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cubes", type=Path, default=Path("/tmp/fit_fusion_cubes-late"), help="cubes built once (token vectors)")
    ap.add_argument("--organised", action="store_true", help="organised cubes (the extractive organiser)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--probe", choices=sorted(PROBES), default="balanced", help="the plan whose candidates are re-scored")
    ap.add_argument("--l2", default="0.001,0.01,0.1", help="comma-separated L2 strengths")
    ap.add_argument("--models", default="pointwise,listwise", help="pointwise, listwise, gbdt (scikit-learn, --trees)")
    ap.add_argument("--trees", default="30:2:0.3,100:2:0.1",
                    help="gbdt's grid (its --l2): comma-separated trees:depth:learning-rate")
    ap.add_argument("--extra", default="", help=f"more feature columns, comma-separated, of {list(EXTRA_NAMES)}")
    ap.add_argument("--extra-list-only", action="store_true",
                    help="fit_fusion_extra's --extra columns only for list questions (0 for the rest)")
    ap.add_argument("--crosses", action="store_true", help="pairwise products of the base features as columns")
    ap.add_argument("--select", default="", help="the first 10 chosen as a set: mmr:LAMBDA, window:GAP, knapsack:SHIFT")
    ap.add_argument("--nested", action="store_true", help="also choose L2 inside each fold (nested cross-validation)")
    ap.add_argument("--fit-on", choices=sorted(PROBES), default=None,
                    help="also score --probe's candidates by weights fitted on this probe's (held out by conversation, "
                         "L2 chosen there): e.g. --probe deep --fit-on balanced is the learned preset's weights on deep")
    ap.add_argument("--list-window", type=int, default=F.LIST_WINDOW,
                    help="list questions: the fused order's and each leg's first N are candidates (legs widened to N)")
    ap.add_argument("--per-session", type=int, default=F.PER_SESSION,
                    help="list questions naming one speaker: that speaker's best N dense hits of each session too")
    ap.add_argument("--pool", type=int, default=None, help="each leg's pool (SearchPlan.candidates; default: the probe's, "
                    "at least --list-window)")
    ap.add_argument("--drop", default="", help="comma-separated features held at 0 (a model without them)")
    ap.add_argument("--split-list", action="store_true",
                    help="a weight per feature for list questions and one for the rest (every feature times list)")
    ap.add_argument("--session-features", action="store_true",
                    help="list_sess_first / list_sess_best for every list question (else only with --per-session)")
    ap.add_argument("--peers", action="store_true", help="peer_cos / list_peer_cos (else 0)")
    ap.add_argument("--spread", type=float, default=0.0,
                    help="rank greedily: each hit placed lowers the logits of its session's other candidates by this")
    ap.add_argument("--spread-list", action="store_true", help="--spread for list questions only")
    ap.add_argument("--dump", type=Path, default=None,
                    help="write each question's nested held-out recall (JSON) to compare variants question by question")
    ap.add_argument("--write", action="store_true",
                    help="print the all-five weights of the first model, at its L2 of best held-out recall")
    args = ap.parse_args(argv)
    F.LIST_WINDOW, F.PER_SESSION = args.list_window, args.per_session
    global SPREAD, SPREAD_LIST, SESSION_FEATURES, PEERS, EXTRA, SELECT, EXTRA_LIST_ONLY
    EXTRA_LIST_ONLY = args.extra_list_only
    SPREAD, SPREAD_LIST, SESSION_FEATURES, PEERS = args.spread, args.spread_list, args.session_features, args.peers
    EXTRA, SELECT = [n for n in args.extra.split(",") if n], args.select
    if set(EXTRA) - set(EXTRA_NAMES):
        raise SystemExit(f"unknown --extra {sorted(set(EXTRA) - set(EXTRA_NAMES))}; known: {list(EXTRA_NAMES)}")
    probe = PROBES[args.probe]
    pool = max(args.pool or probe.candidates, args.list_window)
    if pool != probe.candidates:
        probe = probe.model_copy(update={"candidates": pool})
    qs = collect(args.cubes, args.organised, args.limit, probe)
    other: list[Question] = []  # --fit-on: the questions as another probe's candidates (weights fitted there)
    if args.fit_on:
        fit_probe = PROBES[args.fit_on]
        other = collect(args.cubes, args.organised, args.limit, fit_probe.model_copy(update={"candidates": pool}))
    drop = [F.NAMES.index(n) for n in args.drop.split(",") if n]
    if args.crosses and args.write:
        raise SystemExit("--write prints the module's features (and --extra's) only: drop --crosses")
    for q in [*qs, *other]:
        q.X[:, drop] = 0.0
        if args.crosses:
            q.X = crosses(q.X)
        if args.split_list:
            is_list = q.X[:, [F.NAMES.index("list")]]
            q.X = np.hstack([q.X * (1 - is_list), q.X * is_list])
    cats = ["all", "1", "2", "3", "4"]

    def grid_of(model: str) -> list[float | str]:
        return list(args.trees.split(",")) if model == "gbdt" else [float(x) for x in args.l2.split(",")]
    base = scores_of(qs, [None] * len(qs))
    rows = [[f"{args.probe} (the plan's own order)", "-", *(base[c] for c in cats)]]
    oracle = scores_of(qs, [q.y for q in qs])  # the candidates' ceiling: every positive first
    rows.append(["positives first (the candidates' ceiling)", "-", *(oracle[c] for c in cats)])
    first = None
    moved: list[str] = []
    for model in args.models.split(","):
        for l2 in grid_of(model):
            held, ins, w = evaluate(qs, model, l2)
            if first is None or (first[0] == model and held["all"] > first[3]):  # the first model's best L2
                first = (model, l2, w, held["all"])
            rows.append([f"{model} L2 {l2}", "held-out", *(held[c] for c in cats)])
            moved.append(f"{model} L2 {l2} held-out against the plan's order, questions up / down: " + ", ".join(
                f"cat{c} {held[f'{c}:up']:.0f} / {held[f'{c}:down']:.0f}" for c in cats[1:]))
            rows.append([f"{model} L2 {l2}", "in-sample", *(ins[c] for c in cats)])
    if args.nested:
        for model in args.models.split(","):
            held, chosen, logits = nested(qs, model, grid_of(model))
            rows.append([f"{model}, L2 chosen per fold {chosen}", "nested held-out", *(held[c] for c in cats)])
            moved.append(f"{model} nested held-out against the plan's order, questions up / down: " + ", ".join(
                f"cat{c} {held[f'{c}:up']:.0f} / {held[f'{c}:down']:.0f}" for c in cats[1:]))
            if args.dump is not None:
                args.dump.write_text(json.dumps([[q.conv, q.category, recall(q, lg)] for q, lg in zip(qs, logits)]))
    if other:
        for model in args.models.split(","):
            held, chosen = cross_probe(qs, other, model, grid_of(model))
            rows.append([f"{model} fitted on {args.fit_on}'s candidates, L2 per fold {chosen}", "nested held-out",
                         *(held[c] for c in cats)])
    shipped = scores_of(qs, [shipped_logits(q, args.split_list) for q in qs])
    rows.append(["the module's rounded WEIGHTS / LIST_WEIGHTS", "in-sample", *(shipped[c] for c in cats)])
    n = {c: sum(1 for q in qs if str(q.category) == c or c == "all") for c in cats}
    print(f"{len(qs)} questions; per category {n}; positives per question "
          f"{np.mean([q.y.sum() for q in qs]):.2f}, candidates {np.mean([len(q.cands) for q in qs]):.0f}")
    print(table(["model", "fit", "R@10 in 400 words", "cat1", "cat2", "cat3", "cat4"], rows))
    print("\n".join(moved))
    if args.write and first is not None:
        model, l2, w, _ = first
        print(f"# {model}, L2 {l2}, fitted on all {len({q.conv for q in qs})} conversations")
        print_weights(w)


def print_weights(w: np.ndarray) -> None:
    """``w`` as the Python constants to paste: WEIGHTS, and LIST_WEIGHTS where it has the list questions' own
    (with --split-list); named with --extra's columns too (textual/late.py's WEIGHTS)."""
    cols = len(names := (*F.NAMES, *EXTRA))
    for const, part in (("WEIGHTS", w[:cols]), ("LIST_WEIGHTS", w[cols:])):
        if len(part):
            part = np.concatenate([fold(part[:len(F.NAMES)]), part[len(F.NAMES):]])
            print(f"{const}: Mapping[str, float] = {{")
            for name, value in zip(names, part):
                if round(float(value), 2):
                    print(f'    "{name}": {round(float(value), 2)},')
            print("}")


if __name__ == "__main__":
    main()
