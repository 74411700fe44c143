"""The faces' and MOS's own tables: every statement on them, written once in the portable dialect.

Each module is one table group with its own :func:`~memos_integrations.storage.migrations.migrate`
component (step 1 is the DDL earlier releases wrote, ``IF NOT EXISTS``, so an existing cube is recognised
as version 1), over any :class:`~memos_integrations.storage.sql.Database`:

- :mod:`.checkpoints`: LangGraph's saver (``lg_checkpoints``, ``lg_writes``, ``lg_threads``);
- :mod:`.lgstore`: LangGraph's ``BaseStore`` (``lg_store``, ``lg_store_ns``);
- :mod:`.chat`: LangChain's ``langchain_messages`` and LlamaIndex's ``llama_index_chat``;
- :mod:`.registry`: MOS's users, cubes, shares and audit log (``<home>/mos.db``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import ClassVar

from ...errors import AccessDeniedError
from ..migrations import Step, migrate, recorded
from ..sql import Database, Tx


class Tables:
    """A table group over ``db``; creating one brings its schema up to date.

    A face built on a read-only :class:`~memos_integrations.mos_view.CubeView` may not run the migration
    (its transaction is a write): it uses the tables once someone who may write has brought them up to
    date; until then its reads find nothing (:meth:`ready` is False) and its writes are refused by the view.
    Each such attempt is audited as a denied write in the cube.
    """

    COMPONENT: ClassVar[str]
    STEPS: ClassVar[Mapping[str, Sequence[Step]]]

    def __init__(self, db: Database) -> None:
        self.db = db
        self.version = 0
        self.ready()

    def ready(self) -> bool:
        """True once the tables are at this package's version (migrating them now if need be)."""
        if not self.version:
            try:
                self.version = migrate(self.db, self.COMPONENT, self.STEPS)
            except AccessDeniedError:  # a read-only view: usable if someone who may write migrated already
                have = self._recorded_version()
                if have != len(self.STEPS[self.db.dialect]):
                    return False
                self.version = have
        return True

    def _recorded_version(self) -> int:
        """The component's version in ``schema_migrations``, read without writing (0: none yet)."""
        try:
            row = self.db.read_one("SELECT version FROM schema_migrations WHERE component = ?", (self.COMPONENT,))
        except sqlite3.OperationalError as exc:  # no component was ever migrated in this database
            if "no such table" not in str(exc):
                raise
            return 0
        return recorded(self.COMPONENT, row[0]) if row else 0

    def transaction(self) -> AbstractContextManager[Tx]:
        """One atomic write on these tables (a caller may pass the ``Tx`` to the write methods)."""
        self.ready()
        return self.db.transaction()
