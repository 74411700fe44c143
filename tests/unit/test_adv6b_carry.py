"""adv6b: held rows, maps and candidates carried across this store's commits, attacked with writes
that the carry does not name. After each, a search must equal what a freshly opened cube returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.organize import organize, set_working_policy

PLANS = ("fast", "balanced", "learned", "deep")


def _ids(hits: Any) -> list[str]:
    return [h.item.id for h in hits]


def _fresh(path: Path, embedder: Any) -> MemCube:
    return MemCube.init_from_dir(path, embedder=embedder)


def test_partition_moves_reach_a_metadata_filtered_search(tmp_path: Path, embedder: Any) -> None:
    """The organiser moves a session's turns into working memory by rewriting them in place; a search
    filtered on the working partition made before the move must see them after it, as a fresh cube does."""
    cube = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    try:
        set_working_policy(cube, on=False)  # the organiser's move (the write path's: test_sched7_working.py)
        for n in range(4):
            cube.add(memory=f"note {n}: the kettle is on shelf {n}", user_id="u1", session_id="s1")
        working = {"partition": "working"}
        assert cube.search("where is the kettle", top_k=4, metadata=working, plan="fast") == []  # candidates held
        organize(cube, reader=None)  # working memory: the session's turns, written in place
        after = _ids(cube.search("where is the kettle", top_k=4, metadata=working, plan="fast"))
    finally:
        cube.close()
    fresh = _fresh(tmp_path / "c", embedder)
    try:
        want = _ids(fresh.search("where is the kettle", top_k=4, metadata=working, plan="fast"))
    finally:
        fresh.close()
    assert want, "the organiser moved nothing: the test no longer exercises the move"
    assert after == want


def test_a_search_inside_a_rolled_back_transaction_leaves_no_vector_behind(tmp_path: Path, embedder: Any) -> None:
    """``store.transaction()`` is one atomic write, store calls included: a search run inside it sees the
    uncommitted update; after the rollback every search must rank by the committed vectors again."""
    cube = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    query = "kettle on the shelf"
    try:
        ids = [cube.add(memory=f"note {n}: about tea and biscuits", user_id="u1")[0].id for n in range(4)]
        before = _ids(cube.search(query, top_k=4, plan="fast"))
        with pytest.raises(RuntimeError):
            with cube.store.transaction():
                cube.update(ids[0], text="the kettle is on the shelf")
                assert _ids(cube.search(query, top_k=4, plan="fast"))[0] == ids[0]  # sees its own write
                raise RuntimeError("roll back")
        assert cube.get(ids[0]).text == "note 0: about tea and biscuits"
        after = {plan: _ids(cube.search(query, top_k=4, plan=plan)) for plan in PLANS}
    finally:
        cube.close()
    fresh = _fresh(tmp_path / "c", embedder)
    try:
        want = {plan: _ids(fresh.search(query, top_k=4, plan=plan)) for plan in PLANS}
    finally:
        fresh.close()
    assert want["fast"] == before
    assert after == want
