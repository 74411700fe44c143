"""Copy a cube's truth from one SQL store to another (SQLite <-> PostgreSQL): ``memcube migrate``.

Every table the two stores share is copied row for row, keys included (``items.rid`` and
``audit.seq`` too, so the ``vectors`` rows, which are keyed by ``rid``, stay attached), in pages
ordered by each table's primary key. Each page commits together with a progress row in the
destination's ``meta`` (``migrate:<table>``), so a copy that is interrupted resumes where it stopped,
and a page copied twice changes nothing (``ON CONFLICT DO NOTHING``). What each store derives itself
is rebuilt, never copied: the keyword index (FTS5 or ``tsvector``), the ``outbox``, the migration
bookkeeping; the vector index is rebuilt by the caller from the copied vectors (no re-embedding). The
late preset's token vectors (``late_tokens``, made in the pass that made each copied vector) are copied
with them, both ways, keyed by the copied ``rid``.

The source must not be written meanwhile (stop its writers): the copy reads it page by page, not as
one snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError
from .sql import Database, marks
from .sqlstore import SQLStore

#: tables each store derives or keeps for itself
SKIP = frozenset({"schema_migrations", "keyword_index", "vector_index", "outbox", "vector_outbox", "sqlite_sequence",
                  "sqlite_stat1"})
#: derived tables a destination may lack: the late preset's token vectors (``tables/late_tokens.py``). Both
#: stores have the table (created at open), so it is copied like any other, keyed by the copied ``items.rid``;
#: a destination without it (a store of another backend, or a read-only view nobody migrated) is copied
#: without it, logged: there ``late`` ranks as ``learned`` until ``reindex --reembed`` writes them again
DERIVED = frozenset({"late_tokens"})
PAGE = 1000
#: copied first (in this order): the items, before the rows that refer to them
FIRST = ("items", "versions", "vectors", "edges", "audit", "kv")

_log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (table, rows done, rows in the table)


def tables(db: Database) -> dict[str, tuple[list[str], list[str]]]:
    """table -> (columns, primary-key columns) of every ordinary table of ``db`` (its schema on PostgreSQL)."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    if db.dialect == "sqlite":
        names = [r[0] for r in db.read("SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE "
                                       "'CREATE VIRTUAL%' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%'")]
        for name in names:
            info = db.read(f'PRAGMA table_info("{name}")')
            cols = [str(r[1]) for r in info]
            pk = [str(r[1]) for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            out[name] = (cols, pk or cols)
        return out
    schema = getattr(db, "schema", "public")
    for name, col in db.read("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ? "
                             "ORDER BY table_name, ordinal_position", (schema,)):
        out.setdefault(str(name), ([], []))[0].append(str(col))
    for name, col in db.read(
            "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c "
            "JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name "
            "AND k.table_schema = c.table_schema AND k.table_name = c.table_name "
            "WHERE c.table_schema = ? AND c.constraint_type = 'PRIMARY KEY' ORDER BY k.table_name, k.ordinal_position",
            (schema,)):
        if str(name) in out:
            out[str(name)][1].append(str(col))
    return {t: (cols, pk or cols) for t, (cols, pk) in out.items()}


def copy_store(src: SQLStore, dst: SQLStore, progress: Progress | None = None,
               prepare: Callable[[SQLStore], None] | None = None) -> dict[str, int]:
    """Copy every shared table of ``src`` into ``dst`` (resumable); rebuild ``dst``'s keyword index.

    Args:
        src: the store read (not written meanwhile).
        dst: the store written (a new cube's, or one a previous run started filling).
        progress: called after each page with (table, rows done, rows in the table).
        prepare: called with ``dst`` before copying, to create tables no face's migration component makes
            (the faces' own table groups the source has are created on ``dst`` first, at their latest version).

    Returns:
        Rows in each copied table.

    Raises:
        InvalidInputError: a table of the source has no counterpart in the destination (nothing is lost
            silently: open the face that owns it on the destination first, or pass ``prepare``).
    """
    _face_tables(src, dst)
    if prepare is not None:
        prepare(dst)
    have, want = tables(src.db), tables(dst.db)
    for t in sorted(t for t in have if t in DERIVED and t not in want):
        _log.warning("copying to %s: the destination has no %s table, so those derived rows were not copied (the "
                     "late preset ranks as learned there until `memcube reindex --reembed` writes them again)",
                     getattr(dst, "path", "?"), t)
    have = {t: v for t, v in have.items() if t in want or t not in DERIVED}
    missing = sorted(t for t in have if t not in SKIP and t not in want)
    if missing:
        raise InvalidInputError(
            f"the destination has no table for {missing}: create them first (open the faces that own them on the "
            "destination cube), then run the copy again; nothing of those tables was copied")
    order = [t for t in FIRST if t in have] + sorted(t for t in have if t not in FIRST and t not in SKIP)
    counts: dict[str, int] = {}
    for table in order:
        cols = [c for c in have[table][0] if c in want[table][0]]
        counts[table] = _copy_table(src, dst, table, cols, want[table][1], progress)
    _after_copy(dst)
    return counts


def _face_tables(src: SQLStore, dst: SQLStore) -> None:
    """Create on ``dst`` every face's table group the source has (the migrate components it recorded)."""
    from . import tables as face_tables
    from .tables import chat, checkpoints, late_tokens, lgstore  # noqa: F401 - each defines its Tables subclass

    def subclasses(cls: type) -> list[type]:
        found: list[type] = []
        direct: list[type] = cls.__subclasses__()
        for sub in direct:
            found += [sub, *subclasses(sub)]
        return found

    by_component = {getattr(c, "COMPONENT", None): c for c in subclasses(face_tables.Tables)}
    for (component,) in src.db.read("SELECT component FROM schema_migrations"):
        group = by_component.get(component)
        # a group with no schema for the destination's backend is derived data (DERIVED) the destination
        # does without (copy_store logs it), not a reason to fail
        if group is not None and dst.db.dialect in getattr(group, "STEPS", {dst.db.dialect: ()}):
            group(dst.db)


def _copy_table(src: SQLStore, dst: SQLStore, table: str, cols: list[str], pk: list[str],
                progress: Progress | None) -> int:
    total = int(src.db.scalar(f"SELECT COUNT(*) FROM {table}"))
    key = f"migrate:{table}"
    done = int(dst.get_meta(key) or 0)
    col_sql = ", ".join(cols)
    order = ", ".join(pk)
    insert = f"INSERT INTO {table} ({col_sql}) VALUES ({marks(len(cols))}) ON CONFLICT DO NOTHING"
    while done < total:
        rows = src.db.read(f"SELECT {col_sql} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?", (PAGE, done))
        if not rows:
            break
        if table == "meta":
            rows = [r for r in rows if not str(r[cols.index("key")]).startswith(("migrate:", "schema_version"))] \
                if "key" in cols else rows
        kept = [_portable(r) for r in rows]
        if table in DERIVED:  # derived, never trusted: a row read() would ignore is not copied (nor can abort the copy)
            kept = [r for r in kept if _sound_tokens(dict(zip(cols, r)))]
            if len(kept) < len(rows):
                _log.warning("copying %s: %d %s rows that do not hold what they say were left out (`memcube reindex "
                             "--reembed` writes them again)", getattr(src, "path", "?"), len(rows) - len(kept), table)
        with dst.transaction() as tx:
            if table == "audit":
                kept = _audit_rows(tx, cols, kept)
            tx.executemany(insert, kept)
            tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                       (key, str(done + PAGE if done + PAGE < total else total)))
        done = min(total, done + PAGE)
        if progress is not None:
            progress(table, done, total)
    return total


def _audit_rows(tx: Any, cols: list[str], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A page of the source's audit rows, written as they are except where the destination already holds
    another row at the same ``seq`` (its own history: the reconcile of a half-copied cube it was opened as):
    those are appended with a new ``seq`` here, so neither side's row is lost."""
    at = cols.index("seq")
    seqs = [r[at] for r in rows]
    taken = {int(r[0]) for r in tx.execute(f"SELECT seq FROM audit WHERE seq IN ({marks(len(seqs))})", seqs).fetchall()} \
        if seqs else set()
    rest = [c for c in cols if c != "seq"]
    for r in rows:
        if r[at] in taken:
            tx.execute(f"INSERT INTO audit ({', '.join(rest)}) VALUES ({marks(len(rest))})",
                       tuple(v for c, v in zip(cols, r) if c != "seq"))
    return [r for r in rows if r[at] not in taken]


def _sound_tokens(row: dict[str, Any]) -> bool:
    """Whether a ``late_tokens`` row has the types and sizes its columns say (``late_tokens.read`` checks the rest)."""
    from .tables.late_tokens import MAX_ROWS

    n, d, data, scales = row.get("n"), row.get("dim"), row.get("data"), row.get("scales")
    return (isinstance(row.get("rid"), int) and 0 < row["rid"] < 2**63 and isinstance(row.get("item_id"), str)
            and isinstance(n, int) and isinstance(d, int) and 0 <= n <= MAX_ROWS and 0 < d <= 1 << 16
            and isinstance(data, bytes) and isinstance(scales, bytes) and len(data) == n * d and len(scales) == 4 * n)


def _portable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Values as both drivers accept them (memoryview from a BLOB becomes bytes)."""
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


def _after_copy(dst: SQLStore) -> None:
    """Move PostgreSQL's identity counters past the copied keys, and index every copied item's text."""
    if dst.db.dialect == "postgres":
        with dst.transaction() as tx:
            for table, col in (("items", "rid"), ("audit", "seq")):
                tx.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                           f"GREATEST((SELECT COALESCE(MAX({col}), 0) FROM {table}), 1))")
    last = 0
    while True:
        rids = [int(r[0]) for r in dst.db.read(
            "SELECT rid FROM items WHERE rid > ? AND state <> 'deleted' ORDER BY rid LIMIT ?", (last, PAGE))]
        if not rids:
            return
        items = dst.get_by_rid(rids)
        with dst.transaction() as tx:
            for rid in rids:
                dst._unindex_text(tx, rid)
                dst._index_text(tx, rid, items[rid].index_text)
        last = rids[-1]


def migrate_cube(src_path: Any, dst_path: Any, store: Any = None, progress: Progress | None = None,
                 embedder: Any = None) -> dict[str, int]:
    """Copy the cube at ``src_path`` into a cube at ``dst_path`` whose truth lives in ``store``.

    Args:
        src_path: an existing cube directory (stop its writers first).
        dst_path: the new cube's directory; if it holds a cube a previous run started, the copy resumes.
        store: the destination's store config (``postgres_store(...)``, or None for the embedded SQLite one);
            every other setting (cube id, limits, embedder) is the source's.
        progress: called after each page with (table, rows done, rows in the table).
        embedder: the embedder object (default: the one the source's config names).

    Returns:
        Rows copied per table, and ``"indexed"``: vectors in the destination's rebuilt index.

    Raises:
        InvalidInputError: the destination holds a different cube.
    """
    from pathlib import Path

    from ..config import CubeConfig
    from ..cube import MemCube

    src = MemCube.open(src_path, embedder=embedder)
    try:
        target = Path(dst_path)
        if (target / "cube.json").exists():
            dst = MemCube.open(target, embedder=src.embedder)
            if dst.cube_id != src.cube_id or dst.store.get_meta("migrate:source") != src.cube_id:
                dst.close()
                raise InvalidInputError(f"{target} holds another cube ({dst.cube_id!r}); migrate into a new directory")
        else:
            fields = src.config.model_dump(exclude={"store", "vector"})
            if store is not None:
                fields["store"] = store
            dst = MemCube.init_from_dir(target, CubeConfig(**fields), embedder=src.embedder)
            dst.store.set_meta("migrate:source", str(src.cube_id))
        try:
            counts = copy_store(src.store, dst.store, progress)
            counts["indexed"] = dst.reindex()
        finally:
            dst.close()
    finally:
        src.close()
    return counts
