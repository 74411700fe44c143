"""Search steps that use the shape of organised memory (issue 14), for :class:`.memory.TextualMemory`.

The organiser (``memos_integrations.organize``) gives a cube's items a shape; these steps read it:

- **coarse to fine**: summaries (``kind="summary"``: topics, episodes) are searched on their own, and
  the members of the best ones (their ``sources``) become a leg ranked by summary x member similarity;
- **entities**: the names the query mentions (:func:`.entities.entities`) select the memories that
  mention them, ranked by dense similarity;
- **relation hops**: ``same_entity`` / ``before`` / ``conflict`` links from the best hits;
- **working memory**: the current session's working partition (``metadata["partition"] ==
  "working"``) as a leg, whose best hits lead the results.

Each step reads through the store and the graph with the search's filter, so scope holds as it does
for the plain legs; on a cube that was never organised each finds nothing and changes nothing.
The ranking arithmetic is in :mod:`.retrieve` (pure functions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..items import Kind, MemoryItem, to_epoch
from ..storage.caches import SPEAKER_MAP_ROWS, held_event_times, held_speaker_map
from . import retrieve as R
from . import shape_legs as SL
from .entities import entities
from .filters import MemoryFilter

if TYPE_CHECKING:
    from .memory import TextualMemory

Rows = Callable[[Sequence[int]], dict[int, MemoryItem]]
WORKING = "working"
_MAX_WORKING = 500  # a session's working memory is bounded (about 20 items); this caps a runaway one


def _similarity(mem: TextualMemory, qvec: np.ndarray | None, rids: Sequence[int]) -> dict[int, float]:
    if qvec is None or not rids:
        return {}
    found, matrix = mem.store.vectors_for(list(rids))
    return dict(zip(found, (matrix @ qvec).tolist())) if found else {}


def _ranked_by_similarity(mem: TextualMemory, qvec: np.ndarray | None, rids: Sequence[int]) -> list[tuple[int, float]]:
    sims = _similarity(mem, qvec, rids)
    if not sims:
        return [(r, 0.0) for r in rids]
    return sorted(((r, sims.get(r, -1.0)) for r in rids), key=lambda h: -h[1])


def _members(mem: TextualMemory, summaries: dict[int, MemoryItem], flt: MemoryFilter) -> dict[int, list[int]]:
    """Each summary's members (its ``sources``) that the filter allows, as row ids, in source order."""
    wanted = list(dict.fromkeys(s for item in summaries.values() for s in item.sources))
    allowed = mem.store.rid_ids(wanted, flt) if wanted else {}
    return {rid: [allowed[s] for s in item.sources if s in allowed] for rid, item in summaries.items()}


def summary_filter(flt: MemoryFilter) -> MemoryFilter:
    """The search's filter narrowed to summaries (scope, time, tags and metadata conditions kept)."""
    return dataclasses.replace(flt, kinds=[Kind.SUMMARY])


def extra_legs(
    mem: TextualMemory, plan: R.SearchPlan, query: str, qvec: np.ndarray | None, flt: MemoryFilter, pool: int,
    session: str | None,
) -> dict[str, list[tuple[int, float]]]:
    """The legs the plan's shape options add: ``summary`` members, ``entity``, ``person_topic``, ``working``."""
    legs: dict[str, list[tuple[int, float]]] = {}
    if plan.coarse_to_fine and qvec is not None and (plan.coarse_on_time or not SL.names_time(query)):
        candidates = mem.store.candidate_rids(summary_filter(flt), mem.exact_search_max)
        best = mem._exact(qvec, candidates, plan.summary_seeds) if candidates else []
        if best:
            summaries = mem.store.get_by_rid([r for r, _ in best])
            members = _members(mem, summaries, flt)
            sims = _similarity(mem, qvec, [m for ms in members.values() for m in ms])
            ranked = R.members_leg(best, members, sims, plan.summary_members)[:pool]
            legs["summary"] = [(r, sims.get(r, 0.0)) for r in ranked]
    if plan.entity_leg:
        terms = R.keyword_terms(" ".join(entities(query)))
        if terms:  # like IDF: a name in a large share of the cube narrows nothing
            limit = plan.entity_max_share * max(mem.store.max_rid(), 1)
            terms = [t for t, n in mem.store.term_counts(terms).items() if n <= limit]
        if terms:
            found = [r for r, _ in mem.store.keyword_search(terms, flt, pool * 4)]
            legs["entity"] = _ranked_by_similarity(mem, qvec, found)[:pool]
    if plan.person_topics:
        legs["person_topic"] = SL.person_topic_leg(mem, plan, query, qvec, flt, pool)
    if plan.working_first and session is not None and (flt.session_id is None or session in flt.session_id):
        meta = {"partition": WORKING}
        working = dataclasses.replace(
            flt, session_id=[session], metadata={"$and": [dict(flt.metadata), meta]} if flt.metadata else meta
        )
        rids = mem.store.candidate_rids(working, _MAX_WORKING)
        if rids:
            legs["working"] = _ranked_by_similarity(mem, qvec, rids)[:pool]
    return legs


def relation_hops(
    mem: TextualMemory, scores: dict[int, float], flt: MemoryFilter, plan: R.SearchPlan, rows: Rows, query: str
) -> dict[int, float]:
    """Follow relation links from the best hits for ``plan.relation_hops`` hops (scope-filtered)."""
    names = {n.lower() for n in entities(query)}
    seeds = sorted(scores, key=lambda r: -scores[r])[: plan.relation_seeds]
    seed_items = rows(seeds)
    frontier = {it.id: (rid, 1.0) for rid, it in seed_items.items()}
    seen = set(frontier)
    found: dict[str, tuple[int, float]] = {}
    for _ in range(plan.relation_hops):
        nxt: dict[str, tuple[int, float]] = {}
        for edge in mem.graph.edges(list(frontier), "both", list(plan.relation_types)):
            if not R.follows_entity(edge.type, edge.metadata, names):
                continue
            for here, there in ((edge.src, edge.dst), (edge.dst, edge.src)):
                if here in frontier and there not in seen:
                    seed, weight = frontier[here]
                    if there not in nxt or nxt[there][1] < weight * edge.weight:
                        nxt[there] = (seed, weight * edge.weight)
        seen.update(nxt)
        found.update(nxt)
        frontier = nxt
        if not frontier:
            break
    if not found:
        return scores
    allowed = mem.store.rid_ids(list(found), flt)  # related memories obey the same filter (scope!)
    return R.expand(scores, {allowed[i]: found[i] for i in found if i in allowed}, plan.relation_weight)


def expand_summary_hits(
    mem: TextualMemory, order: list[int], scores: dict[int, float], flt: MemoryFilter, plan: R.SearchPlan,
    rows: Rows, qvec: np.ndarray | None, window: int,
) -> tuple[list[int], dict[int, int]]:
    """Replace the summaries among the first ``window`` hits by their best members (see
    :func:`.retrieve.expand_summaries`); a member brought in takes its summary's score."""
    head = order[:window]
    summaries = {rid: it for rid, it in rows(head).items() if it.kind == Kind.SUMMARY}
    if not summaries:
        return order, {}
    members = _members(mem, summaries, flt)
    sims = _similarity(mem, qvec, [m for ms in members.values() for m in ms])
    ranked = {s: sorted(ms, key=lambda m: -sims.get(m, -1.0)) if sims else ms for s, ms in members.items()}
    new_head, via = R.expand_summaries(head, ranked, plan.expand_members)
    for member, rank in via.items():
        scores[member] = max(scores.get(member, 0.0), scores[head[rank - 1]])
    placed = set(new_head)
    tail = [r for r in order[window:] if r not in placed and r not in summaries]
    return new_head + tail, via


def working_rids(legs: dict[str, list[int]]) -> set[int]:
    return set(legs.get("working", ()))


def speaker_focus(mem: TextualMemory, scores: dict[int, float], plan: R.SearchPlan, rows: Rows, query: str) -> dict[int, float]:
    """Boost the scored memories said by a person the query names (:func:`.retrieve.apply_speaker`)."""
    held = held_speaker_map(mem.store, SPEAKER_MAP_ROWS)  # who said each row, per commit: no rows decoded
    if held is not None:  # the map held is the speaker map: only the scored rows' speakers are gathered
        present = {s for rid in scores if (s := held.get(rid))}
        return R.apply_speaker(scores, held, R.named_speakers(query, present), plan.speaker_boost, present)
    items = rows(list(scores))
    speaker_of = {rid: s if isinstance(s := it.metadata.get("speaker"), str) and s else None for rid, it in items.items()}
    named = R.named_speakers(query, {s for s in speaker_of.values() if s})
    return R.apply_speaker(scores, speaker_of, named, plan.speaker_boost)


def event_times(mem: TextualMemory, rids: Sequence[int], rows: Rows) -> dict[int, tuple[float | None, bool]]:
    """Each row's (event time in epoch seconds, whether it mentions a time) for the time boost
    (:func:`.retrieve.apply_time`): from the map held per commit (a LoCoMo time question scores ~150
    rows; decoding them was most of its search's CPU), else from the rows themselves."""
    held = held_event_times(mem.store, SPEAKER_MAP_ROWS)
    if held is not None:
        return {rid: held[rid] for rid in rids if rid in held}
    return {rid: (to_epoch(it.event_time), "refers_to" in it.metadata) for rid, it in rows(rids).items()}


def cap_sessions(order: list[int], rows: Rows, cap: int, window: int) -> list[int]:
    """At most ``cap`` of the first ``window`` hits from one session (:func:`.retrieve.cap_per_group`)."""
    head = order[:window]
    items = rows(head)
    capped = R.cap_per_group(head, {rid: it.session_id for rid, it in items.items()}, cap)
    return capped + order[window:]
