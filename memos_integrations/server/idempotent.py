"""A write written at most once, answered from the cube's own record (storage/idempotency.py): a staged
write's last part (its ``stage`` id) and ``POST /v1/memories`` with an ``Idempotency-Key`` header.

The route's write (a face's ``add_texts`` / ``add``) runs inside the cube's transaction together with the
record of its answer, so a retry after the staged answer's 10 minutes, after a restart, or after a
``kill -9`` between the cube's commit and the answer finds the record and gets the first answer back.

The index writes of the cube are deferred first (:func:`~memos_integrations.textual.index_defer.defer_writes`,
as the add route does): a write inside an outer transaction must not drain the outbox before its commit.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from ..errors import InvalidInputError
from ..storage.idempotency import WriteRecords
from ..textual import cache_scope
from ..textual.index_defer import defer_writes

#: the longest ``Idempotency-Key`` header the service takes
MAX_KEY_CHARS = 256

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


def write_once(mem: Any, user_id: str, key: str, digest: str, write: Callable[[], dict[str, Any]],
               texts: Sequence[Any] = ()) -> dict[str, Any]:
    """``write()`` in ``mem``'s transaction with its record, or the recorded answer when ``key`` was written.
    ``texts`` (the write's texts, when its views are the texts themselves) are embedded first, outside the
    transaction (:func:`~memos_integrations.textual.cache_scope.fresh_views`), unless ``key`` was written.

    Raises:
        ConflictError: ``key`` was written with another request (``digest``) within a day.
    """
    defer_writes(mem)
    records = records_for(mem)
    embedded = (cache_scope.fresh_views(mem.embedder, texts) if texts and records.find(user_id, key) is None
                else nullcontext())
    with embedded:
        answer = records.once(mem.store.transaction, user_id, key, digest, lambda: json.dumps(write()))
    return json.loads(answer)  # type: ignore[no-any-return]


def add_once(mem: Any, user_id: str, agent_id: str | None, key: str | None, body: Any,
             add: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``POST /v1/memories``: ``add()`` as it is without an ``Idempotency-Key``; with one, written once per
    (user, key) for a day and answered from the cube's record after, a different body under the key a 409.

    Raises:
        InvalidInputError: the key is empty or longer than :data:`MAX_KEY_CHARS`.
        ConflictError: the key was used for another add (another body, or another agent).
    """
    if key is None:
        return add()
    if not key or len(key) > MAX_KEY_CHARS:
        raise InvalidInputError(f"the Idempotency-Key header is {len(key)} characters; send 1 to {MAX_KEY_CHARS} "
                                "(a random uuid per add)")
    request = json.dumps({"body": body.model_dump(mode="json"), "agent": agent_id}, sort_keys=True)
    digest = hashlib.sha256(request.encode("utf-8", "surrogatepass")).hexdigest()
    texts = [body.text] if isinstance(getattr(body, "text", None), str) and getattr(body, "messages", None) is None else []
    return write_once(mem, user_id, f"add:{key}", digest, add, texts)
