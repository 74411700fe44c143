"""The data model: ids, the item's views, and its dict form (what export/import and versions rely on)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from memos_integrations.errors import InvalidInputError, MemosError
from memos_integrations.items import (
    Kind,
    Lifecycle,
    MemoryItem,
    Provenance,
    Scope,
    SearchHit,
    from_epoch,
    new_id,
    to_epoch,
)


def test_ids_are_26_crockford_chars_unique_and_sorted_by_creation() -> None:
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 and set(i) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)
    assert ids == sorted(ids), "ids made one after another in a process must sort in creation order"


def test_ids_are_unique_across_threads() -> None:
    out: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [new_id() for _ in range(500)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 2000


def test_new_item_defaults() -> None:
    item = MemoryItem(text="hello")
    assert item.kind is Kind.FACT and item.state is Lifecycle.GENERATED and item.version == 1
    assert item.created_at.tzinfo is not None and item.sources == [] and item.metadata == {}
    assert MemoryItem(text="x").id != MemoryItem(text="x").id
    # mutable defaults are not shared between items
    a, b = MemoryItem(text="a"), MemoryItem(text="b")
    a.tags.append("t")
    a.metadata["k"] = 1
    assert b.tags == [] and b.metadata == {}


def _full_item() -> MemoryItem:
    t = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    return MemoryItem(
        text="Caroline went to a support group.", kind=Kind.EVENT, user_id="caroline", agent_id="bot",
        session_id="s1", cube_id="c1", created_at=t, updated_at=t + timedelta(seconds=5), event_time=t,
        valid_from=t, valid_to=t + timedelta(days=365), state=Lifecycle.ARCHIVED, version=3,
        sources=["D1:3", "D1:4"], created_by="caroline", method="fast_reader", confidence=0.75,
        tags=["health", "support"], metadata={"speaker": "Caroline", "nested": {"a": [1, 2.5, None, True]}},
        parent_id="P1", context="Mel: how are you?",
    )


def test_to_dict_from_dict_round_trip_is_exact_and_json_ready() -> None:
    item = _full_item()
    data = item.to_dict()
    assert data["kind"] == "event" and data["state"] == "archived"
    assert data["event_time"] == "2023-05-08T13:56:00+00:00"
    again = MemoryItem.from_dict(json.loads(json.dumps(data)))
    assert again == item
    assert again.to_dict() == data
    # a minimal item round-trips too (None times stay None)
    plain = MemoryItem(text="x")
    assert MemoryItem.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain


def test_from_dict_names_unknown_fields() -> None:
    data = MemoryItem(text="x").to_dict()
    data["colour"] = "blue"
    with pytest.raises(InvalidInputError, match="colour") as err:
        MemoryItem.from_dict(data)
    assert isinstance(err.value, MemosError) and isinstance(err.value, ValueError)


def test_scope_and_provenance_views() -> None:
    item = _full_item()
    assert item.scope == Scope("caroline", "bot", "s1", "c1")
    assert item.provenance == Provenance(("D1:3", "D1:4"), "caroline", "fast_reader", 0.75)
    with pytest.raises(AttributeError):
        item.scope.user_id = "other"  # type: ignore[misc]  # views are frozen


def test_index_text_includes_context_only_when_there_is_one() -> None:
    assert MemoryItem(text="yes, last Friday").index_text == "yes, last Friday"
    assert MemoryItem(text="yes, last Friday", context="Q: when?").index_text == "Q: when?\nyes, last Friday"


def test_evolve_copies_and_keeps_the_original() -> None:
    item = _full_item()
    newer = item.evolve(text="changed", version=4)
    assert (item.text, item.version) == ("Caroline went to a support group.", 3)
    assert (newer.text, newer.version, newer.id) == ("changed", 4, item.id)


def test_epoch_helpers_treat_naive_times_as_utc() -> None:
    naive = datetime(2023, 5, 8, 12, 0)
    aware = naive.replace(tzinfo=timezone.utc)
    assert to_epoch(naive) == to_epoch(aware)
    assert from_epoch(to_epoch(aware)) == aware
    assert to_epoch(None) is None and from_epoch(None) is None


def test_search_hit_repr_is_short() -> None:
    hit = SearchHit(MemoryItem(text="x" * 500), 0.5, {"dense": 1})
    assert len(repr(hit)) < 140 and "0.5000" in repr(hit)
