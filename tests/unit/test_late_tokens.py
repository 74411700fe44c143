"""The ``late`` preset (textual/late.py) and its stored token vectors (storage/tables/late_tokens.py): written with
the item's vector in one transaction, replaced and dropped with it, never read across users or from a hostile
row, and ``late`` ranks exactly as ``learned`` wherever token vectors are missing. Small real cubes (MiniLM, SQLite)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.storage.tables import late_tokens as T
from memos_integrations.textual import late as LT
from memos_integrations.textual import retrieve as R
from memos_integrations.textual.filters import MemoryFilter
from tests.late_chat import QUESTION
from tests.late_chat import add_chat as _chat


def _rows(cube: MemCube) -> dict[str, tuple[int, bytes]]:
    return {r[0]: (r[1], bytes(r[2])) for r in cube.text_mem.store.db.read(
        "SELECT item_id, n, data FROM late_tokens")}


def _hits(cube: MemCube, plan: str, user: str = "u1") -> list[tuple[str, float]]:
    hits = cube.text_mem.search(QUESTION, MemoryFilter(user_id=user), top_k=5, plan=plan)
    return [(h.item.id, round(h.score, 9)) for h in hits]


@pytest.fixture
def weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Late weights that make the late columns count (the shipped ones may be empty or small)."""
    from memos_integrations.textual import fusion_learned as FL

    monkeypatch.setattr(LT, "WEIGHTS", {**FL.WEIGHTS, "late_maxsim_z": 3.0, "late_qhead_z": 1.0})
    monkeypatch.setattr(LT, "LIST_WEIGHTS", {**FL.LIST_WEIGHTS, "late_maxsim_z": 3.0, "late_qhead_z": 1.0})


def test_late_is_a_preset_by_name() -> None:
    plan = R.plan_named("late")
    assert plan.name == "late" and plan.fusion == "late"
    assert plan.model_copy(update={"name": "x", "fusion": "learned"}) == R.LEARNED.model_copy(update={"name": "x"})
    assert R.SearchPlan(fusion="late").fusion == "late"


def test_tokens_are_written_with_the_item_and_only_its_content_words(cube: MemCube) -> None:
    ids = _chat(cube)
    rows = _rows(cube)
    assert set(rows) == set(ids)
    assert all(0 < n <= 12 for n, _ in rows.values())  # content words only: no speaker name, no stop words
    n, data = rows[ids[0]]
    assert len(data) == n * 384


def test_a_failed_write_leaves_neither_item_nor_tokens(cube: MemCube, monkeypatch: pytest.MonkeyPatch) -> None:
    _chat(cube)
    before = _rows(cube)
    store = cube.text_mem.store

    def broken(*a: Any, **kw: Any) -> None:
        raise RuntimeError("disk full (test)")

    monkeypatch.setattr(store, "_put_vector", broken)  # after the tokens' row in the same transaction
    with pytest.raises(RuntimeError):
        cube.add(messages=[{"role": "user", "name": "Melanie", "content": "We adopted a puppy named Max."}],
                 user_id="u1", session_id="s2")
    monkeypatch.undo()
    assert _rows(cube) == before
    assert not [it for it in cube.text_mem.list_items() if "puppy" in it.text]


def test_tokens_follow_update_delete_and_reembed(cube: MemCube) -> None:
    ids = _chat(cube)
    first = _rows(cube)[ids[3]]
    cube.text_mem.update(ids[3], tags=["kept"])  # same text: same tokens
    assert _rows(cube)[ids[3]] == first
    cube.text_mem.update(ids[3], text="I joined a salsa dancing class downtown.")
    assert _rows(cube)[ids[3]] != first
    cube.text_mem.delete([ids[4]])
    assert ids[4] not in _rows(cube)
    # vectors a caller brings (not this process's pass) carry no tokens: the row is dropped, not kept stale
    item = cube.text_mem.get(ids[0]).evolve(text="A new text with its own vector.")
    cube.text_mem.add_items([item], vectors=np.ones((1, 384), dtype=np.float32))
    assert ids[0] not in _rows(cube)
    before = _rows(cube)
    with cube.text_mem.store.transaction() as tx:
        tx.execute("DELETE FROM late_tokens")
    cube.text_mem.reindex(reembed=True)
    after = _rows(cube)
    assert set(after) == {*before, ids[0]}  # every live item's tokens written again by the re-embedding pass
    assert all(after[k] == v for k, v in before.items())


def test_no_tokens_means_late_ranks_exactly_as_learned(cube: MemCube, weights: None) -> None:
    _chat(cube)
    store = cube.text_mem.store
    items = store.ranking_rows(list(range(1, 6)))
    assert LT.candidate_columns(store, cube.text_mem.embedder, QUESTION, list(items), items) is not None
    with store.transaction() as tx:
        tx.execute("DELETE FROM late_tokens WHERE rid = 2")  # one candidate without tokens: the question's mean
    cols = LT.candidate_columns(store, cube.text_mem.embedder, QUESTION, list(items), items)
    assert cols is not None and not cols[list(items).index(2)].any() and cols.any()
    assert _hits(cube, "late") != _hits(cube, "learned")
    with store.transaction() as tx:
        tx.execute("DELETE FROM late_tokens WHERE rid IN (1, 3)")  # most candidates without: as learned
    assert LT.candidate_columns(store, cube.text_mem.embedder, QUESTION, list(items), items) is None
    assert _hits(cube, "late") == _hits(cube, "learned")
    with store.transaction() as tx:
        tx.execute("DELETE FROM late_tokens")  # a cube written before this release
    assert _hits(cube, "late") == _hits(cube, "learned")


def test_int8_queries_and_other_embedders_rank_as_learned(cube: MemCube, weights: None) -> None:
    from memos_integrations.textual.embed import MiniLMEmbedder

    _chat(cube)
    int8 = MiniLMEmbedder(query_precision="int8")
    if int8.query_precision_in_use == "int8":
        assert LT.query_tokens(int8, QUESTION) is None

    class Other(MiniLMEmbedder):  # a subclass may embed elsewhere (the service's child): never trusted for tokens
        pass

    assert LT.query_tokens(Other(), QUESTION) is None
    assert LT.query_tokens(cube.text_mem.embedder, QUESTION) is not None
    learned = _hits(cube, "learned")
    path = cube.path
    cube.close()
    for embedder in (int8, Other()):  # the same cube searched through an embedder that gives no query tokens
        other = MemCube.open(path, embedder=embedder)
        try:
            assert [i for i, _ in _hits(other, "late")] == [i for i, _ in _hits(other, "learned")]
            assert _hits(other, "late") == _hits(other, "learned")
        finally:
            other.close()
    assert learned  # (int8 queries rank by their own vectors: compared with learned on the same embedder)


def test_hostile_rows_are_ignored_never_decoded(cube: MemCube, weights: None) -> None:
    _chat(cube)
    store = cube.text_mem.store
    row = store.db.read("SELECT rid, item_id, n, dim, data, scales FROM late_tokens WHERE rid = 1")[0]
    with store.transaction() as tx:
        tx.execute("DELETE FROM late_tokens WHERE rid = 1")
    absent = _hits(cube, "late")  # what a missing row gives: the question's mean on the late columns
    with store.transaction() as tx:
        tx.execute("INSERT INTO late_tokens (rid, item_id, n, dim, data, scales) VALUES (?, ?, ?, ?, ?, ?)", tuple(row))
    assert _hits(cube, "late") != absent
    bad = [(10**9, 384, b"\x01" * 384, b"\x00" * 4), (1, 999, b"\x01" * 999, b"\x00" * 4),
           (1, 384, b"\x01" * 384, np.array([np.nan], np.float32).tobytes()),
           (1, 384, b"\x01" * 384, np.array([-1.0], np.float32).tobytes()), (2, 384, b"\x01" * 384, b"\x00" * 8)]
    for n, dim, data, scales in bad:
        with store.transaction() as tx:
            tx.execute("UPDATE late_tokens SET n = ?, dim = ?, data = ?, scales = ? WHERE rid = 1", (n, dim, data, scales))
        assert 1 not in T.read(store, [1, 2], {1: store.ranking_rows([1])[1].id, 2: store.ranking_rows([2])[2].id}, 384)
        assert _hits(cube, "late") == absent  # ignored, as if absent: never decoded
    with store.transaction() as tx:
        tx.execute("UPDATE late_tokens SET data = ?, n = 1, dim = 384, scales = ? WHERE rid = 1", ("text", "x"))
    assert T.read(store, [1], {1: store.ranking_rows([1])[1].id}, 384) == {}


def test_a_second_users_rows_and_tokens_are_never_scored(cube: MemCube, weights: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _chat(cube, user="u1")
    _chat(cube, user="u2", session="s9")
    store = cube.text_mem.store
    mine = {rid for rid, it in store.ranking_rows(list(range(1, 11))).items() if it.user_id == "u1"}
    read: list[int] = []
    inner = T.read

    def spy(st: Any, rids: Any, ids: Any, dim: int) -> Any:
        read.extend(rids)
        return inner(st, rids, ids, dim)

    monkeypatch.setattr(T, "read", spy)
    hits = cube.text_mem.search(QUESTION, MemoryFilter(user_id="u1"), top_k=10, plan="late")
    assert read and set(read) <= mine and {h.item.user_id for h in hits} == {"u1"}
    # a row of u1's that names u2's item (a swapped or hostile file) is not that candidate's tokens
    theirs = next(it.id for it in store.ranking_rows(list(range(1, 11))).values() if it.user_id == "u2")
    with store.transaction() as tx:
        tx.execute("UPDATE late_tokens SET item_id = ? WHERE rid = ?", (theirs, min(mine)))
    assert min(mine) not in inner(store, sorted(mine), {r: store.ranking_rows([r])[r].id for r in mine}, 384)


def test_late_columns_can_change_the_order_from_the_same_candidates(cube: MemCube, weights: None) -> None:
    _chat(cube)
    late, learned = _hits(cube, "late"), _hits(cube, "learned")
    assert {i for i, _ in late} == {i for i, _ in learned}  # the same candidates, found by the same legs
    assert late != learned  # scored by the late model (its probabilities), not learned's


def test_dump_and_export_import_carry_the_tokens(cube: MemCube, tmp_path: Any, embedder: Any) -> None:
    _chat(cube)
    rows = _rows(cube)
    copy = cube.dump(tmp_path / "dumped")
    try:
        assert _rows(copy) == rows  # a file copy carries them
    finally:
        copy.close()
    cube.export_jsonl(tmp_path / "out.jsonl")
    fresh = MemCube.create(tmp_path / "imported", embedder=embedder)
    try:
        fresh.import_jsonl(tmp_path / "out.jsonl")
        assert _rows(fresh) == rows  # embedded again on import: the same pass, the same tokens
        assert _hits(fresh, "late") == _hits(cube, "late")
    finally:
        fresh.close()


def test_the_weights_are_constants_over_known_columns() -> None:
    from memos_integrations.errors import InvalidInputError
    from memos_integrations.textual import fusion_features as F

    assert LT.WEIGHTS and LT.LIST_WEIGHTS and set(LT.NAMES) <= set(LT.WEIGHTS)
    assert LT.weight_vector(LT.WEIGHTS).shape == (len(F.NAMES) + len(LT.NAMES),)
    with pytest.raises(InvalidInputError, match="unknown late"):
        LT.weight_vector({"nope": 1.0})


def test_late_ranks_exactly_as_learned_without_token_vectors_on_any_store(cube: MemCube, weights: None) -> None:
    """Also run on PostgreSQL (tests/integration/test_postgres_engine.py); PostgreSQL cubes store token vectors too
    (tests/integration/test_pg7_late_tokens.py)."""
    _chat(cube)
    store = cube.text_mem.store
    if T.table(store) is not None:  # embedded: as a cube written before this release
        with store.transaction() as tx:
            tx.execute("DELETE FROM late_tokens")
    assert _hits(cube, "late") == _hits(cube, "learned")
