"""Per-candidate features for the learned re-scorer (:mod:`.fusion_learned`, issue 14).

The re-scorer orders the candidates a search already holds: the first :data:`WINDOW` of the
plan's own fused order and the first :data:`WINDOW` of each leg. Every feature is read from what the
search computed (the legs' ranks and scores, the fused score) or from the candidates' rows, which
the search has decoded anyway (speaker, session, text); nothing here reads storage on its own, so
a candidate is only ever a row the legs found under the search's filter (scope, ``as_of``,
lifecycle). Pure functions of their inputs: the same search gives the same features.

Ranks enter as reciprocal ranks ``K / (K + rank)`` (1 near the top, 0 when absent), the way RRF
reads them; scores are normalised per query (a cosine is kept as it is: it is comparable across
queries). The fitting script (``benchmarks/fit_fusion.py``) reads the same function, so the weights
it fits and the features a search computes cannot drift apart.

A question asking for a list (:func:`.speaker_legs.asks_for_list`) is read deeper, :data:`LIST_WINDOW`
of the fused order and of each leg (the ``learned`` preset's legs give that many), and scored by weights
of its own (:data:`.fusion_learned.LIST_WEIGHTS`): its answers are spread over sessions and share few
words with the question, so they rank lower. Measured and left off (weights 0): the named speaker's
best turns of each session as candidates and features (:data:`PER_SESSION`, :func:`session_ranks`) and
the cosine to what the best hits have in common (:func:`peer_cosines`, computed only by the fitting
script, which passes ``peers``): docs/organize.md, "A learned re-scorer".
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import retrieve as R
from .speaker_legs import asks_for_list, content_words

if TYPE_CHECKING:
    from ..items import MemoryItem

WINDOW = 50  # the fused order's and each leg's first hits that are re-scored
LIST_WINDOW = 100  # the same for a question asking for a list (:func:`.speaker_legs.asks_for_list`)
PER_SESSION = 0  # list questions naming one speaker: that speaker's best N dense hits of each session too
K = 10.0  # reciprocal-rank constant (balanced's rrf_k)
_CONTENT = 20.0  # content words at which a turn counts as fully "contentful"
_NEAR = 5  # the fused order's first hits that "distance to the best hits" is measured to

#: feature names, in column order (the weights in :mod:`.fusion_learned` follow it)
NAMES: tuple[str, ...] = (
    "bias",
    "fused_rr",  # reciprocal rank in the plan's own order
    "fused_score",  # fused score / best fused score
    "dense_rr", "dense_cos",
    "unnamed_rr",
    "keyword_rr", "keyword_score",
    "hop_only",  # in no leg: brought by a graph or relation hop
    "named_speaker",  # said by a speaker the query names (naming some, not all)
    "other_speaker",  # the query names someone, and this was said by someone else
    "content",  # content words / 20 (1 for a memory without a speaker)
    "list", "list_content", "list_dense_rr", "list_keyword_rr", "list_named",
    "session_share",  # other candidates of the fused window from this memory's session / 10
    "near_best",  # 1 / (1 + row distance to the nearest of the fused order's first 5, same session)
    # list questions naming one speaker, among that speaker's dense hits (the leg's whole pool):
    "list_sess_first",  # 1 / its rank within its session
    "list_sess_best",  # its session's best cosine less the best of all, plus 1 (0 when below by 1 or more)
    "peer_cos",  # cosine of its stored vector to the mean vector of the fused order's first 5 (pseudo-relevance)
    "list_peer_cos",
    "next_fused",  # fused score / best of the turn right after it in its session, when that turn is a candidate
)


def _rr(rank: int | None) -> float:
    return 0.0 if rank is None else K / (K + rank)


def _ranks(hits: Sequence[tuple[int, float]], window: int = WINDOW) -> dict[int, int]:
    return {rid: n for n, (rid, _) in enumerate(hits[:window], 1)}


def window(query: str) -> int:
    """How deep the fused order and each leg are read for ``query``: :data:`LIST_WINDOW` for a list question."""
    return LIST_WINDOW if asks_for_list(query) else WINDOW


def candidates(
    order: Sequence[int], scored: Mapping[str, Sequence[tuple[int, float]]], window: int = WINDOW,
    extra: Sequence[int] = (),
) -> list[int]:
    """The rows re-scored: the first ``window`` of ``order``, then each leg's first ``window`` (legs by
    name), then ``extra``, without repeats; only rows the plan scored (in ``order``)."""
    placed = set(order)
    out = dict.fromkeys(order[:window])
    for leg in sorted(scored):
        out.update(dict.fromkeys(r for r, _ in scored[leg][:window] if r in placed))
    out.update(dict.fromkeys(r for r in extra if r in placed))
    return list(out)


def session_ranks(
    query: str, scored: Mapping[str, Sequence[tuple[int, float]]], items: Mapping[int, MemoryItem],
) -> dict[int, tuple[int, float]]:
    """For a list question naming one speaker (some but not all of those in ``items``): each of that
    speaker's dense hits (the leg's whole pool, rows in ``items``) with (its rank among that speaker's
    hits of its session, its session's best cosine less the leg's best). Else empty.

    Why: list evidence is spread one or two turns per session, and a session's best turn of the named
    person is a candidate even when other sessions fill every leg's first hits."""
    dense = scored.get("dense", ())
    if not dense or not asks_for_list(query):
        return {}
    speaker = {r: it.metadata.get("speaker") for r, it in items.items()}
    present = {s for s in speaker.values() if isinstance(s, str) and s}
    named = R.named_speakers(query, present)
    if len(named) != 1 or present <= named:
        return {}
    top = dense[0][1]
    seen: Counter[str | None] = Counter()
    best: dict[str | None, float] = {}
    out = {}
    for rid, cos in dense:
        it = items.get(rid)
        if it is None or speaker.get(rid) not in named:
            continue
        sid = it.session_id
        seen[sid] += 1
        best.setdefault(sid, cos)
        out[rid] = (seen[sid], best[sid] - top)
    return out


def features(
    query: str, cands: Sequence[int], order: Sequence[int], scores: Mapping[int, float],
    scored: Mapping[str, Sequence[tuple[int, float]]], items: Mapping[int, MemoryItem],
    sessions: Mapping[int, tuple[int, float]] | None = None, peers: Mapping[int, float] | None = None,
) -> np.ndarray:
    """The feature matrix of ``cands`` (one row each, columns :data:`NAMES`), float64.

    Args:
        query: the query text (who it names, whether it asks for a list).
        cands: the rows to describe (:func:`candidates`).
        order: the plan's fused order; ``scores`` its scores.
        scored: each leg's (row, score) list, best first.
        items: the candidates' rows (a row missing here is described without speaker or session).
        sessions: :func:`session_ranks` (None: none).
        peers: :func:`peer_cosines` (None: none).

    Returns:
        An array of shape ``(len(cands), len(NAMES))``.
    """
    X = np.zeros((len(cands), len(NAMES)))
    if not cands:
        return X
    win = window(query)
    sessions = sessions or {}
    peers = peers or {}
    fused_rank = {rid: n for n, rid in enumerate(order[:win], 1)}
    best = max((scores.get(r, 0.0) for r in cands), default=0.0) or 1.0
    dense = _ranks(scored.get("dense", ()), win)
    cos = dict(scored.get("dense", ())[:win])
    floor = min(cos.values(), default=0.0)
    unnamed = _ranks(scored.get("unnamed", ()), win)
    keyword = _ranks(scored.get("keyword", ()), win)
    kw = dict(scored.get("keyword", ())[:win])
    lo, hi = min(kw.values(), default=0.0), max(kw.values(), default=0.0)
    in_leg = {r for hits in scored.values() for r, _ in hits}
    speaker = {r: s if isinstance(s := it.metadata.get("speaker"), str) and s else None for r, it in items.items()}
    present = {s for s in speaker.values() if s}
    named = R.named_speakers(query, present)
    if present <= named:
        named = set()
    names = frozenset(w for s in present for w in R.keyword_terms(s, None))
    is_list = 1.0 if asks_for_list(query) else 0.0
    head = [r for r in order[:WINDOW] if r in items]
    per_session = Counter(items[r].session_id for r in head)
    near = [(r, items[r].session_id) for r in order[:_NEAR] if r in items]
    is_cand = set(cands)
    for i, rid in enumerate(cands):
        it = items.get(rid)
        who = speaker.get(rid)
        content = 1.0 if it is None or who is None else min(_content(it.text, names), _CONTENT) / _CONTENT
        dense_rr, keyword_rr = _rr(dense.get(rid)), _rr(keyword.get(rid))
        is_named = 1.0 if named and who in named else 0.0
        share = near_best = next_fused = 0.0
        if it is not None:
            after = items.get(rid + 1) if rid + 1 in is_cand else None
            if after is not None and it.session_id is not None and after.session_id == it.session_id:
                next_fused = scores.get(rid + 1, 0.0) / best
            share = min(per_session[it.session_id] - (1 if rid in fused_rank else 0), 10) / 10.0
            gaps = [abs(rid - r) for r, sid in near if r != rid and sid == it.session_id]
            near_best = 1.0 / (1.0 + min(gaps)) if gaps else 0.0
        sess_rank, sess_best = sessions.get(rid, (0, -1.0))
        X[i] = (
            1.0, _rr(fused_rank.get(rid)), scores.get(rid, 0.0) / best,
            dense_rr, cos.get(rid, floor), _rr(unnamed.get(rid)),
            keyword_rr, (kw[rid] - lo) / (hi - lo) if rid in kw and hi > lo else 0.0,
            0.0 if rid in in_leg else 1.0,
            is_named, 1.0 if named and who not in named else 0.0,
            content, is_list, is_list * content, is_list * dense_rr, is_list * keyword_rr, is_list * is_named,
            share, near_best,
            1.0 / sess_rank if sess_rank else 0.0, max(1.0 + sess_best, 0.0),
            peers.get(rid, 0.0), is_list * peers.get(rid, 0.0), next_fused,
        )
    return X


def peer_cosines(cands: Sequence[int], order: Sequence[int], rids: Sequence[int], matrix: np.ndarray) -> dict[int, float]:
    """Each candidate's cosine to the mean of the unit vectors of ``order``'s first :data:`_NEAR` (those
    with a vector among ``rids`` / ``matrix``, one row each): what the best hits have in common.

    Why: the answers to a list question resemble each other (swimming, camping, painting) more than
    they resemble the question's words."""
    if not len(rids):
        return {}
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    row = {r: i for i, r in enumerate(rids)}
    head = [row[r] for r in order[:_NEAR] if r in row]
    if not head:
        return {}
    centre = unit[head].mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    sims = (unit @ centre).tolist()
    return {r: float(sims[row[r]]) for r in cands if r in row}


@functools.lru_cache(maxsize=8192)
def _content(text: str, names: frozenset[str]) -> int:
    """:func:`.speaker_legs.content_words`, held per (text, names): the same turns are described search
    after search (a pure function: never stale)."""
    return content_words(text, set(names))
