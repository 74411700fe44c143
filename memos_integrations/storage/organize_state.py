"""What the organiser (:mod:`memos_integrations.organize`) asks the store, in the portable dialect.

The organiser skips a user whose memories did not change since its last run. A user's
*fingerprint* is a summary of every row of theirs (tombstones included): how many, the newest
``updated_at``, the sum of versions and the newest search hit. Any add, update, delete or search
hit changes it; the organiser records it (in the ``kv`` collection ``organize``) only after the
user's run finished, so a run killed half-way leaves the old one and the next run redoes that user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
