"""The search plan: how a query becomes ranked memories. Pure functions over the legs' results.

A :class:`SearchPlan` is a typed, named configuration (presets below). Executing it:

1. **dense** leg: cosine similarity of the query embedding (exact over the filter's candidates when
   they are few, the ANN index when they are many);
2. **keyword** leg: FTS5 BM25 over the query's content words;
3. **fusion**: reciprocal-rank fusion of the legs, each with a weight;
4. **time**: a query that names a period ("last week", "in May 2023") boosts items that happened
   then; a "when" question boosts items that carry a resolved time;
5. **graph**: the neighbours of the best hits (the turn before and after) join with a share of the
   score that found them;
6. **MMR** (optional): re-rank for diversity with the item vectors.

Only the legs touch storage (``TextualMemory`` runs them); everything here is deterministic and
unit-testable without a database.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .read import _MONTHS, resolve_relative


class SearchPlan(BaseModel):
    """How to search. Use a preset (``FAST``, ``BALANCED``, ``DEEP``) or ``BALANCED.model_copy(update=...)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    dense: bool = True
    keyword: bool = True
    candidates: int = Field(60, ge=1, le=10_000, description="how many hits each leg contributes")
    keyword_budget: int = Field(
        5000, ge=1, description="most documents the keyword leg ranks; beyond it only the rarest terms are kept"
    )
    fusion: Literal["rrf", "convex", "learned", "late"] = Field(
        "rrf", description="rrf: weighted reciprocal ranks; convex: weighted sum of max-normalised leg scores; "
        "learned: rrf, then its candidates re-scored by a fitted linear model (textual/fusion_learned.py); late: "
        "learned with token-level late interaction where token vectors are stored (textual/late.py), else learned"
    )
    rrf_k: float = Field(60.0, gt=0, description="reciprocal-rank fusion constant")
    dense_weight: float = Field(1.0, ge=0)
    keyword_weight: float = Field(1.0, ge=0)
    time_aware: bool = True
    time_boost: float = Field(0.5, ge=0, description="score multiplier bonus for items in a period the query names")
    graph_hops: int = Field(0, ge=0, le=3)
    graph_seeds: int = Field(5, ge=0, description="how many top hits are expanded to their neighbours")
    graph_weight: float = Field(0.5, ge=0, le=1)
    graph_types: tuple[str, ...] | None = None
    mmr_lambda: float | None = Field(None, ge=0, le=1, description="None: no MMR; 1.0: relevance only")
    mmr_pool: int = Field(30, ge=1)
    # -- the shape of organised memory (issue 14): summaries, entities, relations, working memory --
    coarse_to_fine: bool = Field(
        False, description="search the summaries (topic, episode), then rank their members as a leg of its own"
    )
    summary_seeds: int = Field(3, ge=1, le=100, description="how many best summaries are opened to their members")
    coarse_weight: float = Field(0.5, ge=0, description="fusion weight of the summaries' members leg")
    summary_hits: Literal["keep", "expand"] = Field(
        "keep",
        description="keep: a summary is a hit (its sources name its members); expand: a summary hit is replaced "
        "by its best members not yet listed, each annotated with the summary's rank (ranks['via_summary'])",
    )
    coarse_on_time: bool = Field(
        True, description="False: coarse to fine skips a query that asks when or names a period (a 'when' question "
        "is answered by the one turn that carries the date, not by a topic's members)",
    )
    summary_members: int | None = Field(
        None, ge=1, le=1000, description="coarse to fine: each opened summary gives at most this many of its members "
        "(those most like the query), so one large cluster cannot fill the leg. None: all",
    )
    expand_members: int = Field(2, ge=1, le=50, description="members that replace one summary hit (expand)")
    entity_leg: bool = Field(
        False, description="a leg of the memories that mention the query's names (extractive), by dense similarity"
    )
    entity_weight: float = Field(0.5, ge=0, description="fusion weight of the entity leg")
    entity_max_share: float = Field(
        0.1, gt=0, le=1,
        description="a name mentioned by more than this share of the cube's items selects nothing (the "
        "speaker of a two-person chat is in half of it): the entity leg uses only names that narrow the search",
    )
    relation_hops: int = Field(
        0, ge=0, le=3, description="hops along relation links (same_entity, before, conflict) from the best hits"
    )
    relation_types: tuple[str, ...] = ("same_entity", "before", "conflict")
    relation_seeds: int = Field(5, ge=1, le=100, description="how many best hits the relation hops start from")
    relation_weight: float = Field(0.3, ge=0, le=1, description="share of its seed's score a related memory gets")
    working_first: int = Field(
        0, ge=0, le=100,
        description="at most this many hits from the current session's working memory lead the results",
    )
    # -- evidence spread over a conversation (issue 14: multi-hop and open-domain questions) --
    speaker_boost: float = Field(
        0.0, ge=0,
        description="score multiplier bonus for memories said by a person the query names (metadata "
        "'speaker'); a query that names no speaker, or every speaker, ranks as without it. 0: off",
    )
    session_cap: int | None = Field(
        None, ge=1, le=100,
        description="at most this many of the leading hits from one session; the rest move below "
        "(not dropped), so one session cannot fill the context. None: off",
    )
    person_topics: bool = Field(
        False, description="a leg of the members of the person topics (organiser option person_topics) of the "
        "named person's memories most like the query, spread over sessions (:mod:`.shape_legs`). Off: measured "
        "on LoCoMo dev it lowered recall (docs/organize.md)",
    )
    person_topic_seeds: int = Field(3, ge=1, le=100, description="the named person's best memories whose topics are opened")
    person_topic_weight: float = Field(0.25, ge=0, description="fusion weight of the person topics leg")
    person_per_session: int = Field(1, ge=1, le=100, description="the person topics leg's members from one session at most")
    # -- query expansion (issue 14; textual/expand.py): second passes that add candidates; 0: off --
    feedback_docs: int = Field(0, ge=0, le=50, description="the first pass's best hits that feed the second passes")
    feedback_dense_weight: float = Field(
        0.0, ge=0, description="fusion weight of the Rocchio leg: the query vector moved toward the feedback hits'")
    feedback_beta: float = Field(1.0, ge=0, description="Rocchio: how far the query vector moves (q + beta x mean)")
    feedback_each: bool = Field(False, description="Rocchio toward each feedback hit apart (best of them), not their mean")
    feedback_terms: int = Field(0, ge=0, le=50, description="RM3: words of the feedback hits added to the keyword query")
    feedback_terms_weight: float = Field(0.0, ge=0, description="fusion weight of the expanded keyword leg")
    unnamed_weight: float = Field(
        0.0, ge=0, description="fusion weight of a dense leg of the query without the speakers it names")
    unnamed_mode: Literal["project", "embed"] = Field(
        "project", description="project: the query vector with the direction of each named speaker's name "
        "removed (no new embedding; a name's vector is embedded once and cached); embed: the query text "
        "with the names replaced by 'they', embedded again (one more query embedding, about 9 ms on CPU)",
    )
    # -- one person's life over many sessions (issue 14; textual/speaker_legs.py); 0 / None: off --
    speaker_dense_weight: float = Field(
        0.0, ge=0, description="fusion weight of a dense leg restricted to the turns of the speakers the query "
        "names (a filter, not a boost), with the names' directions removed from the query vector")
    speaker_keyword_weight: float = Field(
        0.0, ge=0, description="fusion weight of a keyword leg restricted to the named speakers' turns, "
        "with the names removed from the query's words")
    list_spread: int | None = Field(
        None, ge=1, le=100, description="a question asking for a list takes at most this many of its "
        "leading hits from one session (the rest follow). None: off")
    keyword_unnamed: bool = Field(
        False, description="the keyword leg searches the query's words without the names of the speakers "
        "it names (some, not all): a turn whose one matching word is the name ('Bye Caroline!') no longer "
        "ranks by it; the speaker boost still says who")
    content_prior: int | None = Field(
        None, ge=1, le=100, description="for a question asking for a list: a leading dialogue turn (a hit with "
        "a speaker) with fewer content words than this (stop words and speakers' names left out) has its score "
        "scaled by their share of it (a list names things; small talk names none). None: off")


#: The edges of a conversation's sequence: the turn before / after, a part's document, a fact's source.
#: The neighbour hop of the presets follows these only; organised memory's links have their own option.
SEQUENCE_EDGES: tuple[str, ...] = ("next", "parent", "derived_from")

FAST = SearchPlan(name="fast", keyword=False, time_aware=False, candidates=20)
# Tuned on the LoCoMo dev split (benchmarks/bench_retrieval.py): keyword evidence is sharper than
# MiniLM's on conversational recall, a small rrf_k trusts each leg's top ranks, and one graph hop
# brings in the turn that answers (or asks) the hit.
# A summary hit is replaced by its members (it would fill a slot and point to no single message);
# on a flat cube there are no summaries and this changes nothing.
# A question about a named person is answered by what that person said (LoCoMo dev: 97% of the
# evidence of questions naming one speaker was said by them), so their memories count double
# (speaker_boost=1.0: a round "twice", not a fitted value; 0.5 and 2.0 score alike; applied after the
# hops, so the other speaker's neighbouring turn is not lifted with it). A query naming nobody, or
# every speaker, ranks as without it.
# The names a question gives pull its embedding toward every turn that mentions them ("Hey Caroline!");
# a second dense leg of the question without them (weight 0.5, as the dense leg's) finds what that
# person said about the topic (expand.py). Balanced removes the names' directions from the query
# vector (no second embedding: LoCoMo dev 0.767 -> 0.775, category 3 0.422 -> 0.502); deep and
# multihop embed the question without its names again (0.780, a second query embedding per search).
# The same names make BM25 rank small talk ("Bye Caroline!": the name is its one matching word, and it
# is short): the keyword leg searches the question's words without the speakers it names
# (keyword_unnamed), and a question asking for a list scales down hits with fewer than ten content
# words (content_prior=10: a list names things, small talk names none; 8 and 12 score alike).
# LoCoMo dev: 0.775 -> 0.782, category 1 0.475 -> 0.505, no category lower (speaker_legs.py).
BALANCED = SearchPlan(name="balanced", dense_weight=0.5, rrf_k=10, graph_hops=1, graph_weight=0.6,
                      graph_types=SEQUENCE_EDGES, summary_hits="expand", speaker_boost=1.0, unnamed_weight=0.5,
                      keyword_unnamed=True, content_prior=10)
# Depth: everything balanced does, plus the shape of organised memory (summaries opened to their
# members, the query's names as a leg, relation links, the session's working memory first), its
# candidates re-scored by the learned model as `learned` does (held out by conversation: 0.786 -> 0.807
# flat, 0.781 -> 0.800 organised, every category up; docs/organize.md). On a cube that was never organised
# the shape options find nothing to use and the plan ranks as learned does, with the query's names as a leg.
DEEP = BALANCED.model_copy(update=dict(
    name="deep", coarse_to_fine=True, entity_leg=True, relation_hops=1, working_first=3, unnamed_mode="embed",
    fusion="learned", candidates=100,
))
# Multi-hop questions need evidence from several places: wider pools, more seeds for every hop.
MULTIHOP = DEEP.model_copy(update=dict(
    name="multihop", candidates=100, graph_seeds=10, summary_seeds=5, relation_seeds=10, relation_hops=2,
))
# Balanced, then its candidates (the first 50 of its order and of each leg; 100 for a list question, so its legs
# give 100) re-scored by a linear model fitted on LoCoMo dev, validated leaving each conversation out
# (textual/fusion_learned.py, docs/organize.md).
LEARNED = BALANCED.model_copy(update=dict(name="learned", fusion="learned", candidates=100))
# Learned plus MaxSim of the question's content-word token vectors against each candidate's (textual/late.py).
LATE = LEARNED.model_copy(update=dict(name="late", fusion="late"))
PRESETS: dict[str, SearchPlan] = {p.name: p for p in (FAST, BALANCED, DEEP, MULTIHOP, LEARNED, LATE)}


def plan_named(plan: SearchPlan | str | None) -> SearchPlan:
    from ..errors import InvalidInputError

    if plan is None:
        return BALANCED
    if isinstance(plan, SearchPlan):
        return plan
    if plan not in PRESETS:
        raise InvalidInputError(f"unknown search plan {plan!r}; presets: {sorted(PRESETS)}")
    return PRESETS[plan]


def uses_working_memory(plan: SearchPlan | str | None) -> bool:
    """Whether ``plan`` reads the session a search comes from (``working_first``): the faces then pass
    the session they act in as ``current_session`` (and leave it out otherwise, so a cube that does
    not know the argument, a remote one, is not asked for it)."""
    return plan_named(plan).working_first > 0


_STOP = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves ever also get got go did does""".split()
)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9']*")


def keyword_terms(text: str, limit: int | None = 32, *, unique: bool = True) -> list[str]:
    """The query's content words, lower-cased, without stop words or possessives, first ``limit``
    (None: all; ``unique=False`` keeps repeats, for counting how often the query uses a word).

    A search asks this of the same short texts ~9 times (its legs, boosts and speaker checks): those
    are split once (a new list each call; issue 13)."""
    if len(text) <= _HELD_TERMS_CHARS:
        return list(_held_terms(text, limit, unique))
    return _terms(text, limit, unique)


_HELD_TERMS_CHARS = 1000  # held texts at most this long: 4096 of them are a few MB at most


@functools.lru_cache(maxsize=4096)
def _held_terms(text: str, limit: int | None, unique: bool) -> tuple[str, ...]:
    return tuple(_terms(text, limit, unique))


def _terms(text: str, limit: int | None, unique: bool) -> list[str]:
    words: list[str] = []
    seen: set[str] = set()
    for w in _WORD.findall(text.lower()):
        w = w.strip("'")
        if w.endswith("'s"):
            w = w[:-2]
        if len(w) > 1 and w not in _STOP and (not unique or w not in seen):
            words.append(w)
            seen.add(w)
            if limit is not None and len(words) >= limit:
                break
    return words


def keyword_query(text: str | list[str]) -> str | None:
    """An FTS5 MATCH expression: the content words, quoted, OR-ed. None when nothing is left."""
    words = keyword_terms(text) if isinstance(text, str) else text
    return " OR ".join(f'"{w}"' for w in words) or None


def prune_terms(counts: Mapping[str, int], budget: int) -> list[str]:
    """The rarest terms whose summed document frequency stays within ``budget`` (at least one term).

    BM25 must score every document an OR query matches; a frequent term adds thousands of matches
    and little score (its IDF is low). Keeping the rare terms bounds the work, the dense leg still
    sees the whole query.

    Example:
        >>> prune_terms({"maya": 900, "the": 90000, "porto": 40}, budget=5000)
        ['porto', 'maya']
    """
    kept: list[str] = []
    total = 0
    for term, n in sorted(counts.items(), key=lambda kv: kv[1]):
        if kept and total + n > budget:
            break
        kept.append(term)
        total += n
    return kept


@dataclass(frozen=True)
class TimeHint:
    """What the query says about time."""

    start: datetime | None = None
    end: datetime | None = None
    asks_when: bool = False


_WHEN = re.compile(r"^\s*(when|what (?:time|date|day|year|month)|how long ago|since when)\b", re.I)
_MONTH_YEAR = re.compile(r"\b(?:in\s+)?(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?\s+(\d{4})\b", re.I)
_YEAR = re.compile(r"\b(?:in|during)\s+((?:19|20)\d{2})\b", re.I)


def time_hint(query: str, now: datetime | None = None) -> TimeHint:
    """Read a period and a "when" intent out of a query.

    Example:
        >>> h = time_hint("what did we plan last week?", datetime(2023, 5, 17, tzinfo=timezone.utc))
        >>> h.start.date().isoformat(), h.end.date().isoformat()
        ('2023-05-08', '2023-05-14')
        >>> time_hint("what happened in May 0000?").start is None
        True
    """
    now = now or datetime.now(timezone.utc)
    asks_when = bool(_WHEN.match(query))
    span: tuple[date, date] | None = None
    m = _MONTH_YEAR.search(query)
    if m:
        month, year = _MONTHS[m.group(1).lower()], int(m.group(2))
        if 1 < year < 9999:  # "May 0000" or "December 9999" name no period the calendar can hold: no hint
            nxt = date(year + month // 12, month % 12 + 1, 1)
            span = (date(year, month, 1), nxt - timedelta(days=1))
    elif (y := _YEAR.search(query)) is not None:
        span = (date(int(y.group(1)), 1, 1), date(int(y.group(1)), 12, 31))
    else:
        rel = resolve_relative(query, now)
        if rel:
            span = (rel[0][1], rel[0][2])
    if span is None:
        return TimeHint(asks_when=asks_when)
    start = datetime(span[0].year, span[0].month, span[0].day, tzinfo=timezone.utc)
    end = datetime(span[1].year, span[1].month, span[1].day, 23, 59, 59, tzinfo=timezone.utc)
    return TimeHint(start, end, asks_when)


def rrf(legs: Mapping[str, Sequence[int]], weights: Mapping[str, float], k: float) -> dict[int, float]:
    """Weighted reciprocal-rank fusion: sum over legs of weight / (k + rank)."""
    scores: dict[int, float] = {}
    for leg, ranked in legs.items():
        w = weights.get(leg, 1.0)
        for rank, rid in enumerate(ranked, start=1):
            scores[rid] = scores.get(rid, 0.0) + w / (k + rank)
    return scores


def convex(legs: Mapping[str, Sequence[tuple[int, float]]], weights: Mapping[str, float]) -> dict[int, float]:
    """Weighted sum of each leg's scores divided by that leg's best score (a missing leg adds 0)."""
    scores: dict[int, float] = {}
    for leg, scored in legs.items():
        top = max((s for _, s in scored), default=0.0)
        if top <= 0:
            continue
        w = weights.get(leg, 1.0)
        for rid, s in scored:
            scores[rid] = scores.get(rid, 0.0) + w * max(s, 0.0) / top
    return scores


def apply_time(
    scores: dict[int, float], hint: TimeHint, times: Mapping[int, tuple[float | None, bool]], boost: float
) -> dict[int, float]:
    """Boost items inside the named period; for "when" questions, items that carry a resolved time.

    ``times`` maps rid -> (event time as epoch seconds or None, whether the text mentions a time).
    """
    if boost <= 0 or (hint.start is None and not hint.asks_when):
        return scores
    lo = hint.start.timestamp() if hint.start else None
    hi = hint.end.timestamp() if hint.end else None
    out = dict(scores)
    for rid, score in scores.items():
        event, mentions = times.get(rid, (None, False))
        bonus = 0.0
        if lo is not None and hi is not None and event is not None and lo <= event <= hi:
            bonus += boost
        if hint.asks_when and mentions:
            bonus += boost / 5
        out[rid] = score * (1.0 + bonus)
    return out


def expand(
    scores: dict[int, float], neighbours: Mapping[int, tuple[int, float]], weight: float
) -> dict[int, float]:
    """Add graph neighbours: each gets ``weight`` x its seed's score x the edge weight, if that is more."""
    out = dict(scores)
    for rid, (seed, edge_weight) in neighbours.items():
        candidate = scores.get(seed, 0.0) * weight * edge_weight
        if candidate > out.get(rid, 0.0):
            out[rid] = candidate
    return out


def mmr(order: Sequence[int], vectors: Mapping[int, np.ndarray], relevance: Mapping[int, float], lam: float, k: int) -> list[int]:
    """Maximal marginal relevance over ``order`` (relevance normalised to [0, 1])."""
    pool = [r for r in order if r in vectors]
    if not pool:
        return list(order[:k])
    top = max(relevance[r] for r in pool) or 1.0
    chosen: list[int] = []
    while pool and len(chosen) < k:
        best, best_score = pool[0], -np.inf
        for r in pool:
            sim = max((float(vectors[r] @ vectors[c]) for c in chosen), default=0.0)
            score = lam * relevance[r] / top - (1 - lam) * sim
            if score > best_score:
                best, best_score = r, score
        chosen.append(best)
        pool.remove(best)
    return chosen


def members_leg(
    summaries: Sequence[tuple[int, float]], members: Mapping[int, Sequence[int]], similarity: Mapping[int, float],
    per: int | None = None,
) -> list[int]:
    """Coarse to fine: the members of the best summaries, ranked by summary similarity x their own.

    A member of two summaries keeps its better product. Members with no similarity (no vector) rank
    last, in their summary's order. With ``per``, each summary gives only its ``per`` members most
    like the query (``SearchPlan.summary_members``).

    Example:
        >>> members_leg([(100, 0.9), (200, 0.5)], {100: [1, 2], 200: [3]}, {1: 0.2, 2: 0.8, 3: 0.9})
        [2, 3, 1]
        >>> members_leg([(100, 0.9), (200, 0.5)], {100: [1, 2], 200: [3]}, {1: 0.2, 2: 0.8, 3: 0.9}, per=1)
        [2, 3]
    """
    best: dict[int, float] = {}
    for summary, sim in summaries:
        ranked = members.get(summary, ())
        if per is not None:
            ranked = sorted(ranked, key=lambda m: -similarity.get(m, -1.0))[:per]
        for member in ranked:
            score = max(sim, 0.0) * max(similarity.get(member, 0.0), 0.0)
            if member not in best or score > best[member]:
                best[member] = score
    return sorted(best, key=lambda m: -best[m])


def expand_summaries(
    order: Sequence[int], summaries: Mapping[int, Sequence[int]], per: int
) -> tuple[list[int], dict[int, int]]:
    """Replace each summary in ``order`` by its first ``per`` members (ranked) not listed above it.

    A member ranked below its summary moves up to the summary's place. Returns the new order and,
    for each member placed by a summary, the 1-based rank that summary had (the hit's annotation:
    which summary led to it). A summary none of whose members is left is dropped.

    Example:
        >>> expand_summaries([5, 100, 6], {100: [5, 7, 6]}, per=2)
        ([5, 7, 6], {7: 2, 6: 2})
    """
    out: list[int] = []
    placed: set[int] = set()
    via: dict[int, int] = {}
    for rank, rid in enumerate(order, start=1):
        if rid not in summaries:
            if rid not in placed:
                out.append(rid)
                placed.add(rid)
            continue
        added = 0
        for member in summaries[rid]:
            if added >= per:
                break
            if member in placed or member in summaries:
                continue
            out.append(member)
            placed.add(member)
            via[member] = rank
            added += 1
    return out, via


def working_first(order: Sequence[int], working: set[int], n: int) -> list[int]:
    """Move the first ``n`` hits that are in the session's working memory to the front (stable).

    Example:
        >>> working_first([1, 2, 3, 4, 5], {4, 2, 5}, n=2)
        [2, 4, 1, 3, 5]
    """
    lead = [r for r in order if r in working][:n]
    chosen = set(lead)
    return lead + [r for r in order if r not in chosen]


def named_speakers(query: str, speakers: Iterable[str]) -> set[str]:
    """The speakers (as written in the memories) that ``query`` names as whole words.

    Matching is by Unicode case folding, but a query written with capitals names people with them:
    there, a capitalised name found only in lower case is a word, not the name ("what will Caroline
    do?" names Caroline, not a speaker called Will). A query without capitals names whoever it spells.

    Example:
        >>> sorted(named_speakers("What does Melanie do to destress?", ["Melanie", "Caroline", "Mel"]))
        ['Melanie']
        >>> sorted(named_speakers("May I ask what Caroline will do?", ["Caroline", "Will", "May"]))
        ['Caroline', 'May']
    """
    folded = query.casefold()
    cased = query != query.lower() and len(folded) == len(query)  # positions map one to one
    found: set[str] = set()
    for s in set(speakers):
        name = s.strip()
        if not name:
            continue
        spans = [m.start() for m in _name_pattern(name).finditer(folded)]
        if spans and (not cased or not name[0].isupper() or any(query[i].isupper() for i in spans)):
            found.add(s)
    return found


@functools.lru_cache(maxsize=4096)
def _name_pattern(name: str) -> re.Pattern[str]:
    """A (stripped) name as a whole word of a case-folded text, compiled once per name: a search asks
    of the same few speakers five times (pure: never stale)."""
    return re.compile(r"(?<![\w'])" + re.escape(name.casefold()) + r"(?![\w])")


def apply_speaker(
    scores: dict[int, float], speaker_of: Mapping[int, str | None], named: set[str], boost: float,
    present: set[str] | None = None,
) -> dict[int, float]:
    """Multiply by ``1 + boost`` the scores of memories said by a named speaker.

    Naming every speaker there is (or none) distinguishes nothing: the scores come back unchanged.
    ``present`` is who says the scored memories, given where ``speaker_of`` covers more rows than
    ``scores`` (a cube's whole speaker map); by default, every speaker in ``speaker_of``.

    Example:
        >>> apply_speaker({1: 1.0, 2: 1.0}, {1: "Jon", 2: "Gina"}, {"Jon"}, 0.5)
        {1: 1.5, 2: 1.0}
        >>> apply_speaker({1: 1.0, 2: 1.0}, {1: "Jon", 2: "Gina"}, {"Jon", "Gina"}, 0.5)
        {1: 1.0, 2: 1.0}
        >>> apply_speaker({1: 1.0}, {1: "Jon", 2: "Gina"}, {"Jon"}, 0.5, present={"Jon"})  # only Jon scored
        {1: 1.0}
    """
    if present is None:
        present = {s for s in speaker_of.values() if s}
    if boost <= 0 or not named or present <= named:
        return scores
    return {rid: s * (1.0 + boost) if speaker_of.get(rid) in named else s for rid, s in scores.items()}


def cap_per_group(order: Sequence[int], group_of: Mapping[int, str | None], cap: int) -> list[int]:
    """Stable re-order: at most ``cap`` items of one group (session) before the others run out;
    the items over the cap follow, in their order. Items without a group are never capped.

    Example:
        >>> cap_per_group([1, 2, 3, 4, 5], {1: "a", 2: "a", 3: "a", 4: "b", 5: None}, cap=2)
        [1, 2, 4, 5, 3]
    """
    seen: dict[str, int] = {}
    head: list[int] = []
    over: list[int] = []
    for rid in order:
        group = group_of.get(rid)
        if group is not None:
            seen[group] = seen.get(group, 0) + 1
            if seen[group] > cap:
                over.append(rid)
                continue
        head.append(rid)
    return head + over


def follows_entity(edge_type: str, metadata: Mapping[str, object], names: set[str]) -> bool:
    """Whether a relation hop may follow this edge: a ``same_entity`` link only when the query names
    its entity (when the query names any), so a question about Jon does not wander to Gina's links.

    Example:
        >>> follows_entity("same_entity", {"entity": "Jon"}, {"jon"}), follows_entity("same_entity", {"entity": "Gina"}, {"jon"})
        (True, False)
    """
    if edge_type != "same_entity" or not names:
        return True
    entity = metadata.get("entity")
    return isinstance(entity, str) and entity.lower() in names
