"""Organised memory: partitions, the tree of summaries and episodes, relation links.

:func:`organize` is one incremental pass over a cube (``cube.organize()``, ``memcube organize``,
``MemScheduler.organize()``), per user, in three steps:

1. **partitions** (:mod:`.partitions`): working memory per session, profile, long-term;
2. **the tree** (:mod:`.tree`): topic summaries over clusters, one episode per session;
3. **links** (:mod:`.links`): same_entity and conflict edges.

It is deterministic and needs no LLM. A ``reader`` (duck-typed; by default the cube's configured LLM
reader, ``reader=None`` for none) may offer ``summarize(texts) -> str`` (it then writes the
summaries; one whose sources did not change is kept, not asked again) and ``resolve_conflict(newer,
older) -> bool`` (True: the older memory is superseded as the reader's SUPERSEDE does: its text is
kept, ``valid_to`` closes it, a ``superseded_by`` edge and metadata name the newer one; the conflict
link says ``resolved``); without one, summaries are extractive and conflicts stay ``flagged``. A
reader that offers ``for_cube(cube, user_id)`` (:class:`~memos_integrations.readers.LLMReader`) is
bound through it, so its calls are counted in the cube's usage ledger and budgets. A reader error
(any :class:`~memos_integrations.errors.MemosError`: endpoint down, budget spent, no JSON) turns
the reader off for the rest of the pass: extractive summaries, conflicts left flagged, and
``report.notes`` says why. Every step computes what the user's organisation should be and
writes only the difference, so running twice changes nothing. A user whose rows did not change
since their last finished run is skipped (:mod:`memos_integrations.storage.organize_state`); the
record (with the policy it ran under: another policy redoes the user) is written only when the user's run ends, so a run killed half-way (even ``kill -9``) is
redone for that user by the next run, which finds the work already written and does the rest; a run
that another writer raced (a memory added or deleted, or a summary's source changed, meanwhile) records
the fingerprint it started from, so the next run redoes the user too.

Example:
    >>> import tempfile
    >>> from memos_integrations import MemCube
    >>> cube = MemCube.init_from_dir(tempfile.mkdtemp())
    >>> _ = cube.add(memory=["Maya's dog is a beagle called Pixel.", "Maya walks Pixel every morning."], user_id="maya")
    >>> report = organize(cube)
    >>> report.users, report.topics_written
    (1, 1)
    >>> organize(cube).users_skipped
    1
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import MemosError
from ..items import Edge, Kind, Lifecycle, MemoryItem, utcnow
from ..storage.graph import CONFLICT, SAME_ENTITY, SUPERSEDED_BY
from ..storage.organize_state import others_inputs, user_fingerprints
from .links import wanted_links
from .partitions import (
    ACTIVE_SESSIONS,
    LONG_TERM,
    PARTITIONS,
    PROFILE,
    WORKING,
    WORKING_CAPACITY,
    WorkingPolicy,
    apply_moves,
    partition_of,
    plan_moves,
    set_profile,
    set_working_policy,
    working_policy,
)
from .persons import PERSON_TOPIC, wanted_person_topics
from .tree import EPISODE, TOPIC, TreePolicy, build_user_tree, stale_left, stale_summaries, sync_edges

if TYPE_CHECKING:
    from ..cube import MemCube

__all__ = [
    "EPISODE", "LONG_TERM", "PARTITIONS", "PERSON_TOPIC", "PROFILE", "TOPIC", "WORKING", "OrganizePolicy", "OrganizeReport",
    "WorkingPolicy", "organize", "partition_of", "set_profile", "set_working_policy", "stale_summaries", "working_policy",
]

#: the kv collection holding each user's last finished run
PROGRESS = "organize"
#: the states whose items are organised (members of clusters and episodes, linked)
MEMBER_STATES = (Lifecycle.GENERATED, Lifecycle.ACTIVATED, Lifecycle.FROZEN)
_MEMBER_KINDS = tuple(k for k in Kind if k not in (Kind.SUMMARY, Kind.CHUNK))


class OrganizePolicy(BaseModel):
    """How the organiser shapes a cube; the defaults were chosen on the LoCoMo dev split only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    working_capacity: int = Field(WORKING_CAPACITY, ge=1, description="items in one session's working memory "
                                  "(given: recorded as the write path's too; not given: the recorded one)")
    active_sessions: int = Field(ACTIVE_SESSIONS, ge=0, description="a user's most recent sessions that keep a "
                                 "working memory (given or not: as working_capacity)")
    cluster_threshold: float = Field(0.5, gt=0, le=1, description="cosine to a cluster's leader to join it")
    max_cluster: int = Field(40, ge=2, description="members of one topic cluster at most")
    episode_size: int = Field(100, ge=2, description="memories of one episode at most: a longer session is several "
                              "episodes (parts), in insertion order, cut by content (organize/episodes.py) so an "
                              "edit rewrites only the parts around it; a part holds about half of this on average")
    min_members: int = Field(2, ge=2, description="members a cluster needs for a topic summary")
    summary_sentences: int = Field(3, ge=1, description="member sentences an extractive summary quotes")
    summary_chars: int = Field(480, ge=80, description="characters of a summary at most")
    max_entity_share: float = Field(0.2, gt=0, le=1, description="an entity in more of a large user's memories links nothing")
    max_members: int = Field(200_000, ge=1, description="memories of one user organised at most (oldest first)")
    person_topics: bool = Field(False, description="cluster each speaker's own memories by topic (:mod:`.persons`)")
    person_threshold: float = Field(0.5, gt=0, le=1, description="cosine to a person topic's leader to join it")


@dataclass
class OrganizeReport:
    """What one :func:`organize` pass did (counts are summed over users)."""

    users: int = 0
    users_skipped: int = 0
    items: int = 0
    clusters: int = 0
    topics_written: int = 0
    episodes_written: int = 0
    summaries_archived: int = 0
    summaries_refreshed: int = 0
    stale_marked: int = 0
    promoted: int = 0
    demoted: int = 0
    superseded: int = 0
    links_added: int = 0
    links_removed: int = 0
    conflicts: int = 0
    #: LLM calls the reader made for this pass, and the ones that failed (then: extractive, flagged)
    reader_calls: int = 0
    reader_errors: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: ``organize(reader=AUTO)``: the cube's configured reader, if it has one
AUTO = "auto"


class ReaderCalls:
    """The organiser's view of a reader: its two optional calls, or None where it has none or failed.

    The first failure (a :class:`MemosError`) turns the reader off for the rest of the pass, so an
    endpoint that is down costs one call's retries, not one per summary; ``notes`` says what happened.
    """

    def __init__(self, reader: Any, notes: list[str]) -> None:
        self.reader = reader
        self.notes = notes
        self.name = str(getattr(reader, "name", None) or type(reader).__name__)
        self.calls = 0
        self.errors = 0
        self._off = reader is None

    def summarize(self, texts: list[str]) -> str | None:
        return self._ask("summarize", texts)

    def resolve_conflict(self, newer: MemoryItem, older: MemoryItem) -> bool | None:
        return self._ask("resolve_conflict", newer, older)

    def _ask(self, method: str, *args: Any) -> Any:
        call = getattr(self.reader, method, None)
        if self._off or not callable(call):
            return None
        self.calls += 1
        try:
            return call(*args)
        except MemosError as exc:
            self.errors += 1
            self._off = True
            self.notes.append(f"the reader {self.name} failed ({type(exc).__name__}: {str(exc)[:200]}); the rest of "
                              "this pass wrote extractive summaries and left conflicts flagged")
            return None


def organize(
    cube: MemCube, user_id: str | None = None, *, reader: Any = AUTO, full: bool = False,
    policy: OrganizePolicy | None = None, principal: str = "organizer",
) -> OrganizeReport:
    """One organising pass over ``cube`` (every user, or only ``user_id``); see the module doc.

    Args:
        cube: the cube to organise.
        user_id: only this user's memories (default: every user, items without a user as one more).
        reader: default: the cube's configured LLM reader (``cube.reader``) if any; None: extractive, no LLM;
            or any object with ``summarize`` / ``resolve_conflict`` (see the module doc).
        full: redo every user, changed or not (a user is redone anyway when ``policy`` changed).
        policy: capacities and thresholds (:class:`OrganizePolicy`). Its working-memory fields, where given,
            are recorded as the cube's :class:`~.partitions.WorkingPolicy` (the write path keeps working memory
            with them); where not given, the recorded ones are used.
        principal: who the versions and audit entries name.

    Returns:
        An :class:`OrganizeReport`.
    """
    policy = _with_working_policy(cube, policy or OrganizePolicy(), principal)
    if isinstance(reader, str) and reader == AUTO:
        reader = getattr(cube, "reader", None)
    started = time.perf_counter()
    report = OrganizeReport()
    prints = user_fingerprints(cube.store, user_id, one=user_id is not None)
    done = cube.store.kv_get(PROGRESS, [_key(u) for u in prints])
    shape = policy.model_dump(mode="json")
    for user in sorted(prints, key=lambda u: (u is not None, u or "")):
        last = done.get(_key(user), {})
        if not full and last.get("fingerprint") == list(prints[user]) and last.get("policy") == shape:
            report.users_skipped += 1
            continue
        bind = getattr(reader, "for_cube", None)
        calls = ReaderCalls(bind(cube, user) if callable(bind) else reader, report.notes)
        inputs = others_inputs(cube.store, user)
        _organize_user(cube, user, policy, calls, principal, report)
        report.reader_calls += calls.calls
        report.reader_errors += calls.errors
        after = user_fingerprints(cube.store, user, one=True).get(user)
        # someone else wrote meanwhile: what they wrote is not organised yet (a source edited without changing
        # what others_inputs counts, its text's length say, leaves a summary stale: the next run redoes the user)
        if others_inputs(cube.store, user) != inputs or stale_left(cube, user):
            after = prints[user]
        cube.store.kv_put(PROGRESS, {_key(user): {
            "fingerprint": list(after or ()), "policy": shape, "at": utcnow().isoformat()}})
        report.users += 1
    report.seconds = time.perf_counter() - started
    if report.users:
        cube.audit("organize", principal, cube.cube_id, {k: v for k, v in report.as_dict().items() if v})
    return report


def _with_working_policy(cube: MemCube, policy: OrganizePolicy, principal: str) -> OrganizePolicy:
    """``policy`` with the cube's recorded working-memory fields where it gives none; those it gives are
    recorded, so the write path and this run agree on what working memory holds (no tug of war)."""
    given = {"working_capacity": "capacity", "active_sessions": "active_sessions"}
    set_here = {ours: getattr(policy, field) for field, ours in given.items() if field in policy.model_fields_set}
    recorded = set_working_policy(cube, **set_here, principal=principal) if set_here else working_policy(cube.store)
    return policy.model_copy(update={"working_capacity": recorded.capacity, "active_sessions": recorded.active_sessions})


def _key(user: str | None) -> str:
    return "user:" if user is None else f"user:={user}"


def _members(cube: MemCube, user: str | None, limit: int) -> list[MemoryItem]:
    rids = cube.store.rids_of_user(user, MEMBER_STATES, limit)
    rows = cube.store.get_by_rid(rids)
    now = utcnow()  # a memory whose validity ended (superseded) is history, not a member
    # a tool lesson (toolmem: ``experience_key``) is shown before its tool call, never recalled: no member
    found = [rows[r] for r in rids if r in rows and rows[r].kind in _MEMBER_KINDS
             and "experience_key" not in rows[r].metadata]
    return [m for m in found if m.valid_to is None or m.valid_to > now]


def _organize_user(cube: MemCube, user: str | None, policy: OrganizePolicy, reader: ReaderCalls, principal: str,
                   report: OrganizeReport) -> None:
    members = _members(cube, user, policy.max_members)
    movable = [m for m in members if m.state != Lifecycle.FROZEN]
    usage = cube.store.usage([m.id for m in movable]) if movable else {}
    moves = plan_moves(movable, usage, capacity=policy.working_capacity, active_sessions=policy.active_sessions)
    counts = apply_moves(cube, moves, principal)
    report.promoted += counts["promoted"]
    report.demoted += counts["demoted"]
    report.superseded += counts["superseded"]
    if moves:
        members = _members(cube, user, policy.max_members)  # new versions, superseded profile entries gone
    members.sort(key=lambda m: (m.created_at, m.id))
    linked = [m.id for m in members]
    want = wanted_links(members, policy.max_entity_share)
    if callable(getattr(reader.reader, "resolve_conflict", None)):  # before the tree: a superseded memory is no member
        gone = _resolve_conflicts(cube, members, want, reader, principal)
        report.superseded += len(gone)
        members = [m for m in members if m.id not in gone]
    report.items += len(members)
    tree = TreePolicy(policy.cluster_threshold, policy.max_cluster, policy.min_members, policy.summary_sentences,
                      policy.summary_chars, policy.episode_size)
    counts = build_user_tree(cube, user, members, tree, reader=reader, principal=principal)
    for name in ("clusters", "topics_written", "episodes_written", "summaries_archived", "stale_marked",
                 "summaries_refreshed"):
        setattr(report, name, getattr(report, name) + counts[name])
    # a resolved conflict stays as the record of why its older memory was archived
    have = {(e.src, e.type, e.dst): e for e in cube.graph.edges(linked, "both", [SAME_ENTITY, CONFLICT])
            if e.metadata.get("status") != "resolved"}
    added, removed = sync_edges(cube, want, have)
    report.links_added += added
    report.links_removed += removed
    added, removed = sync_person_topics(cube, members, linked, policy.person_topics, policy.person_threshold,
                                        policy.max_cluster)
    report.links_added += added
    report.links_removed += removed
    report.conflicts += sum(1 for k in want if k[1] == CONFLICT)


def _resolve_conflicts(cube: MemCube, members: list[MemoryItem], want: dict[tuple[str, str, str], Any],
                       reader: ReaderCalls, principal: str) -> set[str]:
    """Ask the reader about each flagged conflict (``resolve_conflict(newer, older) -> bool``): True
    supersedes the older memory as the reader's SUPERSEDE does (a new version closing its validity,
    ``valid_to``, at the newer one's start; a ``superseded_by`` edge; the text never lost) and marks
    the link ``resolved``; False (or a failed reader) keeps both and the link ``flagged``."""
    by_id = {m.id: m for m in members}
    superseded: set[str] = set()
    for key, edge in sorted(want.items()):
        if key[1] != CONFLICT or edge.metadata.get("status") != "flagged":
            continue
        newer, older = by_id.get(edge.src), by_id.get(edge.dst)
        if newer is None or older is None or older.id in superseded or not reader.resolve_conflict(newer, older):
            continue
        now = utcnow()
        until = min(newer.valid_from or newer.created_at, now)
        if older.valid_from is not None and until <= older.valid_from:
            until = now  # the newer memory claims an earlier start: the older one ends now, never before it began
        reason = f"conflict on {edge.metadata.get('entity')}'s {edge.metadata.get('attribute')}"
        cube.update(older.id, valid_to=until, principal=principal, metadata={
            **older.metadata, "op": "SUPERSEDED", "superseded_by": newer.id, "reason": reason,
            "superseded_because": "conflict"})
        cube.graph.add_edges([Edge(older.id, newer.id, SUPERSEDED_BY, 1.0, {"at": until.isoformat(), "reason": reason})])
        cube.audit("supersede", principal, cube.cube_id, {"id": older.id, "by": newer.id, "reason": "conflict"})
        want[key] = type(edge)(edge.src, edge.dst, edge.type, edge.weight, {**edge.metadata, "status": "resolved"})
        superseded.add(older.id)
    return superseded


def sync_person_topics(cube: MemCube, members: list[MemoryItem], linked: list[str], on: bool, threshold: float,
                       max_size: int) -> tuple[int, int]:
    """Write the user's person topics (:mod:`.persons`), or remove them when ``on`` is False: (added, removed)."""
    want = wanted_person_topics(members, cube.store.vectors_by_id([m.id for m in members]), threshold, max_size) \
        if on else {}
    # both directions: the edges of a member deleted or superseded since the last run end at a current one
    have = {(e.src, e.type, e.dst): e for e in cube.graph.edges(linked, "both", [PERSON_TOPIC])}
    return sync_edges(cube, want, have)
