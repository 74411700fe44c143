"""Vectors are checked where they enter the store (storage/sqlstore_aux.checked_vector, called by
``SQLStore.encode_vector``, which every write of a vector goes through on SQLite and PostgreSQL alike).

Before the fix ``put_vectors({id: (text, None)})`` stored ``np.asarray(None, np.float32)``: one NaN, four
bytes; every later search that read the vectors crashed in ``decode_vectors``' reshape with a ValueError.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations.errors import InvalidInputError
from memos_integrations.items import MemoryItem
from memos_integrations.storage.sqlite import SQLiteStore

DIM = 4


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[SQLiteStore, list[MemoryItem]]]:
    s = SQLiteStore(tmp_path / "memory.db")
    items = [MemoryItem(text=f"fact {n}", user_id="ana") for n in range(3)]
    s.write_items(items[:1], np.eye(1, DIM, dtype=np.float32))  # the store holds DIM-dim vectors
    s.write_items(items[1:], None)
    try:
        yield s, items
    finally:
        s.close()


BAD: list[tuple[str, Any]] = [
    ("none", None),
    ("scalar", 1.0),
    ("wrong dimension", np.ones(DIM + 1, np.float32)),
    ("empty", np.zeros(0, np.float32)),
    ("two-dimensional", np.ones((1, DIM), np.float32)),
    ("nan", np.array([1.0, np.nan, 0, 0], np.float32)),
    ("inf", np.array([1.0, np.inf, 0, 0])),
    ("overflows float32", np.array([1e300, 0, 0, 0])),
    ("strings", np.array(["a", "b", "c", "d"])),
    ("objects", np.array([None] * DIM, dtype=object)),
    ("booleans", np.ones(DIM, bool)),
    ("ragged list", [[1.0], [1.0, 2.0]]),
]


@pytest.mark.parametrize("name, vector", BAD, ids=[b[0] for b in BAD])
def test_a_malformed_vector_is_refused_and_search_keeps_working(store: tuple[SQLiteStore, list[MemoryItem]],
                                                                 name: str, vector: Any) -> None:
    s, items = store
    with pytest.raises(InvalidInputError, match="vector"):
        s.put_vectors({items[1].id: (items[1].embed_text, vector)})
    with pytest.raises(InvalidInputError, match="vector"):
        s.write_items([items[2].evolve(version=2, text="fact two, changed")], np.array([vector], dtype=object))
    rids, matrix = s.vectors_for([1, 2, 3])  # what a search reads: no crash, nothing half-written
    assert rids == [1] and matrix.shape == (1, DIM)


def test_good_vectors_of_the_store_s_dimension_and_any_real_dtype_are_stored(
        store: tuple[SQLiteStore, list[MemoryItem]]) -> None:
    s, items = store
    assert s.put_vectors({items[1].id: (items[1].embed_text, [0.0, 1.0, 0.0, 0.0]),  # type: ignore[dict-item]  # a list, int64
                          items[2].id: (items[2].embed_text, np.array([0, 0, 1, 0], np.int64))}) == 2
    rids, matrix = s.vectors_for([1, 2, 3])
    assert rids == [1, 2, 3] and matrix.dtype == np.float32 and matrix.shape == (3, DIM)


def test_an_empty_store_takes_its_dimension_from_the_first_vector_and_refuses_a_mixed_batch(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "memory.db")
    try:
        items = [MemoryItem(text=f"fact {n}", user_id="ana") for n in range(2)]
        ragged = np.empty(2, dtype=object)
        ragged[0], ragged[1] = np.ones(DIM, np.float32), np.ones(DIM + 2, np.float32)
        with pytest.raises(InvalidInputError, match="dimension"):
            s.write_items(items, ragged)
        assert s.get_items([i.id for i in items]) == {}  # rolled back whole
        s.write_items(items, np.ones((2, DIM + 2), np.float32))  # the refused batch left no stale dimension
        assert {v.shape for v in s.vectors_by_id([i.id for i in items]).values()} == {(DIM + 2,)}
    finally:
        s.close()
