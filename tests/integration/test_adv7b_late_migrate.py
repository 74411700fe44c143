# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""adv7b: ``memcube migrate`` of a SQLite cube whose ``late_tokens`` holds a row PostgreSQL's columns cannot take.

``late_tokens`` is derived data: ``read`` ignores any row that does not hold what it says (test_pg7's
hostile rows). ``transfer.copy_store`` copies it row for row, unchecked, into PostgreSQL's typed columns:
a damaged or hostile file's row with ``n`` beyond a 32-bit INTEGER (SQLite keeps any 64-bit value in an
INTEGER column) aborts the whole migration with the driver's own error, not a MemosError that says what to
do, for a row the engine would have ignored anyway (and ``reindex --reembed`` writes again).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.config import postgres_store
from memos_integrations.errors import MemosError
from memos_integrations.storage import transfer
from tests.late_chat import CHAT
from tests.late_chat import add_chat as _chat
from tests.pg_server import postgres_dsn, schemas  # noqa: F401

pytest.importorskip("torch")


def test_a_late_tokens_row_pg_cannot_hold_does_not_abort_the_migration(
        tmp_path: Path, cube: MemCube, postgres_dsn: str, schemas: Callable[[], str], embedder: Any) -> None:
    _chat(cube)
    with cube.text_mem.store.transaction() as tx:  # a damaged or hostile file: read() would ignore this row
        tx.execute("UPDATE late_tokens SET n = ? WHERE rid = 1", (2**40,))
    src = cube.path
    cube.close()
    try:
        counts = transfer.migrate_cube(src, tmp_path / "to_pg", postgres_store(postgres_dsn, schema=schemas()),
                                       embedder=embedder)
    except MemosError:
        return  # refused with a message that says what to do: acceptable
    assert counts["items"] == len(CHAT)
    with MemCube.open(tmp_path / "to_pg", embedder=embedder) as pg:
        assert len(pg.text_mem.list_items()) == len(CHAT)
