"""Query expansion without an LLM (issue 14): new candidates from the query side.

Multi-hop questions ("what activities does Melanie do?") are answered by turns spread over many
sessions that share few words with the question; most of the evidence missed lies beyond rank 50 of
the fused list or in no leg's pool at all, so re-ranking the first pass cannot find it. These steps add candidates, each as a leg of its
own that joins the fusion with its own weight (:class:`.retrieve.SearchPlan` options, off by default):

- **dense feedback** (Rocchio): the query vector moved toward the mean stored vector of the first
  pass's best hits, then a second dense pass (a matrix product over the stored vectors, no new query
  embedding); leg ``feedback``;
- **keyword feedback** (RM3-style): the words the first pass's best hits use most, weighted by their
  rank and rarity, added to the query's own words for a second keyword pass; leg ``feedback_terms``;
- **the question without its names** (``unnamed_weight``): a question's names ("What did Caroline
  research?") pull its embedding toward every turn that says them ("Hey Caroline!"); a second dense
  leg of the question with the speakers it names replaced by "they" ranks by the topic alone (the
  speaker boost still says who). Not for "when" questions, whose named person is the point. Leg
  ``unnamed``. Two ways (``unnamed_mode``): ``project`` removes each name's direction from the query
  vector (the name embedded once, then cached: no new embedding per search; balanced), ``embed``
  embeds the question without its names again (one more query embedding; deep, multihop).

The feedback passes start from the plan's own legs (dense, keyword, and the shape legs) fused as the
plan fuses them. Every second pass runs with the search's filter, so scope, time travel (``as_of``), lifecycle
and the user's own memories hold exactly as for the first: an expansion never reads a vector or a
text it could not return. Pure arithmetic here is unit-testable without a database; the two passes
go through :class:`.memory.TextualMemory`'s legs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..storage.caches import SPEAKER_MAP_ROWS, held_speaker_map
from . import cache_scope
from . import retrieve as R

if TYPE_CHECKING:
    from .filters import MemoryFilter
    from .memory import TextualMemory

#: the legs this module adds, by name (``SearchHit.ranks`` shows them)
DENSE_FEEDBACK = "feedback"
TERM_FEEDBACK = "feedback_terms"
UNNAMED = "unnamed"


def leg_weights(plan: R.SearchPlan) -> dict[str, float]:
    """The fusion weights of the expansion legs."""
    return {DENSE_FEEDBACK: plan.feedback_dense_weight, TERM_FEEDBACK: plan.feedback_terms_weight,
            UNNAMED: plan.unnamed_weight}


def rocchio(qvec: np.ndarray, feedback: np.ndarray, weights: Sequence[float], beta: float) -> np.ndarray:
    """Rocchio's relevance feedback: ``q + beta x`` the weighted mean of the feedback vectors,
    re-normalised (the stored vectors are unit length, so cosine stays a dot product).

    Example:
        >>> v = rocchio(np.array([1.0, 0.0]), np.array([[0.0, 1.0]]), [1.0], beta=1.0)
        >>> [round(float(x), 3) for x in v]
        [0.707, 0.707]
    """
    w = np.asarray(weights, dtype=np.float64)
    if feedback.size == 0 or w.sum() <= 0:
        return qvec
    centroid = (w[:, None] * feedback).sum(axis=0) / w.sum()
    moved = qvec / (np.linalg.norm(qvec) or 1.0) + beta * centroid
    norm = float(np.linalg.norm(moved))
    return (moved / norm).astype(np.float32) if norm > 0 else qvec


def word_weights(texts: Sequence[tuple[str, float]], skip: set[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Each content word of the feedback texts (not in ``skip``): the sum, over the texts using it,
    of the text's weight x the word's share of that text's words; and how many texts use it."""
    scores: dict[str, float] = {}
    users: dict[str, int] = {}
    for text, weight in texts:
        words = R.keyword_terms(text, None, unique=False)
        counts: dict[str, int] = {}
        for word in words:
            counts[word] = counts.get(word, 0) + 1
        for word, n in counts.items():
            if word not in skip:
                users[word] = users.get(word, 0) + 1
                scores[word] = scores.get(word, 0.0) + weight * n / len(words)
    return scores, users


def feedback_terms(
    scores: Mapping[str, float], df: Mapping[str, int], docs: int, k: int, max_share: float = 0.1,
) -> list[str]:
    """RM3-style expansion words: the feedback weight of each word (:func:`word_weights`) times its
    IDF; words in more than ``max_share`` of the ``docs`` documents, or in none (``df`` 0 or
    missing: not indexed), are left out. The best ``k``, best first (ties by the word).

    Example:
        >>> feedback_terms({"went": 0.3, "camping": 0.25, "beach": 0.1}, {"went": 40, "camping": 3, "beach": 2}, 100, 2)
        ['camping', 'beach']
    """
    limit = max(max_share * docs, 5)  # a word of at most 5 documents is never too common to say something
    ranked = []
    for word, score in scores.items():
        n = df.get(word, 0)
        if 0 < n <= limit:
            ranked.append((score * math.log(1 + docs / n), word))
    ranked.sort(key=lambda sw: (-sw[0], sw[1]))
    return [w for _, w in ranked[:k]]


def first_pass(
    scored: Mapping[str, Sequence[tuple[int, float]]], weights: Mapping[str, float], k: float, n: int
) -> list[tuple[int, float]]:
    """The ``n`` best rows of the legs fused by weighted reciprocal ranks, with their fused scores
    divided by the best one (the feedback weight of each)."""
    fused = R.rrf({leg: [r for r, _ in hits] for leg, hits in scored.items()}, weights, k)
    best = sorted(fused.items(), key=lambda rs: -rs[1])[:n]
    top = best[0][1] if best else 1.0
    return [(rid, s / top) for rid, s in best]


def dense_many(mem: TextualMemory, vectors: np.ndarray, flt: MemoryFilter, k: int) -> list[tuple[int, float]]:
    """One dense pass for several query vectors: each candidate scores its best similarity to any of
    them. Exact (one matrix product) over the filter's candidates when they are few, else one
    filtered dense leg per vector, merged."""
    candidates = mem.store.candidate_rids(flt, mem.exact_search_max + 1)
    best: dict[int, float] = {}
    if len(candidates) <= mem.exact_search_max:
        rids, matrix = mem.store.vectors_for(candidates)
        if rids:
            sims = (matrix @ vectors.T).max(axis=1)
            top = np.argsort(-sims)[:k]
            return [(rids[i], float(sims[i])) for i in top]
        return []
    for vec in vectors:
        for rid, sim in mem._dense(vec, flt, k):
            best[rid] = max(best.get(rid, -1.0), sim)
    return sorted(best.items(), key=lambda rs: -rs[1])[:k]


def unnamed(query: str, names: set[str]) -> str:
    """``query`` with each of ``names`` (and its possessive) replaced by "they".

    Example:
        >>> unnamed("What did Caroline's friends give Caroline?", {"Caroline"})
        'What did they friends give they?'
    """
    for name in sorted(names, key=len, reverse=True):
        query = re.sub(r"(?<![\w'])" + re.escape(name) + r"(?:'s|’s)?(?![\w])", "they", query, flags=re.I)
    return " ".join(query.split())


def named_in_hits(mem: TextualMemory, query: str, scored: Mapping[str, Sequence[tuple[int, float]]]) -> set[str]:
    """The speakers of the first pass's best hits that ``query`` names."""
    top = list(dict.fromkeys(r for hits in scored.values() for r, _ in hits[:10]))
    return R.named_speakers(query, speakers_of(mem, top))


def speakers_of(mem: TextualMemory, rids: Sequence[int]) -> set[str]:
    """The speakers (non-empty strings) of the rows ``rids``: from the map held per commit
    (:func:`~memos_integrations.storage.caches.held_speaker_map`) where it can be, else from the rows
    ranking holds (decoded once per content, current)."""
    held = held_speaker_map(mem.store, SPEAKER_MAP_ROWS)
    if held is not None:
        return {s for r in rids if (s := held.get(r))}
    return {s for it in mem.store.ranking_rows(rids).values() if isinstance(s := it.metadata.get("speaker"), str) and s}


_NAME_CACHE = 1024  # names are few per cube: a speaker's vector is embedded once per memory object


def name_vector(mem: TextualMemory, name: str) -> np.ndarray:
    """The (cached) query embedding of a speaker's name, kept on ``mem`` so an embedder without a
    query cache (an API) is not asked again on every search."""
    cache: dict[tuple[int, str, str], np.ndarray] = mem.__dict__.setdefault("_name_vectors", {})
    # an embedder swapped on the memory (reindex) gets its own vectors; one user's never answer another's sooner
    key = (id(mem.embedder), cache_scope.current(), name)
    vec = cache.get(key)
    if vec is None:
        if len(cache) >= _NAME_CACHE:
            cache.clear()
        vec = cache[key] = np.asarray(mem.embedder.embed_query(name), dtype=np.float32)
    return vec


def without_directions(qvec: np.ndarray, names: np.ndarray) -> np.ndarray:
    """``qvec`` with its component along each (unit) name vector removed, re-normalised: the query
    "minus" its names, without embedding anything new (a name's vector is one cached query embedding).

    Example:
        >>> v = without_directions(np.array([0.6, 0.8]), np.array([[1.0, 0.0]]))
        >>> [round(float(x), 3) for x in v]
        [0.0, 1.0]
    """
    v = np.asarray(qvec, dtype=np.float32).copy()
    for n in names:
        n = n / (float(np.linalg.norm(n)) or 1.0)
        v -= float(v @ n) * n
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-6 else np.asarray(qvec, dtype=np.float32)


def without_speakers(mem: TextualMemory, query: str, scored: Mapping[str, Sequence[tuple[int, float]]]) -> str | None:
    """The query without the names of the speakers it names (of the first pass's best hits), or None
    when it names none of them or nothing else is left."""
    named = named_in_hits(mem, query, scored)
    if not named:
        return None
    text = unnamed(query, named)
    return text if R.keyword_terms(text.replace("they", "")) else None


def expansion_legs(
    mem: TextualMemory, plan: R.SearchPlan, query: str, qvec: np.ndarray | None, terms: Sequence[str],
    flt: MemoryFilter, pool: int, scored: Mapping[str, Sequence[tuple[int, float]]],
    ahead: Mapping[str, np.ndarray] | None = None,
) -> dict[str, list[tuple[int, float]]]:
    """The second passes the plan asks for, from the first pass's legs ``scored``; each reads with
    the search's filter ``flt`` (scope holds). Empty when the plan asks for none or nothing was found.
    ``ahead``: query vectors by text, embedded with the query (:mod:`.embed_ahead`)."""
    legs: dict[str, list[tuple[int, float]]] = {}
    # a "when" question asks the time of one event of the person it names: their name is the point
    if plan.unnamed_weight > 0 and qvec is not None and scored and not R._WHEN.match(query):  # time_hint's asks_when
        if plan.unnamed_mode == "embed":
            text = without_speakers(mem, query, scored)
            if text is not None:
                vec = (ahead or {}).get(text)  # embedded with the query when it guessed this text
                legs[UNNAMED] = mem._dense(mem.embedder.embed_query(text) if vec is None else vec, flt, pool)
        else:
            named = named_in_hits(mem, query, scored)
            if named:
                names = np.stack([name_vector(mem, n) for n in sorted(named)])
                legs[UNNAMED] = mem._dense(without_directions(qvec, names), flt, pool)
    if plan.feedback_docs <= 0 or not scored:
        return legs
    weights = {"dense": plan.dense_weight, "keyword": plan.keyword_weight, "summary": plan.coarse_weight,
               "entity": plan.entity_weight, "working": plan.dense_weight}
    seeds = first_pass(scored, weights, plan.rrf_k, plan.feedback_docs)
    if not seeds:
        return legs
    if plan.feedback_dense_weight > 0 and qvec is not None:
        rids, matrix = mem.store.vectors_for([r for r, _ in seeds])
        if rids:
            weight_of = dict(seeds)
            w = [weight_of[r] for r in rids]
            if plan.feedback_each:
                moved = np.stack([rocchio(qvec, matrix[i : i + 1], [1.0], plan.feedback_beta) for i in range(len(rids))])
                legs[DENSE_FEEDBACK] = dense_many(mem, moved, flt, pool)
            else:
                legs[DENSE_FEEDBACK] = mem._dense(rocchio(qvec, matrix, w, plan.feedback_beta), flt, pool)
    if plan.feedback_terms_weight > 0 and plan.feedback_terms > 0:
        items = mem.store.get_by_rid([r for r, _ in seeds])
        scores, users = word_weights([(items[r].text, w) for r, w in seeds if r in items], set(terms))
        shared = sorted(w for w, n in users.items() if n >= 2)  # a word one hit uses says little of the topic
        if shared:
            extra = feedback_terms({w: scores[w] for w in shared}, mem.store.term_counts(shared),
                                   mem.store.max_rid(), plan.feedback_terms)
            if extra:
                legs[TERM_FEEDBACK] = mem.store.keyword_search([*terms, *extra], flt, pool)
    return legs
