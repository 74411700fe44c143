"""Versioned schema steps: every table group (the engine's, each face's, the job queue) evolves here.

Each component declares an ordered list of steps per dialect; step ``i`` (1-based) moves the
component from version ``i - 1`` to ``i``. The ``schema_migrations`` table records the version each
component reached, so opening a database applies only the steps it lacks, in one transaction each,
and a database written by a newer package (a version above the last step) is refused instead of
being misread. A step is either a DDL string (statements separated by ``;``) or a callable that
gets the open transaction (for data moves that DDL cannot express).

Example:
    >>> from memos_integrations.storage.sql import SQLiteDatabase
    >>> import tempfile, os
    >>> db = SQLiteDatabase(os.path.join(tempfile.mkdtemp(), "x.db"))
    >>> steps = {"sqlite": ["CREATE TABLE notes (id TEXT PRIMARY KEY)", "ALTER TABLE notes ADD COLUMN body TEXT"]}
    >>> migrate(db, "notes", steps)
    2
    >>> migrate(db, "notes", steps)  # already there: nothing runs
    2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..errors import CubeCorruptedError
from .sql import Database, Tx

Step = str | Callable[[Tx], None]

_TABLE = "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"


def recorded(component: str, value: object) -> int:
    """A ``schema_migrations`` version as read: a whole number >= 0, or the database is refused.

    SQLite keeps whatever a hostile or damaged file put in the column (text, a blob, a fraction, a
    negative number); reading one as a version would rerun steps on tables that already have them.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CubeCorruptedError(
            f"schema_migrations records version {value!r} for {component}, which no release writes (the "
            "database was edited or damaged); restore the cube from a dump or export")
    return value


def current_version(db: Database, component: str) -> int:
    with db.transaction() as tx:
        tx.execute(_TABLE)
    row = db.read_one("SELECT version FROM schema_migrations WHERE component = ?", (component,))
    return recorded(component, row[0]) if row else 0


def migrate(db: Database, component: str, steps: Mapping[str, Sequence[Step]]) -> int:
    """Bring ``component`` up to the last of its steps for ``db.dialect``; return that version.

    Raises:
        CubeCorruptedError: the database is at a version this package does not know (written by a newer
            release), or the component has no steps for this backend.
    """
    if db.dialect not in steps:
        raise CubeCorruptedError(f"{component} has no schema for the {db.dialect} backend; use another backend")
    plan = steps[db.dialect]
    with db.transaction() as tx:
        tx.execute(_TABLE)
    for number in range(1, len(plan) + 1):
        with db.transaction() as tx:
            tx.lock(f"migrate:{component}")  # two processes opening at once: one migrates, one waits
            row = tx.execute("SELECT version FROM schema_migrations WHERE component = ?", (component,)).fetchone()
            have = recorded(component, row[0]) if row else 0
            if have > len(plan):
                raise CubeCorruptedError(
                    f"the {component} tables are at schema {have}, newer than this package knows ({len(plan)}); "
                    "upgrade memos-integrations")
            if have >= number:
                continue
            step = plan[number - 1]
            if callable(step):
                step(tx)
            else:
                for statement in (s.strip() for s in step.split(";")):
                    if statement:
                        tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version", (component, number))
    return current_version(db, component)
