"""What the organiser (:mod:`memos_integrations.organize`) asks the store, in the portable dialect.

The organiser skips a user whose memories did not change since its last run. A user's
*fingerprint* is a summary of every row of theirs (tombstones included): how many, the newest
``updated_at``, the sum of versions and the newest search hit. Any add, update, delete or search
hit changes it; the organiser records it (in the ``kv`` collection ``organize``) only after the
user's run finished, so a run killed half-way leaves the old one and the next run redoes that user.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from ..items import LIVE_STATES, Kind, MemoryItem, to_epoch, utcnow
from .sqlstore import _UPSERT_ITEM, item_values

if TYPE_CHECKING:
    from .sqlstore import SQLStore

Fingerprint = tuple[int, float, int, float]


def user_fingerprints(store: SQLStore, user_id: str | None = None, *, one: bool = False) -> dict[str | None, Fingerprint]:
    """user id -> fingerprint, for every user (or only ``user_id`` when ``one``); search hits flushed first."""
    store.flush_usage()
    sql = ("SELECT user_id, COUNT(*), MAX(updated_at), SUM(version), MAX(COALESCE(last_access, 0)) FROM items")
    params: list[object] = []
    if one:
        sql += " WHERE user_id IS NOT DISTINCT FROM ?"
        params.append(user_id)
    rows = store.db.read(sql + " GROUP BY user_id", params)
    return {r[0]: (int(r[1]), float(r[2] or 0), int(r[3] or 0), float(r[4] or 0)) for r in rows}


def others_inputs(store: SQLStore, user_id: str | None) -> tuple[object, ...]:
    """What other writers change and an organiser pass never does (the user's rows, texts' lengths, deletions,
    search hits; the organiser's summaries left out): compared before and after a pass, so that a memory
    written during it is not recorded as organised. Not seen here: an edit during the pass that keeps the
    text's length, or changes only metadata, validity or session; the organiser also checks its summaries
    after the pass (:func:`stale_summaries`), which sees every such edit of a summary's source (a
    metadata-only edit changes no summary; the next change to the user's memories redoes the user)."""
    store.flush_usage()
    rows = store.db.read(
        "SELECT COUNT(*), MAX(rid), SUM(LENGTH(text)), MAX(COALESCE(last_access, 0)), "
        "SUM(CASE WHEN state = 'deleted' THEN 1 ELSE 0 END) FROM items "
        "WHERE user_id IS NOT DISTINCT FROM ? AND NOT (kind = 'summary' AND method = ?)", [user_id, "organize"])
    return tuple(rows[0]) if rows else ()


def write_versions_in_place(store: SQLStore, items: Sequence[MemoryItem]) -> None:
    """Write new versions of ``items`` whose indexed fields did not change (text, context, kind, state,
    user, agent, session): the row and its version, without re-indexing text or vectors. The caller
    checks that (:func:`index_unchanged`); a partition move or a refreshed ``source_versions`` is
    such a write, and skipping the ANN upsert is what keeps organising cheap."""
    now = to_epoch(utcnow())
    with store.transaction() as tx:
        tx.executemany(_UPSERT_ITEM, [item_values(it) for it in items])
        tx.executemany(
            "INSERT INTO versions (item_id, version, data, recorded_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (item_id, version) DO UPDATE SET data = excluded.data, recorded_at = excluded.recorded_at",
            [(it.id, it.version, json.dumps(it.to_dict(), sort_keys=True), now) for it in items])


def index_unchanged(old: MemoryItem, new: MemoryItem) -> bool:
    """Whether ``new`` indexes exactly as ``old`` (same text, keyword context, kind, state and scope)."""
    return (old.text, old.context, old.kind, old.state, old.user_id, old.agent_id, old.session_id, old.metadata.get("speaker")) == (
        new.text, new.context, new.kind, new.state, new.user_id, new.agent_id, new.session_id, new.metadata.get("speaker"))


def digest(items: Sequence[MemoryItem]) -> str:
    """What a summary was built from: the members' ids and texts (a version bump alone is no change)."""
    h = hashlib.sha1()
    for it in items:
        h.update(it.id.encode())
        h.update(b"\0")
        h.update(it.text.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()


def stale_summaries(store: SQLStore, summaries: Sequence[MemoryItem]) -> set[str]:
    """The ids of ``summaries`` whose sources changed since written: a source no longer live or no longer
    valid (``valid_to`` passed: superseded), moved to another user (or, for an episode, whose metadata
    names its ``session_id``, to another session), or at another version whose text differs (a version
    bump that kept the text is no change)."""
    wanted = {s for it in summaries for s in it.metadata.get("source_versions", {})}
    current = store.get_items(sorted(wanted))
    now = utcnow()
    stale: set[str] = set()
    for summ in summaries:
        versions = summ.metadata.get("source_versions", {})
        members = [current.get(i) for i in versions]
        session = summ.metadata.get("session_id")
        if any(m is None or m.state not in LIVE_STATES or (m.valid_to is not None and m.valid_to <= now)
               or m.user_id != summ.user_id or (session is not None and m.session_id != session)
               for m in members):
            stale.add(summ.id)
        elif any(m.version != versions[m.id] for m in members if m is not None):
            if digest([m for m in members if m is not None]) != summ.metadata.get("source_digest"):
                stale.add(summ.id)
    return stale


K = TypeVar("K")


def without_stale_summaries(store: SQLStore, items: dict[K, MemoryItem]) -> dict[K, MemoryItem]:
    """``items`` less the organised summaries whose sources changed since written: what a search returns
    between organising runs must not quote a memory deleted or corrected since (one read, only when a
    summary is among the hits)."""
    summaries = [it for it in items.values() if it.kind == Kind.SUMMARY and "source_versions" in it.metadata]
    if not summaries:
        return items
    stale = stale_summaries(store, summaries)
    return {key: it for key, it in items.items() if it.id not in stale} if stale else items
