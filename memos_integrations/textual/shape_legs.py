"""The person topics leg (issue 14: evidence spread over a conversation), for :func:`.shape.extra_legs`.

A question about a person ("Where has Melanie camped?") is answered by what that person said in
many sessions. The organiser's option ``person_topics`` (:mod:`memos_integrations.organize.persons`)
clusters each speaker's own memories by topic, stored as ``person_topic`` edges (member -> leader).
``SearchPlan.person_topics`` opens the topics of the named person's memories most like the query
(``person_topic_seeds``) and ranks their members by similarity, at most ``person_per_session``
from one session, as a leg of its own.

Every candidate is read through the search's filter narrowed to the named people (scope,
lifecycle, current truth): an edge never leads to another user's memory, nor to one deleted,
archived or superseded after organising. A query naming no speaker in scope, or every speaker,
adds nothing. On a cube organised without person topics there are no edges: the leg holds only the
seeds themselves.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from .entities import entities
from .filters import MemoryFilter

if TYPE_CHECKING:
    from . import retrieve as R
    from .memory import TextualMemory

_MAX_PERSON = 20_000  # one person's memories scored at most (a conversation holds a few hundred)
#: the edge type of a person topic, member -> the cluster's leader (written by organize.persons)
PERSON_TOPIC = "person_topic"


def speaker_filter(flt: MemoryFilter, names: list[str]) -> MemoryFilter:
    """The search's filter narrowed to memories said by one of ``names`` (metadata ``speaker``)."""
    return _said(flt, {"$in": list(names)})


def _said(flt: MemoryFilter, condition: object) -> MemoryFilter:
    said = {"speaker": condition}
    return dataclasses.replace(flt, metadata={"$and": [dict(flt.metadata), said]} if flt.metadata else said)


def spread(ranked: list[int], group_of: dict[int, str | None], per: int, limit: int) -> list[int]:
    """The first ``limit`` of ``ranked`` taking at most ``per`` of one group (items without a group: no cap).

    Example:
        >>> spread([1, 2, 3, 4, 5], {1: "a", 2: "a", 3: "a", 4: "b", 5: "b"}, per=2, limit=3)
        [1, 2, 4]
    """
    seen: dict[str, int] = {}
    out: list[int] = []
    for rid in ranked:
        g = group_of.get(rid)
        if g is not None:
            if seen.get(g, 0) >= per:
                continue
            seen[g] = seen.get(g, 0) + 1
        out.append(rid)
        if len(out) >= limit:
            break
    return out


def named_people(mem: TextualMemory, query: str, flt: MemoryFilter) -> list[str]:
    """The names in ``query`` (:func:`.entities.entities`) that are speakers of memories in the filter's scope."""
    return [n for n in dict.fromkeys(entities(query)) if mem.store.candidate_rids(speaker_filter(flt, [n]), 1)]


def person_topic_leg(
    mem: TextualMemory, plan: R.SearchPlan, query: str, qvec: np.ndarray | None, flt: MemoryFilter, pool: int,
) -> list[tuple[int, float]]:
    """The members of the named people's topics that hold their memories most like the query (module doc)."""
    if qvec is None:
        return []
    names = named_people(mem, query, flt)
    if not names:
        return []
    theirs = speaker_filter(flt, names)
    rids = mem.store.candidate_rids(theirs, _MAX_PERSON)
    if len(names) > 1 and len(rids) >= len(mem.store.candidate_rids(_said(flt, {"$exists": True}), len(rids) + 1)):
        return []  # the query names every speaker in scope: this narrows nothing
    found, matrix = mem.store.vectors_for(rids)
    if not found:
        return []
    sims = dict(zip(found, (matrix @ qvec).tolist()))
    seeds = sorted(found, key=lambda r: -sims[r])[: plan.person_topic_seeds]
    ids = [it.id for it in mem.store.get_by_rid(seeds).values()]
    leaders = set(ids) | {e.dst for e in mem.graph.edges(ids, "out", [PERSON_TOPIC])}
    members = leaders | {e.src for e in mem.graph.edges(sorted(leaders), "in", [PERSON_TOPIC])}
    allowed = mem.store.rid_ids(sorted(members), theirs)  # never another scope, never stale
    ranked = sorted((r for r in allowed.values() if r in sims), key=lambda r: -sims[r])
    rows = mem.store.get_by_rid(ranked)
    chosen = spread(ranked, {r: it.session_id for r, it in rows.items()}, plan.person_per_session, pool)
    return [(r, sims[r]) for r in chosen]


def names_time(query: str) -> bool:
    """Whether ``query`` asks when, or names a period (:func:`.retrieve.time_hint`).

    Example:
        >>> names_time("When did Jon open his studio?"), names_time("What did Jon do in May 2023?")
        (True, True)
        >>> names_time("What does Melanie do to destress?")
        False
    """
    from .retrieve import time_hint

    hint = time_hint(query)
    return hint.asks_when or hint.start is not None
