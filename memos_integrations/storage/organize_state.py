"""What the organiser (:mod:`memos_integrations.organize`) asks the store, in the portable dialect.

The organiser skips a user whose memories did not change since its last run. A user's
*fingerprint* is a summary of every row of theirs (tombstones included): how many, the newest
``updated_at``, the sum of versions and the newest search hit. Any add, update, delete or search
hit changes it; the organiser records it (in the ``kv`` collection ``organize``) only after the
user's run finished, so a run killed half-way leaves the old one and the next run redoes that user.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..items import MemoryItem, to_epoch, utcnow
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
