"""The pgvector adapter: a :class:`~memos_integrations.storage.base.VectorIndex` in the cube's PostgreSQL.

With a PostgreSQL store and this index a cube needs one server and nothing else: the vectors live in
a table of the cube's schema (``vector_index``: the id, the :class:`~.base.IndexRow` scope columns and a
``vector(dim)``), with an HNSW index in cosine space (``vector_cosine_ops``) and b-tree indexes on the
scope columns. Like every vector index it is derived from the store and rebuildable at any time.

Filtered search: pgvector 0.6 (no iterative index scan) walks the HNSW graph for ``hnsw.ef_search``
candidates and *then* applies the ``WHERE``, so a selective filter can leave fewer than ``k`` rows.
:meth:`PgVectorIndex.query` therefore asks HNSW with ``ef_search`` raised to at least ``2 * k`` and,
when that still returns fewer than ``k`` under a filter, answers by an exact scan of the rows the
filter selects (found through the b-tree indexes; exact is also the right plan for a selective
filter). So a query returns ``min(k, rows matching)`` results, always.

Scores are cosine similarity (``1 - cosine distance``), most similar first, as the protocol asks.
The filter's SQL is written only here; the engine hands a neutral :class:`~.base.VectorFilter`.
"""

from __future__ import annotations

import re
import struct
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import EmbedderMismatchError, InvalidInputError, StorageUnavailableError
from .base import IndexRow, VectorFilter
from .postgres import PostgresDatabase
from .sql import Tx, chunks

_COLUMNS = ("user_id", "agent_id", "session_id", "kind", "state")
_EF_MAX = 1000  # pgvector's upper bound for hnsw.ef_search


class _Vector:
    """A float32 vector on its way to PostgreSQL in pgvector's binary format (no text round trip)."""

    __slots__ = ("data",)

    def __init__(self, values: np.ndarray) -> None:
        flat = np.ascontiguousarray(values, dtype=">f4").reshape(-1)
        self.data = struct.pack(">HH", flat.shape[0], 0) + flat.tobytes()


def _register(conn: Any, oid: int) -> None:
    """Teach one connection to send :class:`_Vector` as pgvector's binary ``vector``."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: _Vector) -> bytes:
            return obj.data

    VectorDumper.oid = oid
    conn.adapters.register_dumper(_Vector, VectorDumper)


class PgVectorIndex:
    """Item vectors in a pgvector table of the cube's schema, searched by HNSW (cosine).

    Args:
        db: the cube's :class:`PostgresDatabase` (the same pool the store uses).
        dim: the embedder's dimension (pgvector's HNSW takes up to 2,000); None: the stored table's, or
            the first upsert's.
        table: the table's name in the schema (one cube has one).
        ef_search: HNSW's candidate list for an unfiltered query (raised to ``2 * k`` when k is larger).
        m: HNSW's links per node (pgvector's default, 16).
        ef_construction: HNSW's candidate list while building (pgvector's default, 64).
        maintenance_work_mem: memory for a bulk HNSW build (e.g. ``"1GB"``; a graph that does not fit
            builds much slower); None keeps the server's setting.

    Raises:
        StorageUnavailableError: the ``vector`` extension is not installed and this user may not create it.

    Example:
        >>> index = PgVectorIndex(PostgresDatabase("postgresql://app@db/memory", "maya"), dim=384)  # doctest: +SKIP
        >>> index.upsert([IndexRow("a", user_id="u")], vectors)  # doctest: +SKIP
        >>> index.query(vectors[0], 5, VectorFilter(user_id=("u",)))  # doctest: +SKIP
        [('a', 1.0)]
    """

    #: an upsert of at least this many rows that more than doubles the table rebuilds HNSW at the end
    BULK_ROWS = 2000

    def __init__(self, db: PostgresDatabase, dim: int | None = None, table: str = "vector_index", *,
                 ef_search: int = 40, m: int = 16, ef_construction: int = 64,
                 maintenance_work_mem: str | None = None) -> None:
        if dim is not None and not 1 <= dim <= 2000:
            raise InvalidInputError(f"pgvector's HNSW indexes 1 to 2,000 dimensions, not {dim}; use a smaller embedder")
        if not table.isidentifier() or table.lower() != table:
            raise InvalidInputError(f"{table!r} is not a lower-case table name")
        self.db, self.table = db, table
        self.ef_search = max(1, min(_EF_MAX, ef_search))
        self.m, self.ef_construction = m, ef_construction
        if maintenance_work_mem is not None and not re.fullmatch(r"\d+\s*[kMG]?B", maintenance_work_mem):
            raise InvalidInputError(f"maintenance_work_mem {maintenance_work_mem!r} is not like '512MB'")
        self.maintenance_work_mem = maintenance_work_mem
        self._adapted: weakref.WeakSet[Any] = weakref.WeakSet()  # pooled connections that know _Vector
        self._ensure_extension()
        self.oid = int(db.scalar("SELECT oid FROM pg_type WHERE typname = 'vector'"))
        #: the dimension the table holds now (another embedder's until :meth:`reset`; None: no table yet)
        self.table_dim: int | None = self._stored_dim()
        #: the dimension this index writes (the embedder's; None: the first upsert's)
        self.dim = dim if dim is not None else self.table_dim
        if self.table_dim is None and self.dim is not None:
            self._create(self.dim)

    # -- the VectorIndex protocol -----------------------------------------------------------------------

    def upsert(self, rows: Sequence[IndexRow], vectors: np.ndarray) -> None:
        if not rows:
            return
        vectors = self._checked(rows, vectors)
        outer = self.db.current_transaction()
        with self.db.transaction() as tx:
            self._adapt(tx)
            _derived(tx, outer)
            # a bulk load (a reindex, a first import) builds HNSW once at the end: several times faster than
            # inserting into the graph row by row; readers wait for it (the DROP locks the table until commit)
            bulk = len(rows) >= self.BULK_ROWS and len(rows) > 2 * int(
                tx.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])  # type: ignore[index]
            if bulk:
                self._drop_hnsw(tx)
            self._insert(tx, rows, vectors)
            if bulk:
                self._build_hnsw(tx)

    def load(self, batches: Iterable[tuple[Sequence[IndexRow], np.ndarray]]) -> int:
        """Upsert many batches as one bulk load (one transaction; HNSW is built once, at the end).

        For loads far larger than memory allows in one :meth:`upsert` (a reindex of millions of items);
        readers wait until it commits. Returns how many rows were written.
        """
        written = 0
        with self.db.transaction() as tx:
            dropped = False
            for rows, vectors in batches:
                if not rows:
                    continue
                vectors = self._checked(rows, vectors)
                self._adapt(tx)
                if not dropped:
                    self._drop_hnsw(tx)
                    dropped = True
                self._insert(tx, rows, vectors)
                written += len(rows)
            if dropped:
                self._build_hnsw(tx)
        return written

    def delete(self, ids: Sequence[str]) -> None:
        if not ids or self.table_dim is None:
            return
        outer = self.db.current_transaction()
        with self.db.transaction() as tx:
            _derived(tx, outer)
            for part in chunks(list(ids)):
                tx.execute(f"DELETE FROM {self.table} WHERE id = ANY(?)", (list(part),))

    def query(self, vector: np.ndarray, k: int, where: VectorFilter | None = None) -> list[tuple[str, float]]:
        if k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.table_dim is None:
            return []
        self._check_dim(query.shape[0])
        conditions, params = _where(where)
        clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (f"SELECT id, embedding <=> ? AS distance FROM {self.table} {clause} "
               "ORDER BY embedding <=> ? LIMIT ?")
        args = (_Vector(query), *params, _Vector(query), k)
        with self.db.transaction() as tx:
            self._adapt(tx)
            ef = max(self.ef_search, min(_EF_MAX, 2 * k))
            tx.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
            rows = tx.execute(sql, args).fetchall()
            if len(rows) < k and (conditions or k > ef):
                # HNSW filtered its candidates down to fewer than k: scan the filter's rows exactly
                tx.execute("SET LOCAL enable_indexscan = off")  # no HNSW; the b-trees still serve as bitmaps
                rows = tx.execute(sql, args).fetchall()
        return [(str(i), 1.0 - float(d)) for i, d in rows]

    def ids(self) -> set[str]:
        if self.table_dim is None:
            return set()
        return {str(r[0]) for r in self.db.read(f"SELECT id FROM {self.table}")}

    def count(self) -> int:
        if self.table_dim is None:
            return 0
        return int(self.db.scalar(f"SELECT count(*) FROM {self.table}"))

    def reset(self) -> None:
        """Drop every vector (and a previous embedder's table shape): the cube re-adds them from the store."""
        with self.db.transaction() as tx:
            tx.execute(f"DROP TABLE IF EXISTS {self.table}")
        self.table_dim = None
        if self.dim is not None:
            self._create(self.dim)

    # -- extras -------------------------------------------------------------------------------------------

    def exact(self, vector: np.ndarray, k: int, where: VectorFilter | None = None) -> list[tuple[str, float]]:
        """The exact ``k`` nearest by a full scan (what :meth:`query` approximates; for tests and audits)."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.table_dim is None:
            return []
        conditions, params = _where(where)
        clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self.db.transaction() as tx:
            self._adapt(tx)
            tx.execute("SET LOCAL enable_indexscan = off")
            rows = tx.execute(f"SELECT id, embedding <=> ? FROM {self.table} {clause} ORDER BY 2, id LIMIT ?",
                              (_Vector(query), *params, k)).fetchall()
        return [(str(i), 1.0 - float(d)) for i, d in rows]

    def disk_bytes(self) -> int:
        """Bytes on disk of the table, its TOAST and its indexes (HNSW included)."""
        return int(self.db.scalar(f"SELECT pg_total_relation_size('{self.db.schema}.{self.table}')"))

    # -- internals ----------------------------------------------------------------------------------------

    def _ensure_extension(self) -> None:
        """Install ``vector`` into ``public`` if missing (every cube schema's search_path ends there)."""
        import psycopg

        where = self.db.scalar("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                               "WHERE e.extname = 'vector'")
        if where is None:
            try:
                with self.db.transaction() as tx:
                    tx.lock("create extension vector")
                    tx.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported,
                    psycopg.errors.UndefinedFile) as exc:
                raise StorageUnavailableError(
                    f"the pgvector extension is not installed in {self.db.public_dsn} and this user cannot install "
                    f"it ({type(exc).__name__}: {str(exc).splitlines()[0]}); run CREATE EXTENSION vector SCHEMA "
                    "public as a superuser (pgvector >= 0.5), or keep the vectors on Chroma") from exc
        elif where not in ("public", self.db.schema):
            raise StorageUnavailableError(
                f"the pgvector extension of {self.db.public_dsn} lives in schema {where!r}, which a cube's "
                "search_path (its schema, then public) does not see; ALTER EXTENSION vector SET SCHEMA public, "
                "or keep the vectors on Chroma")

    def _stored_dim(self) -> int | None:
        have = self.db.scalar(f"SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                              f"to_regclass('{self.db.schema}.{self.table}') AND attname = 'embedding'")
        return int(str(have).removeprefix("vector(").removesuffix(")")) if have else None

    def _create(self, dim: int) -> None:
        if not 1 <= dim <= 2000:
            raise InvalidInputError(f"pgvector's HNSW indexes 1 to 2,000 dimensions, not {dim}; use a smaller embedder")
        columns = ", ".join(f"{c} TEXT" for c in _COLUMNS)
        with self.db.transaction() as tx:
            tx.lock(f"create {self.table}")
            tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (id TEXT PRIMARY KEY, {columns}, "
                       f"embedding vector({int(dim)}) NOT NULL)")
            tx.execute(self._hnsw_ddl())
            for c in _COLUMNS:
                tx.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_{c} ON {self.table} ({c})")
        self.table_dim = self._stored_dim()  # another process may have created it first, with its size

    def _checked(self, rows: Sequence[IndexRow], vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(rows):
            raise InvalidInputError(f"{len(rows)} rows need a ({len(rows)}, {self.dim}) array, not {vectors.shape}")
        if self.table_dim is None:  # the first vectors decide the column's size
            self.dim = self.dim or vectors.shape[1]
            self._create(self.dim)
        self._check_dim(vectors.shape[1])
        return vectors

    def _insert(self, tx: Tx, rows: Sequence[IndexRow], vectors: np.ndarray) -> None:
        sql = (f"INSERT INTO {self.table} (id, {', '.join(_COLUMNS)}, embedding) VALUES (?, ?, ?, ?, ?, ?, ?) "
               f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLUMNS)}, "
               "embedding = excluded.embedding")
        for start in range(0, len(rows), 1000):
            batch = rows[start:start + 1000]
            tx.executemany(sql, [(r.id, *(getattr(r, c) for c in _COLUMNS), _Vector(v))
                                 for r, v in zip(batch, vectors[start:start + 1000])])

    def _drop_hnsw(self, tx: Tx) -> None:
        tx.lock(f"create {self.table}")
        tx.execute(f"DROP INDEX IF EXISTS {self.table}_hnsw")

    def _build_hnsw(self, tx: Tx) -> None:
        if self.maintenance_work_mem:
            tx.execute(f"SET LOCAL maintenance_work_mem = '{self.maintenance_work_mem}'")
        tx.execute(self._hnsw_ddl())

    def _hnsw_ddl(self) -> str:
        return (f"CREATE INDEX IF NOT EXISTS {self.table}_hnsw ON {self.table} USING hnsw (embedding vector_cosine_ops) "
                f"WITH (m = {int(self.m)}, ef_construction = {int(self.ef_construction)})")

    def _adapt(self, tx: Tx) -> None:
        conn = getattr(tx, "conn", None)
        if conn is not None and conn not in self._adapted:
            _register(conn, self.oid)
            self._adapted.add(conn)

    def _check_dim(self, dim: int) -> None:
        if dim != self.table_dim:
            raise EmbedderMismatchError(
                f"the pgvector table {self.db.schema}.{self.table} holds {self.table_dim}-dimensional vectors, these "
                f"have {dim}: rebuild the index for the new embedder (MemCube.reindex, which calls reset)")


def _derived(tx: Tx, outer: Tx | None) -> None:
    """This transaction writes only derived data (rebuildable from the truth; the outbox replays it after a
    crash), so it need not wait for its WAL flush; the cube's truth keeps PostgreSQL's full durability, and
    a caller's transaction (``outer``, which may hold truth) is never relaxed."""
    if outer is None:
        tx.execute("SET LOCAL synchronous_commit = off")


def _where(where: VectorFilter | None) -> tuple[list[str], list[Any]]:
    """The filter as SQL conditions on the scope columns (OR within a field, AND across fields)."""
    if where is None:
        return [], []
    conditions: list[str] = []
    params: list[Any] = []
    for column, allowed in where.conditions():
        values = [v for v in allowed if v is not None]
        parts = []
        if values:
            parts.append(f"{column} = ANY(?)")
            params.append(values)
        if len(values) < len(allowed):
            parts.append(f"{column} IS NULL")
        conditions.append(f"({' OR '.join(parts)})" if parts else "FALSE")
    return conditions, params


def open_pgvector_index(config: Any, cube_path: Any, *, cube_id: str | None = None, store: Any = None) -> PgVectorIndex:
    """The registry's ``vector.pgvector`` factory: the vectors in the cube's own PostgreSQL schema.

    Raises:
        InvalidInputError: the cube's store is not PostgreSQL (pgvector lives beside the truth).
    """
    db = getattr(store, "db", None)
    if not isinstance(db, PostgresDatabase):
        raise InvalidInputError("the pgvector index lives in the cube's PostgreSQL schema: configure "
                                "store=postgres_store(dsn), or use the chroma vector backend")
    return PgVectorIndex(db)
