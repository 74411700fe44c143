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

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import ClassVar

from ...errors import AccessDeniedError
from ..migrations import Step, migrate
from ..sql import Database, Tx


class Tables:
    """A table group over ``db``; creating one brings its schema up to date.

    A face built on a read-only :class:`~memos_integrations.mos_view.CubeView` may not run the migration
    (its transaction is a write): the tables are then created by the first caller who may write, and
    until then reads find nothing (:meth:`ready` is False) and writes are refused by the view.
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
            except AccessDeniedError:
                _ = self.db.dialect  # a read check: a caller without any access is refused here
                return False
        return True

    def transaction(self) -> AbstractContextManager[Tx]:
        """One atomic write on these tables (a caller may pass the ``Tx`` to the write methods)."""
        self.ready()
        return self.db.transaction()
