"""Partitions: working memory per session, long-term memory, the user profile.

An item's partition is ``metadata["partition"]`` (absent: long-term). The organiser moves items
between partitions; each move is a new version of the item (``metadata["partition"]`` and
``metadata["partition_since"]``), so ``history(id)`` shows when and why, and one audit entry per
batch (action ``promote`` or ``demote``, detail: ids, from, to, reason).

- **working**: per session, what the agent is using now: the session's items ranked by their last
  use (the later of written and last returned by a search), at most ``working_capacity`` of them,
  for the user's ``active_sessions`` most recently written sessions. Items that fall out (a newer
  turn pushed them out, their session went quiet) are demoted to long-term. The write path keeps
  it current without an organiser run (:func:`admit`, :func:`keep_working`, below).
- **profile**: stable facts and preferences about the user: items of kind ``preference``, items
  written with ``metadata["partition"] = "profile"`` or a ``metadata["profile_key"]``. One current
  item per key (the key given, else the attribute the text states, e.g. ``maya|favourite colour``,
  else the item's own id): a newer item with the same key supersedes the older one, which is
  archived (a new version with ``superseded_by``), never deleted. :func:`set_profile` updates the
  current item of a key in place (a new version: the old text stays in its history).
- **long_term**: everything else.

Working memory on the write path (no organiser run needed): an item written with a session (and no
partition of its own) is born in that session's working memory (:func:`admit`, inside the add's own
transaction: its first version says so, with one audit row per add); right after the add commits,
:func:`keep_working` demotes what no longer fits, reading only the written sessions' rows (the whole
user's only when a session starts: the least recently written session may then leave). A kill between
the two leaves a session over its capacity, never an item lost: the next add to that session, the
scheduler's working job (:func:`sweep`, in ``MemScheduler.run()``) or the organiser repairs it. Both
paths rank with the same functions, so the organiser finds nothing to move after the write path.
The capacities are the cube's recorded :class:`WorkingPolicy` (:func:`set_working_policy`; an
organiser run with an explicit policy records its own).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import InvalidInputError
from ..items import Kind, Lifecycle, MemoryItem, to_epoch, utcnow
from ..storage.organize_state import index_unchanged
from ..storage.sql import marks
from ..storage.sqlstore import _UPSERT_ITEM, item_values
from ..textual.filters import MemoryFilter
from .links import attributes
from .statements import FIRST_PERSON, self_attribute

if TYPE_CHECKING:
    from ..cube import MemCube
    from ..storage.sqlstore import SQLStore
    from ..textual.memory import TextualMemory

WORKING = "working"
LONG_TERM = "long_term"
PROFILE = "profile"
PARTITIONS = (WORKING, LONG_TERM, PROFILE)
_ORDER = {LONG_TERM: 0, WORKING: 1, PROFILE: 2}
#: who the write path's and the sweep's moves name
SCHEDULER = "scheduler"
#: the states whose items move between partitions (frozen items never move)
MOVABLE = (Lifecycle.GENERATED, Lifecycle.ACTIVATED)
_NOT_MEMBERS = (Kind.SUMMARY, Kind.CHUNK)
_KV, _POLICY, _SWEPT = "working_memory", "policy", "swept_at"
IN_USE, LEFT = "in use in session", "left the session's working memory"


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
    own = FIRST_PERSON.search(item.text)  # the user's own words: "My favourite colour is ...", "I live in ..."
    if own:
        return "self|" + self_attribute(own)
    return f"id:{item.id}"



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
    sessions: dict[str, list[Use]] = {}
    for it in rest:
        if it.session_id is not None:
            sessions.setdefault(it.session_id, []).append(Use(
                it.id, it.session_id, to_epoch(it.created_at) or 0.0, usage.get(it.id, (0, None))[1], False))
    working = wanted_working(sessions, capacity, active_of(sessions, active_sessions))
    for it in rest:
        if it.id in working:
            move(it, WORKING, f"{IN_USE} {it.session_id}")
        elif partition_of(it) == WORKING:
            move(it, LONG_TERM, LEFT)
    return moves


def apply_moves(cube: MemCube, moves: Sequence[tuple[MemoryItem, dict[str, Any], str]], principal: str) -> dict[str, int]:
    """Write each move as a new version (re-read inside the transaction: a concurrent writer's change is
    kept), audit them per reason; returns counts of promoted, demoted and superseded items."""
    return write_moves(cube.store, cube.cube_id, moves, principal, cube.text_mem)


def write_moves(store: SQLStore, cube_id: str, moves: Sequence[tuple[MemoryItem, dict[str, Any], str]], principal: str,
                text_mem: TextualMemory | None = None) -> dict[str, int]:
    """:func:`apply_moves` on a store (the write path has no cube): ``text_mem`` syncs the index after a
    move that changes what is indexed (a superseded profile entry is archived)."""
    from ..textual import index_sync

    if not moves:
        return {"promoted": 0, "demoted": 0, "superseded": 0}
    written: list[tuple[str, str, str, str]] = []
    loud: list[MemoryItem] = []
    with store.transaction():
        current = store.get_items([m[0].id for m in moves])
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
            _write_in_place(store, quiet)
        loud = [n for n in news if not index_unchanged(current[n.id], n)]
        if loud:
            store.write_items(loud, None)
    if loud and text_mem is not None:
        index_sync.sync_after_commit(text_mem)
    counts = {"promoted": 0, "demoted": 0, "superseded": 0}
    groups: dict[tuple[str, str, str], list[str]] = {}
    for item_id, src, dst, reason in written:
        why = "in use in its session" if reason.startswith(IN_USE) else (
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
        store.audit(action, principal, cube_id, {"from": src, "to": dst, "reason": why, "ids": ids}, True)
    return counts


def _write_in_place(store: SQLStore, items: Sequence[MemoryItem]) -> None:
    """New versions of ``items`` whose indexed fields did not change (a partition move): the row and its
    version, nothing re-indexed. As ``write_items`` does, the rows are named to the store's held maps, so a
    search after a move re-reads those rows only (an unnamed write would make it re-read them all)."""
    now = to_epoch(utcnow())
    with store.transaction() as tx:
        raw = getattr(tx, "tx", tx)  # past TrackedTx: the rows are named below
        for item in items:
            raw.execute(_UPSERT_ITEM, item_values(item))
            if store._changed is not None:
                store._changed.add(store._rid(tx, item.id))
        tx.executemany(
            "INSERT INTO versions (item_id, version, data, recorded_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (item_id, version) DO UPDATE SET data = excluded.data, recorded_at = excluded.recorded_at",
            [(it.id, it.version, json.dumps(it.to_dict(), sort_keys=True), now) for it in items])


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


# -- working memory on the write path ----------------------------------------------------------------------
#: the defaults of :class:`WorkingPolicy` and of the organiser's ``working_capacity`` / ``active_sessions``
WORKING_CAPACITY = 20
ACTIVE_SESSIONS = 4


@dataclass(frozen=True)
class WorkingPolicy:
    """The working memory a cube keeps: ``capacity`` items per session, for each user's
    ``active_sessions`` most recently written sessions; ``on=False`` leaves it to organiser runs."""

    capacity: int = WORKING_CAPACITY
    active_sessions: int = ACTIVE_SESSIONS
    on: bool = True


def working_policy(store: SQLStore) -> WorkingPolicy:
    """The cube's recorded :class:`WorkingPolicy` (the defaults when none was recorded)."""
    rec = store.kv_get(_KV, [_POLICY]).get(_POLICY)
    if isinstance(rec, dict):
        cap, active, on = rec.get("capacity"), rec.get("active_sessions"), rec.get("on")
        if type(cap) is int and cap >= 1 and type(active) is int and active >= 0 and isinstance(on, bool):
            return WorkingPolicy(cap, active, on)
    return WorkingPolicy()  # none, or not one this code wrote: the defaults


def set_working_policy(cube: MemCube, *, capacity: int | None = None, active_sessions: int | None = None,
                       on: bool | None = None, principal: str | None = None) -> WorkingPolicy:
    """Record the cube's working-memory policy (the fields given; the others stay); the write path, the
    scheduler and organiser runs without an explicit policy follow it. Returns the policy now recorded."""
    old = working_policy(cube.store)
    new = WorkingPolicy(old.capacity if capacity is None else capacity,
                        old.active_sessions if active_sessions is None else active_sessions, old.on if on is None else on)
    if type(new.capacity) is not int or new.capacity < 1:
        raise InvalidInputError(f"capacity must be a whole number of items >= 1, got {capacity!r}")
    if type(new.active_sessions) is not int or new.active_sessions < 0:
        raise InvalidInputError(f"active_sessions must be a whole number >= 0 (0: no working memory), got {active_sessions!r}")
    if not isinstance(new.on, bool):
        raise InvalidInputError(f"on must be True or False, got {on!r}")
    if new != old:
        record = {"capacity": new.capacity, "active_sessions": new.active_sessions, "on": new.on}
        with cube.store.transaction():
            cube.store.kv_put(_KV, {_POLICY: record})
            cube.store.audit("working_policy", principal or SCHEDULER, cube.cube_id, record, True)
    return new


class Use(NamedTuple):
    """One candidate of a session's working memory, as ranking reads it."""

    id: str
    session: str
    created: float
    used: float | None  # last returned by a search (epoch), None: never
    working: bool


def _use_key(u: Use) -> tuple[float, float, str]:
    """Last use first (the later of written and last returned by a search), then the newest, then by id."""
    return (-round(max(u.created, u.used or 0.0), 6), -round(u.created, 6), u.id)


def active_of(sessions: Mapping[str, Sequence[Use]], n: int) -> set[str]:
    """The ``n`` most recently written of ``sessions``: those that keep a working memory."""
    last = {s: max(round(u.created, 6) for u in group) for s, group in sessions.items() if group}
    return set(sorted(last, key=lambda s: (-last[s], s))[:n])


def wanted_working(sessions: Mapping[str, Sequence[Use]], capacity: int, active: Collection[str]) -> set[str]:
    """The ids each active session's working memory should hold: its ``capacity`` most recently used."""
    out: set[str] = set()
    for s in active:
        out.update(u.id for u in sorted(sessions.get(s, ()), key=_use_key)[:capacity])
    return out


def _candidate(kind: str, meta: Mapping[str, Any], valid_to: float | None, now: float) -> bool:
    """Whether a live, movable item of this kind and metadata may be in working memory: a member the
    organiser clusters (no summary, no part, no tool lesson, still valid) that is no profile entry."""
    given = meta.get("profile_key")
    return (kind not in _NOT_MEMBERS and kind != Kind.PREFERENCE and not (isinstance(given, str) and given)
            and meta.get("partition") != PROFILE and "experience_key" not in meta
            and (valid_to is None or valid_to > now))


def admit(store: SQLStore, cube_id: str, items: Sequence[MemoryItem]) -> list[MemoryItem]:
    """``items`` as the add's transaction writes them: those written with a session (and no partition of
    their own) born in its working memory, at most ``capacity`` per session (the newest), with one audit
    row. Atomic with the add: no version of its own, nothing a crash can split."""
    now = utcnow()
    due: dict[tuple[str | None, str], list[int]] = {}
    for n, it in enumerate(items):
        if (it.session_id is not None and "partition" not in it.metadata and it.state in MOVABLE
                and _candidate(Kind(it.kind).value, it.metadata, to_epoch(it.valid_to), to_epoch(now) or 0.0)):
            due.setdefault((it.user_id, it.session_id), []).append(n)
    if not due:
        return list(items)
    policy = working_policy(store)
    if not policy.on or policy.active_sessions == 0:
        return list(items)
    out, stamp, ids = list(items), now.isoformat(), []
    for (_, session), group in due.items():
        uses = [Use(items[n].id, session, to_epoch(items[n].created_at) or 0.0, None, False) for n in group]
        newest = {u.id for u in sorted(uses, key=_use_key)[: policy.capacity]}
        for n in group:
            if items[n].id in newest:
                out[n] = items[n].evolve(metadata={**items[n].metadata, "partition": WORKING, "partition_since": stamp})
                ids.append(items[n].id)
    store.audit("promote", SCHEDULER, cube_id, {"from": "new", "to": WORKING, "reason": "written in its session",
                                                "ids": ids}, True)
    return out


def keep_working(mem: TextualMemory, items: Sequence[MemoryItem]) -> dict[str, int]:
    """After an add committed: demote what no longer fits the written sessions' working memory (and, when
    a session starts, the working memory of the user's sessions that are no longer active)."""
    pairs = {(it.user_id, it.session_id) for it in items
             if it.session_id is not None and it.metadata.get("partition") == WORKING}
    if not pairs:
        return {"promoted": 0, "demoted": 0}
    return settle(mem.store, mem.cube_id, pairs, fresh={it.id for it in items})


_COLS = "SELECT items.id, items.session_id, items.kind, items.created_at, items.last_access, items.valid_to, items.metadata "
_OF_USER = "FROM items WHERE items.user_id IS NOT DISTINCT FROM ? AND items.state IN (?, ?) AND "
#: last use, in portable SQL: the later of written and last returned by a search
_LAST_USE = "CASE WHEN COALESCE(items.last_access, 0) > items.created_at THEN items.last_access ELSE items.created_at END"
_KEYS = ('"partition"', '"profile_key"', '"experience_key"')


def _use_rows(rows: Iterable[Sequence[Any]], now: float) -> dict[str, list[Use]]:
    out: dict[str, list[Use]] = {}
    for id_, sess, kind, created, used, valid_to, text in rows:
        meta = json.loads(text) if any(k in text for k in _KEYS) else {}  # most rows name none: not parsed
        if _candidate(kind, meta, valid_to, now):
            out.setdefault(sess, []).append(Use(id_, sess, float(created), used, meta.get("partition") == WORKING))
    return out


def _user_uses(store: SQLStore, user: str | None, now: float) -> dict[str, list[Use]]:
    """The working-memory candidates of all of ``user``'s sessions (a session starts; the sweep)."""
    return _use_rows(store.db.read(_COLS + _OF_USER + "items.session_id IS NOT NULL",
                                   [user, *(s.value for s in MOVABLE)]), now)


def _session_uses(store: SQLStore, user: str | None, session: str, capacity: int, now: float) -> list[Use]:
    """The candidates of one session that matter: its most recently used (at least ``capacity`` of them
    when it has them: read by last use, a window at a time) and those now in its working memory."""
    params: list[Any] = [user, *(s.value for s in MOVABLE), session]
    head = _COLS + _OF_USER + "items.session_id = ?"
    limit = capacity + 8
    while True:
        rows = store.db.read(f"{head} ORDER BY {_LAST_USE} DESC, items.created_at DESC, items.id LIMIT ?", [*params, limit])
        found = _use_rows(rows, now).get(session, [])
        if len(found) >= capacity or len(rows) < limit:
            break
        limit *= 4  # many rows that are no candidates (profile entries, tool lessons): read further
    where, more = store.where(MemoryFilter(states=None, metadata={"partition": WORKING}))
    seen = {u.id for u in found}
    held = _use_rows(store.db.read(f"{head} AND {where}", [*params, *more]), now).get(session, [])
    return found + [u for u in held if u.id not in seen]


def settle(store: SQLStore, cube_id: str, pairs: Iterable[tuple[str | None, str]] = (), *,
           fresh: Collection[str] = (), users: Iterable[str | None] = (), principal: str = SCHEDULER) -> dict[str, int]:
    """Bring working memory to what the organiser would make it, in one transaction: for each (user,
    session) of ``pairs`` that session's (reading its rows only, unless it had no working memory
    but ``fresh`` items: a session starts, and the user's whole is read), and for each of ``users`` the
    user's whole. The same user's settles take turns (a lock on PostgreSQL, the write lock on SQLite)."""
    policy = working_policy(store)
    if not policy.on:
        return {"promoted": 0, "demoted": 0}
    by_user: dict[str | None, set[str]] = {}
    for user, session in pairs:
        by_user.setdefault(user, set()).add(session)
    whole = set(users)
    for user in whole:
        by_user.setdefault(user, set())
    if not by_user:
        return {"promoted": 0, "demoted": 0}
    store.flush_usage()  # search hits are use
    now = to_epoch(utcnow()) or 0.0
    with store.transaction() as tx:
        moves: list[tuple[str, str, str]] = []
        for user in sorted(by_user, key=lambda u: (u is not None, u or "")):
            tx.lock("working:" + ("" if user is None else "=" + user))
            rows: dict[str, list[Use]] = {}
            if user not in whole:
                for session in sorted(by_user[user]):
                    rows[session] = _session_uses(store, user, session, policy.capacity, now)
            if user in whole or any(not any(u.working and u.id not in fresh for u in group) for group in rows.values()):
                rows = _user_uses(store, user, now)
                active = active_of(rows, policy.active_sessions)
            else:
                active = set(rows)  # each had a working memory: it was active, and was just written
            want = wanted_working(rows, policy.capacity, active)
            for session, group in sorted(rows.items()):
                for u in sorted(group, key=_use_key):
                    if u.id in want and not u.working:
                        moves.append((u.id, WORKING, f"{IN_USE} {session}"))
                    elif u.working and u.id not in want:
                        moves.append((u.id, LONG_TERM, LEFT))
        if not moves:
            return {"promoted": 0, "demoted": 0}
        current = store.get_items([m[0] for m in moves])
        stamp = utcnow().isoformat()
        planned = [(current[i], {"metadata": {**current[i].metadata, "partition": to, "partition_since": stamp}}, why)
                   for i, to, why in moves if i in current]
        counts = write_moves(store, cube_id, planned, principal)
    return {"promoted": counts["promoted"], "demoted": counts["demoted"]}


def sweep(store: SQLStore, cube_id: str, principal: str = SCHEDULER) -> dict[str, int]:
    """The scheduler's working-memory job: settle each user whose working memory is out of bounds (a
    session over its capacity, more sessions than ``active_sessions``: a crash between an add and its
    move) or who used a memory of a session outside it since the last sweep (a search hit is use)."""
    policy = working_policy(store)
    report = {"promoted": 0, "demoted": 0, "users": 0}
    if not policy.on:
        return report
    store.flush_usage()
    started = to_epoch(utcnow())
    where, params = store.where(MemoryFilter(states=list(MOVABLE), metadata={"partition": WORKING}))
    held: dict[str | None, list[int]] = {}
    for user, _, n in store.db.read(f"SELECT items.user_id, items.session_id, COUNT(*) FROM items WHERE {where} AND "
                                    "items.session_id IS NOT NULL GROUP BY items.user_id, items.session_id", params):
        held.setdefault(user, []).append(int(n))
    users = {u for u, ns in held.items() if len(ns) > policy.active_sessions or max(ns) > policy.capacity}
    mark = store.kv_get(_KV, [_SWEPT]).get(_SWEPT)
    since = float(mark) if isinstance(mark, (int, float)) and not isinstance(mark, bool) else 0.0
    users.update(r[0] for r in store.db.read(
        f"SELECT DISTINCT user_id FROM items WHERE last_access > ? AND session_id IS NOT NULL AND state IN "
        f"({marks(len(MOVABLE))})", [since, *(s.value for s in MOVABLE)]))
    if users:
        report.update(settle(store, cube_id, users=users, principal=principal))
    store.kv_put(_KV, {_SWEPT: started})
    report["users"] = len(users)
    return report
