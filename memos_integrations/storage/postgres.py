"""The PostgreSQL connection layer: :class:`PostgresDatabase`, a pooled :class:`~.sql.Database`.

One PostgreSQL database holds many cubes, each in its own schema (created on first open); every
pooled connection sets ``search_path`` to that schema, so the portable SQL of :mod:`.sql` runs
unchanged (its ``?`` placeholders are rewritten once per statement text by :func:`.sql.to_pyformat`).

Transactions: :meth:`PostgresDatabase.transaction` checks one connection out of the pool for the
calling thread; a nested call on the same thread joins it (one commit or one rollback for all), and a
read on a thread inside a transaction runs on that connection, so it sees the transaction's own
writes. :meth:`Tx.lock` is ``pg_advisory_xact_lock`` on a 64-bit hash of (schema, key): writers run in
parallel and serialise only where a read-modify-write could race.

Faults (psycopg errors never reach the caller for these; each becomes a
:class:`~memos_integrations.errors.StorageUnavailableError` whose message says what to do):

- a connection dropped or a server restarted: a *read* outside a transaction is retried once on a
  fresh connection (the pool's idle connections are checked first); a transaction whose connection
  fails before its first statement is retried once too (nothing was sent); one that fails after is
  never retried: the server rolled it back, and the error says so. A failure *during* ``COMMIT`` says
  the outcome is unknown (read back before retrying);
- a pool with no free connection within ``pool_timeout``: :class:`~memos_integrations.errors.StorageBusyError`;
- a deadlock or serialisation failure: :class:`~memos_integrations.errors.ConflictError` (retry);
- a text holding a NUL character (PostgreSQL's text cannot; psycopg refuses it before sending):
  :class:`~memos_integrations.errors.InvalidInputError`.

Credentials: a password may be given in the DSN for a session, but it is never written anywhere:
:func:`redact` is what cube.json and every message show. Prefer libpq's environment (``PGPASSWORD``,
``PGSERVICE`` with a service file, ``~/.pgpass``), which psycopg reads itself.

Sync/async policy: the core is synchronous (psycopg's sync API); async faces run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConflictError, InvalidInputError, StorageBusyError, StorageUnavailableError, require
from .sql import Cursor, Database, Row, Tx, to_pyformat

T = TypeVar("T")

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_CREDENTIALS = ("PGPASSWORD, PGSERVICE with a service file, or ~/.pgpass; a DSN's password is used for this "
                "session only and never written")


def _psycopg() -> Any:
    return require("psycopg", "postgres")


@lru_cache(maxsize=4096)
def _pg_sql(sql: str) -> str:
    """The portable statement in psycopg's placeholder style (cached: the store reuses a few hundred texts)."""
    return to_pyformat(sql)


def redact(dsn: str) -> str:
    """``dsn`` without its password (URI or ``key=value`` form): what may be logged or written to cube.json.

    Example:
        >>> redact("postgresql://app:s3cret@db:5432/memory?sslmode=require")
        'postgresql://app@db:5432/memory?sslmode=require'
        >>> "s3cret" in redact("host=db user=app password=s3cret dbname=memory")
        False
    """
    if re.match(r"^postgres(ql)?://", dsn):
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}@{hostinfo}" if userinfo.split(":", 1)[0] else hostinfo
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"],
                          safe="/")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    conninfo = _psycopg().conninfo
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except _psycopg().ProgrammingError as exc:
        raise InvalidInputError(f"not a PostgreSQL connection string ({type(exc).__name__}); pass a "
                                "postgresql://user@host:port/dbname URI") from None
    params.pop("password", None)
    return str(conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None}))


def has_password(dsn: str) -> bool:
    """Whether ``dsn`` carries a password (so it must not be stored as given)."""
    return redact(dsn) != dsn.strip() if dsn.strip() else False


def schema_name(cube_id: str) -> str:
    """A valid schema name for a cube id: lower-case letters, digits and ``_``, plus a short hash when
    the id had to be changed (so two ids never share a schema)."""
    slug = re.sub(r"[^a-z0-9_]", "_", cube_id.lower())[:40] or "cube"
    if slug[0].isdigit():
        slug = "c_" + slug
    if slug != cube_id:
        slug = f"{slug}_{hashlib.blake2b(cube_id.encode(), digest_size=4).hexdigest()}"
    return slug


def lock_key(schema: str, key: str) -> int:
    """The signed 64-bit advisory-lock id of ``key`` in ``schema`` (stable across processes and versions)."""
    digest = hashlib.blake2b(f"{schema}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _Result:
    """A cursor's outcome, fetched at once: ``fetchall`` on a statement without rows gives ``[]`` (as sqlite3)."""

    __slots__ = ("rowcount", "_rows", "_at")

    def __init__(self, cur: Any) -> None:
        self.rowcount: int = cur.rowcount
        self._rows: list[Row] = cur.fetchall() if cur.description is not None else []
        self._at = 0

    def fetchone(self) -> Row | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[Row]:
        rows, self._at = self._rows[self._at:], len(self._rows)
        return rows


class _PgTx:
    """A :class:`~.sql.Tx` on one checked-out connection inside ``BEGIN``."""

    def __init__(self, conn: Any, db: PostgresDatabase) -> None:
        self.conn = conn
        self.db = db
        self.statements = 0  # how many ran: a failure before the first is safe to retry

    def execute(self, sql: str, params: Sequence[Any] = (), *, binary: bool = False) -> Cursor:
        self.statements += 1
        with self.db._faults("a statement", conn=self.conn, in_tx=True):
            return _Result(self.conn.execute(_pg_sql(sql), params, binary=binary))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        self.statements += 1
        with self.db._faults("a batch", conn=self.conn, in_tx=True), self.conn.cursor() as cur:
            cur.executemany(_pg_sql(sql), rows)

    def lock(self, key: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(self.db.schema, key),))


class PostgresDatabase(Database):
    """A psycopg connection pool on one PostgreSQL database, confined to one schema (one cube).

    Args:
        dsn: a libpq connection string or ``postgresql://`` URI. Leave the password out and let libpq
            find it (``PGPASSWORD``, a service file, ``~/.pgpass``); one given here is used, never written.
        schema: the cube's schema (lower-case ``[a-z_][a-z0-9_]*``), created if missing.
        min_size: connections kept open.
        max_size: at most this many connections per process (mind the server's ``max_connections``).
        pool_timeout: seconds to wait for a free connection before :class:`StorageBusyError`.
        connect_timeout: seconds libpq waits for the server when connecting.

    Raises:
        StorageUnavailableError: the server cannot be reached or refuses the login.
        InvalidInputError: the schema name is not valid.

    Example:
        >>> db = PostgresDatabase("postgresql://app@db/memory", schema="maya")  # doctest: +SKIP
        >>> with db.transaction() as tx:  # doctest: +SKIP
        ...     tx.lock("counter")
        ...     tx.execute("UPDATE counters SET n = n + 1 WHERE name = ?", ("items",))
    """

    dialect = "postgres"

    def __init__(self, dsn: str, schema: str = "public", *, min_size: int = 1, max_size: int = 5,
                 pool_timeout: float = 10.0, connect_timeout: float = 10.0) -> None:
        if not _SCHEMA_RE.match(schema):
            raise InvalidInputError(f"{schema!r} is not a schema name this package uses: lower-case letters, digits "
                                    "and '_', 63 at most, not starting with a digit (see storage.postgres.schema_name)")
        psycopg = _psycopg()
        pool_mod: Any = require("psycopg_pool", "postgres")
        self.dsn = dsn
        self.public_dsn = redact(dsn)
        self.schema = schema
        self.pool_timeout = pool_timeout
        self.connect_timeout = connect_timeout
        self.application_name = f"memos:{schema}"  # pg_stat_activity shows which cube a connection serves
        self._local = threading.local()
        self._closed = False
        self._psycopg = psycopg
        self._ensure_schema()
        search_path = psycopg.sql.SQL("SET search_path TO {}, public").format(psycopg.sql.Identifier(schema))

        def configure(conn: Any) -> None:
            conn.execute(search_path)

        self.pool = pool_mod.ConnectionPool(
            dsn, min_size=min_size, max_size=max_size, timeout=pool_timeout, open=False, configure=configure,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout)),
                    "application_name": self.application_name},
            name=f"memos:{schema}", reconnect_timeout=max(60.0, 6 * connect_timeout))
        self.pool.open(wait=False)

    # -- the Database API -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        outer: _PgTx | None = getattr(self._local, "tx", None)
        if outer is not None:  # nested on this thread: join (one commit or one rollback for all)
            yield outer
            return
        conn = self._checkout()
        try:
            try:
                self._begin(conn)
            except StorageUnavailableError:
                if not conn.broken:
                    raise
                self._checkin(conn)  # dead before anything was sent: safe to retry once, on a fresh one
                conn = None
                self.pool.check()
                conn = self._checkout()
                self._begin(conn)
            tx = _PgTx(conn, self)
            self._local.tx = tx
            try:
                yield tx
            except BaseException:
                self._rollback(conn)
                raise
            else:
                self._commit(conn)
            finally:
                self._local.tx = None
        finally:
            if conn is not None:
                self._checkin(conn)

    def current_transaction(self) -> Tx | None:
        """The transaction this thread has open on this database, if any."""
        return getattr(self._local, "tx", None)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        tx: _PgTx | None = getattr(self._local, "tx", None)
        if tx is not None:  # inside a transaction on this thread: see its own writes
            return tx.execute(sql, params).fetchall()
        return self._with_connection(lambda conn: _Result(conn.execute(_pg_sql(sql), params)).fetchall(), "a read")

    def read_binary(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """As :meth:`read`, the rows sent in PostgreSQL's binary format: a ``bytea`` column arrives as its
        bytes, not as hex text the client decodes (the late preset's token rows: a third of the time)."""
        tx: _PgTx | None = getattr(self._local, "tx", None)
        if tx is not None:
            return tx.execute(sql, params, binary=True).fetchall()
        return self._with_connection(
            lambda conn: _Result(conn.execute(_pg_sql(sql), params, binary=True)).fetchall(), "a read")

    def close(self) -> None:
        self._closed = True
        self.pool.close()

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.public_dsn!r}, schema={self.schema!r})"

    # -- internals ---------------------------------------------------------------------------------------

    def _with_connection(self, work: Callable[[Any], T], what: str) -> T:
        """Run a read-only ``work(conn)`` outside a transaction; retried once on a fresh connection when
        the first one turns out dead (a restarted server leaves every idle pooled connection dead)."""
        for attempt in (1, 2):
            conn = self._checkout()
            try:
                with self._faults(what, conn, in_tx=False):
                    return work(conn)
            except StorageUnavailableError:
                if attempt == 2 or not conn.broken:
                    raise
                self._checkin(conn)
                conn = None
                self.pool.check()  # drop the other dead idle connections too
            finally:
                if conn is not None:
                    self._checkin(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_schema(self) -> None:
        """Create the schema and its ``schema_migrations`` table under an advisory lock (two processes
        opening a new cube at once would otherwise race on PostgreSQL's catalog)."""
        from .migrations import _TABLE

        psycopg = self._psycopg
        ident = psycopg.sql.Identifier(self.schema)
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)),
                                 application_name=self.application_name) as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(self.schema, "create schema"),))
                    conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
                    conn.execute(psycopg.sql.SQL("SET LOCAL search_path TO {}").format(ident))
                    conn.execute(_TABLE)
        except psycopg.OperationalError as exc:
            raise StorageUnavailableError(
                f"cannot connect to PostgreSQL at {self.public_dsn} ({_cause(exc)}); check that the server runs and "
                f"accepts this user; credentials come from {_CREDENTIALS}") from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StorageUnavailableError(
                f"the PostgreSQL user of {self.public_dsn} may not create schema {self.schema!r} ({_cause(exc)}); "
                "create it once as an owner (CREATE SCHEMA ... AUTHORIZATION <user>) or grant CREATE on the "
                "database") from exc

    def _checkout(self) -> Any:
        if self._closed:
            raise InvalidInputError(
                f"the database {self!r} is closed; open the cube again (MemCube.open) to use it, and close it only "
                "when no thread uses it any more")
        pool_mod: Any = require("psycopg_pool", "postgres")
        try:
            return self.pool.getconn()
        except pool_mod.PoolTimeout as exc:
            down = self._unreachable()
            if down is not None:
                raise StorageUnavailableError(
                    f"cannot reach PostgreSQL at {self.public_dsn} ({down}); nothing was sent: start the server or "
                    f"check the network, then retry; credentials come from {_CREDENTIALS}") from exc
            raise StorageBusyError(
                f"all {self.pool.max_size} connections to {self.public_dsn} stayed busy for {self.pool_timeout:g} s; "
                "nothing was sent: retry, or open the store with a larger max_size or pool_timeout (and check for "
                "long transactions)") from exc

    def _checkin(self, conn: Any) -> None:
        if self._closed:
            conn.close()
        else:
            self.pool.putconn(conn)  # the pool discards a broken connection and rolls back a stray transaction

    def _unreachable(self) -> str | None:
        """Why a direct connection fails now (the server is down or refuses), or None when it works."""
        psycopg = self._psycopg
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(min(self.connect_timeout, 3)))):
                return None
        except psycopg.OperationalError as exc:
            return _cause(exc)

    def _begin(self, conn: Any) -> None:
        with self._faults("BEGIN", conn, in_tx=False):
            conn.execute("BEGIN")

    def _rollback(self, conn: Any) -> None:
        if conn.broken or conn.closed:
            return  # the server rolled back when the connection died
        try:
            conn.execute("ROLLBACK")
        except self._psycopg.OperationalError:
            pass  # the connection died during ROLLBACK: the server rolls back; the original error propagates

    def _commit(self, conn: Any) -> None:
        psycopg = self._psycopg
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.execute("ROLLBACK")
            raise StorageUnavailableError(
                "a statement inside this transaction failed and the failure was caught inside it, so PostgreSQL "
                "rolled the whole transaction back; nothing was written: let the error end the transaction, then "
                "retry it")
        try:
            conn.execute("COMMIT")
        except psycopg.OperationalError as exc:
            raise StorageUnavailableError(
                f"the connection to PostgreSQL at {self.public_dsn} failed during COMMIT ({_cause(exc)}); the write "
                "may or may not have been applied: read it back before retrying") from exc
        except psycopg.Error as exc:  # a deferred constraint, a serialization failure at COMMIT: not applied
            raise StorageUnavailableError(
                f"PostgreSQL refused to COMMIT this transaction ({_cause(exc)}); it was rolled back and nothing of it "
                "was written: fix what the error names, then retry the write") from exc

    @contextmanager
    def _faults(self, what: str, conn: Any, in_tx: bool) -> Iterator[None]:
        """Turn psycopg's connection-level failures into errors that say what happened to the data."""
        psycopg = self._psycopg
        try:
            yield
        except psycopg.DataError as exc:
            if "NUL" not in str(exc):
                raise
            # psycopg refuses before sending: PostgreSQL's text cannot hold a NUL character (SQLite's can)
            raise InvalidInputError(
                f"{what} on PostgreSQL was given a text holding a NUL character (\\x00), which PostgreSQL text "
                "cannot store; nothing was sent" + (" and the transaction is rolled back" if in_tx else "")
                + ": remove the NUL from the id, text, filter or metadata value") from exc
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
            raise ConflictError(
                f"{what} on PostgreSQL collided with a concurrent transaction ({_cause(exc)}); this transaction was "
                "rolled back: retry it") from exc
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                outcome = ("the server rolled the transaction back and nothing of it was written: retry it"
                           if in_tx else "retry it")
                raise StorageUnavailableError(
                    f"the connection to PostgreSQL at {self.public_dsn} was lost during {what} ({_cause(exc)}); "
                    f"{outcome} once the server is back") from exc
            raise StorageUnavailableError(
                f"PostgreSQL at {self.public_dsn} refused {what} ({_cause(exc)})"
                + ("; the transaction is rolled back, nothing was written" if in_tx else "")) from exc


def _cause(exc: BaseException) -> str:
    """The first line of a psycopg error (libpq's messages carry host and user, never the password)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
