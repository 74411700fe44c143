"""The PostgreSQL backend of the truth: :class:`PostgresStore`, a :class:`~.sqlstore.SQLStore` on a
:class:`~.postgres.PostgresDatabase` (one schema per cube; many cubes in one database).

What only PostgreSQL has, and therefore lives here:

- the keyword index: a ``tsvector`` column (table ``keyword_index``, keyed by ``items.rid``, english
  configuration) with a GIN index; terms are OR-ed, each through ``phraseto_tsquery``, and ranked by
  ``ts_rank`` (normalised by document length). The contract is SQLite's (rid, score, larger is better);
  the scores are not BM25's, so keyword rankings differ a little between the backends;
- the JSON parts of filters (:class:`PostgresFilterDialect`: ``jsonb`` paths through small SQL functions
  this store's migration creates, so each path is bound once, as the compiler expects);
- concurrency: writers run in parallel, so the read-modify-write of an item (its next version, the
  same id added twice) takes a transaction-scoped advisory lock per id before reading it
  (:meth:`PostgresStore.get_items` inside a transaction), and the outbox's ordering number comes from a
  PostgreSQL sequence (a trigger), not from ``MAX(seq) + 1``, which two writers could both read;
- the vector cache's token: ``pg_current_snapshot()`` changes whenever any transaction commits.

These parts are the ``postgres_store`` migration component (its own versions, beside ``engine``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConflictError, CubeCorruptedError, InvalidInputError, StorageUnavailableError
from ..items import Edge, Lifecycle, MemoryItem, to_epoch, utcnow
from ..textual.filters import MemoryFilter
from .filter_sql import FilterDialect
from .migrations import Step, current_version, migrate
from .postgres import PostgresDatabase, lock_key
from .sql import Tx, chunks, marks
from .sqlstore import _UPSERT_ITEM, POSTGRES_ENGINE_STEPS, SQLStore, item_values
from .sqlstore_aux import _QUEUE, VECTORS
from .tables import late_tokens

_TS_CONFIG = "english"
_log = logging.getLogger(__name__)


class PostgresFilterDialect(FilterDialect):
    """Filters' JSON parts on PostgreSQL: the metadata TEXT column read as ``jsonb`` at a bound path.

    A path is a ``text[]`` parameter; values compare as ``jsonb`` (numbers numerically, strings as
    strings, ``true`` as ``true``), and a JSON ``null`` reads as SQL NULL, as SQLite's ``json_extract``.
    """

    TRUE = "1"
    FALSE = "0"

    def path(self, key: str) -> Any:
        return key.split(".")

    def value(self, m: str) -> str:
        return f"memos_json_value({m}, ?::text[])"

    def type_of(self, m: str) -> str:
        return f"memos_json_type({m}, ?::text[])"

    def array_has(self, m: str) -> str:
        # no cast on the value: a string arrives as text (that overload), anything else as jsonb (param())
        return f"memos_json_array_has({m}, ?::text[], ?)"

    def array_length(self, m: str) -> str:
        return f"memos_json_array_length({m}, ?::text[])"

    def text_value(self, m: str) -> str:
        return f"memos_json_text({m}, ?::text[])"

    def has_substring(self, haystack: str, needle: str, fold_case: bool = False) -> str:
        if fold_case:
            return f"strpos(lower({haystack}), lower({needle}::text)) > 0"
        return f"strpos({haystack}, {needle}::text) > 0"

    def tags_any(self, tags: str, n: int) -> str:
        return f"({tags})::jsonb @> ANY (ARRAY[{', '.join(['jsonb_build_array(?::text)'] * n)}])"

    def tags_has(self, tags: str) -> str:
        return f"({tags})::jsonb @> jsonb_build_array(?::text)"

    def param(self, value: Any) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(value)


POSTGRES_FILTERS = PostgresFilterDialect()


def _functions_and_keyword_index(schema: str) -> Step:
    """Step 1 of ``postgres_store``: the keyword index, the filter functions and the outbox sequence."""

    def step(tx: Tx) -> None:
        q = f'"{schema}"'
        tx.execute("CREATE TABLE IF NOT EXISTS keyword_index (rid BIGINT PRIMARY KEY, body tsvector NOT NULL)")
        tx.execute("CREATE INDEX IF NOT EXISTS keyword_index_body ON keyword_index USING gin (body)")
        # the JSON helpers: IMMUTABLE SQL functions, inlined by the planner
        tx.execute(f"""CREATE OR REPLACE FUNCTION {q}.memos_json_value(doc text, path text[]) RETURNS jsonb
            LANGUAGE sql IMMUTABLE AS $$ SELECT NULLIF(doc::jsonb #> path, 'null'::jsonb) $$""")
        tx.execute(f"""CREATE OR REPLACE FUNCTION {q}.memos_json_text(doc text, path text[]) RETURNS text
            LANGUAGE sql IMMUTABLE AS $$ SELECT doc::jsonb #>> path $$""")
        tx.execute(f"""CREATE OR REPLACE FUNCTION {q}.memos_json_type(doc text, path text[]) RETURNS text
            LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE jsonb_typeof(doc::jsonb #> path)
                WHEN 'string' THEN 'text'
                WHEN 'number' THEN CASE WHEN (doc::jsonb #>> path) ~ '^-?[0-9]+$' THEN 'integer' ELSE 'real' END
                WHEN 'boolean' THEN doc::jsonb #>> path
                ELSE jsonb_typeof(doc::jsonb #> path) END $$""")
        tx.execute(f"""CREATE OR REPLACE FUNCTION {q}.memos_json_array_has(doc text, path text[], v jsonb)
            RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE WHEN jsonb_typeof(doc::jsonb #> path) = 'array'
                THEN EXISTS (SELECT 1 FROM jsonb_array_elements(doc::jsonb #> path) e WHERE e = v)
                ELSE false END $$""")
        tx.execute(f"""CREATE OR REPLACE FUNCTION {q}.memos_json_array_has(doc text, path text[], v text)
            RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT {q}.memos_json_array_has(doc, path, to_jsonb(v)) $$""")
        tx.execute(f"""CREATE OR REPLACE FUNCTION {q}.memos_json_array_length(doc text, path text[]) RETURNS integer
            LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE WHEN jsonb_typeof(doc::jsonb #> path) = 'array'
                THEN jsonb_array_length(doc::jsonb #> path) END $$""")
        # the outbox's order: a sequence, so two parallel writers never take the same number
        tx.execute(f"CREATE SEQUENCE IF NOT EXISTS {q}.outbox_order")
        tx.execute(f"SELECT setval('{q}.outbox_order', GREATEST((SELECT COALESCE(MAX(seq), 0) FROM {q}.outbox), 1))")
        tx.execute(f"""CREATE OR REPLACE FUNCTION {q}.memos_outbox_order() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN NEW.seq := nextval('{q}.outbox_order'); RETURN NEW; END $$""")
        tx.execute(f"DROP TRIGGER IF EXISTS outbox_order ON {q}.outbox")
        tx.execute(f"CREATE TRIGGER outbox_order BEFORE INSERT OR UPDATE OF op, seq ON {q}.outbox "
                   f"FOR EACH ROW EXECUTE FUNCTION {q}.memos_outbox_order()")

    return step


class AdvisoryIndexLock:
    """:class:`~memos_integrations.cubelock.IndexWriteLock`'s contract (``hold()``, re-entrant within a
    thread) for every process on every machine that shares the cube: a PostgreSQL session advisory lock.

    A file lock in the cube folder serialises the outbox drains of one machine only; two machines
    draining at once could apply an older vector after a newer one. This lock is held on one pooled
    connection for the whole drain.
    """

    def __init__(self, db: PostgresDatabase, key: str = "index drain") -> None:
        self.db, self.key = db, lock_key(db.schema, key)
        self._thread = threading.RLock()
        self._depth = 0
        self._conn: Any = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread:
            if self._depth == 0:
                conn = self.db._checkout()
                try:
                    with self.db._faults("taking the index lock", conn, in_tx=False):
                        conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
                except BaseException:
                    self.db._checkin(conn)
                    raise
                self._conn = conn
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    conn, self._conn = self._conn, None
                    try:
                        if not conn.broken:  # a dead session's locks died with it
                            conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                    finally:
                        self.db._checkin(conn)


class PostgresStore(SQLStore):
    """The engine's tables in one PostgreSQL schema (see the module docstring).

    Args:
        db: the cube's database (its schema holds this cube only).
        path: a file name inside the cube directory; the cube's lock files are named beside it.
    """

    migrations = {"postgres": POSTGRES_ENGINE_STEPS}
    filter_dialect = POSTGRES_FILTERS
    NO_LIMIT = None

    def __init__(self, db: PostgresDatabase, path: str | Path) -> None:
        self.pg = db
        try:
            super().__init__(db, path)
        except BaseException:
            db.close()
            raise

    def _migrate(self) -> int:
        version = super()._migrate()
        migrate(self.db, "postgres_store", {"postgres": [_functions_and_keyword_index(self.pg.schema)]})
        return version

    def index_write_lock(self) -> AdvisoryIndexLock:
        """The lock outbox drains hold, shared by every process and machine of this cube."""
        return AdvisoryIndexLock(self.pg)

    # -- one writer per item at a time -------------------------------------------------------------------
    def get_items(self, ids: Sequence[str], include_deleted: bool = False) -> dict[str, MemoryItem]:
        """As :meth:`SQLStore.get_items`; inside a write transaction it first locks each id (advisory, until
        the transaction ends), so a version read here is still the latest when the next one is written."""
        tx = self.pg.current_transaction()
        if tx is not None and ids:
            keys = sorted({lock_key(self.pg.schema, f"item:{i}") for i in ids})  # one order: no deadlock
            tx.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(?::bigint[]) AS k ORDER BY k", (keys,))
        return super().get_items(ids, include_deleted)

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]:
        """As :meth:`SQLStore.edges`; ``both`` directions in one statement per chunk (a round trip to the
        server costs more than SQLite's in-process call, and graph expansion asks on every search)."""
        if direction != "both" or not ids:
            return super().edges(ids, direction, types)
        type_sql = f" AND type IN ({marks(len(types))})" if types else ""
        out: dict[tuple[str, str, str], Edge] = {}
        for chunk in chunks(list(ids)):
            rows = self.db.read(
                f"SELECT src, dst, type, weight, metadata FROM edges WHERE (src IN ({marks(len(chunk))}) "
                f"OR dst IN ({marks(len(chunk))})){type_sql}", [*chunk, *chunk, *(types or ())])
            for r in rows:
                out[(r[0], r[2], r[1])] = Edge(r[0], r[1], r[2], r[3], json.loads(r[4]))
        return list(out.values())

    # -- derived writes: no WAL flush wait (a crash replays them) -------------------------------------------
    def clear_outbox(self, entries: Sequence[tuple[str, int]], target: str = VECTORS) -> None:
        """As :meth:`SQLStore.clear_outbox`, committed without waiting for the WAL flush: a clear lost in a
        crash only replays an idempotent index write."""
        outer = self.pg.current_transaction()
        with self.transaction() as tx:
            if outer is None:  # never relax a caller's transaction (it may hold truth)
                tx.execute("SET LOCAL synchronous_commit = off")
            super().clear_outbox(entries, target)

    # -- writes in batches: a round trip to the server costs more than SQLite's in-process call ------------
    def write_items(self, items: Sequence[MemoryItem], vectors: np.ndarray | None) -> None:
        """As :meth:`SQLStore.write_items` (same rows, same outbox entries), one statement per table for
        the whole batch instead of several per item (psycopg sends each ``executemany`` in one pipeline)."""
        if not items:
            return
        now = to_epoch(utcnow())
        with self.transaction() as tx:
            # rows of ``items`` are locked in id order by every writer here (and by flush_usage), so two
            # parallel transactions never wait on each other in a cycle
            tx.executemany(_UPSERT_ITEM, [item_values(item) for item in sorted(items, key=lambda i: i.id)])
            rid_of = {str(i): int(r) for i, r in tx.execute(
                "SELECT id, rid FROM items WHERE id = ANY(?)", ([item.id for item in items],)).fetchall()}
            rids = [rid_of[item.id] for item in items]
            self._vectors.drop(rids)
            tx.executemany(
                "INSERT INTO versions (item_id, version, data, recorded_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (item_id, version) DO UPDATE SET data = excluded.data, recorded_at = excluded.recorded_at",
                [(item.id, item.version, json.dumps(item.to_dict(), sort_keys=True), now) for item in items])
            tx.execute("DELETE FROM keyword_index WHERE rid = ANY(?)", (rids,))
            gone = [n for n, item in enumerate(items) if item.state == Lifecycle.DELETED]
            live = [n for n, item in enumerate(items) if item.state != Lifecycle.DELETED]
            if gone:
                tx.execute("DELETE FROM vectors WHERE rid = ANY(?)", ([rids[n] for n in gone],))
            self._index_texts(tx, [(rids[n], items[n].index_text) for n in live])
            if vectors is not None and live:
                tx.executemany(
                    "INSERT INTO vectors (rid, vector) VALUES (?, ?) ON CONFLICT (rid) DO UPDATE SET vector = excluded.vector",
                    [(rids[n], self.encode_vector(vectors[n])) for n in live])
            # the late preset's token vectors, after the vectors (the order every write path locks them in)
            late_tokens.written_many(self, tx, [(rids[n], item, None if vectors is None else vectors[n])
                                                for n, item in enumerate(items)])
            tx.executemany(_QUEUE, [(VECTORS, item.id, "delete" if item.state == Lifecycle.DELETED else "upsert")
                                    for item in items])

    def flush_usage(self) -> None:
        """As :meth:`SQLStore.flush_usage`, the rows updated in id order (two processes flushing overlapping
        counts in different orders would deadlock), without waiting for the WAL flush (counts, not memories)."""
        with self._cache_lock():
            pending, self._usage = self._usage, {}
            self._usage_flushed = time.monotonic()
            if not pending:
                return
            outer = self.pg.current_transaction()
            with self.transaction() as tx:
                if outer is None:
                    tx.execute("SET LOCAL synchronous_commit = off")
                tx.executemany("UPDATE items SET access_count = access_count + ?, last_access = ? WHERE id = ?",
                               [(n, at, i) for i, (n, at) in sorted(pending.items())])

    def close(self) -> None:
        """Flush the usage counts if the server lets us (a close never fails for a count), then the pool."""
        waiting = len(self._usage)
        try:
            self.flush_usage()
        except (ConflictError, StorageUnavailableError) as exc:
            _log.warning("closing the cube in %s: %d search-hit counts were not written (%s)",
                         self.pg.public_dsn, waiting, exc)
        finally:
            self.db.close()

    # -- the keyword index -------------------------------------------------------------------------------
    def _index_texts(self, tx: Tx, rows: Sequence[tuple[int, str]]) -> None:
        tx.executemany(f"INSERT INTO keyword_index (rid, body) VALUES (?, to_tsvector('{_TS_CONFIG}', ?)) "
                       "ON CONFLICT (rid) DO UPDATE SET body = excluded.body", rows)

    def _index_text(self, tx: Tx, rid: int, text: str) -> None:
        tx.execute(f"INSERT INTO keyword_index (rid, body) VALUES (?, to_tsvector('{_TS_CONFIG}', ?)) "
                   "ON CONFLICT (rid) DO UPDATE SET body = excluded.body", (rid, text))

    def _unindex_text(self, tx: Tx, rid: int) -> None:
        tx.execute("DELETE FROM keyword_index WHERE rid = ?", (rid,))

    @staticmethod
    def tsquery(n: int) -> str:
        """SQL for the OR of ``n`` bound terms, each a phrase (so ``"new york"`` stays two adjacent words)."""
        return " || ".join([f"phraseto_tsquery('{_TS_CONFIG}', ?)"] * n)

    def keyword_search(self, terms: Sequence[str], flt: MemoryFilter, k: int) -> list[tuple[int, float]]:
        """Full-text search over the filter's items: (rid, ts_rank score, larger is better), best first."""
        terms = [t for t in terms if t.strip()]
        if not terms:
            return []
        where, params = self.where(flt, "items")
        sql = (f"WITH q AS (SELECT {self.tsquery(len(terms))} AS q) "
               "SELECT items.rid, ts_rank(keyword_index.body, q.q, 1) AS s FROM q, keyword_index "
               "JOIN items ON items.rid = keyword_index.rid "
               f"WHERE keyword_index.body @@ q.q AND {where} ORDER BY s DESC, items.rid LIMIT ?")
        return [(int(r), float(s)) for r, s in self.db.read(sql, [*terms, *params, k])]

    def term_counts(self, terms: Sequence[str]) -> dict[str, int]:
        if not terms:
            return {}
        rows = self.db.read(
            f"SELECT t, (SELECT count(*) FROM keyword_index WHERE body @@ phraseto_tsquery('{_TS_CONFIG}', t)) "
            "FROM unnest(?::text[]) AS t", (list(terms),))
        counts = {str(t): int(n) for t, n in rows}
        return {t: counts.get(t, 0) for t in terms}

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Deprecated outside ``storage/`` (as ``SQLiteStore.read``): use a store method, or ``store.db``."""
        return self.db.read(sql, params)

    def snapshot(self, dest: Path) -> None:
        raise InvalidInputError(
            "a PostgreSQL cube is not copied into a folder: back its schema up with pg_dump --schema "
            f"{self.pg.schema}, or export it (MemCube.export_jsonl) and import that into a new cube")

    # -- services --------------------------------------------------------------------------------------
    def data_version(self) -> Hashable | None:
        """Any commit anywhere on the server changes the current snapshot (xmin:xmax:running)."""
        return str(self.db.scalar("SELECT pg_current_snapshot()::text"))

    def integrity_problems(self) -> list[str]:
        problems = []
        missing = self.db.scalar(
            "SELECT count(*) FROM items WHERE state <> 'deleted' AND NOT EXISTS "
            "(SELECT 1 FROM keyword_index k WHERE k.rid = items.rid)")
        if missing:
            problems.append(f"{missing} live items have no keyword-index row")
        return problems


def open_postgres_store(config: Any, cube_path: Path, *, create: bool) -> PostgresStore:
    """The registry's ``store.postgres`` factory (config: :class:`~memos_integrations.config.PostgresStoreConfig`).

    Raises:
        CubeCorruptedError: ``create`` but the schema already holds a cube (pass another schema).
        StorageUnavailableError: the server cannot be reached (the message says what to do).
    """
    db = PostgresDatabase(config.connection_dsn(), schema=config.schema_name, min_size=config.min_size,
                          max_size=config.max_size, pool_timeout=config.pool_timeout)
    try:
        if create and current_version(db, "engine"):
            raise CubeCorruptedError(
                f"schema {db.schema!r} of {db.public_dsn} already holds a cube; a new cube needs a schema of its own: "
                "pass postgres_store(dsn, schema='another') (or drop the old schema if it is no longer wanted)")
        if not create and not current_version(db, "engine"):
            raise CubeCorruptedError(
                f"cube.json at {cube_path} names schema {db.schema!r} of {db.public_dsn}, which holds no cube; "
                "check the server and database it points at, or restore the schema from a backup")
    except BaseException:
        db.close()
        raise
    return PostgresStore(db, Path(cube_path) / "postgres.store")
