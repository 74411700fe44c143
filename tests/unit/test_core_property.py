"""Property: any sequence of add / update / delete / re-add keeps the three views of a cube in step.

SQLite's live count == the ANN index count == what search can see, and history(id) holds exactly one
version per write of that id. The cube searches through the ANN index (exact_search_max=0), so the
index itself, not the exact fallback, has to be right.
"""

from __future__ import annotations

from itertools import count

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, VectorConfig
from memos_integrations.errors import ItemNotFoundError
from memos_integrations.items import MemoryItem

WORDS = ["tea", "harp", "Lisbon", "bikes", "ramen", "oboe", "sunrise", "bees"]
ops = st.lists(
    st.tuples(st.sampled_from(["add", "update", "delete", "readd", "add_batch"]), st.integers(0, 5),
              st.sampled_from(WORDS)),
    min_size=1, max_size=10,
)
_run = count()


def test_counts_search_and_history_stay_consistent(tmp_path_factory, embedder) -> None:  # type: ignore[no-untyped-def]
    config = CubeConfig(vector=VectorConfig(exact_search_max=0))
    cube = MemCube.init_from_dir(tmp_path_factory.mktemp("prop") / "cube", config, embedder=embedder)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(ops)
    def check(sequence) -> None:  # type: ignore[no-untyped-def]
        user = f"user{next(_run)}"  # each example in its own scope of the shared cube
        ids: list[str] = []
        live: set[str] = set()
        writes: dict[str, int] = {}
        for op, n, word in sequence:
            target = ids[n % len(ids)] if ids else None
            if op == "add" or target is None:
                item = cube.add(memory=f"{user} likes {word}", user_id=user)[0]
                ids.append(item.id)
                live.add(item.id)
                writes[item.id] = 1
            elif op == "add_batch":
                batch = cube.add(memory=[f"{user} batch {word} {k}" for k in range(n % 3 + 1)], user_id=user)
                for item in batch:
                    ids.append(item.id)
                    live.add(item.id)
                    writes[item.id] = 1
            elif op == "update":
                if target in live:
                    cube.update(target, text=f"{user} now prefers {word}")
                    writes[target] += 1
                else:
                    try:
                        cube.update(target, text="x")
                        raise AssertionError("updating a tombstone must fail")
                    except ItemNotFoundError:
                        pass
            elif op == "delete":
                deleted = cube.delete(target)
                assert deleted == (1 if target in live else 0)
                if target in live:
                    live.discard(target)
                    writes[target] += 1
            else:  # re-add an id, live or tombstoned: always a new version
                cube.add_items([MemoryItem(text=f"{user} again {word}", id=target, user_id=user)])
                live.add(target)
                writes[target] += 1

        assert cube.store.outbox() == []
        all_live = cube.store.count(None) - cube.stats()["by_state"].get("deleted", 0)
        assert cube.index.count() == all_live == cube.stats()["items"]
        assert cube.index.ids() == {i.id for i in cube.get_all(include_archived=True)}
        visible = {h.item.id for h in cube.search(f"{user} likes", user_id=user, top_k=100)}
        assert visible == live
        assert {i.id for i in cube.get_all(user_id=user)} == live
        for item_id, n in writes.items():
            assert len(cube.history(item_id)) == n
            assert [v.version for v in cube.history(item_id)] == list(range(1, n + 1))

    try:
        check()
    finally:
        cube.close()
