# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""PgVectorIndex on a real PostgreSQL + pgvector 0.6: results against numpy brute force, filters, writes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from memos_integrations.errors import EmbedderMismatchError
from memos_integrations.storage.base import IndexRow, VectorFilter
from memos_integrations.storage.pgvector import PgVectorIndex
from memos_integrations.storage.postgres import PostgresDatabase
from tests.pg_server import drop_schema, pg_db, pg_schema, postgres_dsn  # noqa: F401

DIM = 48


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int, mask: np.ndarray | None = None
          ) -> list[tuple[str, float]]:
    sims = vectors @ query
    order = [i for i in np.argsort(-sims, kind="stable") if mask is None or mask[i]][:k]
    return [(ids[i], float(sims[i])) for i in order]


@pytest.fixture(scope="module")
def filled_db(postgres_dsn: str) -> Iterator[PostgresDatabase]:
    """One schema for the read-only tests on the 3,000-vector index (built once: HNSW inserts are slow)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = PostgresDatabase(postgres_dsn, schema=schema)
    yield db
    db.close()
    drop_schema(postgres_dsn, schema)


@pytest.fixture(scope="module")
def filled(filled_db: PostgresDatabase) -> tuple[PgVectorIndex, np.ndarray, list[IndexRow]]:
    pg_db = filled_db
    rng = np.random.default_rng(7)
    vectors = unit(rng, 3000)
    rows = [IndexRow(f"m{i}", user_id=f"u{i % 100}", agent_id=None if i % 3 else "a", session_id=f"s{i % 7}",
                     kind="fact" if i % 2 else "chat", state="active" if i % 10 else "archived") for i in range(3000)]
    index = PgVectorIndex(pg_db, dim=DIM)
    index.upsert(rows, vectors)
    return index, vectors, rows


def test_unfiltered_results_match_brute_force(filled: tuple[PgVectorIndex, np.ndarray, list[IndexRow]]) -> None:
    index, vectors, rows = filled
    ids = [r.id for r in rows]
    queries = unit(np.random.default_rng(1), 20)
    recall = []
    for q in queries:
        truth = brute(vectors, ids, q, 10)
        exact = index.exact(q, 10)
        assert [i for i, _ in exact] == [i for i, _ in truth]
        assert np.allclose([s for _, s in exact], [s for _, s in truth], atol=1e-5)
        got = index.query(q, 10)
        assert len(got) == 10 and all(a[1] >= b[1] - 1e-9 for a, b in zip(got, got[1:]))  # most similar first
        recall.append(len({i for i, _ in got} & {i for i, _ in truth}) / 10)
    assert np.mean(recall) >= 0.9, recall  # HNSW is approximate, but close at this size
    assert index.query(vectors[5], 1) == [("m5", pytest.approx(1.0, abs=1e-5))]


def test_selective_filters_return_k_exact_results(filled: tuple[PgVectorIndex, np.ndarray, list[IndexRow]]) -> None:
    """One user in a hundred: pgvector 0.6's HNSW alone would return a row or two; the index falls back to an
    exact scan of the filtered rows and returns k, the same as brute force."""
    index, vectors, rows = filled
    ids = [r.id for r in rows]
    users = np.array([r.user_id for r in rows])
    for j, q in enumerate(unit(np.random.default_rng(2), 10)):
        user = f"u{j * 7 % 100}"
        got = index.query(q, 10, VectorFilter(user_id=(user,)))
        truth = brute(vectors, ids, q, 10, users == user)
        assert [i for i, _ in got] == [i for i, _ in truth]
        assert np.allclose([s for _, s in got], [s for _, s in truth], atol=1e-5)


def test_a_filter_the_planner_misjudges_still_returns_k(
        filled: tuple[PgVectorIndex, np.ndarray, list[IndexRow]], filled_db: PostgresDatabase) -> None:
    """Fifty users AND kind=fact looks like a quarter of the rows, so PostgreSQL walks the HNSW graph; but
    49 of those users only have chat rows, so HNSW's 40 candidates hold about one match. The index sees
    the short answer and scans the filter's rows exactly (this fails without that fallback)."""
    index, vectors, rows = filled
    with filled_db.transaction() as tx:
        tx.execute("ANALYZE vector_index")  # the statistics a busy server would have
    ids = [r.id for r in rows]
    users = tuple(f"u{i}" for i in range(0, 98, 2)) + ("u1",)
    where = VectorFilter(user_id=users, kind=("fact",))
    mask = np.array([r.user_id in users and r.kind == "fact" for r in rows])
    for q in unit(np.random.default_rng(8), 5):
        got = index.query(q, 10, where)
        assert [i for i, _ in got] == [i for i, _ in brute(vectors, ids, q, 10, mask)]


def test_combined_filters_and_nulls(filled: tuple[PgVectorIndex, np.ndarray, list[IndexRow]]) -> None:
    index, vectors, rows = filled
    ids = [r.id for r in rows]
    q = unit(np.random.default_rng(3), 1)[0]
    where = VectorFilter(user_id=("u1", "u2", "u4"), session_id=("s1", "s2"), kind=("fact",), state=("active",))
    mask = np.array([r.user_id in ("u1", "u2", "u4") and r.session_id in ("s1", "s2") and r.kind == "fact"
                     and r.state == "active" for r in rows])
    got = index.query(q, 500, where)
    assert len(got) == int(mask.sum()) > 0  # k above the matches: every match, no more
    assert [i for i, _ in got] == [i for i, _ in brute(vectors, ids, q, 500, mask)]
    assert index.query(q, 5, VectorFilter(user_id=("nobody",))) == []
    assert index.query(q, 5, VectorFilter(user_id=())) == []  # an empty allowed set matches nothing
    broad = index.query(q, 10, VectorFilter(state=("active",)))  # 90 % of rows: served by HNSW
    assert len(broad) == 10 and all(rows[int(i[1:])].state == "active" for i, _ in broad)


def test_upsert_delete_count_reset(pg_db: PostgresDatabase) -> None:
    rng = np.random.default_rng(4)
    index = PgVectorIndex(pg_db, dim=DIM, table="vecs")
    v = unit(rng, 3)
    index.upsert([IndexRow("a", user_id="u"), IndexRow("b", user_id="u"), IndexRow("c", user_id="v")], v)
    assert index.count() == 3 and index.ids() == {"a", "b", "c"}
    index.upsert([IndexRow("a", user_id="v")], v[2:3])  # moved and re-scoped
    assert index.query(v[2], 2, VectorFilter(user_id=("v",))) == [
        ("a", pytest.approx(1.0, abs=1e-5)), ("c", pytest.approx(1.0, abs=1e-5))] or \
        index.query(v[2], 2, VectorFilter(user_id=("v",)))[0][1] == pytest.approx(1.0, abs=1e-5)
    assert {i for i, _ in index.query(v[2], 5, VectorFilter(user_id=("u",)))} == {"b"}
    index.delete(["b", "zz"])
    assert index.ids() == {"a", "c"}
    assert index.disk_bytes() > 0
    index.reset()
    assert index.count() == 0 and index.query(v[0], 3) == []


def test_another_embedder_dimension_is_refused_until_reset(pg_db: PostgresDatabase) -> None:
    rng = np.random.default_rng(5)
    PgVectorIndex(pg_db, dim=DIM).upsert([IndexRow("a")], unit(rng, 1))
    other = PgVectorIndex(pg_db, dim=16)  # reopened with an embedder of another size
    with pytest.raises(EmbedderMismatchError, match="reindex"):
        other.upsert([IndexRow("b")], unit(rng, 1, 16))
    other.reset()
    other.upsert([IndexRow("b")], unit(rng, 1, 16))
    assert other.ids() == {"b"}


def test_a_second_process_view_is_consistent(pg_db: PostgresDatabase, postgres_dsn: str, pg_schema: str) -> None:
    """Two index objects (two app servers) on one schema share the vectors."""
    rng = np.random.default_rng(6)
    PgVectorIndex(pg_db, dim=DIM).upsert([IndexRow("a", kind="fact")], unit(rng, 1))
    other_db = PostgresDatabase(postgres_dsn, schema=pg_schema)
    try:
        assert PgVectorIndex(other_db, dim=DIM).ids() == {"a"}
    finally:
        other_db.close()


def test_a_bulk_load_rebuilds_hnsw_and_later_upserts_join_it(
        filled: tuple[PgVectorIndex, np.ndarray, list[IndexRow]], filled_db: PostgresDatabase) -> None:
    index, vectors, _ = filled
    assert filled_db.scalar("SELECT indexdef FROM pg_indexes WHERE indexname = 'vector_index_hnsw'") is not None
    with filled_db.transaction() as tx:
        plan = "\n".join(str(r[0]) for r in tx.execute(
            "EXPLAIN SELECT id FROM vector_index ORDER BY embedding <=> (SELECT embedding FROM vector_index "
            "LIMIT 1) LIMIT 5").fetchall())
    assert "vector_index_hnsw" in plan
    extra = unit(np.random.default_rng(9), 1)
    index.upsert([IndexRow("late", user_id="u0")], extra)  # small: inserted into the graph
    assert index.query(extra[0], 1)[0][0] == "late"
    index.delete(["late"])


def test_load_is_one_bulk_load_and_lazy_dimension(pg_db: PostgresDatabase) -> None:
    rng = np.random.default_rng(10)
    index = PgVectorIndex(pg_db, table="lazy")  # no dimension yet: the first vectors decide
    assert index.count() == 0 and index.ids() == set() and index.query(unit(rng, 1)[0], 3) == []
    vectors = unit(rng, 300)
    rows = [IndexRow(f"v{i}", user_id=f"u{i % 3}") for i in range(300)]
    assert index.load((rows[i:i + 100], vectors[i:i + 100]) for i in range(0, 300, 100)) == 300
    assert index.dim == DIM and index.count() == 300
    assert pg_db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'lazy_hnsw'") == 1
    assert index.query(vectors[42], 1) == [("v42", pytest.approx(1.0, abs=1e-5))]
    assert PgVectorIndex(pg_db, table="lazy").dim == DIM  # reopened: the stored size
