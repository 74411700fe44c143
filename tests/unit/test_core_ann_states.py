"""The ANN leg leaves the lifecycle condition to SQL first (Chroma pre-filtering on it is slow) and
still returns only items in the filter's states, falling back to Chroma's filter when SQL leaves too few."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, VectorConfig
from memos_integrations.items import Lifecycle
from memos_integrations.storage.base import VectorFilter
from memos_integrations.textual.filters import MemoryFilter


def test_vector_filter_can_leave_states_to_sql() -> None:
    flt = MemoryFilter(user_id="u")
    assert flt.vector_filter(states=False) == VectorFilter(user_id=("u",))
    assert MemoryFilter().vector_filter(states=False) is None
    assert flt.vector_filter().state == ("generated", "activated", "frozen")  # the default still carries the states


def test_ann_search_honours_states_without_chroma_state_filter(tmp_path: Path, embedder: Any) -> None:
    config = CubeConfig(cube_id="ann", vector=VectorConfig(exact_search_max=0))  # every dense query is ANN
    with MemCube.create(tmp_path / "ann", config, embedder=embedder) as cube:
        items = cube.add(memory=[f"gardening note {i}: tomatoes and basil" for i in range(40)], user_id="u")
        archived = [it.id for it in items[:36]]
        for item_id in archived:
            cube.update(item_id, state=Lifecycle.ARCHIVED)
        qv = embedder.embed_query("gardening tomatoes")
        # live only: the 36 archived items crowd Chroma's top hits, SQL drops them, the fallback finds the rest
        live = cube.text_mem._dense(qv, MemoryFilter(user_id="u"), 4)
        got = {it.id for it in cube.store.get_by_rid([r for r, _ in live]).values()}
        assert got == {it.id for it in items[36:]}
        # archived only: a state filter that matches few indexed items still finds them
        old = cube.text_mem._dense(qv, MemoryFilter(user_id="u", states=[Lifecycle.ARCHIVED]), 5)
        assert len(old) == 5
        assert {it.id for it in cube.store.get_by_rid([r for r, _ in old]).values()} <= set(archived)
