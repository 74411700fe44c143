"""A search's hits are copies of the rows ranking holds (caches.DecodedRows.fresh, issue 13): equal to
decoding the row, never shared, and never a copy of a row that changed since it was held."""

from __future__ import annotations

import sqlite3
from typing import Any

from memos_integrations.storage.sqlstore import _SELECT, row_to_item


def _fill(cube: Any) -> None:
    cube.add(messages=[{"role": "user", "name": "Caroline", "content": "I went to the support group."},
                       {"role": "user", "name": "Melanie", "content": "I painted a sunrise over the lake."}],
             user_id="u1", session_id="s1", tags=["t"])


def _rid(store: Any, item_id: str) -> int:
    return int(store.db.read("SELECT rid FROM items WHERE id = ?", (item_id,))[0][0])


def test_hits_equal_decoding_and_share_nothing(cube: Any) -> None:
    _fill(cube)
    store = cube.text_mem.store
    hits = cube.search("What did Melanie paint?", top_k=2)
    assert len(hits) == 2 and all(_rid(store, h.item.id) in store._decoded.valid_rows for h in hits)  # copies
    for h in hits:
        row = store.db.read(f"SELECT {_SELECT} FROM items WHERE rid = ?", (_rid(store, h.item.id),))[0]
        assert h.item == row_to_item(row)
        h.item.metadata["speaker"] = "mallory"  # a caller changes what it was handed ...
        h.item.metadata["nested"] = {"x": 1}
        h.item.tags.append("changed")
        h.item.sources.append("forged")
    again = cube.search("What did Melanie paint?", top_k=2)
    assert [h.item.id for h in again] == [h.item.id for h in hits]
    for h in again:  # ... which changes nothing held: the next search hands out the stored values
        assert h.item.metadata["speaker"] in {"Caroline", "Melanie"} and "nested" not in h.item.metadata
        assert "changed" not in h.item.tags and "forged" not in h.item.sources


def test_hits_not_copied_from_a_row_changed_elsewhere(cube: Any) -> None:
    _fill(cube)
    store = cube.text_mem.store
    hit = cube.search("What did Melanie paint?", top_k=1)[0]
    with sqlite3.connect(store.path) as other:  # another process rewrites the row's text and metadata
        other.execute("UPDATE items SET text = 'I painted a sunset.', metadata = json_set(metadata, '$.mood', 'calm') "
                      "WHERE id = ?", (hit.item.id,))
    rid = _rid(store, hit.item.id)
    fresh = store.get_by_rid([rid])[rid]  # the held row is older: decoded, not copied
    assert fresh.text == "I painted a sunset." and fresh.metadata["mood"] == "calm"
