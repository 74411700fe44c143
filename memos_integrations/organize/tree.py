"""The tree: topic summaries over clusters of a user's memories, and episodes of each session.

**Clustering** is leader clustering on the stored MiniLM vectors, in time order: a memory joins
the most similar earlier *leader* whose cosine is at least ``threshold`` and whose cluster has room
(``max_size``) or whose text it nearly repeats (:func:`near_duplicate`: the same words, numbers
aside; a topic of 5,000 copies of one sentence is one cluster, not one per ``max_size``), else it
leads a new cluster. A cluster depends only on the leaders before it, so memories appended
later never reshuffle earlier clusters (incremental runs and a full rebuild agree), and the result
is the same on every run (deterministic: no random start, ties broken by time then id). A cluster
is named after its leader: its summary's id is ``topic-<leader id>``.

**Summaries** are ``summary`` items of the user (contract shared with retrieval): ``sources`` = the
member ids (a topic grown past ``max_cluster`` by near-duplicates: its first ``max_cluster`` members,
what it quotes and what a search opens; ``metadata["members"]`` counts all, ``near_duplicates`` the
rest, and every member links to it), ``metadata`` = ``{"summary": "topic" | "episode", "members": n, "source_versions":
{id: version}, "source_digest": ...}`` (episodes add ``session_id``; a session longer than ``episode_size`` is
several episodes (parts) of at most that many memories in insertion order, cut by content (:mod:`.episodes`: an
edit rewrites the parts around it, not every later one), the later ones with ``part`` 2, 3, ...), and an edge
member --``summarized_by``--> summary. Their text is extractive (the first sentence of the most
central members whose sentences do not nearly repeat one already quoted, in time order, at most
``summary_chars``; a cluster grown past ``max_cluster`` by near-duplicates opens with ``<n> near-identical
memories:``; an episode opens with ``Session <id>`` (a later part: ``Session <id>, continued``) and its dates, a
session id over 64 characters cut) over
each member's human text (:func:`memos_integrations.prompting.memory_text`: a LangGraph store value's
``text`` field, not its JSON) unless a reader with a ``summarize`` method is given (its text after that
opening, the whole cut to ``summary_chars`` too). Their vector is the mean of the members' vectors (no embedding: that is what keeps
organising cheap), so a dense search lands on the summary of a topic it matches.

**Staleness**: a summary whose members changed text or left (deleted, merged, archived, superseded,
moved to another user or, for an episode, another session) is archived with ``metadata["stale"] = True``
before anything is written, and so is (``stale`` False) every summary the run no longer wants (a
cluster that fell under ``min_members``, a part another ``episode_size`` folds away): kept, not
served, so a run killed half-way never leaves a stale summary live, nor an old one next to its
replacement; the rebuild writes a new version (state generated) from the current members.
:func:`stale_summaries` checks the same at read time, for a caller that must not trust a summary
written before a member changed and the organiser ran, and :func:`stale_left` after a pass that
another writer may have raced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..items import LIVE_STATES, Edge, Kind, Lifecycle, MemoryItem, to_epoch, utcnow
from ..prompting import memory_text
from ..storage.graph import BEFORE, SUMMARIZED_BY
from ..storage.organize_state import digest, index_unchanged, stale_summaries, write_versions_in_place
from .episodes import episode_head, episode_id, session_parts

if TYPE_CHECKING:
    from ..cube import MemCube

TOPIC = "topic"
EPISODE = "episode"
METHOD = "organize"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W\d_]+|\d+")
#: word-set Jaccard at or above which two texts are near-duplicates (numbers count as one word, ``#``)
DUPLICATE_JACCARD = 0.6


def word_set(text: str) -> frozenset[str]:
    """The lower-cased words of ``text``, every number written ``#`` (so "ends in 1234" and "ends in 99" agree)."""
    return frozenset("#" if w.isdigit() else w for w in _WORD.findall(text.lower()))


def near_duplicate(a: frozenset[str], b: frozenset[str], jaccard: float = DUPLICATE_JACCARD) -> bool:
    """Whether two :func:`word_set` s nearly repeat each other (Jaccard >= ``jaccard``; two empty sets do)."""
    if not a or not b:
        return a == b
    return len(a & b) >= jaccard * len(a | b)


@dataclass
class Cluster:
    leader: str
    members: list[str]


def leader_clusters(ids: Sequence[str], vectors: np.ndarray, threshold: float, max_size: int,
                    texts: Sequence[str] | None = None) -> list[Cluster]:
    """Leader clustering of ``ids`` (in the order given; rows of unit ``vectors``), see the module doc.
    With ``texts`` (one per id), a memory that nearly repeats a full cluster's leader still joins it."""
    words = [word_set(t) for t in texts] if texts is not None else None
    clusters: list[Cluster] = []
    heads: list[int] = []
    leaders = np.zeros((max(1, len(ids)), vectors.shape[1] if vectors.ndim == 2 else 0), dtype=np.float32)
    for n, item_id in enumerate(ids):
        v = vectors[n]
        chosen = -1
        if clusters:
            sims = leaders[: len(clusters)] @ v
            near = np.flatnonzero(sims >= threshold)  # only these are candidates: sort them, not every leader
            for c in near[np.argsort(-sims[near], kind="stable")]:
                if len(clusters[c].members) < max_size or (
                        words is not None and near_duplicate(words[n], words[heads[c]])):
                    chosen = int(c)
                    break
        if chosen < 0:
            leaders[len(clusters)] = v
            clusters.append(Cluster(item_id, [item_id]))
            heads.append(n)
        else:
            clusters[chosen].members.append(item_id)
    return clusters


def extractive(items: Sequence[MemoryItem], matrix: np.ndarray, sentences: int, chars: int, head: str = "") -> str:
    """The first sentence of the ``sentences`` most central members (cosine to their mean) that do not
    nearly repeat one already chosen, in time order, over each member's human text."""
    centre = matrix.mean(axis=0)
    firsts: dict[int, str] = {}

    def first_of(i: int) -> str:
        if i not in firsts:
            firsts[i] = _SENTENCE.split(re.sub(r"\s+", " ", memory_text(items[i])).strip(), maxsplit=1)[0]
        return firsts[i]

    sims = [float(matrix[i] @ centre) for i in range(len(items))]
    central = sorted(range(len(items)), key=lambda i: (-sims[i], i))
    order: list[int] = []
    chosen: list[frozenset[str]] = []
    for i in central[: max(sentences * 8, 64)]:  # the most central few: near-duplicates are skipped
        words = word_set(first_of(i))
        if any(near_duplicate(words, w) for w in chosen):
            continue
        order.append(i)
        chosen.append(words)
        if len(order) == sentences:
            break
    parts: list[str] = []
    budget = max(40, (chars - len(head)) // max(1, len(order)))
    for i in sorted(order):
        first = first_of(i)
        if len(first) > budget:
            first = first[: budget - 1].rstrip() + "…"
        speaker = items[i].metadata.get("speaker") if items[i].kind == Kind.MESSAGE else None
        parts.append(f"{speaker}: {first}" if isinstance(speaker, str) and speaker else first)
    return (head + " ".join(parts))[:chars]


def is_organized_summary(item: MemoryItem) -> bool:
    return item.kind == Kind.SUMMARY and item.method == METHOD and item.metadata.get("summary") in (TOPIC, EPISODE)


@dataclass
class TreePolicy:
    threshold: float
    max_cluster: int
    min_members: int
    sentences: int
    chars: int
    episode_size: int = 100


def build_user_tree(
    cube: MemCube, user_id: str | None, members: Sequence[MemoryItem], policy: TreePolicy, *,
    reader: Any = None, principal: str = "organizer", batch: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Bring the summaries, episodes and ``summarized_by`` / ``before`` edges of one user up to date.

    ``members`` are the user's live memories in time order. Writes only what differs from the store.
    """
    counts = {"clusters": 0, "topics_written": 0, "episodes_written": 0, "summaries_archived": 0, "stale_marked": 0,
              "summaries_refreshed": 0}
    existing = _existing(cube, user_id)
    # 1. nothing stale stays live while this run works
    stale = stale_summaries(cube.store, [s for s in existing if s.state in LIVE_STATES])
    if stale:
        _archive(cube, [s for s in existing if s.id in stale], principal, "its sources changed; rebuilt next", stale=True)
        counts["stale_marked"] = len(stale)
        existing = _existing(cube, user_id)
    prior = {s.id: s for s in existing}
    vecs = cube.store.vectors_by_id([m.id for m in members])
    members = [m for m in members if m.id in vecs]
    by_id = {m.id: m for m in members}
    wanted: list[tuple[MemoryItem, np.ndarray]] = []
    folded: dict[str, list[str]] = {}  # a near-duplicate topic's members beyond its sources
    if members:
        matrix = np.stack([vecs[m.id] for m in members]).astype(np.float32)
        row = {m.id: n for n, m in enumerate(members)}
        clusters = [c for c in leader_clusters([m.id for m in members], matrix, policy.threshold, policy.max_cluster,
                                               texts=[memory_text(m) for m in members])
                    if len(c.members) >= policy.min_members]
        counts["clusters"] = len(clusters)
        for c in clusters:
            # a cluster grown past max_cluster by near-duplicates: its first max_cluster members are its
            # sources (what the summary quotes, what a search opens and checks for staleness); every member
            # links to it (summarized_by) and ``members`` counts them all
            group = [by_id[i] for i in c.members[: policy.max_cluster]]
            many = f"{len(c.members)} near-identical memories: " if len(c.members) > policy.max_cluster else ""
            summary, vector = _summary(f"topic-{c.leader}", TOPIC, user_id, group,
                                       matrix[[row[i] for i in c.members[: policy.max_cluster]]], policy, reader,
                                       head=many, previous=prior.get(f"topic-{c.leader}"))
            if many:
                summary = summary.evolve(metadata={**summary.metadata, "members": len(c.members),
                                                   "near_duplicates": len(c.members) - len(group)})
                folded[summary.id] = c.members[policy.max_cluster :]
            wanted.append((summary, vector))
        sessions: dict[str, list[MemoryItem]] = {}
        for m in members:
            if m.session_id is not None:
                sessions.setdefault(m.session_id, []).append(m)
        for sid, turns in sessions.items():
            # a long session is parts cut by content (organize/episodes.py): an edit rewrites the parts around it
            for part, (lo, hi) in enumerate(session_parts([t.id for t in turns], policy.episode_size), start=1):
                group = turns[lo:hi]
                eid = episode_id(user_id, sid, group[0].id if part > 1 else None)
                summary, vector = _summary(eid, EPISODE, user_id, group, matrix[[row[g.id] for g in group]], policy,
                                           reader, head=episode_head(sid, part > 1, group), session=sid,
                                           previous=prior.get(eid))
                if part > 1:
                    summary = summary.evolve(metadata={**summary.metadata, "part": part})
                wanted.append((summary, vector))
    # 2. what this run no longer wants (a cluster under min_members, a part another episode_size folds away)
    # goes before anything is written: a search during the run, or after a kill -9, never finds it next to
    # the summary that replaces it (the same memories summarised twice)
    wanted_ids = {w.id for w, _ in wanted}
    gone = [s for s in existing if s.id not in wanted_ids and s.state in LIVE_STATES]
    if gone:
        _archive(cube, gone, principal, "no longer wanted: its cluster or session has too few live members, or "
                 "another policy shapes it otherwise")
        counts["summaries_archived"] = len(gone)
    have = {s.id: s for s in existing}
    todo = [(w, v) for w, v in wanted if _differs(have.get(w.id), w)]
    # same text and members, only the members' versions moved (a partition move): a new version in place
    quiet = [w for w, _ in todo if _same_content(have.get(w.id), w)]
    if quiet:
        _refresh_in_place(cube, quiet)
        counts["summaries_refreshed"] += len(quiet)
        todo = [(w, v) for w, v in todo if w.id not in {q.id for q in quiet}]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        cube.text_mem.add_items([w for w, _ in chunk], vectors=np.stack([v for _, v in chunk]),
                                max_chars=max(cube.text_mem.max_text_chars, policy.chars))
        for w, _ in chunk:
            counts["topics_written" if w.metadata["summary"] == TOPIC else "episodes_written"] += 1
        if progress is not None:
            progress(len(chunk))
    # edges: member -> summary, episode -> next episode
    want_edges = {(s, SUMMARIZED_BY, w.id): Edge(s, w.id, SUMMARIZED_BY)
                  for w, _ in wanted for s in [*w.sources, *folded.get(w.id, ())]}
    # sessions in the order they started, a session's parts together in part (insertion) order
    episodes = [w for w, _ in wanted if w.metadata["summary"] == EPISODE]
    began: dict[str, float] = {}
    for e in episodes:
        began[e.session_id or ""] = min(began.get(e.session_id or "", e.metadata["started"]), e.metadata["started"])
    episodes.sort(key=lambda e: (began[e.session_id or ""], e.session_id or "", e.metadata.get("part", 1), e.id))
    for a, b in zip(episodes, episodes[1:]):
        want_edges[(a.id, BEFORE, b.id)] = Edge(a.id, b.id, BEFORE)
    all_summary_ids = sorted({s.id for s in existing} | wanted_ids)
    have_edges = {(e.src, e.type, e.dst): e for e in cube.graph.edges(all_summary_ids, "both", [SUMMARIZED_BY, BEFORE])}
    sync_edges(cube, want_edges, have_edges)
    return counts


def stale_left(cube: MemCube, user_id: str | None) -> bool:
    """Whether a live summary of ``user_id`` is stale now (:func:`stale_summaries`): after a pass, a source
    another writer changed meanwhile in a way the pass's before/after comparison cannot see (same text
    length, validity closed, session moved), so the user is not recorded as organised."""
    return bool(stale_summaries(cube.store, [s for s in _existing(cube, user_id) if s.state in LIVE_STATES]))


def sync_edges(cube: MemCube, want: Mapping[tuple[str, str, str], Edge], have: Mapping[tuple[str, str, str], Edge]) -> tuple[int, int]:
    """Add the wanted edges that are missing or differ, remove the stored ones not wanted: (added, removed)."""
    add = [e for k, e in want.items() if k not in have or have[k].metadata != e.metadata or have[k].weight != e.weight]
    drop = [k for k in have if k not in want]
    if add:
        cube.graph.add_edges(add)
    for src, type_, dst in drop:
        cube.graph.remove_edges(src, dst, type_)
    return len(add), len(drop)


def _existing(cube: MemCube, user_id: str | None) -> list[MemoryItem]:
    """The organiser's summaries of ``user_id`` exactly (None: of items without a user), any state but deleted."""
    from ..textual.filters import MemoryFilter

    states = [s for s in Lifecycle if s != Lifecycle.DELETED]
    flt = MemoryFilter(user_id=user_id, kinds=[Kind.SUMMARY], states=states) if user_id is not None else \
        MemoryFilter(kinds=[Kind.SUMMARY], states=states)
    return [i for i in cube.store.list_items(flt) if i.user_id == user_id and is_organized_summary(i)]


def _summary(
    sid: str, what: str, user_id: str | None, group: Sequence[MemoryItem], matrix: np.ndarray, policy: TreePolicy,
    reader: Any, *, head: str = "", session: str | None = None, previous: MemoryItem | None = None,
) -> tuple[MemoryItem, np.ndarray]:
    """The summary ``sid`` should be. The reader writes it (``summarize`` returning None: it has none
    or failed, extractive then); a live one it wrote from the same sources is kept, not asked again."""
    source_digest = digest(group)
    summarize = getattr(reader, "summarize", None)
    name = str(getattr(reader, "name", None) or type(reader).__name__)
    written: str | None = None
    if callable(summarize):
        if previous is not None and previous.state in LIVE_STATES and previous.metadata.get("written_by") == name \
                and previous.metadata.get("source_digest") == source_digest:
            written = previous.text[: policy.chars]
        else:
            said = summarize([memory_text(g) for g in group])
            written = None if said is None else (head + str(said))[: policy.chars]
    text = written if written is not None else extractive(group, matrix, policy.sentences, policy.chars, head)
    meta: dict[str, Any] = {
        "summary": what, "members": len(group), "source_versions": {g.id: g.version for g in group},
        "source_digest": source_digest,
        "started": min(to_epoch(g.event_time or g.created_at) or 0.0 for g in group),
    }
    if written is not None:
        meta["written_by"] = name
    if session is not None:
        meta["session_id"] = session
    vector = matrix.mean(axis=0)
    vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    item = MemoryItem(text=text, id=sid, kind=Kind.SUMMARY, user_id=user_id, session_id=session,
                      sources=[g.id for g in group], created_by="organizer", method=METHOD, metadata=meta,
                      event_time=min((g.event_time for g in group if g.event_time is not None), default=None))
    return item, vector.astype(np.float32)


def _differs(old: MemoryItem | None, new: MemoryItem) -> bool:
    if old is None or old.state not in LIVE_STATES:
        return True
    return (old.text, old.sources, old.metadata, old.session_id, old.event_time) != (
        new.text, new.sources, new.metadata, new.session_id, new.event_time)


def _same_content(old: MemoryItem | None, new: MemoryItem) -> bool:
    return old is not None and old.state in LIVE_STATES and old.sources == new.sources and \
        index_unchanged(old, new.evolve(state=old.state))


def _refresh_in_place(cube: MemCube, items: Sequence[MemoryItem]) -> None:
    with cube.store.transaction():
        current = cube.store.get_items([i.id for i in items])
        now = utcnow()
        news = [w.evolve(version=current[w.id].version + 1, created_at=current[w.id].created_at, updated_at=now,
                         cube_id=current[w.id].cube_id, state=current[w.id].state)
                for w in items if w.id in current and _same_content(current[w.id], w)]
        if news:
            write_versions_in_place(cube.store, news)


def _archive(cube: MemCube, items: Sequence[MemoryItem], principal: str, reason: str, *, stale: bool = False) -> None:
    from ..textual import index_sync

    with cube.store.transaction():
        current = cube.store.get_items([i.id for i in items])
        now = utcnow()
        news = [c.evolve(state=Lifecycle.ARCHIVED, version=c.version + 1, updated_at=now,
                         metadata={**c.metadata, "stale": stale, "archived_because": reason})
                for c in current.values() if c.state in LIVE_STATES]
        if news:
            cube.store.write_items(news, None)
    index_sync.sync_after_commit(cube.text_mem)
    if news:
        cube.audit("archive", principal, cube.cube_id, {"reason": reason, "ids": sorted(n.id for n in news)})
