# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""The ``late`` preset on PostgreSQL cubes (storage/tables/late_tokens.py's PostgreSQL table): token vectors are
written with each item's vector in its transaction on every write path, read back validated, ranked exactly as
on an SQLite cube with the same content, kept in step under two concurrent writers, and carried by
``memcube migrate`` both ways. Real pgserver PostgreSQL, real MiniLM."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, postgres_store
from memos_integrations.items import Lifecycle, MemoryItem
from memos_integrations.storage import transfer
from memos_integrations.storage.tables import late_tokens as T
from memos_integrations.textual import late as LT
from memos_integrations.textual.filters import MemoryFilter
from tests.late_chat import CHAT, QUESTION
from tests.late_chat import add_chat as _chat
from tests.pg_server import postgres_dsn, schemas  # noqa: F401
from tests.unit.test_late_tokens import weights  # noqa: F401

#: questions over tests/late_chat.py's chat
QUESTIONS = [QUESTION, "What did Caroline make?", "Where did Melanie go with her kids?",
             "What did Melanie and her kids paint?", "What outdoor things does Melanie's family enjoy?"]


@pytest.fixture
def pg_cube(tmp_path: Path, postgres_dsn: str, schemas: Callable[[], str], embedder: Any) -> Iterator[MemCube]:
    c = MemCube.init_from_dir(tmp_path / "pg", CubeConfig(store=postgres_store(postgres_dsn, schema=schemas())),
                              embedder=embedder)
    yield c
    c.close()


def _rows(cube: MemCube) -> dict[str, tuple[int, bytes, bytes]]:
    return {r[0]: (r[1], bytes(r[2]), bytes(r[3])) for r in cube.text_mem.store.db.read(
        "SELECT item_id, n, data, scales FROM late_tokens")}


def _hits(cube: MemCube, question: str, plan: str) -> list[tuple[str, float]]:
    hits = cube.text_mem.search(question, MemoryFilter(user_id="u1"), top_k=5, plan=plan)
    return [(h.item.id, round(h.score, 6)) for h in hits]


def _ids(hits: list[tuple[str, float]], order: list[str]) -> list[int]:
    """Hits as positions in the chat (two cubes give the same chat different item ids)."""
    return [order.index(i) for i, _ in hits]


def _late_as_on_sqlite(pg: MemCube, pg_ids: list[str], lite: MemCube, lite_ids: list[str]) -> int:
    """Assert ``late`` ranks on ``pg`` as on ``lite`` wherever the backends' learned rankings agree; return on
    how many questions late's order differs from learned's on ``pg`` (so the comparison can fail).

    The keyword legs differ by design (``ts_rank`` and english stemming vs FTS5's BM25: docs/postgres.md), so a
    question whose *learned* order already differs between the backends cannot rank the same under late
    either; for those the late columns, which are backend-free, must still be equal."""
    differ = 0
    store, other = pg.text_mem.store, lite.text_mem.store
    rids = list(store.ranking_rows(list(range(1, len(CHAT) + 1))))
    for q in QUESTIONS:
        a = LT.candidate_columns(store, pg.text_mem.embedder, q, rids, store.ranking_rows(rids))
        b = LT.candidate_columns(other, lite.text_mem.embedder, q, rids, other.ranking_rows(rids))
        assert a is not None and b is not None and np.allclose(a, b, atol=1e-6), q
        learned = _ids(_hits(pg, q, "learned"), pg_ids)
        if learned != _ids(_hits(lite, q, "learned"), lite_ids):
            continue
        late = _ids(_hits(pg, q, "late"), pg_ids)
        assert late == _ids(_hits(lite, q, "late"), lite_ids), q
        differ += late != learned
    return differ


def test_a_pg_cube_stores_token_vectors_as_sqlite_does(pg_cube: MemCube, cube: MemCube) -> None:
    ids, lite_ids = _chat(pg_cube), _chat(cube)
    assert T.table(pg_cube.text_mem.store) is not None
    rows, lite = _rows(pg_cube), _rows(cube)
    assert set(rows) == set(ids) and all(0 < n <= 12 for n, _, _ in rows.values())
    assert [rows[i] for i in ids] == [lite[i] for i in lite_ids]  # the same pass, the same bytes
    assert T.count(pg_cube.text_mem.store) == len(ids)


def test_late_on_pg_ranks_as_on_sqlite_and_not_as_learned(pg_cube: MemCube, cube: MemCube, weights: None) -> None:
    assert _late_as_on_sqlite(pg_cube, _chat(pg_cube), cube, _chat(cube)) >= 2


def test_tokens_follow_update_delete_and_reembed(pg_cube: MemCube) -> None:
    ids = _chat(pg_cube)
    mem = pg_cube.text_mem
    first = _rows(pg_cube)[ids[3]]
    mem.update(ids[3], tags=["kept"])  # same text: same tokens
    assert _rows(pg_cube)[ids[3]] == first
    mem.update(ids[3], text="I joined a salsa dancing class downtown.")
    assert _rows(pg_cube)[ids[3]] != first and _rows(pg_cube)[ids[3]][0] > 0
    mem.delete([ids[4]])
    assert ids[4] not in _rows(pg_cube)
    # a caller's own vector carries no tokens: the old ones are dropped, never left beside the new vector
    item = mem.get(ids[0]).evolve(text="A new text with its own vector.")
    mem.add_items([item], vectors=np.ones((1, 384), dtype=np.float32))
    assert ids[0] not in _rows(pg_cube)
    before = _rows(pg_cube)
    with mem.store.transaction() as tx:
        tx.execute("DELETE FROM late_tokens")
    mem.reindex(reembed=True)  # put_vectors: the re-embedding pass writes every live item's tokens again
    after = _rows(pg_cube)
    assert set(after) == {*before, ids[0]} and all(after[k] == v for k, v in before.items())


def test_a_failed_commit_leaves_no_tokens(pg_cube: MemCube, monkeypatch: pytest.MonkeyPatch) -> None:
    _chat(pg_cube)
    before = _rows(pg_cube)
    store = pg_cube.text_mem.store
    inner = T.written_many

    def then_fail(*a: Any, **kw: Any) -> None:
        inner(*a, **kw)  # the token rows are written in the transaction, then it fails
        raise RuntimeError("after the tokens (test)")

    monkeypatch.setattr(T, "written_many", then_fail)
    with pytest.raises(RuntimeError):
        pg_cube.add(messages=[{"role": "user", "name": "Melanie", "content": "We adopted a puppy named Max."}],
                    user_id="u1", session_id="s2")
    monkeypatch.undo()
    assert _rows(pg_cube) == before and store.count() == len(CHAT)


def test_hostile_rows_are_ignored_as_absent_and_logged_once(pg_cube: MemCube, weights: None,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    _chat(pg_cube)
    store = pg_cube.text_mem.store
    row = store.db.read("SELECT rid, item_id, n, dim, data, scales FROM late_tokens WHERE rid = 1")[0]
    with store.transaction() as tx:
        tx.execute("DELETE FROM late_tokens WHERE rid = 1")
    absent = _hits(pg_cube, QUESTION, "late")
    with store.transaction() as tx:
        tx.execute("INSERT INTO late_tokens (rid, item_id, n, dim, data, scales) VALUES (?, ?, ?, ?, ?, ?)",
                   (row[0], row[1], row[2], row[3], bytes(row[4]), bytes(row[5])))
    assert _hits(pg_cube, QUESTION, "late") != absent  # the row counts: its loss is visible
    ids = {r: it.id for r, it in store.ranking_rows([1, 2]).items()}
    bad = [(10**9, 384, b"\x01" * 384, b"\x00" * 4), (2**31 - 1, 384, b"", b""), (-1, 384, b"", b""),
           (1, 999, b"\x01" * 999, b"\x00" * 4), (1, 384, b"\x01" * 384, np.array([np.nan], np.float32).tobytes()),
           (1, 384, b"\x01" * 384, np.array([np.inf], np.float32).tobytes()),
           (1, 384, b"\x01" * 384, np.array([-1.0], np.float32).tobytes()),
           (1, 384, b"\x01" * 384, np.array([3e38], np.float32).tobytes()), (2, 384, b"\x01" * 384, b"\x00" * 8),
           (1, 384, b"\x01" * 383, b"\x00" * 4)]
    T._warned.discard(str(store.path))
    caplog.set_level(logging.WARNING, logger=T.__name__)
    for n, dim, data, scales in bad:
        with store.transaction() as tx:
            tx.execute("UPDATE late_tokens SET n = ?, dim = ?, data = ?, scales = ? WHERE rid = 1", (n, dim, data, scales))
        assert 1 not in T.read(store, [1, 2], ids, 384) and 2 in T.read(store, [1, 2], ids, 384)
        assert _hits(pg_cube, QUESTION, "late") == absent  # ignored, as if absent: never decoded
    with store.transaction() as tx:  # another item's id: not this candidate's tokens
        tx.execute("UPDATE late_tokens SET n = ?, dim = ?, data = ?, scales = ?, item_id = ? WHERE rid = 1",
                   (row[2], row[3], bytes(row[4]), bytes(row[5]), ids[2]))
    assert 1 not in T.read(store, [1, 2], ids, 384)
    warned = [r for r in caplog.records if r.name == T.__name__ and "late_tokens rows" in r.getMessage()]
    assert len(warned) == 1  # logged once per cube, not once per read


def test_an_older_pg_cube_gets_the_table_at_open(tmp_path: Path, pg_cube: MemCube, embedder: Any) -> None:
    ids = _chat(pg_cube)
    store = pg_cube.text_mem.store
    with store.transaction() as tx:  # as a release before this one left it
        tx.execute("DROP TABLE late_tokens")
        tx.execute("DELETE FROM schema_migrations WHERE component = 'late_tokens'")
    path = pg_cube.path
    pg_cube.close()
    with MemCube.open(path, embedder=embedder) as again:
        assert T.table(again.text_mem.store) is not None and _rows(again) == {}
        assert _hits(again, QUESTION, "late") == _hits(again, QUESTION, "learned")  # no tokens yet: as learned
        again.text_mem.reindex(reembed=True)
        assert set(_rows(again)) == set(ids)


def _fake_tokens(item_id: str, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token rows that are a function of the vector they are written with (so a reader can tell)."""
    v = np.asarray(vector, dtype=np.float32)
    return np.round(v[None, :] * 127).astype(np.int8), np.array([1 / 127], dtype=np.float32)


def _check_in_step(db: Any) -> int:
    """One statement (one snapshot): every token row has its live item, names it, and was made from the vector
    stored beside it; every live item with a vector has its row. Returns the rows checked."""
    rows = db.read(
        "SELECT i.rid, i.id, i.state, v.vector, t.rid, t.item_id, t.data FROM items i "
        "LEFT JOIN vectors v ON v.rid = i.rid FULL OUTER JOIN late_tokens t ON t.rid = i.rid")
    for rid, item_id, state, vector, trid, titem, data in rows:
        assert rid is not None, f"token row {trid} has no item"
        if state == Lifecycle.DELETED.value:
            assert trid is None, f"deleted {item_id} kept its tokens"
            continue
        assert vector is not None and trid is not None, f"live {item_id} lost its vector or tokens"
        assert titem == item_id
        expect = np.round(np.frombuffer(bytes(vector), np.float32) * 127).astype(np.int8).tobytes()
        assert bytes(data) == expect, f"{item_id}: tokens of another vector beside its vector"
    return len(rows)


def test_two_concurrent_writers_keep_tokens_in_step(tmp_path: Path, postgres_dsn: str, schemas: Callable[[], str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from memos_integrations.storage.postgres import PostgresDatabase
    from memos_integrations.storage.postgres_store import PostgresStore

    monkeypatch.setattr(LT, "pending_tokens", _fake_tokens)
    schema = schemas()
    stores = [PostgresStore(PostgresDatabase(postgres_dsn, schema=schema), tmp_path / f"s{n}.store") for n in (0, 1)]
    ids = [f"m{n}" for n in range(6)]

    def unit(r: np.random.Generator) -> np.ndarray:
        v = r.standard_normal(384).astype(np.float32)
        return v / np.linalg.norm(v)  # type: ignore[no-any-return]

    first = np.random.default_rng(7)
    stores[0].write_items([MemoryItem(text=f"t {i}", id=i, user_id="u") for i in ids], np.stack([unit(first) for _ in ids]))
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(store: PostgresStore, seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            for step in range(60):
                pick = [ids[k] for k in sorted(r.choice(len(ids), size=int(r.integers(1, 4)), replace=False))]
                vecs = np.stack([unit(r) for _ in pick])
                op = step % 4
                with store.transaction():
                    current = store.get_items(pick, include_deleted=True)  # advisory locks, as TextualMemory's writes
                    items = [current[i] for i in pick]
                    if op == 0:  # new text, new vector (revives a tombstone too)
                        store.write_items([it.evolve(text=f"{it.text}+", version=it.version + 1,
                                                     state=Lifecycle.GENERATED) for it in items], vecs)
                    elif op == 1:  # tombstones
                        store.write_items([it.evolve(state=Lifecycle.DELETED, version=it.version + 1)
                                           for it in items], None)
                    elif op == 2:  # same text: no vector, tokens stay
                        store.write_items([it.evolve(tags=[str(step)], version=it.version + 1) for it in items], None)
                    else:  # put_vectors: a re-embedding of the live ones
                        store.put_vectors({it.id: (it.embed_text, v) for it, v in zip(items, vecs)
                                           if it.state != Lifecycle.DELETED})
                if op == 3:  # without the advisory locks (reconcile, import): the item rows' locks order them
                    live = list(store.get_items(pick).values())
                    store.write_items([it.evolve(text=f"{it.text}!", version=it.version + 1) for it in live],
                                      np.stack([unit(r) for _ in live]) if live else None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            stop.set()

    def checker() -> None:
        try:
            while not stop.is_set():
                _check_in_step(stores[0].db)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(stores[n], n + 1)) for n in (0, 1)]
    threads.append(threading.Thread(target=checker))
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert _check_in_step(stores[1].db) == len(ids)
    finally:
        for s in stores:
            s.close()


def test_migrate_sqlite_to_pg_and_back_keeps_the_late_ranking(tmp_path: Path, cube: MemCube, postgres_dsn: str,
                                                             schemas: Callable[[], str], embedder: Any,
                                                             weights: None) -> None:
    lite_ids = _chat(cube)
    rows = _rows(cube)
    want = {q: _hits(cube, q, "late") for q in QUESTIONS}
    assert any(want[q] != _hits(cube, q, "learned") for q in QUESTIONS)
    src = cube.path
    cube.close()
    counts = transfer.migrate_cube(src, tmp_path / "to_pg", postgres_store(postgres_dsn, schema=schemas()),
                                   embedder=embedder)
    assert counts["late_tokens"] == len(CHAT)
    with MemCube.open(tmp_path / "to_pg", embedder=embedder) as pg:
        assert _rows(pg) == rows  # the same rids and item ids: the copied items'
        with MemCube.open(src, embedder=embedder) as lite:
            assert _late_as_on_sqlite(pg, lite_ids, lite, lite_ids) >= 2
    transfer.migrate_cube(tmp_path / "to_pg", tmp_path / "back", None, embedder=embedder)
    with MemCube.open(tmp_path / "back", embedder=embedder) as back:
        assert _rows(back) == rows
        assert {q: _hits(back, q, "late") for q in QUESTIONS} == want  # the same store kind: the same scores


def test_a_destination_without_the_table_is_copied_without_it_and_says_so(
        tmp_path: Path, cube: MemCube, pg_cube: MemCube, caplog: pytest.LogCaptureFixture) -> None:
    _chat(cube)
    dst = pg_cube.text_mem.store
    with dst.transaction() as tx:  # as a store that cannot hold them (the table is gone, its version recorded)
        tx.execute("DROP TABLE late_tokens")
    caplog.set_level(logging.WARNING, logger=transfer.__name__)
    counts = transfer.copy_store(cube.text_mem.store, dst)
    assert "late_tokens" not in counts and counts["items"] == len(CHAT)
    assert any("no late_tokens table" in r.getMessage() for r in caplog.records)
