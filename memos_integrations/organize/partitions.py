"""Partitions: working memory per session, long-term memory, the user profile.

An item's partition is ``metadata["partition"]`` (absent: long-term). The organiser moves items
between partitions; each move is a new version of the item (``metadata["partition"]`` and
``metadata["partition_since"]``), so ``history(id)`` shows when and why, and one audit entry per
batch (action ``promote`` or ``demote``, detail: ids, from, to, reason).

- **working**: per session, what the agent is using now: the session's items ranked by their last
  use (the later of written and last returned by a search), at most ``working_capacity`` of them,
  for the user's ``active_sessions`` most recently written sessions. Items that fall out (a newer
  turn pushed them out, their session went quiet) are demoted to long-term.
- **profile**: stable facts and preferences about the user: items of kind ``preference``, items
  written with ``metadata["partition"] = "profile"`` or a ``metadata["profile_key"]``. One current
  item per key (the key given, else the attribute the text states, e.g. ``maya|favourite colour``,
  else the item's own id): a newer item with the same key supersedes the older one, which is
  archived (a new version with ``superseded_by``), never deleted. :func:`set_profile` updates the
  current item of a key in place (a new version: the old text stays in its history).
- **long_term**: everything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..items import Kind, Lifecycle, MemoryItem, to_epoch, utcnow
from ..storage.organize_state import index_unchanged, write_versions_in_place
from .links import attributes

if TYPE_CHECKING:
    from ..cube import MemCube

WORKING = "working"
LONG_TERM = "long_term"
PROFILE = "profile"
PARTITIONS = (WORKING, LONG_TERM, PROFILE)
_ORDER = {LONG_TERM: 0, WORKING: 1, PROFILE: 2}


def partition_of(item: MemoryItem) -> str:
    """The partition of ``item`` (absent or unknown: long-term)."""
    value = item.metadata.get("partition")
    return value if value in PARTITIONS else LONG_TERM


def profile_key(item: MemoryItem) -> str | None:
    """The profile key of ``item``, or None when it is not a profile item."""
    given = item.metadata.get("profile_key")
    if isinstance(given, str) and given:
        return given
    if item.kind != Kind.PREFERENCE and item.metadata.get("partition") != PROFILE:
        return None
    stated = attributes(item.text)
    if stated:
        return stated[0].key
    own = _FIRST_PERSON.search(item.text)  # the user's own words: "My favourite colour is ...", "I live in ..."
    if own:
        attr = re.sub(r"\s+", " ", own.group("attr") or own.group("verb")).lower()
        return "self|" + {"live in": "lives in", "work at": "works at", "work for": "works for",
                          "work as": "works as", "am from": "is from", "am married to": "is married to",
                          "am allergic to": "is allergic to"}.get(attr, attr)
    return f"id:{item.id}"


_FIRST_PERSON = re.compile(
    r"\b[Mm]y\s+(?P<attr>(?:favou?rite\s+)?[a-z]+(?:\s+[a-z]+)?)\s+(?:is|was|are)\s"
    r"|\bI\s+(?:now\s+)?(?P<verb>live in|work at|work for|work as|am from|am married to|am allergic to)\b")


def plan_moves(
    items: Sequence[MemoryItem], usage: Mapping[str, tuple[int, float | None]], *, capacity: int, active_sessions: int,
) -> list[tuple[MemoryItem, dict[str, Any], str]]:
    """The changes one user's live ``items`` need: (item, field changes, reason), in a stable order."""
    moves: list[tuple[MemoryItem, dict[str, Any], str]] = []
    now = utcnow().isoformat()

    def move(item: MemoryItem, to: str, reason: str, **extra: Any) -> None:
        if partition_of(item) == to and not extra and (to != LONG_TERM or "partition" not in item.metadata
                                                        or item.metadata["partition"] == LONG_TERM):
            return
        meta = {**item.metadata, "partition": to, "partition_since": now, **extra.pop("metadata", {})}
        moves.append((item, {"metadata": meta, **extra}, reason))

    profile: dict[str, list[MemoryItem]] = {}
    rest: list[MemoryItem] = []
    for it in items:
        key = profile_key(it)
        (profile.setdefault(key, []) if key is not None else rest).append(it)
    for key, group in sorted(profile.items()):
        group.sort(key=lambda i: (to_epoch(i.created_at), i.id))
        current = group[-1]
        if partition_of(current) != PROFILE or current.metadata.get("profile_key") != key:
            move(current, PROFILE, "a stable fact or preference about the user", metadata={"profile_key": key})
        for old in group[:-1]:
            move(old, PROFILE, f"superseded by {current.id}", state=Lifecycle.ARCHIVED,
                 metadata={"profile_key": key, "superseded_by": current.id})
    sessions: dict[str, list[MemoryItem]] = {}
    for it in rest:
        if it.session_id is not None:
            sessions.setdefault(it.session_id, []).append(it)
    last_written = {s: max(to_epoch(i.created_at) or 0.0 for i in group) for s, group in sessions.items()}
    active = set(sorted(sessions, key=lambda s: (-last_written[s], s))[:active_sessions])
    working: set[str] = set()
    for s in active:
        ranked = sorted(sessions[s], key=lambda i: (-max(to_epoch(i.created_at) or 0.0, usage.get(i.id, (0, None))[1] or 0.0),
                                                     -(to_epoch(i.created_at) or 0.0), i.id))
        working.update(i.id for i in ranked[:capacity])
    for it in rest:
        if it.id in working:
            move(it, WORKING, f"in use in session {it.session_id}")
        elif partition_of(it) == WORKING:
            move(it, LONG_TERM, "left the session's working memory")
    return moves


def apply_moves(cube: MemCube, moves: Sequence[tuple[MemoryItem, dict[str, Any], str]], principal: str) -> dict[str, int]:
    """Write each move as a new version (re-read inside the transaction: a concurrent writer's change is
    kept), audit them per reason; returns counts of promoted, demoted and superseded items."""
    from ..textual import index_sync

    if not moves:
        return {"promoted": 0, "demoted": 0, "superseded": 0}
    written: list[tuple[str, str, str, str]] = []
    loud: list[MemoryItem] = []
    with cube.store.transaction():
        current = cube.store.get_items([m[0].id for m in moves])
        now = utcnow()
        news: list[MemoryItem] = []
        for item, changes, reason in moves:
            cur = current.get(item.id)
            if cur is None or cur.version != item.version:
                continue  # changed meanwhile: the next run plans it again
            news.append(cur.evolve(**changes, version=cur.version + 1, updated_at=now))
            written.append((item.id, partition_of(cur), changes["metadata"]["partition"], reason))
        quiet = [n for n in news if index_unchanged(current[n.id], n)]
        if quiet:
            write_versions_in_place(cube.store, quiet)
        loud = [n for n in news if not index_unchanged(current[n.id], n)]
        if loud:
            cube.store.write_items(loud, None)
    if loud:
        index_sync.sync_after_commit(cube.text_mem)
    counts = {"promoted": 0, "demoted": 0, "superseded": 0}
    groups: dict[tuple[str, str, str], list[str]] = {}
    for item_id, src, dst, reason in written:
        why = "in use in its session" if reason.startswith("in use") else (
            "superseded" if reason.startswith("superseded") else reason)
        groups.setdefault((src, dst, why), []).append(item_id)
        if why == "superseded":
            counts["superseded"] += 1
        elif _ORDER[dst] > _ORDER[src]:
            counts["promoted"] += 1
        elif _ORDER[dst] < _ORDER[src]:
            counts["demoted"] += 1
    for (src, dst, why), ids in sorted(groups.items()):
        action = "demote" if _ORDER[dst] < _ORDER[src] or why == "superseded" else "promote"
        cube.audit(action, principal, cube.cube_id, {"from": src, "to": dst, "reason": why, "ids": ids})
    return counts


def set_profile(cube: MemCube, user_id: str, key: str, text: str, *, principal: str | None = None) -> MemoryItem:
    """Make ``text`` the user's current profile entry ``key``: a new version of the current entry
    (its old text stays in ``history``), or a new ``preference`` item when there is none."""
    from ..textual.filters import MemoryFilter

    flt = MemoryFilter(user_id=user_id, metadata={"profile_key": key, "partition": PROFILE})
    current = [i for i in cube.store.list_items(flt, order="latest") if i.state != Lifecycle.ARCHIVED]
    if current:
        return cube.update(current[0].id, text=text, principal=principal)
    return cube.add(memory=text, user_id=user_id, kind=Kind.PREFERENCE, principal=principal,
                    metadata={"partition": PROFILE, "profile_key": key, "partition_since": utcnow().isoformat()})[0]
