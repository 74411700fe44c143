"""A staged write's last part written at most once, answered from the cube's own record (storage/idempotency.py).

The route's write (a face's ``add_texts`` / ``add``) runs inside the cube's transaction together with the
record of its answer, so a retry after the staged answer's 10 minutes, after a restart, or after a
``kill -9`` between the cube's commit and the answer finds the record and gets the first answer back.

The index writes of the cube are deferred first (:func:`~memos_integrations.textual.index_defer.defer_writes`,
as the add route does): a write inside an outer transaction must not drain the outbox before its commit.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..storage.idempotency import WriteRecords
from ..textual.index_defer import defer_writes

_records: weakref.WeakKeyDictionary[Any, WriteRecords] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def records_for(mem: Any) -> WriteRecords:
    """The write records of ``mem``'s database (its table migrated once per database object)."""
    db = mem.store.db
    with _lock:
        found = _records.get(db)
        if found is None:
            found = _records[db] = WriteRecords(db)
        return found


def find(mem: Any, user_id: str, key: str) -> tuple[str, dict[str, Any]] | None:
    """(digest, answer) of ``key``'s written write in ``mem``'s cube, if one is kept."""
    found = records_for(mem).find(user_id, key)
    return None if found is None else (found[0], json.loads(found[1]))


def write_once(mem: Any, user_id: str, key: str, digest: str, write: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``write()`` in ``mem``'s transaction with its record, or the recorded answer when ``key`` was written.

    Raises:
        ConflictError: ``key`` was written with another request (``digest``) within a day.
    """
    defer_writes(mem)
    answer = records_for(mem).once(mem.store.transaction, user_id, key, digest, lambda: json.dumps(write()))
    return json.loads(answer)  # type: ignore[no-any-return]
