"""The service's item JSON (server/service.py ``item_json``): byte for byte what ``MemoryItem.to_dict`` gives."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from memos_integrations.items import Kind, Lifecycle, MemoryItem, SearchHit
from memos_integrations.server.service import hit_json, item_json


def _full() -> MemoryItem:
    t = datetime(2023, 5, 8, 13, 56, 7, 123456, tzinfo=timezone.utc)
    return MemoryItem(text="Caroline went to the support group. ✓", kind=Kind.MESSAGE, user_id="u1", agent_id="a",
                      session_id="s1", cube_id="c", created_at=t, updated_at=t + timedelta(seconds=1), event_time=t,
                      valid_from=t, valid_to=t + timedelta(days=1), state=Lifecycle.ARCHIVED, version=3,
                      sources=["x"], created_by="agent:a", method="fast", confidence=0.5, tags=["t"],
                      metadata={"speaker": "Caroline", "nested": {"n": [1, 2.5]}}, parent_id="p", context="before")


def _bytes(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def test_item_json_bytes_equal_to_dict() -> None:
    for item in (_full(), MemoryItem(text="plain")):
        assert _bytes(item_json(item)) == _bytes(item.to_dict())


def test_item_json_ignores_attributes_that_are_not_fields() -> None:
    item = _full()
    item.__dict__["_scratch"] = object()  # something set an attribute on the item: the fields alone, in order
    assert _bytes(item_json(item)) == _bytes(item.to_dict())


def test_item_json_leaves_the_item_as_it_was() -> None:
    item = _full()
    before = item.to_dict()
    out = item_json(item)
    out["text"] = "changed"
    out["created_at"] = "never"
    assert item.to_dict() == before and isinstance(item.created_at, datetime) and item.kind is Kind.MESSAGE


def test_hit_json_shape() -> None:
    item = _full()
    hit = SearchHit(item, 0.25, {"dense": 1, "keyword": 3})
    assert hit_json(hit) == {"item": item.to_dict(), "score": 0.25, "ranks": {"dense": 1, "keyword": 3}}
