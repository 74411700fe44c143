"""The embedded backend: the engine's truth in one SQLite file per cube (``<cube>/memory.db``).

:class:`SQLiteStore` is :class:`~memos_integrations.storage.sqlstore.SQLStore` plus what only SQLite
has: the FTS5 keyword index (``items_fts``, its rowid is ``items.rid``), ``PRAGMA data_version`` for
the vector cache, the backup API for dumps, ``PRAGMA quick_check`` for damage, and the recognition
of cubes written before versioned migrations (:data:`ENGINE_STEPS` step 1 is exactly the schema those
releases created, so such a cube is recorded at version 1 and only later steps run).

Concurrency: one connection per store (:class:`~memos_integrations.storage.sql.SQLiteDatabase`),
guarded by a re-entrant lock, in WAL mode with a busy timeout so several processes may share the
file; writes are ``BEGIN IMMEDIATE`` transactions, so a crash mid-write leaves the previous state.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import CubeCorruptedError, InvalidInputError
from ..textual.filters import MemoryFilter
from .migrations import Step
from .sql import Row, SQLiteDatabase, Tx
from .sqlstore import POSTGRES_ENGINE_STEPS, SQLStore

#: Step 1: the schema every release before versioned migrations created (kept verbatim).
_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    user_id TEXT, agent_id TEXT, session_id TEXT, cube_id TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    event_time REAL, valid_from REAL, valid_to REAL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    sources TEXT NOT NULL DEFAULT '[]',
    created_by TEXT, method TEXT, confidence REAL,
    tags TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}',
    parent_id TEXT,
    access_count INTEGER NOT NULL DEFAULT 0,
    last_access REAL
);
CREATE INDEX IF NOT EXISTS items_user_state ON items (user_id, state);
CREATE INDEX IF NOT EXISTS items_session ON items (session_id);
CREATE INDEX IF NOT EXISTS items_time ON items (event_time);
CREATE INDEX IF NOT EXISTS items_parent ON items (parent_id);
CREATE TABLE IF NOT EXISTS versions (
    item_id TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL, recorded_at REAL NOT NULL,
    PRIMARY KEY (item_id, version)
);
CREATE TABLE IF NOT EXISTS vectors (rid INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5(body, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS edges (
    src TEXT NOT NULL, dst TEXT NOT NULL, type TEXT NOT NULL, weight REAL NOT NULL DEFAULT 1.0,
    metadata TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,
    PRIMARY KEY (src, type, dst)
);
CREATE INDEX IF NOT EXISTS edges_dst ON edges (dst, type);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, principal TEXT, action TEXT NOT NULL,
    target TEXT, allowed INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS vector_outbox (item_id TEXT PRIMARY KEY, op TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS kv (
    collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (collection, key)
);
CREATE INDEX IF NOT EXISTS vector_outbox_seq ON vector_outbox (seq)
"""

#: Step 2: one outbox for every derived target (``vectors``, ``graph``); queued rows keep their order.
_V2 = """
CREATE TABLE outbox (
    target TEXT NOT NULL, item_id TEXT NOT NULL, op TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, item_id)
);
INSERT INTO outbox (target, item_id, op, seq) SELECT 'vectors', item_id, op, seq FROM vector_outbox;
DROP TABLE vector_outbox;
CREATE INDEX outbox_seq ON outbox (target, seq)
"""

SQLITE_ENGINE_STEPS: list[Step] = [_V1, _V2]

#: The engine component's steps per dialect (the PostgreSQL store adds its keyword-index step).
ENGINE_STEPS: dict[str, list[Step]] = {"sqlite": SQLITE_ENGINE_STEPS, "postgres": POSTGRES_ENGINE_STEPS}


class SQLiteStore(SQLStore):
    """The cube's SQLite database (see the module docstring)."""

    migrations = {"sqlite": SQLITE_ENGINE_STEPS}

    def __init__(self, path: str | Path) -> None:
        db = SQLiteDatabase(path)
        try:
            super().__init__(db, path)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise CubeCorruptedError(
                f"{path} is not a readable cube database ({exc}); restore it from a dump or export") from exc
        except BaseException:
            db.close()
            raise
        self.sqlite: SQLiteDatabase = db
        #: run by :meth:`close` before the database closes, while it can still be read (a deferred vector
        #: index drains its queued writes here: see :mod:`memos_integrations.textual.index_defer`)
        self.before_close: list[Callable[[], None]] = []

    # -- compatibility: the faces' own tables still reach the connection until they move to storage/tables
    @property
    def lock(self) -> Any:
        """The connection's re-entrant lock (SQLite only; not part of the store protocol)."""
        return self.sqlite.lock

    @property
    def conn(self) -> sqlite3.Connection:
        """The raw connection (SQLite only, for storage/ modules and tests; not part of the store protocol)."""
        return self.sqlite._conn()

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Deprecated outside ``storage/``: use a store method, or ``store.db`` from a storage/ module."""
        return self.db.read(sql, params)

    def ensure_schema(self, ddl: str) -> None:
        """Deprecated: tables declare versioned steps with :func:`~memos_integrations.storage.migrations.migrate`."""
        self.sqlite.executescript(ddl)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        try:
            with super().transaction() as tx:
                yield tx
        except sqlite3.ProgrammingError as exc:  # the connection was closed under this call
            raise self._closed_error() from exc

    def _closed_error(self) -> InvalidInputError:
        return InvalidInputError(
            f"the cube at {self.path.parent} is closed; open it again (MemCube.open) to use it, and close "
            "it only when no thread uses it any more")

    def close(self) -> None:
        if self.sqlite.conn is not None:  # outside the connection lock: a hook may wait for a drain that reads
            hooks, self.before_close = self.before_close, []
            for hook in hooks:
                hook()
        with self.sqlite.lock:
            if self.sqlite.conn is None:
                return
            try:
                self.flush_usage()
            except sqlite3.Error:  # closing must not fail because a usage count could not be written
                pass
            self.sqlite.close()

    # -- schema -----------------------------------------------------------------------------------
    def _migrate(self) -> int:
        self._refuse_foreign_objects()
        version = super()._migrate()
        fts = self.db.read_one("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'items_fts'")
        if fts is None or "fts5" not in str(fts[0]).lower():
            raise CubeCorruptedError(
                f"{self.path} has no items_fts keyword index (dropped or replaced); restore the cube from a dump "
                "or export (memcube export / import rebuild it)")
        return version

    def _refuse_foreign_objects(self) -> None:
        """No release creates a view or a trigger in ``memory.db``: one found there was put by someone
        else, and would run (or answer) in place of the cube's own tables, e.g. a trigger that copies
        every new memory into another table, or a view that hides rows. Refused before any write."""
        found = self.db.read("SELECT type, name FROM sqlite_master WHERE type IN ('view', 'trigger') ORDER BY name")
        if found:
            names = ", ".join(f"{kind} {name!r}" for kind, name in found[:5])
            raise CubeCorruptedError(
                f"{self.path} holds {names}, which memos-integrations never creates (it could copy or hide "
                "memories); if you made it, drop it with the sqlite3 shell (DROP VIEW / DROP TRIGGER), otherwise "
                "restore the cube from a dump or export")

    def _adopt_legacy(self) -> None:
        """A cube written before ``schema_migrations`` has the tables of step 1 (its outbox perhaps
        without the ``seq`` column, which releases added on open) and no engine row: record it at 1."""
        def tables(tx: Tx) -> set[str]:
            return {r[0] for r in tx.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}

        with self.transaction() as tx:
            have = tables(tx)
            if "items" not in have:
                return  # a new database: migrate() creates everything
            if "schema_migrations" in have and tx.execute(
                    "SELECT 1 FROM schema_migrations WHERE component = 'engine'").fetchone():
                return
            row = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in have else None
            if row is not None and not str(row[0]).isdecimal():
                raise CubeCorruptedError(
                    f"{self.path} records schema_version {row[0]!r} in its meta table, which no release writes; "
                    "restore the cube from a dump or export")
            if row is not None and int(row[0]) > 1:
                raise CubeCorruptedError(
                    f"{self.path} was written by a newer memos-integrations (schema {row[0]}); upgrade the package")
            if "vector_outbox" in have and not any(
                    r[1] == "seq" for r in tx.execute("PRAGMA table_info(vector_outbox)").fetchall()):
                tx.execute("ALTER TABLE vector_outbox ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
            # tables a much older release did not create yet (every statement is IF NOT EXISTS: existing
            # tables and rows are untouched)
            for statement in (s.strip() for s in _V1.split(";")):
                if statement:
                    tx.execute(statement)
            tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            tx.execute("INSERT INTO schema_migrations (component, version) VALUES ('engine', 1)")

    # -- the keyword index: FTS5, its rowid is items.rid --------------------------------------------
    def _index_text(self, tx: Tx, rid: int, text: str) -> None:
        tx.execute("INSERT INTO items_fts (rowid, body) VALUES (?, ?)", (rid, text))

    def _unindex_text(self, tx: Tx, rid: int) -> None:
        tx.execute("DELETE FROM items_fts WHERE rowid = ?", (rid,))

    @staticmethod
    def match(terms: Sequence[str]) -> str:
        """An FTS5 MATCH expression: the terms, quoted (a quote inside one doubled), OR-ed."""
        return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)

    def keyword_search(self, terms: Sequence[str], flt: MemoryFilter, k: int) -> list[tuple[int, float]]:
        """FTS5/BM25 over the filter's items: (rid, bm25 score, larger is better), best first."""
        if not terms:
            return []
        where, params = self.where(flt, "items")
        sql = (
            "SELECT items.rid, -bm25(items_fts) AS s FROM items_fts JOIN items ON items.rid = items_fts.rowid "
            f"WHERE items_fts MATCH ? AND {where} ORDER BY bm25(items_fts) LIMIT ?"
        )
        try:
            return [(r, float(s)) for r, s in self.db.read(sql, [self.match(terms), *params, k])]
        except sqlite3.OperationalError as exc:  # a term FTS5 cannot parse even quoted
            raise InvalidInputError(f"keyword terms {list(terms)[:5]!r} are not valid FTS5 input: {exc}") from exc

    def term_counts(self, terms: Sequence[str]) -> dict[str, int]:
        return {t: int(self.db.scalar("SELECT count(*) FROM items_fts WHERE items_fts MATCH ?", (self.match([t]),)))
                for t in terms}

    # -- SQLite-only services -----------------------------------------------------------------------
    def data_version(self) -> Hashable | None:
        with self.sqlite.lock:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def snapshot(self, dest: Path) -> None:
        """A consistent copy through SQLite's backup API (writers wait meanwhile)."""
        with self.sqlite.lock:
            target = sqlite3.connect(str(dest))
            try:
                self.conn.backup(target)
            finally:
                target.close()

    def integrity_problems(self) -> list[str]:
        with self.sqlite.lock:
            problems = [str(r[0]) for r in self.conn.execute("PRAGMA quick_check(5)").fetchall()]
        return [] if problems == ["ok"] else problems

    @staticmethod
    def check_file(db: Path) -> None:
        """Refuse an empty, truncated or garbled database file before anything opens it (absent is fine).

        SQLite opens a zero-byte file as a new empty database, and a damaged page surfaces only when a
        query reads it, after writes have already succeeded. ``PRAGMA quick_check`` reads every page
        (about 1 ms per MB, see benchmarks.bench_guarantees) on a separate connection.
        """
        # never open() the file itself: closing any descriptor of it drops every POSIX lock this process
        # holds on it (a cube open here), and another process closing next deletes the live WAL
        # (sqlite.org/howtocorrupt.html 2.2); SQLite's own connection keeps its descriptor until unlocked
        try:
            size = db.stat().st_size
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CubeCorruptedError(f"{db} cannot be read ({exc}); restore it from a dump or export") from exc
        if size == 0:
            raise CubeCorruptedError(f"{db} is empty (0 bytes); the cube's memories are not in it: restore it from a "
                                     "dump or export")
        conn = sqlite3.connect(str(db), timeout=30)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise CubeCorruptedError(f"{db} is not an SQLite database; the cube's memories are not in it: restore "
                                         "it from a dump or export") from exc
            problems = [str(exc)]
        finally:
            conn.close()
        if problems != ["ok"]:
            raise CubeCorruptedError(
                f"{db} is damaged ({'; '.join(problems)[:300]}); restore it from a dump or export, or recover what "
                "is readable with the sqlite3 shell's .recover")


def open_sqlite_store(config: Any, cube_path: Path, *, create: bool) -> SQLiteStore:
    """The registry's ``store.sqlite`` factory: ``<cube>/memory.db`` (made while the cube is created)."""
    db = Path(cube_path) / "memory.db"
    if db.is_symlink():  # the engine's tables would be written into whatever file the link names
        raise CubeCorruptedError(
            f"{db} is a symbolic link (to {os.readlink(db)!r}); a cube's database is its own plain file: "
            "replace the link with the database file itself (move it into the cube directory)")
    if not create and not db.is_file():  # create() writes it before cube.json: its absence is damage
        raise CubeCorruptedError(
            f"{cube_path} has a cube.json but no memory.db (the source of truth); restore it from a dump or export")
    return SQLiteStore(db)
